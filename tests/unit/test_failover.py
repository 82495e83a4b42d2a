"""The liveness options' defaults (external servers and the embedded one differ) and the
failover watch's judgement of a quorum, without a server."""

from __future__ import annotations

import pytest

from jetkit._failover import quorum
from jetkit._options import open_options


def test_external_servers_are_pinged_every_3s_and_failed_over_after_5s() -> None:
    o = open_options(servers=["nats://127.0.0.1:4222"])
    assert (o.ping_interval, o.max_outstanding_pings, o.failover_after) == (3.0, 2, 5.0)


def test_the_embedded_server_keeps_nats_py_pings_and_never_fails_over() -> None:
    o = open_options()
    assert (o.ping_interval, o.max_outstanding_pings, o.failover_after) == (120.0, 2, None)
    o = open_options(ping_interval=1.5, max_outstanding_pings=3, failover_after=2)
    assert (o.ping_interval, o.max_outstanding_pings, o.failover_after) == (1.5, 3, None)


def test_failover_can_be_switched_off() -> None:
    assert open_options(servers="nats://h:4222", failover_after=None).failover_after is None


def replica(active_s: float, offline: bool = False) -> dict[str, object]:
    return {"name": "n", "current": True, "offline": offline, "active": int(active_s * 1e9)}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"streams": ["A"]}, True),  # STREAM.NAMES: the meta leader answered
        ({"error": {"code": 503}}, False),
        ({"cluster": {"leader": None, "replicas": [replica(0.1), replica(0.1)]}}, False),
        ({"cluster": {"leader": "n1", "replicas": [replica(0.1), replica(0.2)]}}, True),
        ({"cluster": {"leader": "n1", "replicas": [replica(0.1), replica(9.0)]}}, True),
        # a leader cut off from both replicas (it has not heard from them for a while)
        ({"cluster": {"leader": "n1", "replicas": [replica(9.0), replica(12.0)]}}, False),
        ({"cluster": {"leader": "n1", "replicas": [replica(0.1, True), replica(9.0)]}}, False),
        ({"cluster": {"leader": "n1"}}, True),  # one replica
        (
            {"cluster": {"leader": "n1", "replicas": [replica(0.1)] * 2 + [replica(9)] * 2}},
            True,
        ),
        (
            {"cluster": {"leader": "n1", "replicas": [replica(0.1)] + [replica(9)] * 3}},
            False,
        ),
    ],
)
def test_quorum_needs_a_leader_in_touch_with_a_majority(
    answer: dict[str, object], expected: bool
) -> None:
    assert quorum(answer) is expected


async def test_a_publish_is_followed_to_its_outcome_without_counting_on_the_hot_path() -> None:
    import asyncio

    from jetkit._acked import PubAck, _Batch, _Entry, stored

    loop = asyncio.get_running_loop()
    waiting = _Entry(0.0, "t", loop.create_future())
    assert stored(waiting) is None
    ok = _Entry(0.0, "t", loop.create_future())
    ok.resolve(PubAck("S", 1))
    failed = _Entry(0.0, "t", loop.create_future())
    failed.resolve(TimeoutError("no ack"))
    assert (stored(ok), stored(failed)) == (True, False)
    batch = _Batch()
    batch.results = [None, None]
    first, second = _Entry(0.0, "t", None, batch, 0), _Entry(0.0, "t", None, batch, 1)
    first.resolve(PubAck("S", 2))
    assert (stored(first), stored(second)) == (True, None)

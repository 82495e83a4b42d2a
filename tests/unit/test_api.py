"""The public API surface and the pure policy functions."""

from __future__ import annotations

import builtins
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

import jetkit as jk
from jetkit._options import resolve_start, to_datetime
from jetkit._retry import (
    Decision,
    dead_letter_headers,
    decide,
    normalize_backoff,
)
from jetkit._topics import stream_name, subject_matches, validate_topic

EXPECTED_ALL = {
    "AckPolicy",
    "AlreadySettledError",
    "App",
    "Backpressure",
    "ConfigError",
    "ConnectionError",
    "ConnectionLostError",
    "ConsumerInfo",
    "DamagedConsumerError",
    "DeadLetter",
    "DeadLetterScan",
    "DecodeError",
    "DependencyError",
    "Discard",
    "Emit",
    "EncodeError",
    "ForkedStreamError",
    "HandlerSignatureError",
    "IncompatibleConsumerError",
    "InsecureStoreError",
    "InvalidHeaderError",
    "InvalidTopicError",
    "JetStreamError",
    "JetkitError",
    "Message",
    "NoRespondersError",
    "NotADeadLetterTopicError",
    "NotFoundError",
    "OpenOptions",
    "PayloadTooLargeError",
    "PortInUseError",
    "PubAck",
    "PublishBatchError",
    "ReplicaInfo",
    "RedriveResult",
    "RemoteError",
    "Retention",
    "ScheduledMessage",
    "ServerBinaryError",
    "ServerStartError",
    "ServerTimeoutError",
    "StartAt",
    "StorageFullError",
    "StoreNotWritableError",
    "Stream",
    "StreamClosedError",
    "StreamUnhealthyError",
    "SubscribeOptions",
    "Subscription",
    "SubscriptionStats",
    "TimeoutError",
    "TopicInfo",
    "TopicOverview",
    "TopicMode",
    "UnknownOptionError",
    "exponential_backoff",
    "__version__",
}


def test_jk_all_lists_exactly_the_public_names_and_each_exists() -> None:
    assert set(jk.__all__) == EXPECTED_ALL
    for name in jk.__all__:
        assert hasattr(jk, name), name


def test_every_error_derives_from_the_root() -> None:
    errors = [getattr(jk, n) for n in jk.__all__ if n.endswith("Error")]
    errors.remove(jk.JetkitError)
    for err in errors:
        assert issubclass(err, jk.JetkitError), err
    assert issubclass(jk.TimeoutError, builtins.TimeoutError)
    assert issubclass(jk.InvalidTopicError, ValueError)
    assert issubclass(jk.PayloadTooLargeError, ValueError)
    assert issubclass(jk.PortInUseError, jk.ServerStartError)
    assert issubclass(jk.IncompatibleConsumerError, jk.ConfigError)


@pytest.mark.parametrize(
    "bad",
    ["", " ", "a b", "a..b", ".a", "a.", "a.*", "a.>", "a*", "a.b>", "tab\there", 5],
)
def test_validate_topic_refuses_each_malformed_publish_topic(bad: object) -> None:
    with pytest.raises(jk.InvalidTopicError):
        validate_topic(bad, wildcards=False)


@pytest.mark.parametrize("bad", ["a.>.b", "a.b*", "a..*", ">x"])
def test_validate_topic_refuses_a_misplaced_wildcard_in_a_pattern(bad: str) -> None:
    with pytest.raises(jk.InvalidTopicError):
        validate_topic(bad, wildcards=True)


def test_validate_topic_returns_valid_topics_and_patterns_unchanged() -> None:
    for ok in ["a", "orders.events", "orders.*", "orders.>", "*", ">", "a-b_c.d"]:
        assert validate_topic(ok, wildcards=True) == ok


def test_stream_names_are_valid_and_collision_free() -> None:
    topics = [
        "a.b",
        "a_b",
        "a-b",
        "a--b",
        "a.-b",
        "orders.>",
        "orders.*",
        "a-5f-b",
        "a.5f.b",
        "ünï.côdé",
        "a.b.c",
        "a_b.c",
        "a.b_c",
    ]
    names = [stream_name(t) for t in topics]
    assert len(set(names)) == len(names)
    for name in names:
        assert not any(c in name for c in ".*> \t/\\"), name
    assert stream_name("orders.events") == "orders_events"


def test_subject_matches_reads_star_as_one_token_and_gt_as_the_rest() -> None:
    assert subject_matches("orders.>", "orders.eu.created")
    assert subject_matches("orders.*", "orders.eu")
    assert not subject_matches("orders.*", "orders.eu.created")
    assert not subject_matches("orders.>", "orders")
    assert subject_matches("orders.>", "orders.*")
    assert not subject_matches("orders.*", "orders.>")
    assert subject_matches("a.b", "a.b")
    assert not subject_matches("a.b", "a.c")


def test_exponential_backoff_grows_by_its_factor_up_to_max_and_needs_a_count_and_growth() -> None:
    assert jk.exponential_backoff(1, 4) == [1, 2, 4, 8]
    assert jk.exponential_backoff(0.5, 4, factor=3, max=3) == [0.5, 1.5, 3, 3]
    assert jk.exponential_backoff(dt.timedelta(seconds=2), 2) == [2, 4]
    with pytest.raises(jk.ConfigError):
        jk.exponential_backoff(1, 0)
    with pytest.raises(jk.ConfigError):
        jk.exponential_backoff(1, 3, factor=0.5)


def test_backoff_normalisation_and_delay_choice() -> None:
    assert normalize_backoff([1, dt.timedelta(seconds=5), 30.0]) == [1, 5, 30]
    assert normalize_backoff(2) == [2]
    assert normalize_backoff(None) is None
    with pytest.raises(jk.ConfigError):
        normalize_backoff([])
    with pytest.raises(jk.ConfigError):
        normalize_backoff([-1])
    delays = [1.0, 5.0]
    assert [decide(a, None, delays).delay for a in (1, 2, 3, 9)] == [1, 5, 5, 5]
    assert decide(1, None, None) == Decision(True, None)
    assert decide(2, 3, delays) == Decision(True, 5.0)
    assert decide(3, 3, delays) == Decision(False, None)  # the last attempt failed


def test_backoff_jitter_shortens_each_delay_by_at_most_its_fraction() -> None:
    assert jk.exponential_backoff(1, 3, jitter=0.5, rand=lambda: 1.0) == [0.5, 1.0, 2.0]
    assert jk.exponential_backoff(1, 3, jitter=0.5, rand=lambda: 0.0) == [1, 2, 4]
    with pytest.raises(jk.ConfigError):
        jk.exponential_backoff(1, 3, jitter=2)


def test_dead_letter_headers_keep_the_users_drop_the_msg_id_and_flatten_the_error() -> None:
    h = dead_letter_headers(
        {"Nats-Msg-Id": "x", "trace": "t1"},
        topic="orders",
        seq=7,
        deliveries=3,
        consumer="c",
        error="ValueError: bad\nthing",
    )
    assert h == {
        "trace": "t1",
        "Jetkit-Original-Topic": "orders",
        "Jetkit-Original-Seq": "7",
        "Jetkit-Deliveries": "3",
        "Jetkit-Consumer": "c",
        "Jetkit-Error": "ValueError: bad thing",
    }


class _NoSettler:
    async def send_ack(self, msg: jk.Message, token: bytes, wait: bool = False) -> None: ...


def test_message_reads_both_ack_subject_forms() -> None:
    old = "$JS.ACK.ORDERS.proc.2.17.5.1700000000000000000.3"
    new = "$JS.ACK.hub.ACCHASH.ORDERS.proc.2.17.5.1700000000000000000.3.tok"
    for reply in (old, new):
        m = jk.Message("orders", b"", None, reply, _NoSettler())
        assert (m.stream, m.consumer, m.num_delivered, m.seq, m.pending) == (
            "ORDERS",
            "proc",
            2,
            17,
            3,
        )
        assert m.timestamp == dt.datetime.fromtimestamp(1700000000, dt.UTC)
    plain = jk.Message("orders", b"", None, "_INBOX.abc", _NoSettler())
    assert (plain.stream, plain.seq, plain.num_delivered) == (None, None, 1)


def test_a_start_time_or_start_seq_decides_the_start_position_and_must_match_start_at() -> None:
    aware = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert resolve_start(jk.StartAt.NEW, aware, None) == (jk.StartAt.BY_START_TIME, aware, None)
    assert resolve_start(jk.StartAt.NEW, None, 5) == (jk.StartAt.BY_SEQUENCE, None, 5)
    with pytest.raises(jk.ConfigError):
        resolve_start(jk.StartAt.BY_START_TIME, None, None)
    with pytest.raises(jk.ConfigError):
        resolve_start(jk.StartAt.BY_SEQUENCE, None, None)
    with pytest.raises(jk.ConfigError):
        resolve_start(jk.StartAt.ALL, aware, None)
    naive = dt.datetime(2026, 1, 1, 12, 0)
    assert to_datetime(naive).timestamp() == naive.timestamp()
    assert to_datetime(1700000000).timestamp() == 1700000000
    with pytest.raises(jk.ConfigError):
        to_datetime("yesterday")  # type: ignore[arg-type]


TYPED = """\
import jetkit as jk
import jetkit.sync


async def stored(s: jk.Stream) -> int:
    ack = await s.publish_stored("orders.events", b"x", msg_id="o-1", ttl=60)
    also = await s.publish_json_stored("orders.events", {"n": 1})
    return ack.seq + also.seq


def stored_sync(s: jetkit.sync.Stream) -> int:
    ack = s.publish_stored("orders.events", b"x")
    return ack.seq + s.publish_json_stored("orders.events", [1]).seq


async def maybe(s: jk.Stream) -> int:
    ack = await s.publish("orders.events", b"x")
    return ack.seq  # a core topic's publish returns None
"""


def test_publish_stored_is_typed_pub_ack_for_mypy_strict(tmp_path: Path) -> None:
    """``publish_stored(...).seq`` type-checks under ``mypy --strict``; ``publish`` stays
    ``PubAck | None`` (a core topic returns None)."""
    pytest.importorskip("mypy")
    (tmp_path / "uses_ack.py").write_text(TYPED)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "uses_ack.py"],
        cwd=tmp_path,  # not the project's mypy settings
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    line = TYPED.splitlines().index("    return ack.seq  # a core topic's publish returns None")
    assert result.stdout.splitlines() == [
        f'uses_ack.py:{line + 1}: error: Item "None" of "PubAck | None" has no attribute '
        '"seq"  [union-attr]'
    ], result.stdout + result.stderr


def test_stored_times_are_read_to_the_nanosecond() -> None:
    # a letter too large to copy finds its message again by the exact stored time: a
    # float of seconds (about 16 digits) cannot hold nanoseconds since 1970
    from jetkit._time import parse_time_ns

    assert parse_time_ns("2026-12-07T03:27:30.358076231Z") == 1_796_614_050_358_076_231
    assert parse_time_ns("2026-12-07T03:27:30Z") == 1_796_614_050_000_000_000
    assert parse_time_ns("2026-12-07T04:27:30.5+01:00") == 1_796_614_050_500_000_000
    assert parse_time_ns("0001-01-01T00:00:00Z") is None

"""Property-based hostile input against the real server: every call either works or raises
a JetkitError, and the connection is never dropped by the server because of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jetkit as jk
from conftest import nc_of

pytestmark = pytest.mark.faults

# examples per property: 60 in the default run, 1,000 with --faults-full (tests/conftest.py)
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

nasty_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(".*>$ \t\r\n\x00\x7f:_-ü")),
        st.characters(codec="utf-8"),
    ),
    max_size=40,
)
topics = st.one_of(
    nasty_text,
    st.builds(lambda n, c: c * n, st.integers(1, 5000), st.sampled_from(["a", "a.", "é", "$"])),
    st.sampled_from(["$JS.API.STREAM.DELETE.x", "$SYS.REQ.SERVER.PING", "_INBOX.x", "a.>", ">"]),
)
header_values = st.one_of(nasty_text, st.integers(), st.none(), st.binary(max_size=8))
headers = st.one_of(
    st.none(),
    st.dictionaries(nasty_text, header_values, max_size=4),
    st.lists(st.tuples(nasty_text, nasty_text), max_size=2),
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1e-9, 0.1, -1, "5", None, True]),
)


async def survives(s: jk.Stream, call: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``call``: it may work or raise a JetkitError; the connection must stay up."""
    reconnects = nc_of(s).stats["reconnects"]
    result: Any = None
    try:
        result = await call()
    except jk.JetkitError:
        pass
    assert nc_of(s).stats["reconnects"] == reconnects, "the server dropped the connection"
    assert nc_of(s).is_connected
    return result


@SETTINGS
@given(topic=topics, data=st.binary(max_size=64), hdrs=headers, msg_id=header_values)
async def test_core_publish_and_request_never_break_the_stream(
    core: jk.Stream, topic: str, data: bytes, hdrs: Any, msg_id: Any
) -> None:
    await survives(core, lambda: core.publish(topic, data, headers=hdrs, msg_id=msg_id))
    await survives(core, lambda: core.request(topic, data, timeout=0.05, headers=hdrs))
    sub = await survives(core, lambda: core.subscribe(topic, lambda m: None))
    if sub is not None:
        await sub.stop()
    await core.publish("hostile.sentinel", b"ok")


@SETTINGS
@given(extra=st.integers(-300, 10), hdrs=headers, msg_id=header_values)
async def test_payload_sizes_around_max_payload(
    js: jk.Stream, extra: int, hdrs: Any, msg_id: Any
) -> None:
    data = b"x" * max(0, js.max_payload + extra)
    ack = await survives(js, lambda: js.publish("hostile.sizes", data, headers=hdrs, msg_id=msg_id))
    if ack is not None:
        assert ack.stream == "hostile_sizes"
    assert await js.publish("hostile.sizes", b"sentinel") is not None


@SETTINGS
@given(
    ack_wait=numbers,
    max_deliver=numbers,
    backoff=st.one_of(numbers, st.lists(numbers, max_size=3)),
    start_time=numbers,
    start_seq=numbers,
    concurrency=numbers,
    buffer_size=numbers,
    start_at=st.one_of(st.sampled_from(list(jk.StartAt)), nasty_text),
    ack=st.one_of(st.sampled_from(list(jk.AckPolicy)), nasty_text),
)
async def test_subscribe_options_never_break_the_stream(js: jk.Stream, **options: Any) -> None:
    for name in list(options):
        if options[name] is None and name in ("concurrency", "buffer_size", "ack_wait"):
            del options[name]
    sub = await survives(js, lambda: js.subscribe("hostile.options", lambda m: None, **options))
    if sub is not None:
        await sub.stop()
    assert await js.publish("hostile.options", b"sentinel") is not None


@SETTINGS
@given(
    max_msgs=numbers,
    max_bytes=numbers,
    max_age=numbers,
    replicas=numbers,
    retention=st.one_of(st.sampled_from(list(jk.Retention)), nasty_text),
    discard=st.one_of(st.sampled_from(list(jk.Discard)), nasty_text),
)
async def test_declare_topic_options_never_break_the_stream(js: jk.Stream, **options: Any) -> None:
    await survives(js, lambda: js.declare_topic("hostile.declared", **options))
    # the topic may now be core, limited or refusing: any outcome but a broken Stream
    await survives(js, lambda: js.publish("hostile.declared", b"sentinel"))

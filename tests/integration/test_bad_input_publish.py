"""No call can break a Stream: bad input is a clear JetkitError, checked before sending.

Each case ran into a non-jetkit error, a silent misbehaviour or a dropped connection
before these checks existed. After every case the same connection still works.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import jetkit as jk
from conftest import nc_of, wait_until
from jetkit._options import subscribe_options

Call = Callable[[jk.Stream, str], Awaitable[Any]]


def handler(msg: jk.Message) -> None:
    return None


def recursive() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


BAD_CALLS: list[tuple[str, Call, type[jk.JetkitError]]] = [
    # headers and msg_id
    ("header value int", lambda s, t: s.publish(t, b"x", headers={"a": 1}), jk.InvalidHeaderError),  # type: ignore[dict-item]
    (
        "headers as list",
        lambda s, t: s.publish(t, b"x", headers=[("a", "b")]),
        jk.InvalidHeaderError,
    ),  # type: ignore[arg-type]
    (
        "header name space",
        lambda s, t: s.publish(t, b"x", headers={"a b": "c"}),
        jk.InvalidHeaderError,
    ),
    (
        "header name colon",
        lambda s, t: s.publish(t, b"x", headers={"a:": "c"}),
        jk.InvalidHeaderError,
    ),
    (
        "header value CRLF",
        lambda s, t: s.publish(t, b"x", headers={"a": "b\r\nX: y"}),
        jk.InvalidHeaderError,
    ),
    (
        "header value LF",
        lambda s, t: s.publish(t, b"x", headers={"a": "b\nc"}),
        jk.InvalidHeaderError,
    ),
    ("msg_id int", lambda s, t: s.publish(t, b"x", msg_id=5), jk.InvalidHeaderError),  # type: ignore[arg-type]
    ("msg_id CR", lambda s, t: s.publish(t, b"x", msg_id="a\rb"), jk.InvalidHeaderError),
    ("msg_id blank", lambda s, t: s.publish(t, b"x", msg_id=" "), jk.InvalidHeaderError),
    ("request header", lambda s, t: s.request(t, b"x", headers={"k": None}), jk.InvalidHeaderError),  # type: ignore[dict-item]
    # message size: payload under max_payload, but not with its headers
    (
        "payload plus headers",
        lambda s, t: s.publish(t, b"x" * s.max_payload, msg_id="id-1"),
        jk.PayloadTooLargeError,
    ),
    (
        "payload plus big header",
        lambda s, t: s.publish(t, b"x" * (s.max_payload - 100), headers={"h": "v" * 200}),
        jk.PayloadTooLargeError,
    ),
    # topics
    ("4 KB topic", lambda s, t: s.publish("a." * 2048 + "b", b"x"), jk.InvalidTopicError),
    ("$ publish", lambda s, t: s.publish("$JS.API.STREAM.DELETE.x", b""), jk.InvalidTopicError),
    ("$ subscribe", lambda s, t: s.subscribe("$SYS.>", handler), jk.InvalidTopicError),
    ("$ respond", lambda s, t: s.respond("$JS.API.>", handler), jk.InvalidTopicError),
    ("$ request", lambda s, t: s.request("$JS.API.INFO", b""), jk.InvalidTopicError),
    ("control char", lambda s, t: s.publish("a.\x01", b""), jk.InvalidTopicError),
    # JSON
    ("recursive json", lambda s, t: s.publish_json(t, recursive()), jk.EncodeError),
    # subscribe options
    ("ack_wait nan", lambda s, t: s.subscribe(t, handler, ack_wait=math.nan), jk.ConfigError),
    ("ack_wait inf", lambda s, t: s.subscribe(t, handler, ack_wait=math.inf), jk.ConfigError),
    ("ack_wait str", lambda s, t: s.subscribe(t, handler, ack_wait="30"), jk.ConfigError),  # type: ignore[arg-type]
    ("ack_wait tiny", lambda s, t: s.subscribe(t, handler, ack_wait=1e-9), jk.ConfigError),
    ("start_time nan", lambda s, t: s.subscribe(t, handler, start_time=math.nan), jk.ConfigError),
    ("start_time 1e20", lambda s, t: s.subscribe(t, handler, start_time=1e20), jk.ConfigError),
    ("start_at str", lambda s, t: s.subscribe(t, handler, start_at="yesterday"), jk.ConfigError),  # type: ignore[arg-type]
    ("durable int", lambda s, t: s.subscribe(t, handler, durable=5), jk.InvalidTopicError),  # type: ignore[arg-type]
    (
        "backoff inf",
        lambda s, t: s.subscribe(t, handler, ack=jk.AckPolicy.MANUAL, backoff=[math.inf]),
        jk.ConfigError,
    ),
    (
        "backoff nan",
        lambda s, t: s.subscribe(t, handler, ack=jk.AckPolicy.MANUAL, backoff=[math.nan]),
        jk.ConfigError,
    ),
    (
        "backoff str",
        lambda s, t: s.subscribe(t, handler, ack=jk.AckPolicy.MANUAL, backoff="1,5"),
        jk.ConfigError,
    ),  # type: ignore[arg-type]
    ("concurrency bool", lambda s, t: s.subscribe(t, handler, concurrency=True), jk.ConfigError),
    ("buffer_size float", lambda s, t: s.subscribe(t, handler, buffer_size=2.5), jk.ConfigError),  # type: ignore[arg-type]
    ("max_deliver 0", lambda s, t: s.subscribe(t, handler, max_deliver=0), jk.ConfigError),
    ("start_seq -1", lambda s, t: s.subscribe(t, handler, start_seq=-1), jk.ConfigError),
    # declare_topic
    ("retention str", lambda s, t: s.declare_topic(t, retention="forever"), jk.ConfigError),  # type: ignore[arg-type]
    ("discard str", lambda s, t: s.declare_topic(t, discard="oldest"), jk.ConfigError),  # type: ignore[arg-type]
    ("max_age nan", lambda s, t: s.declare_topic(t, max_age=math.nan), jk.ConfigError),
    ("max_msgs -5", lambda s, t: s.declare_topic(t, max_msgs=-5), jk.ConfigError),
    ("replicas 0", lambda s, t: s.declare_topic(t, replicas=0), jk.ConfigError),
    # other calls
    ("request timeout nan", lambda s, t: s.request(t, b"", timeout=math.nan), jk.ConfigError),
    ("window 0", lambda s, t: s.publish_many(t, [b"x"], window=0), jk.ConfigError),
    ("delete_consumer int", lambda s, t: s.delete_consumer(t, 5), jk.InvalidTopicError),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("call", "error"), [(c, e) for _, c, e in BAD_CALLS], ids=[n for n, _, _ in BAD_CALLS]
)
async def test_bad_input_is_a_clear_error_and_the_stream_lives_on(
    js: jk.Stream, topic: str, call: Call, error: type[jk.JetkitError]
) -> None:
    reconnects = nc_of(js).stats["reconnects"]
    with pytest.raises(error):
        await call(js, topic)
    assert await js.publish(topic, b"still fine") is not None
    await js.healthy()
    assert nc_of(js).stats["reconnects"] == reconnects  # the server never dropped us


async def test_strings_for_enums_are_read_by_value(js: jk.Stream, topic: str) -> None:
    assert await js.declare_topic(topic, mode="core") is None  # type: ignore[arg-type]
    assert js.mode_for(topic) is jk.TopicMode.CORE
    with pytest.raises(jk.NotFoundError):
        await js.topic_info(topic)  # nothing was stored
    opts = subscribe_options(topic, ack="manual", start_at="ALL", backpressure="block")
    assert (opts.ack, opts.start_at) == (jk.AckPolicy.MANUAL, jk.StartAt.ALL)


def test_subscribe_options_are_checked_without_a_server() -> None:
    opts = subscribe_options(
        "t",
        backoff=[1, dt.timedelta(seconds=5)],
        ack=jk.AckPolicy.MANUAL,
        start_time=0,
        ack_wait=dt.timedelta(seconds=2),
    )
    assert opts.backoff == [1.0, 5.0]
    assert opts.start_at is jk.StartAt.BY_START_TIME
    assert opts.ack_wait == 2.0
    assert opts.jetstream_only() == ["ack", "backoff", "start_at", "start_time"]
    with pytest.raises(jk.ConfigError, match="ack_wait"):
        subscribe_options("t", ack_wait=0.05)
    with pytest.raises(jk.ConfigError, match=r"dlq 't.dead' lies inside the topic's pattern 't.>'"):
        subscribe_options("t.>", dlq="t.dead")
    with pytest.raises(jk.ConfigError, match=r"dlq 't.dead' must not be the topic itself"):
        subscribe_options("t.dead", dlq="t.dead")


async def test_jetstream_only_options_on_a_core_topic_agree_in_number(
    core: jk.Stream, topic: str
) -> None:
    async def handler(msg: jk.Message) -> None:
        pass

    with pytest.raises(jk.ConfigError, match=r"^durable needs a JetStream topic, but "):
        await core.subscribe(topic, handler, durable="one")
    with pytest.raises(jk.ConfigError, match=r"^durable, dlq need a JetStream topic, but "):
        await core.subscribe(topic, handler, durable="two", dlq=f"{topic}.dead")


async def test_handler_signatures(js: jk.Stream, topic: str) -> None:
    async def keyword_only(msg: jk.Message, *, flag: bool) -> None: ...

    with pytest.raises(jk.HandlerSignatureError, match="keyword-only"):
        await js.subscribe(topic, keyword_only)
    got: list[tuple[Any, ...]] = []

    async def star_args(*args: Any) -> None:
        got.append(args)

    sub = await js.subscribe(topic, star_args)
    await js.publish(topic, b"hello")
    await wait_until(lambda: len(got) == 1)
    assert isinstance(got[0][0], jk.Message) and len(got[0]) == 1
    await sub.stop()


async def test_nak_delay_is_checked(js: jk.Stream, topic: str) -> None:
    errors: list[BaseException] = []

    async def bad_nak(msg: jk.Message) -> None:
        try:
            await msg.nak(math.inf)
        except jk.ConfigError as exc:
            errors.append(exc)
            await msg.ack()

    sub = await js.subscribe(topic, bad_nak, ack=jk.AckPolicy.MANUAL)
    await js.publish(topic, b"x")
    await wait_until(lambda: len(errors) == 1)
    await sub.stop()


async def test_a_dropped_connection_is_restored(js: jk.Stream, topic: str) -> None:
    """If the server closes the connection anyway, jetkit reconnects (nats-py would not)."""
    got: list[bytes] = []

    async def record(data: bytes) -> None:
        got.append(data)

    sub = await js.subscribe(topic, record)
    reconnects = nc_of(js).stats["reconnects"]
    # bypass every check: a PUB over max_payload makes the server close the connection
    await nc_of(js)._send_command(b"PUB x %d\r\n" % (js.max_payload + 1))
    await nc_of(js)._flush_pending()
    await wait_until(lambda: nc_of(js).stats["reconnects"] > reconnects, timeout=20)
    await wait_until(lambda: nc_of(js).is_connected, timeout=20)
    await js.healthy()
    assert await js.publish(topic, b"after") is not None
    await wait_until(lambda: got == [b"after"])
    await sub.stop()


async def test_a_payload_of_exactly_max_payload_with_empty_headers_is_stored(
    js: jk.Stream, topic: str
) -> None:
    reconnects = nc_of(js).stats["reconnects"]
    ack = await js.publish(topic, b"x" * js.max_payload, headers={})
    assert ack is not None and nc_of(js).stats["reconnects"] == reconnects

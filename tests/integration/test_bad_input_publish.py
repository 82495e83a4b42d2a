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


@pytest.mark.parametrize("bad", ["", "a b", "a..b", "orders.*", "orders.>"])
async def test_invalid_topics_on_publish(core: jk.Stream, bad: str) -> None:
    with pytest.raises(jk.InvalidTopicError):
        await core.publish(bad, b"x")


async def test_payload_too_large(core: jk.Stream, topic: str) -> None:
    got: list[bytes] = []
    sub = await core.subscribe(topic, lambda m: got.append(m.data))
    with pytest.raises(jk.PayloadTooLargeError, match="max_payload"):
        await core.publish(topic, b"x" * (core.max_payload + 1))
    await core.publish(topic, b"small")  # the connection is still fine
    await wait_until(lambda: got == [b"small"])
    await sub.stop()


async def test_non_bytes_payload_and_unencodable_json(core: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.EncodeError, match="publish_json"):
        await core.publish(topic, "text")  # type: ignore[arg-type]
    with pytest.raises(jk.EncodeError):
        await core.publish_json(topic, object())


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"deliver_at": dt.datetime(2030, 1, 1)}, "no timezone"),
        ({"deliver_at": "2030-01-01T00:00:00Z"}, "timezone-aware datetime"),
        ({"deliver_at": 1700000000}, "timezone-aware datetime"),
        ({"deliver_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}, "in the past"),
        ({"deliver_after": -1}, ">= 0"),
        ({"deliver_after": math.nan}, "finite"),
        ({"deliver_after": math.inf}, "finite"),
        ({"deliver_after": True}, "must be a number"),
        ({"deliver_after": "5"}, "must be a number"),
        ({"deliver_after": 1, "deliver_at": dt.datetime.now(dt.UTC)}, "not both"),
        ({"ttl": 0.5}, "minimum is 1 second"),
        ({"ttl": -1}, ">= 1"),
        ({"ttl": math.nan}, "finite"),
        ({"ttl": False}, "must be a number"),
        ({"ttl": "1s"}, "must be a number"),
        ({"ttl": dt.timedelta(milliseconds=10)}, ">= 1"),
        ({"ttl": 10**400}, "<= 3.1536e"),
        ({"deliver_after": 10**400}, "<= 3.1536e"),
        (
            {"deliver_at": dt.datetime.max.replace(tzinfo=dt.timezone(-dt.timedelta(hours=5)))},
            "century",
        ),
        (
            {"deliver_at": dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=5)))},
            "in the past",
        ),
    ],
)
async def test_bad_times_are_refused_before_sending(
    js: jk.Stream, topic: str, options: dict[str, object], words: str
) -> None:
    with pytest.raises(jk.ConfigError, match=words):
        await js.publish(topic, b"x", **options)  # type: ignore[call-overload]
    with pytest.raises(jk.NotFoundError):
        await js.topic_info(topic)  # nothing was created, nothing stored


async def test_core_topics_are_refused(core: jk.Stream, topic: str) -> None:
    for options in ({"deliver_after": 1}, {"ttl": 5}):
        with pytest.raises(jk.ConfigError, match=r"core topic.*declare_topic"):
            await core.publish(topic, b"x", **options)  # type: ignore[call-overload]
    with pytest.raises(jk.ConfigError, match="core topic"):
        await core.publish_many(topic, [b"x"], ttl=5)


async def test_headers_jetkit_sets_are_refused(js: jk.Stream, topic: str) -> None:
    for name in ("Nats-Schedule", "nats-ttl", "Nats-Schedule-Target"):
        with pytest.raises(jk.InvalidHeaderError, match="use those arguments"):
            await js.publish(topic, b"x", headers={name: "1"}, deliver_after=1)

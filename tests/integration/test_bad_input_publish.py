"""Bad input to publishing: ``publish``, ``publish_json``, ``publish_many`` and
``cancel_scheduled`` refuse it with a clear JetkitError, checked before sending, and the
Stream lives on.

Many rows ran into a non-jetkit error, a silent misbehaviour or a dropped connection
before these checks existed. One table: each row is the Stream it runs on (``js``:
JetStream topics by default; ``core``: core topics), the call with the bad value, the
error and a fragment of its message (a regular expression, as ``pytest.raises(match=)``
reads it). After every row the same connection
still works and nothing was sent: on ``js`` the topic was not even made, on ``core`` a
subscriber of the topic gets only the sentinel published after the refusal.
(Refusals that depend on a topic's configuration or state: test_publishing.py and
test_schedules.py.)
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import pytest

import jetkit as jk
from conftest import Recorder, nc_of, outcome, wait_until

Call = Callable[[jk.Stream, str], object]


def recursive() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


def bad_time(options: dict[str, Any], words: str, name: str) -> Any:
    """A row: publish with a bad deliver_at/deliver_after/ttl, refused naming ``words``."""
    return pytest.param(
        "js", lambda s, t: s.publish(t, b"x", **options), jk.ConfigError, words, id=name
    )


# (stream, call, error, message fragment); the id names the bad value
BAD_PUBLISHES = [
    # headers and msg_id
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x", headers={"a": 1}),
        jk.InvalidHeaderError,
        "header 'a' must be a str, got int",
        id="header-value-int",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x", headers=[("a", "b")]),
        jk.InvalidHeaderError,
        "headers must be a dict of str to str, got list",
        id="headers-as-list",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x", headers={"a b": "c"}),
        jk.InvalidHeaderError,
        "header name 'a b' is not allowed",
        id="header-name-space",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x", headers={"a:": "c"}),
        jk.InvalidHeaderError,
        "header name 'a:' is not allowed",
        id="header-name-colon",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x", headers={"a": "b\r\nX: y"}),
        jk.InvalidHeaderError,
        "header 'a' contains a line break or NUL",
        id="header-value-CRLF",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x", headers={"a": "b\nc"}),
        jk.InvalidHeaderError,
        "header 'a' contains a line break or NUL",
        id="header-value-LF",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x", msg_id=5),
        jk.InvalidHeaderError,
        "msg_id must be a str, got int",
        id="msg_id-int",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x", msg_id="a\rb"),
        jk.InvalidHeaderError,
        "msg_id contains a line break or NUL",
        id="msg_id-CR",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x", msg_id=" "),
        jk.InvalidHeaderError,
        "msg_id must not be empty or blank",
        id="msg_id-blank",
    ),
    *(
        pytest.param(
            "js",
            lambda s, t, name=name: s.publish(t, b"x", headers={name: "1"}, deliver_after=1),
            jk.InvalidHeaderError,
            "use those arguments",
            id=f"header-jetkit-sets-{name}",
        )
        for name in ("Nats-Schedule", "nats-ttl", "Nats-Schedule-Target")
    ),
    # message size: payload under max_payload, but not with its headers; over it
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x" * s.max_payload, msg_id="id-1"),
        jk.PayloadTooLargeError,
        r"bytes plus \d+ bytes of headers, over the server's max_payload",
        id="payload-plus-headers",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish(t, b"x" * (s.max_payload - 100), headers={"h": "v" * 200}),
        jk.PayloadTooLargeError,
        r"bytes plus \d+ bytes of headers, over the server's max_payload",
        id="payload-plus-big-header",
    ),
    pytest.param(
        "core",
        lambda s, t: s.publish(t, b"x" * (s.max_payload + 1)),
        jk.PayloadTooLargeError,
        "max_payload",
        id="payload-over-max_payload",
    ),
    # topics
    pytest.param(
        "js",
        lambda s, t: s.publish("a." * 2048 + "b", b"x"),
        jk.InvalidTopicError,
        "is 4097 bytes long; the limit is 1024 bytes",
        id="topic-4-KB",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish("$JS.API.STREAM.DELETE.x", b""),
        jk.InvalidTopicError,
        r"starts with '\$'",
        id="topic-$JS",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish("a.\x01", b""),
        jk.InvalidTopicError,
        "contains whitespace or a control character",
        id="topic-control-char",
    ),
    *(
        pytest.param(
            "core",
            lambda s, t, bad=bad: s.publish(bad, b"x"),
            jk.InvalidTopicError,
            words,
            id=f"topic-{bad or 'empty'}",
        )
        for bad, words in [
            ("", "topic is empty"),
            ("a b", "contains whitespace or a control character"),
            ("a..b", "has an empty token"),
            ("orders.*", r"contains the wildcard '\*'; publish to a concrete topic"),
            ("orders.>", "contains the wildcard '>'; publish to a concrete topic"),
        ]
    ),
    # payloads and JSON
    pytest.param(
        "core",
        lambda s, t: s.publish(t, "text"),
        jk.EncodeError,
        "publish_json",
        id="payload-str",
    ),
    pytest.param(
        "core",
        lambda s, t: s.publish_json(t, object()),
        jk.EncodeError,
        "cannot encode object as JSON",
        id="json-unencodable",
    ),
    pytest.param(
        "js",
        lambda s, t: s.publish_json(t, recursive()),
        jk.EncodeError,
        "cannot encode dict as JSON",
        id="json-recursive",
    ),
    # publish_many
    pytest.param(
        "js",
        lambda s, t: s.publish_many(t, [b"x"], window=0),
        jk.ConfigError,
        "window must be >= 1, got 0",
        id="publish_many-window-0",
    ),
    # scheduled delivery and TTL
    bad_time({"deliver_at": dt.datetime(2030, 1, 1)}, "no timezone", "deliver_at-naive"),
    bad_time({"deliver_at": "2030-01-01T00:00:00Z"}, "timezone-aware datetime", "deliver_at-str"),
    bad_time({"deliver_at": 1700000000}, "timezone-aware datetime", "deliver_at-int"),
    bad_time(
        {"deliver_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}, "in the past", "deliver_at-2020"
    ),
    bad_time({"deliver_after": -1}, ">= 0", "deliver_after--1"),
    bad_time({"deliver_after": math.nan}, "finite", "deliver_after-nan"),
    bad_time({"deliver_after": math.inf}, "finite", "deliver_after-inf"),
    bad_time({"deliver_after": True}, "must be a number", "deliver_after-True"),
    bad_time({"deliver_after": "5"}, "must be a number", "deliver_after-str"),
    bad_time(
        {"deliver_after": 1, "deliver_at": dt.datetime.now(dt.UTC)},
        "not both",
        "deliver_after-and-deliver_at",
    ),
    bad_time({"ttl": 0.5}, "minimum is 1 second", "ttl-0.5"),
    bad_time({"ttl": -1}, ">= 1", "ttl--1"),
    bad_time({"ttl": math.nan}, "finite", "ttl-nan"),
    bad_time({"ttl": False}, "must be a number", "ttl-False"),
    bad_time({"ttl": "1s"}, "must be a number", "ttl-str"),
    bad_time({"ttl": dt.timedelta(milliseconds=10)}, ">= 1", "ttl-10ms"),
    bad_time({"ttl": 10**400}, "<= 3.1536e", "ttl-10**400"),
    bad_time({"deliver_after": 10**400}, "<= 3.1536e", "deliver_after-10**400"),
    bad_time(
        {"deliver_at": dt.datetime.max.replace(tzinfo=dt.timezone(-dt.timedelta(hours=5)))},
        "century",
        "deliver_at-max",
    ),
    bad_time(
        {"deliver_at": dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=5)))},
        "in the past",
        "deliver_at-min",
    ),
    pytest.param(
        "core",
        lambda s, t: s.publish(t, b"x", deliver_after=1),
        jk.ConfigError,
        r"core topic.*declare_topic",
        id="core-topic-deliver_after",
    ),
    pytest.param(
        "core",
        lambda s, t: s.publish(t, b"x", ttl=5),
        jk.ConfigError,
        r"core topic.*declare_topic",
        id="core-topic-ttl",
    ),
    pytest.param(
        "core",
        lambda s, t: s.publish_many(t, [b"x"], ttl=5),
        jk.ConfigError,
        "core topic",
        id="core-topic-publish_many-ttl",
    ),
    pytest.param(
        "js",
        lambda s, t: s.cancel_scheduled(t),
        jk.ConfigError,
        "msg_id",
        id="cancel_scheduled-topic-without-msg_id",
    ),
    pytest.param(
        "js",
        lambda s, t: s.cancel_scheduled(42),
        jk.ConfigError,
        "ScheduledMessage",
        id="cancel_scheduled-int",
    ),
]


@pytest.mark.parametrize(("on", "call", "error", "match"), BAD_PUBLISHES)
async def test_a_bad_publish_is_refused_before_sending_and_the_stream_lives_on(
    on: str,
    call: Call,
    error: type[jk.JetkitError],
    match: str,
    topic: str,
    core: jk.Stream,
    js: jk.Stream,
) -> None:
    s = {"core": core, "js": js}[on]
    witness = Recorder()
    sub = await s.subscribe(topic, witness) if on == "core" else None
    reconnects = nc_of(s).stats["reconnects"]
    with pytest.raises(error, match=match):
        await outcome(call(s, topic))
    assert nc_of(s).stats["reconnects"] == reconnects  # the server never dropped us
    if sub is None:
        with pytest.raises(jk.NotFoundError):
            await s.topic_info(topic)  # nothing was stored: the topic was not even made
        assert await s.publish(topic, b"still fine") is not None
        await s.delete_topic(topic)  # (the session's server serves many tests)
    else:
        await s.publish(topic, b"sentinel")
        await wait_until(lambda: witness.data != [])
        assert witness.data == [b"sentinel"]  # the refused message was never sent
        await sub.stop()
    await s.healthy()

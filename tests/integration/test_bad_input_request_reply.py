"""Bad input to request/reply: ``request`` and ``respond`` refuse a bad topic, header,
payload or timeout with a clear error before sending or subscribing, and the Stream lives
on.

One table: each row is the Stream it runs on (``js`` or ``core``; a request is a core
message on both), the call with the bad value, the error and a fragment of its message (a
regular expression, as ``pytest.raises(match=)`` reads it). After every row no responder
was left subscribed, the connection was never dropped, and a request to a responder on
the test's topic is answered. (A responder that raises, or no responder at all:
test_request_reply.py.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import jetkit as jk
from conftest import nc_of, outcome

Call = Callable[[jk.Stream, str], object]


def handler(msg: jk.Message) -> None:
    return None


# (stream, call, error, message fragment); the id names the bad value
BAD_REQUESTS: list[Any] = [
    pytest.param(
        "js",
        lambda s, t: s.request(t, b"x", headers={"k": None}),
        jk.InvalidHeaderError,
        "header 'k' must be a str, got NoneType",
        id="request-header-None",
    ),
    pytest.param(
        "js",
        lambda s, t: s.request("$JS.API.INFO", b""),
        jk.InvalidTopicError,
        r"starts with '\$'",
        id="request-topic-$JS",
    ),
    pytest.param(
        "core",
        lambda s, t: s.request("a b", b"x"),
        jk.InvalidTopicError,
        "contains whitespace or a control character",
        id="request-topic-a-b",
    ),
    pytest.param(
        "core",
        lambda s, t: s.request("a.b", b"x" * (s.max_payload + 1)),
        jk.PayloadTooLargeError,
        "max_payload",
        id="request-payload-over-max_payload",
    ),
    pytest.param(
        "js",
        lambda s, t: s.request(t, b"", timeout=math.nan),
        jk.ConfigError,
        "timeout must be a finite number, got nan",
        id="request-timeout-nan",
    ),
    pytest.param(
        "js",
        lambda s, t: s.respond("$JS.API.>", handler),
        jk.InvalidTopicError,
        r"starts with '\$'",
        id="respond-topic-$JS",
    ),
]


@pytest.mark.parametrize(("on", "call", "error", "match"), BAD_REQUESTS)
async def test_a_bad_request_or_responder_is_refused_and_the_stream_lives_on(
    on: str,
    call: Call,
    error: type[jk.JetkitError],
    match: str,
    topic: str,
    core: jk.Stream,
    js: jk.Stream,
) -> None:
    s = {"core": core, "js": js}[on]
    subscriptions = list(s.subscriptions)
    reconnects = nc_of(s).stats["reconnects"]
    with pytest.raises(error, match=match):
        await outcome(call(s, topic))
    assert s.subscriptions == subscriptions  # no responder was left subscribed
    assert nc_of(s).stats["reconnects"] == reconnects  # the server never dropped us

    async def echo(data: bytes) -> bytes:
        return data

    responder = await s.respond(topic, echo)
    assert (await s.request(topic, b"still fine")).data == b"still fine"
    await responder.stop()
    await s.healthy()

"""Request/reply: replies, JSON, remote errors, no responders, timeouts, queue groups.
(Refused input: test_bad_input_request_reply.py.)"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import jetkit as jk


@dataclasses.dataclass
class Quote:
    symbol: str
    qty: int


@dataclasses.dataclass
class Price:
    symbol: str
    total: float


async def test_a_responder_returning_bytes_answers_the_request(core: jk.Stream, topic: str) -> None:
    async def upper(data: bytes) -> bytes:
        return data.upper()

    sub = await core.respond(topic, upper)
    reply = await core.request(topic, b"hello")
    assert isinstance(reply, jk.Message)
    assert reply.data == b"HELLO"
    await sub.stop()


async def test_request_json_decodes_the_reply_into_the_type_asked_for(
    core: jk.Stream, topic: str
) -> None:
    def price(q: Quote) -> Price:  # a sync responder
        return Price(q.symbol, q.qty * 2.5)

    sub = await core.respond(topic, price)
    result = await core.request_json(topic, Quote("ABC", 4), Price)
    assert result == Price("ABC", 10.0)
    as_dict = await core.request_json(topic, {"symbol": "X", "qty": 1}, dict)
    assert as_dict == {"symbol": "X", "total": 2.5}
    await sub.stop()


async def test_responder_exception_becomes_remote_error(core: jk.Stream, topic: str) -> None:
    async def broken(data: bytes) -> bytes:
        raise ValueError("no such item")

    sub = await core.respond(topic, broken)
    with pytest.raises(jk.RemoteError) as info:
        await core.request(topic, b"x")
    assert info.value.type == "ValueError"
    assert info.value.message == "no such item"
    assert sub.stats.failed == 1
    await sub.stop()


async def test_undecodable_request_is_a_remote_decode_error(core: jk.Stream, topic: str) -> None:
    async def price(q: Quote) -> Price:
        return Price(q.symbol, 0)

    sub = await core.respond(topic, price)
    with pytest.raises(jk.RemoteError) as info:
        await core.request(topic, b"{not json")
    assert info.value.type == "DecodeError"
    await sub.stop()


async def test_a_reply_over_max_payload_is_a_remote_error(core: jk.Stream, topic: str) -> None:
    async def huge(data: bytes) -> bytes:
        return b"x" * (core.max_payload + 1) if data == b"big" else data

    sub = await core.respond(topic, huge)
    reconnects = (await core.health())["connection"]["reconnects"]
    with pytest.raises(jk.RemoteError) as info:
        await core.request(topic, b"big")
    assert info.value.type == "PayloadTooLargeError"
    assert str(core.max_payload) in info.value.message
    assert sub.stats.failed == 1
    # the connection was not dropped by the server and the responder still answers
    assert (await core.request(topic, b"small")).data == b"small"
    assert (await core.health())["connection"]["reconnects"] == reconnects
    await sub.stop()


async def test_a_request_nobody_answers_raises_no_responders_error(
    core: jk.Stream, topic: str
) -> None:
    with pytest.raises(jk.NoRespondersError, match="respond"):
        await core.request(topic, b"x", timeout=2)


async def test_a_request_to_a_slow_responder_times_out_with_an_error_of_both_kinds(
    core: jk.Stream, topic: str
) -> None:
    async def slow(data: bytes) -> bytes:
        await asyncio.sleep(5)
        return data

    sub = await core.respond(topic, slow)
    with pytest.raises(jk.TimeoutError) as info:
        await core.request(topic, b"x", timeout=0.2)
    assert isinstance(info.value, TimeoutError)  # also the builtin
    await sub.stop()


async def test_responders_in_a_queue_group_share_requests(core: jk.Stream, topic: str) -> None:
    seen: dict[str, int] = {"a": 0, "b": 0}

    def make(name: str):  # type: ignore[no-untyped-def]
        async def handler(data: bytes) -> str:
            seen[name] += 1
            return name

        return handler

    sa = await core.respond(topic, make("a"), queue_group="svc")
    sb = await core.respond(topic, make("b"), queue_group="svc")
    replies = await asyncio.gather(*(core.request(topic, b"") for _ in range(60)))
    assert {r.data for r in replies} <= {b"a", b"b"}
    assert seen["a"] + seen["b"] == 60 and seen["a"] and seen["b"]
    await sa.stop()
    await sb.stop()


async def test_request_is_core_even_on_a_jetstream_stream(js: jk.Stream, topic: str) -> None:
    async def echo(data: bytes) -> bytes:
        return data

    sub = await js.respond(topic, echo)
    assert (await js.request(topic, b"ping")).data == b"ping"
    await sub.stop()

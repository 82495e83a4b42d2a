"""Consuming: subscribe and its handlers (decoding by annotation, sync handlers, failing
ones), fan-out and queue groups, concurrency, buffers and backpressure, drain/stop and the
decorator, mostly on core topics. (JetStream consumers and their acks:
test_jetstream_consumers.py; refused input: test_bad_input_subscribe.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest

import jetkit as jk
from conftest import nc_of, wait_until


@dataclasses.dataclass
class Order:
    id: str
    amount: float


class OrderStruct(msgspec.Struct):
    id: str
    amount: float


class OrderDict(TypedDict):
    id: str
    amount: float


class OrderModel(pydantic.BaseModel):
    id: str
    amount: float


async def test_every_core_subscriber_gets_every_message_and_publish_returns_none(
    core: jk.Stream, topic: str
) -> None:
    a: list[bytes] = []
    b: list[bytes] = []
    sa = await core.subscribe(topic, lambda m: a.append(m.data))
    sb = await core.subscribe(topic, lambda m: b.append(m.data))
    assert await core.publish(topic, b"one") is None
    await core.publish(topic, b"two", headers={"k": "v"})
    await wait_until(lambda: len(a) == 2 and len(b) == 2)
    assert a == b == [b"one", b"two"]
    assert sa.stats.received == 2
    await sa.stop()
    await sb.stop()


async def test_subscribe_sends_its_sub_before_the_round_trip_that_ends_it(
    core: jk.Stream, topic: str
) -> None:
    """``subscribe`` returns after a round trip (PING, PONG) so that a publish from any
    connection right after it reaches the subscription. nats-py 2.16 writes that PING
    straight to the socket while the SUB still waits for its flusher task: the server
    answered before it read the SUB, and a publish from another connection could find
    no interest (test_second_open_attaches_and_closing_it_leaves_the_server lost its
    message about once in 200 runs on a loaded machine). What is written to the socket
    shows the order (everything is still sent to the real server)."""
    transport: Any = nc_of(core)._transport
    written: list[bytes] = []
    write, writelines = transport.write, transport.writelines

    def spy_write(data: bytes) -> None:
        written.append(bytes(data))
        write(data)

    def spy_writelines(lines: Any) -> None:
        lines = [bytes(line) for line in lines]
        written.extend(lines)
        writelines(lines)

    transport.write, transport.writelines = spy_write, spy_writelines
    try:
        sub = await core.subscribe(topic, lambda m: None)
    finally:
        del transport.write, transport.writelines  # the class's own again
    sent = b"".join(written)
    at = sent.find(b"SUB " + topic.encode() + b" ")
    assert at >= 0, sent
    assert b"PING\r\n" not in sent[:at] and b"PING\r\n" in sent[at:], sent
    await sub.stop()


@pytest.mark.parametrize("kind", [Order, OrderStruct, OrderModel])
async def test_handler_annotation_decides_decoding(core: jk.Stream, topic: str, kind: type) -> None:
    got: list[object] = []

    async def handler(order):  # type: ignore[no-untyped-def]
        got.append(order)

    handler.__annotations__ = {"order": kind}  # a local type: set it as a real annotation

    sub = await core.subscribe(topic, handler)
    await core.publish_json(topic, kind(id="o-1", amount=11.99))
    await wait_until(lambda: len(got) == 1)
    assert isinstance(got[0], kind)
    assert got[0].id == "o-1" and got[0].amount == 11.99  # type: ignore[attr-defined]
    await sub.stop()


async def test_each_annotation_gets_its_type_and_an_unannotated_handler_the_message(
    core: jk.Stream, topic: str
) -> None:
    seen: dict[str, object] = {}

    def as_typed(v: OrderDict) -> None:
        seen["typed"] = v

    def as_dict(v: dict) -> None:  # type: ignore[type-arg]
        seen["dict"] = v

    def as_bytes(v: bytes) -> None:
        seen["bytes"] = v

    def as_str(v: str) -> None:
        seen["str"] = v

    def as_msg(m: jk.Message) -> None:
        seen["msg"] = m

    def unannotated(m):  # type: ignore[no-untyped-def]
        seen["plain"] = m

    async def value_and_msg(v: OrderDict, m: jk.Message) -> None:
        seen["pair"] = (v, m.topic)

    subs = [
        await core.subscribe(topic, h)
        for h in (as_typed, as_dict, as_bytes, as_str, as_msg, unannotated, value_and_msg)
    ]
    await core.publish(topic, b'{"id": "x", "amount": 2.5}')
    await wait_until(lambda: len(seen) == 7)
    assert seen["typed"] == seen["dict"] == {"id": "x", "amount": 2.5}
    assert seen["bytes"] == b'{"id": "x", "amount": 2.5}'
    assert seen["str"] == '{"id": "x", "amount": 2.5}'
    assert isinstance(seen["msg"], jk.Message) and isinstance(seen["plain"], jk.Message)
    assert seen["pair"] == ({"id": "x", "amount": 2.5}, topic)
    for s in subs:
        await s.stop()


async def test_sync_handlers_run_in_a_thread(core: jk.Stream, topic: str) -> None:
    threads: list[int] = []
    sub = await core.subscribe(topic, lambda m: threads.append(threading.get_ident()))
    await core.publish(topic, b"x")
    await wait_until(lambda: len(threads) == 1)
    assert threads[0] != threading.get_ident()
    await sub.stop()


async def test_undecodable_payload_is_counted_and_skipped(core: jk.Stream, topic: str) -> None:
    got: list[Order] = []

    async def handler(o: Order) -> None:
        got.append(o)

    sub = await core.subscribe(topic, handler)
    await core.publish(topic, b"not json")
    await core.publish(topic, b'{"id": 1}')
    await core.publish_json(topic, Order("ok", 1))
    await wait_until(lambda: len(got) == 1)
    assert sub.stats.failed == 2
    await sub.stop()


async def test_failing_handler_is_counted_not_fatal(core: jk.Stream, topic: str) -> None:
    got: list[bytes] = []

    async def handler(data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("boom")
        got.append(data)

    sub = await core.subscribe(topic, handler)
    await core.publish(topic, b"boom")
    await core.publish(topic, b"fine")
    await wait_until(lambda: got == [b"fine"])
    assert sub.stats.failed == 1
    await sub.stop()


async def test_a_core_queue_group_gives_each_message_to_one_member_and_work_to_both(
    core: jk.Stream, topic: str
) -> None:
    a: list[bytes] = []
    b: list[bytes] = []
    sa = await core.subscribe(topic, lambda m: a.append(m.data), queue_group="workers")
    sb = await core.subscribe(topic, lambda m: b.append(m.data), queue_group="workers")
    for i in range(200):
        await core.publish(topic, str(i).encode())
    await wait_until(lambda: len(a) + len(b) == 200)
    # each message exactly once, to one member of the group
    assert sorted(a + b, key=int) == [str(i).encode() for i in range(200)]
    assert a and b  # both members got work
    await sa.stop()
    await sb.stop()


async def test_concurrency_runs_handlers_in_parallel(core: jk.Stream, topic: str) -> None:
    running = 0
    peak = 0
    release = asyncio.Event()

    async def handler(data: bytes) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    sub = await core.subscribe(topic, handler, concurrency=4)
    for _ in range(8):
        await core.publish(topic, b"x")
    await wait_until(lambda: peak == 4)
    release.set()
    await sub.drain(timeout=5)
    assert peak == 4


async def test_concurrency_one_keeps_order(core: jk.Stream, topic: str) -> None:
    got: list[int] = []

    async def handler(v: int) -> None:
        await asyncio.sleep(0)
        got.append(v)

    sub = await core.subscribe(topic, handler)
    for i in range(100):
        await core.publish_json(topic, i)
    await wait_until(lambda: len(got) == 100)
    assert got == list(range(100))
    await sub.stop()


@pytest.mark.parametrize("policy", [jk.Backpressure.DROP_NEWEST, jk.Backpressure.DROP_OLDEST])
async def test_drop_policies_bound_the_buffer_and_count(
    core: jk.Stream, topic: str, policy: jk.Backpressure
) -> None:
    release = asyncio.Event()
    handled: list[int] = []

    async def handler(v: int) -> None:
        await release.wait()
        handled.append(v)

    sub = await core.subscribe(topic, handler, buffer_size=2, backpressure=policy)
    for i in range(10):
        await core.publish_json(topic, i)
    await wait_until(lambda: sub.stats.dropped >= 7)
    assert sub.buffered <= 2
    release.set()
    await sub.drain(timeout=5)
    assert sub.stats.dropped + len(handled) == 10
    assert 7 <= sub.stats.dropped <= 8
    if policy is jk.Backpressure.DROP_NEWEST:
        # the early ones survive (which exactly depends on when the handler took the
        # first one), the newest are dropped
        assert handled == sorted(handled) and 9 not in handled and handled[0] == 0
    else:
        assert handled[-2:] == [8, 9]  # the newest survive


async def test_block_never_stalls_other_subscriptions(core: jk.Stream, topic: str) -> None:
    release = asyncio.Event()
    slow_got: list[bytes] = []
    fast_got: list[bytes] = []

    async def slow(data: bytes) -> None:
        await release.wait()
        slow_got.append(data)

    slow_sub = await core.subscribe(topic, slow, buffer_size=4)
    fast_sub = await core.subscribe(topic, lambda m: fast_got.append(m.data))
    for i in range(50):
        await core.publish(topic, str(i).encode())
    await wait_until(lambda: len(fast_got) == 50)
    assert slow_sub.buffered <= 2 * 4  # the buffer and the BLOCK stage in front of it
    release.set()
    # beyond buffer_size in the buffer and buffer_size in nats-py's queue, the
    # slow-consumer protection drops; every message is either handled or counted
    await wait_until(lambda: len(slow_got) + slow_sub.stats.dropped == 50)
    assert slow_sub.stats.dropped > 0
    await slow_sub.stop()
    await fast_sub.stop()


async def test_drain_finishes_buffered_messages(core: jk.Stream, topic: str) -> None:
    handled: list[int] = []

    async def handler(v: int) -> None:
        await asyncio.sleep(0.01)
        handled.append(v)

    sub = await core.subscribe(topic, handler)
    for i in range(20):
        await core.publish_json(topic, i)
    await wait_until(lambda: sub.stats.received == 20)
    await sub.drain(timeout=10)
    assert handled == list(range(20))
    assert sub.closed
    witness: list[int] = []

    async def watch(v: int) -> None:
        witness.append(v)

    other = await core.subscribe(topic, watch)
    await core.publish_json(topic, 99)
    await core.publish_json(topic, 100)  # the sentinel: 99 was delivered before it
    await wait_until(lambda: witness == [99, 100])
    assert handled == list(range(20))
    await other.stop()


async def test_a_drain_that_times_out_raises_and_still_closes_the_subscription(
    core: jk.Stream, topic: str
) -> None:
    async def stuck(data: bytes) -> None:
        await asyncio.sleep(30)

    sub = await core.subscribe(topic, stuck)
    await core.publish(topic, b"x")
    await wait_until(lambda: sub.stats.received == 1)
    with pytest.raises(jk.TimeoutError):
        await sub.drain(timeout=0.2)
    assert sub.closed


async def test_decorator_registers_before_next_publish(core: jk.Stream, topic: str) -> None:
    got: list[Order] = []

    @core.subscriber(topic)
    async def on_order(order: Order) -> None:
        got.append(order)

    await core.publish_json(topic, Order("d", 3))
    await wait_until(lambda: len(got) == 1)
    assert got[0] == Order("d", 3)
    await on_order(Order("direct", 0))  # still a plain function
    for sub in core.subscriptions:
        if sub.topic == topic:
            await sub.stop()


async def test_core_message_settlement_is_a_no_op(core: jk.Stream, topic: str) -> None:
    done = asyncio.Event()

    async def handler(m: jk.Message) -> None:
        await m.ack()
        await m.nak()
        await m.term()
        assert m.seq is None and m.num_delivered == 1 and not m.is_jetstream
        done.set()

    sub = await core.subscribe(topic, handler)
    await core.publish(topic, b"x")
    await asyncio.wait_for(done.wait(), 5)
    await sub.stop()


async def test_block_in_worker_mode_stops_taking_and_resumes(core: jk.Stream, topic: str) -> None:
    release = asyncio.Event()
    started: list[bytes] = []
    done: list[bytes] = []
    other: list[bytes] = []

    async def slow(data: bytes) -> None:
        started.append(data)
        await release.wait()
        done.append(data)

    async def fast(data: bytes) -> None:
        other.append(data)

    sub = await core.subscribe(
        topic, slow, concurrency=2, buffer_size=2, backpressure=jk.Backpressure.BLOCK
    )
    witness = await core.subscribe(topic, fast)
    try:
        # one at a time: once the other subscription has a message, so has this one
        for i in range(7):
            await core.publish(topic, b"m%d" % i)
            await wait_until(lambda n=i + 1: len(other) == n)  # type: ignore[misc]
        # 2 in the handlers, 2 in the buffer; m4 and m5 wait in front of it (as many as
        # it holds), m6 finds that full too and is dropped
        assert started == [b"m0", b"m1"]
        assert (sub.buffered, sub.stats.received, sub.stats.dropped) == (4, 7, 1)
    finally:
        release.set()
    await wait_until(lambda: len(done) == 6)
    assert sorted(done) == [b"m%d" % i for i in range(6)]
    assert (sub.stats.received, sub.stats.dropped, sub.stats.failed) == (7, 1, 0)
    await core.publish(topic, b"after")  # it keeps taking messages
    await wait_until(lambda: b"after" in done)
    await sub.stop()
    await witness.stop()


async def test_a_star_args_handler_gets_only_the_message(js: jk.Stream, topic: str) -> None:
    got: list[tuple[Any, ...]] = []

    async def star_args(*args: Any) -> None:
        got.append(args)

    sub = await js.subscribe(topic, star_args)
    await js.publish(topic, b"hello")
    await wait_until(lambda: len(got) == 1)
    assert isinstance(got[0][0], jk.Message) and len(got[0]) == 1
    await sub.stop()

"""JetStream consumers and their acks: durables and ephemerals, queue groups, the ack
policies and settling by hand, start positions, flow control (the buffer bounds what is
pulled), incompatible or updated durables, a durable deleted behind the Stream's back, and
what a drain hands back. (Retries and the DLQ: test_retries_dlq.py.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math

import pytest

import jetkit as jk
from conftest import Recorder, consumer_settled, wait_until, wait_until_async


async def test_two_durables_each_receive_every_message(js: jk.Stream, topic: str) -> None:
    r1, r2 = Recorder(), Recorder()
    s1 = await js.subscribe(topic, r1, durable="one")
    s2 = await js.subscribe(topic, r2, durable="two")
    for i in range(20):
        await js.publish(topic, str(i).encode())
    await wait_until(lambda: len(r1.msgs) == 20 and len(r2.msgs) == 20)
    assert r1.data == r2.data == [str(i).encode() for i in range(20)]
    names = {c.name for c in await js.consumers(topic)}
    assert {"one", "two"} <= names
    await s1.stop()
    await s2.stop()


async def test_queue_group_shares_one_consumer(js: jk.Stream, topic: str) -> None:
    r1, r2 = Recorder(), Recorder()
    s1 = await js.subscribe(topic, r1, queue_group="workers", buffer_size=4)
    s2 = await js.subscribe(topic, r2, queue_group="workers", buffer_size=4)
    for i in range(100):
        await js.publish(topic, str(i).encode())
    await wait_until(lambda: len(r1.msgs) + len(r2.msgs) == 100)
    # each message exactly once, to one member of the group
    assert sorted(r1.data + r2.data, key=int) == [str(i).encode() for i in range(100)]
    assert [c.name for c in await js.consumers(topic)] == ["workers"]
    await s1.stop()
    await s2.stop()


async def test_ephemeral_consumer_is_deleted_on_stop(js: jk.Stream, topic: str) -> None:
    sub = await js.subscribe(topic, Recorder())
    assert len(await js.consumers(topic)) == 1
    await sub.stop()
    assert await js.consumers(topic) == []


async def test_auto_ack_does_not_retry(js: jk.Stream, topic: str) -> None:
    rec = Recorder(fail={b"bad"})
    sub = await js.subscribe(topic, rec, durable="auto", max_deliver=3, ack_wait=1)
    await js.publish(topic, b"bad")
    await js.publish(topic, b"good")
    await wait_until(lambda: len(rec.msgs) == 2)
    await js.publish(topic, b"sentinel")  # a nak'ed "bad" would be redelivered before it
    await wait_until(lambda: b"sentinel" in rec.data)
    # every delivery acknowledged on the server: nothing can come back after ack_wait
    await wait_until_async(lambda: consumer_settled(js, topic, "auto"))
    assert rec.data == [b"bad", b"good", b"sentinel"]
    assert sub.stats.failed == 1 and sub.stats.acked == 3 and sub.stats.retried == 0
    info = await js.consumer_info(topic, "auto")
    assert info.redelivered == 0
    await sub.stop()


async def test_handler_settles_itself_and_never_twice(js: jk.Stream, topic: str) -> None:
    errors: list[Exception] = []
    seen: list[tuple[bytes, int]] = []

    async def handler(msg: jk.Message) -> None:
        seen.append((msg.data, msg.num_delivered))
        if msg.data == b"ack":
            await msg.in_progress()
            await msg.ack()
            try:
                await msg.ack()
            except jk.AlreadySettledError as exc:
                errors.append(exc)
        elif msg.data == b"nak" and msg.num_delivered == 1:
            await msg.nak(delay=0.2)
        elif msg.data == b"nak":
            await msg.ack(wait=True)
        elif msg.data == b"term":
            await msg.term("not for us")
            raise RuntimeError("after term: must not nak")

    sub = await js.subscribe(topic, handler, durable="self", ack=jk.AckPolicy.MANUAL, max_deliver=5)
    for payload in (b"ack", b"nak", b"term"):
        await js.publish(topic, payload)
    await wait_until(lambda: (b"nak", 2) in seen and sub.stats.terminated == 1)
    await js.publish(topic, b"sentinel")  # acked by jetkit (MANUAL, handler returns)
    await wait_until(lambda: (b"sentinel", 1) in seen)
    await wait_until_async(lambda: consumer_settled(js, topic, "self"))
    assert sorted(seen) == [(b"ack", 1), (b"nak", 1), (b"nak", 2), (b"sentinel", 1), (b"term", 1)]
    assert len(errors) == 1
    assert sub.stats.acked == 3 and sub.stats.naked == 1 and sub.stats.retried == 0
    await sub.stop()


async def test_ack_none_never_acks_and_replays_everything(js: jk.Stream, topic: str) -> None:
    rec = Recorder()
    for i in range(10):
        await js.publish(topic, str(i).encode())
    sub = await js.subscribe(
        topic, rec, durable="none", ack=jk.AckPolicy.NONE, start_at=jk.StartAt.ALL
    )
    await wait_until(lambda: len(rec.msgs) == 10)
    assert rec.data == [str(i).encode() for i in range(10)]
    info = await js.consumer_info(topic, "none")
    assert info.ack_policy == "none" and info.ack_pending == 0 and info.delivered_seq == 10
    assert sub.stats.acked == 0
    await sub.stop()


async def test_each_start_position_delivers_from_its_own_place(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(f"{topic}.*")
    for i in range(3):
        await js.publish(f"{topic}.a", f"a{i}".encode())
    await js.publish(f"{topic}.b", b"b0")
    for i in range(3, 5):
        await js.publish(f"{topic}.a", f"a{i}".encode())
    await asyncio.sleep(0.05)
    cut = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.05)
    await js.publish(f"{topic}.a", b"a5")
    await js.publish(f"{topic}.b", b"b1")

    last_seq = (await js.topic_info(f"{topic}.*")).last_seq
    everything = [b"a0", b"a1", b"a2", b"b0", b"a3", b"a4", b"a5", b"b1"]
    sentinels = iter(range(100))

    async def collect(**opts: object) -> list[bytes]:
        """What a new consumer delivers, up to a sentinel published after subscribing
        (concurrency 1 keeps stream order, so everything before it has arrived)."""
        rec = Recorder()
        sub = await js.subscribe(f"{topic}.*", rec, **opts)  # type: ignore[arg-type]
        sentinel = b"end-%d" % next(sentinels)
        await js.publish(f"{topic}.end", sentinel)
        await wait_until(lambda: sentinel in rec.data)
        await sub.stop()
        assert rec.data[-1] == sentinel
        return [d for d in rec.data if not d.startswith(b"end-")]

    assert await collect(start_time=cut - dt.timedelta(hours=1)) == everything
    assert await collect(start_at=jk.StartAt.BY_START_TIME, start_time=cut) == [b"a5", b"b1"]
    assert await collect(start_time=cut.timestamp()) == [b"a5", b"b1"]
    assert await collect(start_at=jk.StartAt.LAST_PER_SUBJECT) == [b"a5", b"b1"]
    assert await collect(start_seq=last_seq - 1) == [b"a5", b"b1"]
    assert await collect(start_at=jk.StartAt.ALL) == everything


async def test_start_new_only_sees_new_messages(js: jk.Stream, topic: str) -> None:
    await js.publish(topic, b"old")
    rec = Recorder()
    sub = await js.subscribe(topic, rec)
    await js.publish(topic, b"new")
    # stream order: "old" would have been delivered before "new"
    await wait_until(lambda: b"new" in rec.data)
    assert rec.data == [b"new"]
    await sub.stop()


def _unseen(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "jetkit" and r.levelno == logging.INFO and "StartAt.NEW" in r.getMessage()
    ]


async def test_a_new_durable_at_new_says_what_it_will_not_see(
    js: jk.Stream, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jetkit")
    await js.declare_topic(f"{topic}.>")  # one stream, and a durable on part of it
    for sub_topic, n in ((f"{topic}.a", 3), (f"{topic}.b", 2)):
        await js.publish_many(sub_topic, [b"stored"] * n)
    sub = await js.subscribe(f"{topic}.a", Recorder(), durable="late")
    (line,) = _unseen(caplog)
    assert line == (
        f"new durable 'late' starts at StartAt.NEW: the 3 messages already stored on "
        f"'{topic}.a' are not delivered to it, only those published from now on; to "
        "process them too, subscribe with start_at=jk.StartAt.ALL (or "
        f"reset_consumer('{topic}.a', 'late', start_at=jk.StartAt.ALL))"
    )
    await sub.stop()
    caplog.clear()
    # resumed, at ALL, ephemeral, on a topic without messages: nothing to say
    sub = await js.subscribe(f"{topic}.a", Recorder(), durable="late")
    await sub.stop()
    all_sub = await js.subscribe(f"{topic}.a", Recorder(), durable="all", start_at=jk.StartAt.ALL)
    await all_sub.stop()
    ephemeral = await js.subscribe(f"{topic}.a", Recorder())
    await ephemeral.stop()
    empty = await js.subscribe(f"{topic}.c", Recorder(), durable="empty")
    await empty.stop()
    assert _unseen(caplog) == []
    # a topic with a stream of its own: the whole stream is counted
    await js.publish_many(f"{topic}-own", [b"x"] * 4)
    whole = await js.subscribe(f"{topic}-own", Recorder(), durable="whole")
    await whole.stop()
    (line,) = _unseen(caplog)
    assert "the 4 messages already stored on " in line


async def test_a_full_buffer_stops_pulling_and_the_rest_waits_on_the_server(
    js: jk.Stream, topic: str
) -> None:
    await js.publish_many(topic, [str(i).encode() for i in range(60)])
    release = asyncio.Event()
    held: list[int] = []  # at each take: what the buffer held just before it
    handled = 0

    async def slow(data: bytes) -> None:
        nonlocal handled
        # the buffer only shrinks when a worker takes a message, so its largest size
        # is always seen right before a take (the worker reaches here without yielding)
        held.append(sub.buffered + 1)
        await release.wait()
        handled += 1

    sub = await js.subscribe(
        topic,
        slow,
        durable="bounded",
        start_at=jk.StartAt.ALL,
        ack=jk.AckPolicy.MANUAL,
        buffer_size=8,
        concurrency=2,
    )
    await wait_until(lambda: sub.buffered == 8 and sub.stats.received == 10)

    async def pulls_done() -> bool:
        # no pull request left on the server: nothing more can be delivered unasked
        info = await js.consumer_info(topic, "bounded")
        return info.waiting == 0 and info.ack_pending == 10

    await wait_until_async(pulls_done)
    info = await js.consumer_info(topic, "bounded")
    assert (sub.buffered, sub.stats.received, info.pending) == (8, 10, 50)
    release.set()
    await wait_until(lambda: handled == 60)
    assert len(held) == 60 and max(held) == 8
    await wait_until_async(lambda: consumer_settled(js, topic, "bounded"))
    await sub.stop()


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 3])
async def test_buffered_and_slow_messages_are_not_redelivered(
    js: jk.Stream, topic: str, concurrency: int
) -> None:
    seen: list[int] = []

    async def slow(msg: jk.Message) -> None:
        seen.append(msg.num_delivered)
        await asyncio.sleep(0.4 if len(seen) < 5 else 2.5)

    sub = await js.subscribe(
        topic,
        slow,
        durable="slow",
        ack=jk.AckPolicy.MANUAL,
        ack_wait=1.0,
        buffer_size=10,
        concurrency=concurrency,
    )
    for i in range(5):
        await js.publish(topic, str(i).encode())
    await wait_until(lambda: sub.stats.acked == 5, timeout=20)
    assert seen == [1, 1, 1, 1, 1]
    info = await js.consumer_info(topic, "slow")
    assert info.redelivered == 0
    await sub.stop()


async def test_an_incompatible_durable_is_refused_and_recreate_replaces_it(
    js: jk.Stream, topic: str
) -> None:
    sub = await js.subscribe(topic, Recorder(), durable="fixed", ack=jk.AckPolicy.MANUAL)
    await sub.stop()
    with pytest.raises(jk.IncompatibleConsumerError, match="ack") as info:
        await js.subscribe(topic, Recorder(), durable="fixed", ack=jk.AckPolicy.NONE)
    assert info.value.field == "ack"
    await js.publish(topic, b"x")
    rec = Recorder()
    sub = await js.subscribe(
        topic, rec, durable="fixed", ack=jk.AckPolicy.NONE, recreate=True, start_at=jk.StartAt.ALL
    )
    await wait_until(lambda: rec.data == [b"x"])
    assert (await js.consumer_info(topic, "fixed")).ack_policy == "none"
    await sub.stop()


async def test_a_durable_takes_new_limits_in_place_but_keeps_its_start(
    js: jk.Stream, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    sub = await js.subscribe(
        topic, Recorder(), durable="upd", ack=jk.AckPolicy.MANUAL, max_deliver=3, ack_wait=10
    )
    await sub.stop()
    await js.publish(topic, b"after-first-subscribe")
    rec = Recorder()
    with caplog.at_level("INFO", logger="jetkit"):
        sub = await js.subscribe(
            topic,
            rec,
            durable="upd",
            ack=jk.AckPolicy.MANUAL,
            max_deliver=7,
            ack_wait=20,
            start_time=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
        )
    assert "was not applied" in caplog.text
    info = await js.consumer_info(topic, "upd")
    assert info.max_deliver == 7
    await wait_until(lambda: rec.data == [b"after-first-subscribe"])
    await sub.stop()


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_durable_deleted_on_the_server_is_recreated(
    js: jk.Stream, topic: str, concurrency: int
) -> None:
    rec = Recorder()
    sub = await js.subscribe(
        topic, rec, durable="gone", ack=jk.AckPolicy.MANUAL, concurrency=concurrency
    )
    await js.publish(topic, b"before")
    await wait_until(lambda: rec.data == [b"before"])
    await js.delete_consumer(topic, "gone")

    async def recreated() -> bool:
        return any(c.name == "gone" for c in await js.consumers(topic))

    # the pull in flight ends with "consumer deleted": jetkit creates it again
    await wait_until_async(recreated, timeout=15)
    await js.publish(topic, b"after")
    await wait_until(lambda: rec.data == [b"before", b"after"], timeout=15)
    await wait_until_async(lambda: consumer_settled(js, topic, "gone"))
    assert sub.stats.acked == 2 and not sub.closed
    await sub.stop()


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_drain_timeout_hands_unfinished_messages_back(
    js: jk.Stream, topic: str, concurrency: int
) -> None:
    release = asyncio.Event()
    first: list[bytes] = []

    async def stuck(data: bytes) -> None:
        first.append(data)
        await release.wait()

    sub = await js.subscribe(
        topic,
        stuck,
        durable="drained",
        ack=jk.AckPolicy.MANUAL,
        concurrency=concurrency,
        ack_wait=600,  # only the hand-back (a nak) can redeliver within the test
    )
    await js.publish(topic, b"m0")
    await js.publish(topic, b"m1")
    # in handlers, then buffered (inline mode: waiting in nats-py's queue)
    await wait_until(lambda: len(first) == concurrency and len(first) + sub.buffered == 2)
    try:
        with pytest.raises(jk.TimeoutError, match="did not finish"):
            await sub.drain(timeout=0.2)
        assert sub.closed and sub.stats.acked == 0
    finally:
        release.set()
    again: list[jk.Message] = []
    sub2 = await js.subscribe(
        topic, lambda m: again.append(m), durable="drained", ack=jk.AckPolicy.MANUAL, ack_wait=600
    )
    await wait_until(lambda: len(again) == 2)
    assert sorted((m.data, m.num_delivered) for m in again) == [(b"m0", 2), (b"m1", 2)]
    await wait_until_async(lambda: consumer_settled(js, topic, "drained"))
    await sub2.stop()


async def test_pulls_are_topped_up_when_a_worker_takes_a_message(js: jk.Stream, topic: str) -> None:
    release = asyncio.Event()

    async def blocked(data: bytes) -> None:
        await release.wait()

    sub = await js.subscribe(
        topic,
        blocked,
        durable="topup",
        ack=jk.AckPolicy.MANUAL,
        buffer_size=8,
        concurrency=2,
        ack_wait=600,
    )
    try:
        await js.publish_many(topic, [b"%d" % i for i in range(30)])
        # 2 in the handlers + 8 buffered; the idle monitor alone re-pulls only every 5 s
        await wait_until(lambda: sub.stats.received == 10, timeout=3)
        assert sub.buffered == 8
    finally:
        release.set()
    await wait_until(lambda: sub.stats.acked == 30)
    await sub.stop()


async def test_a_nak_with_an_infinite_delay_is_refused_with_config_error(
    js: jk.Stream, topic: str
) -> None:
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

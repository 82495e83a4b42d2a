"""JetStream topics: acked publish, dedupe, consumers, ack policies, retries, backoff,
DLQ, start positions, flow control, queue groups and topic administration."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import jetkit as jk
from conftest import wait_until, wait_until_async
from jetkit._retry import H_CONSUMER, H_DELIVERIES, H_ERROR, H_SEQ, H_TOPIC


class Recorder:
    """A handler that records what it saw; optionally fails for chosen payloads."""

    def __init__(self, fail: set[bytes] | None = None) -> None:
        self.msgs: list[jk.Message] = []
        self.fail = fail or set()

    async def __call__(self, msg: jk.Message) -> None:
        self.msgs.append(msg)
        if msg.data in self.fail:
            raise RuntimeError(f"cannot process {msg.data.decode()}")

    @property
    def data(self) -> list[bytes]:
        return [m.data for m in self.msgs]


async def test_publish_stored_returns_the_pub_ack(js: jk.Stream, topic: str) -> None:
    first = await js.publish_stored(topic, b"a", headers={"k": "v"}, msg_id="ps-1")
    assert isinstance(first, jk.PubAck) and first.seq == 1 and not first.duplicate
    again = await js.publish_stored(topic, b"a", msg_id="ps-1")
    assert again.duplicate and again.seq == 1
    as_json = await js.publish_json_stored(topic, {"n": 2}, msg_id="ps-2")
    assert as_json.seq == 2
    expiring = await js.publish_stored(topic, b"c", ttl=60)
    assert isinstance(expiring, jk.PubAck) and expiring.seq == 3
    stored = await js.last_message(topic)
    assert stored is not None and stored.data == b"c"


async def test_publish_stored_refuses_a_core_topic_before_sending(
    js: jk.Stream, topic: str
) -> None:
    core_topic = f"{topic}.live"
    await js.declare_topic(core_topic, mode=jk.TopicMode.CORE)
    rec = Recorder()
    sub = await js.subscribe(core_topic, rec)
    with pytest.raises(jk.ConfigError) as refused:
        await js.publish_stored(core_topic, b"x")
    assert str(refused.value) == (
        f"{core_topic!r} is a core topic: publish_stored() returns the PubAck of a "
        "stored message, and a core one is not stored; declare_topic(topic, "
        "mode=jk.TopicMode.JETSTREAM) to store it, or use publish()"
    )
    with pytest.raises(jk.ConfigError, match=r"core topic: publish_json_stored\(\) returns"):
        await js.publish_json_stored(core_topic, {"x": 1})
    with pytest.raises(jk.InvalidTopicError):
        await js.publish_stored("a b", b"x")
    # the refused messages were never sent: the sentinel is the first to arrive
    await js.publish(core_topic, b"sentinel")
    await wait_until(lambda: rec.data != [])
    assert rec.data == [b"sentinel"]
    await sub.stop()


async def test_publish_returns_pub_ack(js: jk.Stream, topic: str) -> None:
    first = await js.publish(topic, b"a")
    second = await js.publish(topic, b"b")
    assert isinstance(first, jk.PubAck) and isinstance(second, jk.PubAck)
    assert first.stream == jk._topics.stream_name(topic)
    assert second.seq == first.seq + 1
    assert not first.duplicate
    info = await js.topic_info(topic)
    assert info.messages == 2 and info.first_seq == first.seq and info.last_seq == second.seq


async def test_msg_id_dedupes(js: jk.Stream, topic: str) -> None:
    rec = Recorder()
    sub = await js.subscribe(topic, rec, start_at=jk.StartAt.ALL)
    a = await js.publish(topic, b"order-1", msg_id="order-1")
    b = await js.publish(topic, b"order-1", msg_id="order-1")
    c = await js.publish(topic, b"order-2", msg_id="order-2")
    assert a is not None and b is not None and c is not None
    assert not a.duplicate and b.duplicate and b.seq == a.seq and c.seq == a.seq + 1
    await js.publish(topic, b"sentinel")  # a redelivered duplicate would come before it
    await wait_until(lambda: b"sentinel" in rec.data)
    assert rec.data == [b"order-1", b"order-2", b"sentinel"]
    await sub.stop()


async def test_publish_many_reports_every_ack(js: jk.Stream, topic: str) -> None:
    acks = await js.publish_many(topic, [str(i).encode() for i in range(500)], window=64)
    assert [(a.seq, a.duplicate) for a in acks if a is not None] == [
        (i, False) for i in range(1, 501)
    ]
    assert (await js.topic_info(topic)).messages == 500


async def test_publish_many_reports_failures(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(topic, max_msgs=3, discard=jk.Discard.NEW)
    with pytest.raises(jk.PublishBatchError) as info:
        await js.publish_many(topic, [b"1", b"2", b"3", b"4", b"5"])
    results = info.value.results
    assert [isinstance(r, jk.PubAck) for r in results] == [True, True, True, False, False]
    assert all(isinstance(r, jk.JetStreamError) for r in results[3:])


async def test_discard_new_refuses_when_full(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(topic, max_msgs=1, discard=jk.Discard.NEW)
    await js.publish(topic, b"1")
    with pytest.raises(jk.JetStreamError, match="maximum messages"):
        await js.publish(topic, b"2")


async def test_declare_topic_sets_and_updates_limits(js: jk.Stream, topic: str) -> None:
    info = await js.declare_topic(topic, max_msgs=5, max_age=60, retention=jk.Retention.LIMITS)
    assert info is not None and info.max_msgs == 5 and info.max_age == 60
    for i in range(8):
        await js.publish(topic, str(i).encode())
    assert (await js.topic_info(topic)).messages == 5  # Discard.OLD keeps the newest
    info = await js.declare_topic(topic, max_msgs=3, max_bytes=10_000)
    assert info is not None and info.max_msgs == 3 and info.max_bytes == 10_000
    assert (await js.topic_info(topic)).messages == 3


async def test_work_queue_retention(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(topic, retention=jk.Retention.WORK_QUEUE)
    rec = Recorder()
    sub = await js.subscribe(topic, rec, durable="wq", ack=jk.AckPolicy.MANUAL)
    await js.publish(topic, b"job")
    await wait_until(lambda: len(rec.msgs) == 1)
    await sub.drain()
    await wait_until_async(lambda: messages_are(js, topic, 0))


async def messages_are(s: jk.Stream, topic: str, count: int) -> bool:
    return (await s.topic_info(topic)).messages == count


async def consumer_settled(s: jk.Stream, topic: str, durable: str) -> bool:
    """Nothing left to deliver and nothing delivered without its ack/term."""
    info = await s.consumer_info(topic, durable)
    return info.pending == 0 and info.ack_pending == 0


async def test_declare_topic_bad_input(js: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.ConfigError):
        await js.declare_topic(topic, max_msgs=0)
    with pytest.raises(jk.ConfigError):
        await js.declare_topic(topic, replicas=0)
    with pytest.raises(jk.ConfigError, match="CORE"):
        await js.declare_topic(topic, mode=jk.TopicMode.CORE, max_msgs=5)
    with pytest.raises(jk.InvalidTopicError):
        await js.declare_topic("a..b")


async def test_wildcard_topic_with_narrow_subscribers(js: jk.Stream, topic: str) -> None:
    pattern = f"{topic}.>"
    await js.declare_topic(pattern)
    eu = Recorder()
    everything = Recorder()
    s1 = await js.subscribe(f"{topic}.eu.*", eu)
    s2 = await js.subscribe(pattern, everything)
    a = await js.publish(f"{topic}.eu.created", b"eu")
    b = await js.publish(f"{topic}.us.created", b"us")
    assert a is not None and b is not None and a.stream == b.stream
    await wait_until(lambda: len(everything.msgs) == 2 and len(eu.msgs) == 1)
    assert eu.data == [b"eu"]
    assert [m.topic for m in everything.msgs] == [f"{topic}.eu.created", f"{topic}.us.created"]
    info = await js.topic_info(f"{topic}.us.created")
    assert info.subjects == [pattern] and info.messages == 2
    assert await js.purge_topic(f"{topic}.us.created") == 1
    assert (await js.topic_info(pattern)).messages == 1
    await s1.stop()
    await s2.stop()


async def test_similar_topics_get_distinct_streams(js: jk.Stream, topic: str) -> None:
    a = await js.publish(f"{topic}.a.b", b"1")
    b = await js.publish(f"{topic}.a_b", b"2")
    assert a is not None and b is not None and a.stream != b.stream


async def test_core_topic_declared_on_a_jetstream_stream(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(topic, mode=jk.TopicMode.CORE)
    assert await js.publish(topic, b"x") is None
    assert js.mode_for(topic) is jk.TopicMode.CORE


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


async def test_manual_ack_retries_then_dead_letters(js: jk.Stream, topic: str) -> None:
    dlq = f"{topic}.dlq"
    rec = Recorder(fail={b"poisoned-order"})
    dead = Recorder()
    dsub = await js.subscribe(dlq, dead, start_at=jk.StartAt.ALL)
    sub = await js.subscribe(
        topic, rec, durable="proc", ack=jk.AckPolicy.MANUAL, max_deliver=3, dlq=dlq
    )
    ack = await js.publish(topic, b"poisoned-order", headers={"trace": "t-1"})
    await js.publish(topic, b"fine")
    assert ack is not None
    await wait_until(lambda: len(dead.msgs) == 1)
    attempts = [m for m in rec.msgs if m.data == b"poisoned-order"]
    assert [m.num_delivered for m in attempts] == [1, 2, 3]
    letter = dead.msgs[0]
    assert letter.data == b"poisoned-order"
    assert letter.headers[H_TOPIC] == topic
    assert letter.headers[H_SEQ] == str(ack.seq)
    assert letter.headers[H_DELIVERIES] == "3"
    assert letter.headers[H_CONSUMER] == "proc"
    assert letter.headers[H_ERROR] == "RuntimeError: cannot process poisoned-order"
    assert letter.headers["trace"] == "t-1"
    await wait_until(lambda: sub.stats.terminated == 1)
    stats = sub.stats
    assert (stats.retried, stats.dead_lettered, stats.failed, stats.acked) == (2, 1, 3, 1)
    # terminated, not nak'ed: a redelivery would come before the sentinel, and the
    # server holds nothing unacknowledged that ack_wait could bring back
    await js.publish(topic, b"sentinel")
    await wait_until(lambda: b"sentinel" in rec.data)
    await wait_until_async(lambda: consumer_settled(js, topic, "proc"))
    assert rec.data.count(b"poisoned-order") == 3 and len(dead.msgs) == 1
    info = await js.consumer_info(topic, "proc")
    assert info.max_deliver == 3 and sub.stats.terminated == 1
    await sub.stop()
    await dsub.stop()


async def test_backoff_delays_are_respected(js: jk.Stream, topic: str) -> None:
    times: list[float] = []

    async def flaky(data: bytes) -> None:
        times.append(time.monotonic())
        if len(times) < 3:
            raise RuntimeError("not yet")

    sub = await js.subscribe(
        topic, flaky, durable="bo", ack=jk.AckPolicy.MANUAL, max_deliver=5, backoff=[0.4, 0.8]
    )
    await js.publish(topic, b"x")
    await wait_until(lambda: len(times) == 3)
    assert times[1] - times[0] >= 0.4
    assert times[2] - times[1] >= 0.8
    await wait_until(lambda: sub.stats.acked == 1)
    await sub.stop()


async def test_exponential_backoff_helper_with_subscribe(js: jk.Stream, topic: str) -> None:
    times: list[float] = []

    async def failing(data: bytes) -> None:
        times.append(time.monotonic())
        raise RuntimeError("always")

    sub = await js.subscribe(
        topic,
        failing,
        durable="exp",
        ack=jk.AckPolicy.MANUAL,
        max_deliver=3,
        backoff=jk.exponential_backoff(0.2, 2),
    )
    await js.publish(topic, b"x")
    await wait_until(lambda: sub.stats.terminated == 1)
    assert len(times) == 3
    assert times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.4
    await sub.stop()


async def test_poison_message_goes_to_dlq_without_calling_handler(
    js: jk.Stream, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    calls: list[dict[str, int]] = []
    dead = Recorder()

    async def handler(order: dict[str, int]) -> None:
        calls.append(order)

    dsub = await js.subscribe(dlq, dead)
    sub = await js.subscribe(
        topic, handler, durable="p", ack=jk.AckPolicy.MANUAL, max_deliver=5, dlq=dlq
    )
    await js.publish(topic, b"{broken json")
    await js.publish_json(topic, {"id": 1})
    await wait_until(lambda: len(dead.msgs) == 1 and len(calls) == 1)
    assert calls == [{"id": 1}]
    assert dead.msgs[0].headers[H_DELIVERIES] == "1"
    assert dead.msgs[0].headers[H_ERROR].startswith("DecodeError:")
    assert sub.stats.dead_lettered == 1 and sub.stats.retried == 0
    await sub.stop()
    await dsub.stop()


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


async def test_ack_none_policy(js: jk.Stream, topic: str) -> None:
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


async def test_start_positions(js: jk.Stream, topic: str) -> None:
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


async def test_drop_policy_on_jetstream_is_an_error(js: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.ConfigError, match="never dropped"):
        await js.subscribe(topic, Recorder(), backpressure=jk.Backpressure.DROP_OLDEST)


async def test_bad_jetstream_options(js: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.ConfigError, match="MANUAL"):
        await js.subscribe(topic, Recorder(), backoff=[1])
    with pytest.raises(jk.ConfigError):
        await js.subscribe(topic, Recorder(), max_deliver=0)
    with pytest.raises(jk.ConfigError):
        await js.subscribe(topic, Recorder(), ack_wait=0)
    with pytest.raises(jk.InvalidTopicError):
        await js.subscribe(topic, Recorder(), durable="a.b")
    with pytest.raises(jk.ConfigError):
        await js.subscribe(topic, Recorder(), start_at=jk.StartAt.BY_SEQUENCE)
    with pytest.raises(jk.InvalidTopicError):
        await js.subscribe(topic, Recorder(), dlq="bad topic")


async def test_buffer_bounds_pulled_messages(js: jk.Stream, topic: str) -> None:
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


async def test_incompatible_durable_and_recreate(js: jk.Stream, topic: str) -> None:
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


async def test_in_place_updates_and_start_not_reapplied(
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


async def test_admin_listing_and_deletion(js: jk.Stream, topic: str) -> None:
    await js.publish(topic, b"x")
    sub = await js.subscribe(topic, Recorder(), durable="adm")
    names = {t.name for t in await js.topics()}
    assert jk._topics.stream_name(topic) in names
    await sub.stop()
    await js.delete_consumer(topic, "adm")
    with pytest.raises(jk.NotFoundError):
        await js.consumer_info(topic, "adm")
    await js.delete_topic(topic)
    with pytest.raises(jk.NotFoundError):
        await js.topic_info(topic)
    # publishing again creates the topic afresh
    ack = await js.publish(topic, b"y")
    assert ack is not None and ack.seq == 1


async def test_consumer_lag_is_reported(js: jk.Stream, topic: str) -> None:
    sub = await js.subscribe(topic, Recorder(), durable="lag")
    await sub.stop()
    for i in range(7):
        await js.publish(topic, str(i).encode())
    info = await js.consumer_info(topic, "lag")
    assert info.pending == 7 and info.durable


async def test_last_message(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(f"{topic}.>")
    assert await js.last_message(f"{topic}.a") is None
    await js.publish(f"{topic}.a", b"a1", headers={"k": "v1"})
    await js.publish(f"{topic}.a", b"a2", headers={"k": "v2"})
    await js.publish(f"{topic}.b", b"b1")
    last = await js.last_message(f"{topic}.a")
    assert last is not None
    assert (last.data, last.headers["k"], last.seq, last.topic) == (b"a2", "v2", 2, f"{topic}.a")
    assert last.timestamp.year >= 2026


async def test_declare_without_limits_keeps_an_existing_stream(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(f"{topic}.>", max_msgs=10)
    info = await js.declare_topic(f"{topic}.>")
    assert info is not None and info.max_msgs == 10
    narrow = await js.declare_topic(f"{topic}.eu")  # covered by the pattern: no new stream
    assert narrow is not None and narrow.subjects == [f"{topic}.>"]


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


async def test_stream_deleted_behind_the_streams_back_is_recreated_on_publish(
    js: jk.Stream, core: jk.Stream, topic: str
) -> None:
    first = await js.publish(topic, b"one")
    assert first is not None and first.seq == 1
    await core.delete_topic(topic)  # another Stream: js still thinks the stream exists
    again = await js.publish(topic, b"two")
    assert isinstance(again, jk.PubAck)
    assert (again.stream, again.seq, again.duplicate) == (first.stream, 1, False)
    info = await js.topic_info(topic)
    assert (info.messages, info.last_seq) == (1, 1)
    assert (await js.last_message(topic)).data == b"two"  # type: ignore[union-attr]


async def full_dlq(s: jk.Stream, dlq: str) -> None:
    """A DLQ topic that refuses the next message (one message max, Discard.NEW, full)."""
    await s.declare_topic(dlq, max_msgs=1, discard=jk.Discard.NEW)
    await s.publish(dlq, b"filler")


async def test_a_refused_dead_letter_is_nakked_and_delivered_again(
    js: jk.Stream, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    await full_dlq(js, dlq)
    calls: list[dict[str, int]] = []

    async def handler(order: dict[str, int]) -> None:
        calls.append(order)

    # ack_wait is long: only jetkit's nak can bring the message back within the test
    sub = await js.subscribe(
        topic, handler, durable="dl", ack=jk.AckPolicy.MANUAL, dlq=dlq, backoff=[0.1], ack_wait=600
    )
    ack = await js.publish(topic, b"{poison")  # undecodable: straight to the DLQ
    assert ack is not None
    # refused, nak'ed, delivered again and refused again: neither lost nor terminated
    await wait_until(lambda: sub.stats.naked >= 2)
    assert (sub.stats.dead_lettered, sub.stats.terminated) == (0, 0)
    assert (await js.consumer_info(topic, "dl")).ack_floor == 0
    assert (await js.topic_info(dlq)).messages == 1
    await js.purge_topic(dlq)  # room for the dead letter
    await wait_until(lambda: sub.stats.dead_lettered == 1 and sub.stats.terminated == 1)
    [letter] = await js.dead_letters(dlq)
    assert (letter.data, letter.original_topic, letter.original_seq) == (b"{poison", topic, 1)
    assert letter.deliveries == sub.stats.naked + 1  # every refused attempt was nak'ed
    assert letter.error.startswith("DecodeError:")
    await wait_until_async(lambda: consumer_settled(js, topic, "dl"))
    assert calls == []


async def test_a_dead_letter_refused_twice_with_max_deliver_is_not_lost(
    js: jk.Stream, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    await full_dlq(js, dlq)

    async def failing(data: bytes) -> None:
        raise RuntimeError("always")

    sub = await js.subscribe(
        topic,
        failing,
        durable="dl2",
        ack=jk.AckPolicy.MANUAL,
        max_deliver=1,
        dlq=dlq,
        backoff=[0.2],
        ack_wait=600,
    )
    await js.publish(topic, b"order")
    # attempt 1 fails, its dead letter is refused (nak); the spare delivery jetkit asks
    # the server for comes back, its dead letter is refused too (nak)
    await wait_until(lambda: sub.stats.naked == 2)
    await js.purge_topic(dlq)  # room again: the message must reach the DLQ now
    await wait_until(lambda: sub.stats.dead_lettered == 1, timeout=3)
    [letter] = await js.dead_letters(dlq)
    assert letter.data == b"order"


async def test_publish_many_recreates_a_stream_deleted_behind_the_streams_back(
    js: jk.Stream, core: jk.Stream, topic: str
) -> None:
    await js.publish(topic, b"one")
    await core.delete_topic(topic)
    acks = await js.publish_many(topic, [b"two", b"three"])
    assert [a.seq for a in acks if a is not None] == [1, 2]


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


async def test_publish_many_gives_each_message_its_own_ack_timeout(tmp_path: Path) -> None:
    """A batch may last longer than publish_timeout, and its payload source may block
    the event loop: each message's ack is timed from its own send, and time the loop was
    blocked (no PUB written, no ack read) does not count, so nothing stored is reported
    lost."""
    timeout = 1.0

    def payloads() -> Iterator[bytes]:
        # big enough that the outgoing buffer fills now and then: publish_many waits for
        # the flusher, so the ack sweeper is running when the producer blocks
        for i in range(20):
            if i == 12:
                time.sleep(timeout * 1.2)  # a producer that blocks (reads a file, say)
            yield b"%d" % i + b"x" * 300_000

    async with jk.Stream.open(
        store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM, publish_timeout=timeout
    ) as s:
        acks = await s.publish_many("slow.source", payloads())
        assert [a.seq for a in acks] == list(range(1, 21))

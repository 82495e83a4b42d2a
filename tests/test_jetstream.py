"""JetStream topics: acked publish, dedupe, consumers, ack policies, retries, backoff,
DLQ, start positions, flow control, queue groups and topic administration."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

import jetkit as jk
from conftest import wait_until
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
    await wait_until(lambda: len(rec.msgs) == 2)
    await asyncio.sleep(0.2)
    assert rec.data == [b"order-1", b"order-2"]
    await sub.stop()


async def test_publish_many_reports_every_ack(js: jk.Stream, topic: str) -> None:
    acks = await js.publish_many(topic, [str(i).encode() for i in range(500)], window=64)
    seqs = [a.seq for a in acks if a is not None]
    assert len(seqs) == 500 and seqs == sorted(seqs) and len(set(seqs)) == 500
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
    await wait_until_async(js, topic, lambda i: i.messages == 0)


async def wait_until_async(s: jk.Stream, topic: str, check, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check(await s.topic_info(topic)):
        assert time.monotonic() < deadline, "topic never reached the expected state"
        await asyncio.sleep(0.05)


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
    assert set(r1.data).isdisjoint(r2.data)
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
    await asyncio.sleep(1.5)  # past ack_wait: nothing comes back
    assert rec.data == [b"bad", b"good"]
    assert sub.stats.failed == 1 and sub.stats.acked == 2 and sub.stats.retried == 0
    info = await js.consumer_info(topic, "auto")
    assert info.ack_pending == 0 and info.redelivered == 0
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
    stats = sub.stats
    assert (stats.retried, stats.dead_lettered, stats.failed, stats.acked) == (2, 1, 3, 1)
    await asyncio.sleep(0.3)
    assert len(attempts) == 3 and len(dead.msgs) == 1  # terminated: no more deliveries
    info = await js.consumer_info(topic, "proc")
    assert info.ack_pending == 0 and info.max_deliver == 3
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
    await asyncio.sleep(0.3)
    assert sorted(seen) == [(b"ack", 1), (b"nak", 1), (b"nak", 2), (b"term", 1)]
    assert len(errors) == 1
    assert sub.stats.acked == 2 and sub.stats.naked == 1 and sub.stats.retried == 0
    info = await js.consumer_info(topic, "self")
    assert info.ack_pending == 0
    await sub.stop()


async def test_ack_none_policy(js: jk.Stream, topic: str) -> None:
    rec = Recorder()
    for i in range(10):
        await js.publish(topic, str(i).encode())
    sub = await js.subscribe(
        topic, rec, durable="none", ack=jk.AckPolicy.NONE, start_at=jk.StartAt.ALL
    )
    await wait_until(lambda: len(rec.msgs) == 10)
    info = await js.consumer_info(topic, "none")
    assert info.ack_policy == "none" and info.ack_pending == 0 and info.delivered_seq > 0
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

    async def collect(**opts: object) -> list[bytes]:
        rec = Recorder()
        sub = await js.subscribe(f"{topic}.*", rec, **opts)  # type: ignore[arg-type]
        await wait_until(lambda: len(rec.msgs) >= expected[0])
        await asyncio.sleep(0.1)
        await sub.stop()
        return rec.data

    expected = [4]
    assert await collect(start_time=cut - dt.timedelta(hours=1)) != []
    expected = [2]
    assert await collect(start_at=jk.StartAt.BY_START_TIME, start_time=cut) == [b"a5", b"b1"]
    assert await collect(start_time=cut.timestamp()) == [b"a5", b"b1"]
    assert await collect(start_at=jk.StartAt.LAST_PER_SUBJECT) == [b"a5", b"b1"]
    info = await js.topic_info(f"{topic}.*")
    expected = [2]
    assert await collect(start_seq=info.last_seq - 1) == [b"a5", b"b1"]
    expected = [8]
    assert len(await collect(start_at=jk.StartAt.ALL)) == 8


async def test_start_new_only_sees_new_messages(js: jk.Stream, topic: str) -> None:
    await js.publish(topic, b"old")
    rec = Recorder()
    sub = await js.subscribe(topic, rec)
    await js.publish(topic, b"new")
    await wait_until(lambda: len(rec.msgs) == 1)
    await asyncio.sleep(0.1)
    assert rec.data == [b"new"]
    await sub.stop()


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
    peak = 0
    handled = 0

    async def slow(data: bytes) -> None:
        nonlocal handled
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
    await wait_until(lambda: sub.buffered == 8)
    await asyncio.sleep(0.2)
    info = await js.consumer_info(topic, "bounded")
    assert sub.buffered == 8
    assert info.ack_pending <= 8 + 2
    assert info.pending >= 60 - 10
    release.set()
    while handled < 60:
        peak = max(peak, sub.buffered)
        await asyncio.sleep(0.005)
    assert peak <= 8
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

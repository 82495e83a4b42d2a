"""The admin calls: declare_topic and its limits, listing and deleting topics and
consumers, topic_info/consumer_info, last_message, purge_topic, reset_consumer, and the
seam for tools (overview, read_stored). (Refused input: test_bad_input_admin.py; metrics:
test_metrics.py; dead letters: test_retries_dlq.py.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import jetkit as jk
from conftest import Recorder, wait_until, wait_until_async
from jetkit._options import subscribe_options


async def test_declare_topic_sets_and_updates_limits(js: jk.Stream, topic: str) -> None:
    info = await js.declare_topic(topic, max_msgs=5, max_age=60, retention=jk.Retention.LIMITS)
    assert info is not None and info.max_msgs == 5 and info.max_age == 60
    for i in range(8):
        await js.publish(topic, str(i).encode())
    assert (await js.topic_info(topic)).messages == 5  # Discard.OLD keeps the newest
    info = await js.declare_topic(topic, max_msgs=3, max_bytes=10_000)
    assert info is not None and info.max_msgs == 3 and info.max_bytes == 10_000
    assert (await js.topic_info(topic)).messages == 3


async def test_a_work_queue_topic_deletes_each_message_once_it_is_acked(
    js: jk.Stream, topic: str
) -> None:
    await js.declare_topic(topic, retention=jk.Retention.WORK_QUEUE)
    rec = Recorder()
    sub = await js.subscribe(topic, rec, durable="wq", ack=jk.AckPolicy.MANUAL)
    await js.publish(topic, b"job")
    await wait_until(lambda: len(rec.msgs) == 1)
    await sub.drain()
    await wait_until_async(lambda: messages_are(js, topic, 0))


async def messages_are(s: jk.Stream, topic: str, count: int) -> bool:
    return (await s.topic_info(topic)).messages == count


async def test_a_pattern_topic_stores_its_subjects_in_one_stream_and_serves_narrower_subscribers(
    js: jk.Stream, topic: str
) -> None:
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


async def test_deleted_consumers_and_topics_are_gone_and_publishing_makes_the_topic_afresh(
    js: jk.Stream, topic: str
) -> None:
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


async def test_a_stopped_durables_lag_is_its_pending_count(js: jk.Stream, topic: str) -> None:
    sub = await js.subscribe(topic, Recorder(), durable="lag")
    await sub.stop()
    for i in range(7):
        await js.publish(topic, str(i).encode())
    info = await js.consumer_info(topic, "lag")
    assert info.pending == 7 and info.durable


async def test_last_message_is_the_newest_on_its_subject_with_its_headers(
    js: jk.Stream, topic: str
) -> None:
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


async def test_strings_for_enums_are_read_by_value(js: jk.Stream, topic: str) -> None:
    assert await js.declare_topic(topic, mode="core") is None  # type: ignore[arg-type]
    assert js.mode_for(topic) is jk.TopicMode.CORE
    with pytest.raises(jk.NotFoundError):
        await js.topic_info(topic)  # nothing was stored
    opts = subscribe_options(topic, ack="manual", start_at="ALL", backpressure="block")
    assert (opts.ack, opts.start_at) == (jk.AckPolicy.MANUAL, jk.StartAt.ALL)


async def _consume_all(s: jk.Stream, topic: str, durable: str, n: int) -> list[int]:
    seen: list[int] = []

    async def handler(msg: jk.Message) -> None:
        seen.append(msg.seq or 0)

    await s.subscribe(topic, handler, durable=durable, start_at=jk.StartAt.ALL)
    await wait_until(lambda: len(seen) >= n)
    return seen


async def test_reset_consumer_moves_a_live_durable(js: jk.Stream, topic: str) -> None:
    await js.publish_many(topic, [str(i).encode() for i in range(1, 11)])
    seen = await _consume_all(js, topic, "resettable", 10)
    assert seen == list(range(1, 11))

    info = await js.reset_consumer(topic, "resettable", start_seq=8)
    assert info.delivered_seq == 7 and info.pending == 3
    await wait_until(lambda: len(seen) == 13)
    assert seen[10:] == [8, 9, 10]

    await js.reset_consumer(topic, "resettable", start_at=jk.StartAt.ALL)
    await wait_until(lambda: len(seen) == 23)
    assert seen[13:] == list(range(1, 11))

    info = await js.reset_consumer(topic, "resettable", start_at=jk.StartAt.NEW)
    assert info.pending == 0
    await js.publish(topic, b"after")  # the sentinel: the only message delivered now
    await wait_until(lambda: len(seen) == 24)
    assert seen[23:] == [11]


async def test_reset_consumer_to_a_time(js: jk.Stream, topic: str) -> None:
    await js.publish_many(topic, [b"old"] * 3)
    last = await js.last_message(topic)
    assert last is not None and last.timestamp is not None
    middle = last.timestamp + dt.timedelta(microseconds=1)  # just after seq 3
    await js.publish_many(topic, [b"new"] * 2)
    await _consume_all(js, topic, "timed", 5)
    info = await js.reset_consumer(topic, "timed", start_time=middle)
    assert info.pending == 2 and info.delivered_seq == 3
    info = await js.reset_consumer(topic, "timed", start_time=middle + dt.timedelta(days=1))
    assert info.pending == 0


async def test_purge_topic_keep_up_to_seq_and_subject(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(f"{topic}.>")
    for i in range(1, 7):
        await js.publish(f"{topic}.{'a' if i % 2 else 'b'}", str(i).encode())
    # seqs 1..6: a = 1, 3, 5; b = 2, 4, 6
    assert await js.purge_topic(f"{topic}.>", up_to_seq=2) == 2
    assert await js.purge_topic(f"{topic}.>", subject=f"{topic}.a", keep=1) == 1  # seq 3
    info = await js.topic_info(f"{topic}.>")
    assert (info.messages, info.first_seq) == (3, 4)
    assert await js.purge_topic(f"{topic}.>", subject=f"{topic}.b") == 2
    last = await js.last_message(f"{topic}.a")
    assert last is not None and last.data == b"5"
    assert await js.purge_topic(f"{topic}.>") == 1


async def test_topic_info_reports_disk_size_and_leader(js: jk.Stream, topic: str) -> None:
    await js.publish(topic, b"x" * 10_000)
    info = await js.topic_info(topic)
    assert info.disk_bytes is not None and info.disk_bytes >= 10_000
    assert info.leader and info.replica_nodes == [info.leader]
    listed = {t.name: t for t in await js.topics()}
    assert listed[info.name].disk_bytes is not None


async def test_consumer_info_reports_last_active(js: jk.Stream, topic: str) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    await js.publish(topic, b"x")
    await _consume_all(js, topic, "active", 1)

    async def acked() -> bool:
        return (await js.consumer_info(topic, "active")).ack_floor == 1

    await wait_until_async(acked)
    info = await js.consumer_info(topic, "active")
    assert info.last_active is not None and info.last_active >= before


async def test_overview_lists_every_topic_with_its_consumers(js: jk.Stream, topic: str) -> None:
    other = f"{topic}.other"
    await js.publish(topic, b"x")
    await js.publish(other, b"y")
    await js.subscribe(topic, _ignore, durable="reader")

    overview = {o.topic.name: o for o in await js.overview()}
    assert all(isinstance(o, jk.TopicOverview) for o in overview.values())
    # the topics topics() lists, each with the consumers consumers() lists for it
    assert set(overview) == {t.name for t in await js.topics()}
    mine = overview[(await js.topic_info(topic)).name]
    assert (mine.topic.subjects, mine.topic.last_seq) == ([topic], 1)
    assert [c.name for c in mine.consumers] == [c.name for c in await js.consumers(topic)]
    assert [c.name for c in mine.consumers] == ["reader"]
    assert overview[(await js.topic_info(other)).name].consumers == []


async def test_overview_of_a_closed_stream_raises(store: Path) -> None:
    s = await jk.Stream.open(store_dir=store)
    await s.close()
    with pytest.raises(jk.StreamClosedError):
        await s.overview()
    with pytest.raises(jk.StreamClosedError):
        s.read_stored("anything")


async def test_read_stored_reads_at_most_limit_from_first_seq_and_consumes_nothing(
    js: jk.Stream, topic: str
) -> None:
    await js.declare_topic(f"{topic}.>")
    for i in range(1, 7):  # a.1 b.2 a.3 b.4 a.5 b.6 in one stream
        await js.publish(f"{topic}.{'ab'[(i - 1) % 2]}", f"m{i}".encode(), headers={"n": str(i)})

    async def read(subject: str, **bounds: int) -> list[tuple[int | None, bytes]]:
        return [(m.seq, m.data) async for m in js.read_stored(subject, **bounds)]

    assert await read(f"{topic}.a") == [(1, b"m1"), (3, b"m3"), (5, b"m5")]
    assert await read(f"{topic}.a", limit=2) == [(1, b"m1"), (3, b"m3")]
    assert await read(f"{topic}.a", first_seq=2, limit=1) == [(3, b"m3")]
    assert await read(f"{topic}.a", first_seq=6) == []
    assert await read(f"{topic}.>", first_seq=5) == [(5, b"m5"), (6, b"m6")]  # a pattern
    assert len(await read(f"{topic}.>", limit=100)) == 6
    [first] = [m async for m in js.read_stored(f"{topic}.b", limit=1)]
    assert (first.topic, first.seq, first.headers["n"]) == (f"{topic}.b", 2, "2")
    assert await js.consumers(f"{topic}.>") == []  # read without a consumer


async def test_read_stored_of_a_topic_no_stream_stores_is_not_found(
    js: jk.Stream, topic: str
) -> None:
    messages = js.read_stored(f"{topic}.nowhere")
    with pytest.raises(jk.NotFoundError):
        [m async for m in messages]


async def _ignore(data: bytes) -> None:
    pass


async def test_purge_up_to_past_the_end_keeps_the_sequence(js: jk.Stream, topic: str) -> None:
    await js.publish_many(topic, [b"x"] * 3)
    assert await js.purge_topic(topic, up_to_seq=2**62) == 3
    ack = await js.publish(topic, b"next")
    assert ack is not None and ack.seq == 4  # not 2**62 + 1: the stream did not jump
    seen = await _consume_all(js, topic, "after-purge", 1)
    assert seen == [4]


async def test_reset_consumer_refuses_a_position_past_the_end(js: jk.Stream, topic: str) -> None:
    await js.publish_many(topic, [b"x"] * 3)
    await _consume_all(js, topic, "ahead", 3)
    with pytest.raises(jk.ConfigError, match=r"past the end.*last sequence is 3.*NEW"):
        await js.reset_consumer(topic, "ahead", start_seq=5)
    info = await js.reset_consumer(topic, "ahead", start_seq=4)  # the next one: allowed
    assert info.pending == 0 and info.delivered_seq == 3


async def test_reset_consumer_refuses_another_topics_or_an_ephemeral_consumer(
    js: jk.Stream, topic: str
) -> None:
    await js.declare_topic(f"{topic}.>")
    await js.publish(f"{topic}.a", b"a")
    await _consume_all(js, f"{topic}.a", "only-a", 1)
    for other in (f"{topic}.b", f"{topic}.*", f"{topic}.>"):
        with pytest.raises(jk.ConfigError, match=r"consumes .*\.a, not"):
            await js.reset_consumer(other, "only-a", start_at=jk.StartAt.ALL)

    async def ignore(data: bytes) -> None:
        pass

    sub = await js.subscribe(f"{topic}.a", ignore, start_at=jk.StartAt.ALL)
    ephemeral = [c.name for c in await js.consumers(f"{topic}.>") if not c.durable]
    assert ephemeral
    with pytest.raises(jk.ConfigError, match="not durable"):
        await js.reset_consumer(f"{topic}.a", ephemeral[0], start_at=jk.StartAt.ALL)
    await sub.stop()


async def test_a_consumer_of_part_of_a_stream_reports_its_ack_floor_in_stream_and_in_deliveries(
    js: jk.Stream, topic: str
) -> None:
    await js.declare_topic(f"{topic}.>")
    for _ in range(10):
        await js.publish(f"{topic}.a", b"a")
        await js.publish(f"{topic}.b", b"b")
    await _consume_all(js, f"{topic}.a", "part", 10)

    async def acked() -> bool:
        return (await js.consumer_info(f"{topic}.a", "part")).ack_pending == 0

    await wait_until_async(acked)
    info = await js.consumer_info(f"{topic}.a", "part")
    # top's ack rate counts deliveries: 10 acks, though the stream moved by 19
    assert (info.ack_floor, info.ack_floor_consumer_seq) == (19, 10)


@pytest.mark.parametrize(
    "created",
    [
        {"start_at": jk.StartAt.NEW},
        {"start_at": jk.StartAt.LAST_PER_SUBJECT},
        {"start_seq": 3},
    ],
    ids=["new", "last-per-subject", "seq-3"],
)
async def test_reset_a_durable_the_server_cannot_reset_in_place(
    js: jk.Stream, topic: str, created: dict[str, object]
) -> None:
    """The server's reset refuses durables that started at NEW or LAST_PER_SUBJECT, or
    a position below their start sequence: jetkit makes them again at the position,
    and the live subscriber follows."""
    await js.publish_many(topic, [str(i).encode() for i in range(1, 6)])
    seen: list[int] = []

    async def handler(msg: jk.Message) -> None:
        seen.append(msg.seq or 0)

    await js.subscribe(topic, handler, durable="moved", ack=jk.AckPolicy.MANUAL, **created)  # type: ignore[arg-type]
    await js.publish(topic, b"6")
    await wait_until(lambda: 6 in seen)
    before = len(seen)

    info = await js.reset_consumer(topic, "moved", start_at=jk.StartAt.ALL)
    assert info.pending + info.ack_pending + len(seen) - before >= 6
    await wait_until(lambda: seen[before:][:6] == [1, 2, 3, 4, 5, 6])

    info = await js.reset_consumer(topic, "moved", start_seq=2)
    await wait_until(lambda: seen[before + 6 :][:5] == [2, 3, 4, 5, 6])

    await js.reset_consumer(topic, "moved", start_at=jk.StartAt.NEW)
    mark = len(seen)
    await js.publish(topic, b"7")  # the sentinel: the only one delivered from now on
    await wait_until(lambda: seen[mark:] == [7])
    listed = await js.consumers(topic)
    assert [c.name for c in listed if c.durable] == ["moved"]  # still one, same name

"""Publishing: what publish, publish_stored and publish_many return on JetStream and core
topics, dedupe by msg_id, a full topic, a topic's stream deleted behind the Stream's
back, message sizes. (Refused input: test_bad_input_publish.py; scheduling and TTL:
test_schedules.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import jetkit as jk
from conftest import Recorder, nc_of, wait_until


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


async def test_a_jetstream_publish_returns_a_pub_ack_with_the_next_sequence(
    js: jk.Stream, topic: str
) -> None:
    first = await js.publish(topic, b"a")
    second = await js.publish(topic, b"b")
    assert isinstance(first, jk.PubAck) and isinstance(second, jk.PubAck)
    assert first.stream == jk._topics.stream_name(topic)
    assert second.seq == first.seq + 1
    assert not first.duplicate
    info = await js.topic_info(topic)
    assert info.messages == 2 and info.first_seq == first.seq and info.last_seq == second.seq


async def test_a_repeated_msg_id_is_stored_and_delivered_once(js: jk.Stream, topic: str) -> None:
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


async def test_publish_many_to_a_full_topic_raises_with_each_messages_ack_or_error(
    js: jk.Stream, topic: str
) -> None:
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


async def test_similar_topics_get_distinct_streams(js: jk.Stream, topic: str) -> None:
    a = await js.publish(f"{topic}.a.b", b"1")
    b = await js.publish(f"{topic}.a_b", b"2")
    assert a is not None and b is not None and a.stream != b.stream


async def test_a_topic_declared_core_on_a_jetstream_stream_publishes_without_an_ack(
    js: jk.Stream, topic: str
) -> None:
    await js.declare_topic(topic, mode=jk.TopicMode.CORE)
    assert await js.publish(topic, b"x") is None
    assert js.mode_for(topic) is jk.TopicMode.CORE


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


async def test_publish_many_recreates_a_stream_deleted_behind_the_streams_back(
    js: jk.Stream, core: jk.Stream, topic: str
) -> None:
    await js.publish(topic, b"one")
    await core.delete_topic(topic)
    acks = await js.publish_many(topic, [b"two", b"three"])
    assert [a.seq for a in acks if a is not None] == [1, 2]


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


async def test_a_payload_of_exactly_max_payload_with_empty_headers_is_stored(
    js: jk.Stream, topic: str
) -> None:
    reconnects = nc_of(js).stats["reconnects"]
    ack = await js.publish(topic, b"x" * js.max_payload, headers={})
    assert ack is not None and nc_of(js).stats["reconnects"] == reconnects


async def test_publish_many_on_a_core_topic_returns_nones_and_delivers_in_order_with_headers(
    core: jk.Stream, topic: str
) -> None:
    a: list[jk.Message] = []
    b: list[bytes] = []

    async def first(msg: jk.Message) -> None:
        a.append(msg)

    async def second(data: bytes) -> None:
        b.append(data)

    sa = await core.subscribe(topic, first)
    sb = await core.subscribe(topic, second, concurrency=1, buffer_size=512)
    payloads = [b"m%d" % i for i in range(300)]
    assert await core.publish_many(topic, payloads, headers={"k": "v"}) == [None] * 300
    await wait_until(lambda: len(a) == 300 and len(b) == 300)
    assert [m.data for m in a] == b == payloads
    assert all(m.headers == {"k": "v"} for m in a)
    assert sa.stats.dropped == sb.stats.dropped == 0
    assert await core.publish_many(topic, []) == []
    await sa.stop()
    await sb.stop()


async def test_core_publish_many_lets_local_subscribers_keep_up(
    core: jk.Stream, topic: str
) -> None:
    got: list[bytes] = []

    async def handler(data: bytes) -> None:
        got.append(data)

    sub = await core.subscribe(topic, handler)  # buffer_size 1024
    payloads = [b"%d" % i for i in range(5000)]
    for p in payloads:  # the same batch one publish at a time: nothing is dropped
        await core.publish(topic, p)
    await wait_until(lambda: len(got) + sub.stats.dropped == 5000)
    assert sub.stats.dropped == 0
    got.clear()
    await core.publish_many(topic, payloads)
    await wait_until(lambda: len(got) + sub.stats.dropped == 5000)
    assert got == payloads and sub.stats.dropped == 0
    await sub.stop()

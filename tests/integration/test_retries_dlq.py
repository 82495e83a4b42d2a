"""Retries and dead letters: max_deliver and backoff, poison messages, a dead letter the
DLQ refuses, listing a DLQ and re-driving it without losing anything. (How attempts are
counted: test_attempts.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import jetkit as jk
import jetkit.sync as jsync
from conftest import Recorder, consumer_settled, wait_until, wait_until_async
from jetkit._retry import H_CONSUMER, H_DELIVERIES, H_ERROR, H_REDRIVES, H_SEQ, H_TOPIC
from jetkit.testing import Collector


def letter_headers(topic: str, seq: int, **extra: str) -> dict[str, str]:
    return {
        H_TOPIC: topic,
        H_SEQ: str(seq),
        H_DELIVERIES: "3",
        H_CONSUMER: "proc",
        H_ERROR: "RuntimeError: boom",
        **extra,
    }


async def stored(s: jk.Stream, topic: str) -> list[jk.Message]:
    """Every message stored on ``topic`` (read without a consumer)."""
    info = await s.topic_info(topic)  # (its stream holds at most that many)
    return [m async for m in s.read_stored(topic, limit=info.messages)] if info.messages else []


# -- retries, backoff and dead-lettering -------------------------------------------------


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


async def test_each_retry_waits_at_least_its_backoff_delay(js: jk.Stream, topic: str) -> None:
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


async def test_retries_wait_the_delays_exponential_backoff_gives(js: jk.Stream, topic: str) -> None:
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


# -- listing and re-driving dead letters -------------------------------------------------


async def test_a_failing_handler_dead_letter_is_listed_and_redriven(
    js: jk.Stream, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    calls = Collector(fail=lambda msg: msg.headers.get(H_REDRIVES) is None)
    sub = await js.subscribe(
        topic, calls, durable="proc", ack=jk.AckPolicy.MANUAL, max_deliver=2, dlq=dlq
    )
    await js.publish(topic, b"order-1", headers={"trace": "t1"})
    await wait_until(lambda: sub.stats.dead_lettered == 1)
    [letter] = await js.dead_letters(dlq)
    assert (letter.original_topic, letter.original_seq, letter.deliveries) == (topic, 1, 2)
    assert letter.consumer == "proc"
    assert (
        letter.error
        == f"SimulatedFailure: Collector failed delivery 2 of {topic!r} seq 1 on purpose"
    )
    assert (letter.data, letter.headers, letter.redrives) == (b"order-1", {"trace": "t1"}, 0)

    result = await js.redrive(dlq)
    assert (result.redriven, result.skipped) == (1, 0)
    await calls.wait(3)
    redriven = calls.messages[-1].headers
    assert (redriven["trace"], redriven[H_REDRIVES]) == ("t1", "1")
    assert redriven["Nats-Msg-Id"].startswith("jk-redrive-")  # a repeated re-drive dedupes
    assert await js.dead_letters(dlq) == []
    assert (await js.topic_info(dlq)).messages == 0


async def test_redrive_deletes_only_what_it_redrove(js: jk.Stream, topic: str) -> None:
    dlq = f"{topic}.dlq"
    for i in range(5):
        await js.publish(dlq, f"d{i}".encode(), headers=letter_headers(topic, i + 1))
    await js.publish(dlq, b"not a dead letter")
    result = await js.redrive(dlq, where=lambda letter: letter.data != b"d3")
    assert (result.redriven, result.skipped, result.kept) == (4, 1, 1)
    assert [m.data for m in await stored(js, dlq)] == [b"d3", b"not a dead letter"]
    assert [m.data for m in await stored(js, topic)] == [b"d0", b"d1", b"d2", b"d4"]


async def test_letters_arriving_during_a_redrive_stay(js: jk.Stream, topic: str) -> None:
    dlq = f"{topic}.dlq"
    for i in range(200):
        await js.publish(dlq, f"old{i}".encode(), headers=letter_headers(topic, i + 1))
    started = asyncio.Event()

    def select(letter: jk.DeadLetter) -> bool:
        started.set()  # the re-drive has read which letters it handles
        return True

    async def dead_letters_keep_arriving() -> None:
        await started.wait()
        for i in range(50):
            await js.publish(dlq, f"new{i}".encode(), headers=letter_headers(topic, 500 + i))

    publisher = asyncio.ensure_future(dead_letters_keep_arriving())
    result = await js.redrive(dlq, where=select)
    await publisher
    assert result.redriven == 200
    assert [m.data for m in await stored(js, dlq)] == [f"new{i}".encode() for i in range(50)]
    assert len(await stored(js, topic)) == 200


async def test_a_topic_without_dead_letters_is_refused_and_untouched(
    js: jk.Stream, topic: str
) -> None:
    for i in range(5):
        await js.publish(topic, f"m{i}".encode())
    with pytest.raises(jk.NotADeadLetterTopicError, match="no dead letter"):
        await js.redrive(topic)
    assert (await js.topic_info(topic)).messages == 5
    assert await js.dead_letters(topic) == []


async def test_letters_that_cannot_be_redriven_stay(js: jk.Stream, topic: str) -> None:
    dlq = f"{topic}.dlq"
    await js.publish(dlq, b"hostile", headers=letter_headers("$JS.API.STREAM.DELETE.x", 1))
    await js.publish(dlq, b"loop", headers=letter_headers(dlq, 2))
    await js.publish(dlq, b"fine", headers=letter_headers(topic, 3))
    result = await js.redrive(dlq, limit=5)
    assert (result.redriven, result.skipped) == (1, 2)
    assert [m.data for m in await stored(js, dlq)] == [b"hostile", b"loop"]


async def test_dead_letters_and_redrive_take_at_most_limit_letters(
    js: jk.Stream, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    for i in range(3):
        await js.publish(dlq, f"d{i}".encode(), headers=letter_headers(topic, i + 1))
    assert len(await js.dead_letters(dlq, limit=2)) == 2
    result = await js.redrive(dlq, limit=2)
    assert (result.redriven, result.kept) == (2, 1)


async def test_scan_dead_letters_reads_at_most_scan_messages_and_says_where_it_stopped(
    js: jk.Stream, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    # seq 1..6: letter, other, letter, other, other, letter
    for i, letter in enumerate([True, False, True, False, False, True]):
        headers = letter_headers(topic, i + 1) if letter else None
        await js.publish(dlq, f"m{i + 1}".encode(), headers=headers)

    everything = await js.scan_dead_letters(dlq)
    assert [x.seq for x in everything.letters] == [1, 3, 6]
    assert (everything.scanned, everything.last_seq, everything.next_seq) == (6, 6, None)
    assert everything.letters == await js.dead_letters(dlq)

    first = await js.scan_dead_letters(dlq, scan=4)  # four messages read, two of them letters
    assert ([x.seq for x in first.letters], first.scanned, first.next_seq) == ([1, 3], 4, 5)
    rest = await js.scan_dead_letters(dlq, scan=4, first_seq=first.next_seq)
    assert ([x.seq for x in rest.letters], rest.scanned, rest.next_seq) == ([6], 2, None)

    one = await js.scan_dead_letters(dlq, limit=1)  # stops at the first letter
    assert ([x.seq for x in one.letters], one.scanned, one.next_seq) == ([1], 1, 2)
    last = await js.scan_dead_letters(dlq, limit=1, first_seq=4)  # the last message: all read
    assert ([x.seq for x in last.letters], last.scanned, last.next_seq) == ([6], 3, None)

    await js.publish(dlq, b"m7", headers=letter_headers(topic, 7))
    assert (await js.scan_dead_letters(dlq, first_seq=8)) == jk.DeadLetterScan([], 0, 7)


async def test_two_redrives_at_once_redrive_each_letter_once(
    js: jk.Stream, store: Path, topic: str
) -> None:
    # a console's "re-drive" clicked twice: the other re-drive takes a letter between
    # this one reading it and deleting it (a jetkit.sync Stream blocks until it is done)
    dlq = f"{topic}.dlq"
    await js.declare_topic(topic)
    for i in range(3):
        await js.publish(dlq, f"d{i}".encode(), headers=letter_headers(topic, i + 1))
    other = jsync.Stream.open(store_dir=store)
    taken = []

    def race(letter: jk.DeadLetter) -> bool:
        if letter.seq == 2:
            taken.append(other.redrive(dlq, where=lambda x: x.seq == letter.seq))
        return True

    try:
        result = await js.redrive(dlq, where=race)
    finally:
        other.close()
    assert [(r.redriven, r.kept) for r in taken] == [(1, 1)]  # d0 was re-driven already
    assert (result.redriven, result.skipped) == (2, 0)  # the one taken is the other's
    assert [m.data for m in await stored(js, topic)] == [b"d0", b"d1", b"d2"]
    assert await js.dead_letters(dlq) == []


# -- ids unique across re-created topics, duplicates, counting (issue 21) ------------------


async def dead_lettering(s: jk.Stream, topic: str, dlq: str, **options: object) -> jk.Subscription:
    """A subscription whose handler always fails: each message goes to ``dlq`` at once."""
    return await s.subscribe(
        topic,
        Collector(fail=lambda msg: True),
        durable="proc",
        ack=jk.AckPolicy.MANUAL,
        max_deliver=1,
        dlq=dlq,
        **options,  # type: ignore[arg-type]
    )


async def test_a_topic_deleted_and_declared_again_dead_letters_again(
    js: jk.Stream, topic: str
) -> None:
    # its sequences start at 1 again: the new letter must not pass for the old one
    dlq = f"{topic}.dlq"
    sub = await dead_lettering(js, topic, dlq)
    await js.publish(topic, b"order-A")
    await wait_until(lambda: sub.stats.dead_lettered == 1)
    await sub.stop()
    await js.delete_topic(topic)
    sub = await dead_lettering(js, topic, dlq)
    ack = await js.publish(topic, b"order-B")
    assert ack is not None and ack.seq == 1
    await wait_until(lambda: sub.stats.terminated == 1)
    await sub.stop()
    assert [letter.data for letter in await js.dead_letters(dlq)] == [b"order-A", b"order-B"]


async def test_a_dlq_deleted_and_declared_again_redrives_every_letter(
    js: jk.Stream, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    await js.declare_topic(topic)
    for round_ in ("first", "second"):
        for i in range(3):
            await js.publish(dlq, f"{round_}-{i}".encode(), headers=letter_headers(topic, i + 1))
        result = await js.redrive(dlq)
        assert (result.redriven, result.skipped) == (3, 0)
        await js.delete_topic(dlq)  # its letter sequences start at 1 again
    assert [m.data for m in await stored(js, topic)] == [
        b"first-0",
        b"first-1",
        b"first-2",
        b"second-0",
        b"second-1",
        b"second-2",
    ]


async def test_a_duplicate_ack_is_not_taken_for_stored(js: jk.Stream, topic: str) -> None:
    # the topic took a re-publish with this id before (a re-drive cut off between its
    # publish and its delete), but that message is gone from the topic since: the letter
    # must stay, or it is lost
    dlq = f"{topic}.dlq"
    await js.declare_topic(topic)
    await js.publish(dlq, b"letter", headers=letter_headers(topic, 1))
    [letter] = await js.dead_letters(dlq)
    _, _, life = await jk._deadletters._snapshot(js._rt.api, js._rt.topics, dlq)
    _, headers = jk._deadletters.redrive_message(letter, life)
    await js.publish(topic, b"letter", headers=headers)
    await js.purge_topic(topic)
    result = await js.redrive(dlq)
    assert (result.redriven, result.skipped) == (0, 1)
    assert [m.data for m in await stored(js, dlq)] == [b"letter"]
    assert await stored(js, topic) == []


async def test_redrives_at_once_count_each_letter_once(js: jk.Stream, topic: str) -> None:
    dlq = f"{topic}.dlq"
    await js.declare_topic(topic)
    letters = [f"d{i}".encode() for i in range(300)]
    for i, data in enumerate(letters):
        await js.publish(dlq, data, headers=letter_headers(topic, i + 1))
    results = await asyncio.gather(*(js.redrive(dlq) for _ in range(3)))
    assert sum(r.redriven for r in results) == 300
    assert sorted(m.data for m in await stored(js, topic)) == sorted(letters)
    assert await js.dead_letters(dlq) == []


# -- a dead letter over max_payload (issue 21) ---------------------------------------------


@pytest.fixture
async def small() -> AsyncIterator[jk.Stream]:
    """A Stream on a server of its own whose max_payload is 4 KiB."""
    s = await jk.Stream.open(max_payload=4096, default_mode=jk.TopicMode.JETSTREAM)
    yield s
    await s.close()


async def test_a_dead_letter_too_large_to_copy_points_at_its_message(
    small: jk.Stream, caplog: pytest.LogCaptureFixture
) -> None:
    # the message fits, but not with the dead-letter headers beside it: the letter says
    # where the message is, the key it held goes on, and the connection never drops
    dlq = "big.dlq"
    big = bytes(range(256)) * 15 + b"x" * 100  # 3,940 bytes
    seen: list[bytes] = []

    async def handler(msg: jk.Message) -> None:
        seen.append(msg.data)
        if msg.data == big and H_REDRIVES not in msg.headers:
            raise RuntimeError("too big to handle " + "!" * 2000)

    sub = await small.subscribe(
        "big",
        handler,
        durable="proc",
        ack=jk.AckPolicy.MANUAL,
        max_deliver=2,
        dlq=dlq,
        key="Order-Id",
        concurrency=4,
    )
    await small.publish("big", big, headers={"Order-Id": "1", "trace": "t" * 40})
    await small.publish("big", b"next of the key", headers={"Order-Id": "1"})
    await small.publish("other", b"unrelated")  # the Stream keeps publishing
    await wait_until(lambda: seen[-1:] == [b"next of the key"])
    assert sub.stats.dead_lettered == 1
    [letter] = await small.dead_letters(dlq)
    assert not letter.copied and letter.original_stream == "big"
    assert (letter.original_topic, letter.original_seq, letter.deliveries) == ("big", 1, 2)
    assert letter.data == big and letter.headers == {"Order-Id": "1", "trace": "t" * 40}
    assert letter.error is not None and letter.error.startswith("RuntimeError: too big")
    result = await small.redrive(dlq)
    assert (result.redriven, result.skipped) == (1, 0)
    await wait_until(lambda: seen.count(big) == 3)  # two attempts, then the re-driven one
    assert await small.dead_letters(dlq) == []
    assert small.connected
    assert not [r for r in caplog.records if "disconnected" in r.getMessage()]
    await sub.stop()


async def test_a_dlq_with_its_own_size_limit_gets_a_letter_pointing_at_the_message(
    small: jk.Stream,
) -> None:
    # the DLQ's stream refuses messages over 512 bytes: the letter is one that fits
    await small._rt.api.call(
        "STREAM.CREATE.limited_dlq",
        {"name": "limited_dlq", "subjects": ["limited.dlq"], "max_msg_size": 512},
    )
    sub = await dead_lettering(small, "limited", "limited.dlq")
    await small.publish("limited", b"p" * 1000)
    await wait_until(lambda: sub.stats.terminated == 1)
    await sub.stop()
    [letter] = await small.dead_letters("limited.dlq")
    assert (letter.copied, letter.data, letter.original_seq) == (False, b"p" * 1000, 1)


async def test_a_letter_whose_message_is_gone_stays(small: jk.Stream) -> None:
    sub = await dead_lettering(small, "gone", "gone.dlq")
    await small.publish("gone", b"g" * 4000)
    await wait_until(lambda: sub.stats.terminated == 1)
    await sub.stop()
    await small.purge_topic("gone")
    [letter] = await small.dead_letters("gone.dlq")
    assert (letter.copied, letter.data) == (False, b"")
    result = await small.redrive("gone.dlq")
    assert (result.redriven, result.skipped) == (0, 1)
    assert len(await small.dead_letters("gone.dlq")) == 1


async def test_discard_dead_letter_removes_that_one_only(
    js: jk.Stream, store: Path, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    for i in range(3):
        await js.publish(dlq, f"d{i}".encode(), headers=letter_headers(topic, i + 1))
    await js.publish(dlq, b"not a dead letter")  # seq 4
    assert await js.discard_dead_letter(dlq, 2) is True
    assert [letter.data for letter in await js.dead_letters(dlq)] == [b"d0", b"d2"]
    assert await js.discard_dead_letter(dlq, 2) is False  # gone already
    assert await js.discard_dead_letter(dlq, 99) is False  # never there
    with pytest.raises(jk.NotADeadLetterTopicError, match=r"seq 4 .* is not a dead letter"):
        await js.discard_dead_letter(dlq, 4)
    assert [m.data for m in await stored(js, dlq)] == [b"d0", b"d2", b"not a dead letter"]
    with jsync.Stream.open(store_dir=store) as other:  # the sync facade has it too
        assert other.discard_dead_letter(dlq, 1) is True
    assert [letter.data for letter in await js.dead_letters(dlq)] == [b"d2"]


async def test_discard_dead_letter_refuses_another_topics_message(
    js: jk.Stream, topic: str
) -> None:
    # one stream for a pattern: sequences are the stream's, shared by its subjects
    await js.declare_topic(f"{topic}.>")
    dlq, other = f"{topic}.dlq", f"{topic}.other"
    await js.publish(dlq, b"d0", headers=letter_headers(topic, 1))  # seq 1
    await js.publish(other, b"looks dead", headers=letter_headers(topic, 2))  # seq 2
    with pytest.raises(jk.NotADeadLetterTopicError, match=rf"stored on '{other}', not on"):
        await js.discard_dead_letter(dlq, 2)
    assert (await js.topic_info(f"{topic}.>")).messages == 2
    assert await js.discard_dead_letter(dlq, 1) is True

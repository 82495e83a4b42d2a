"""Batch handlers: ``subscribe(..., batch=N, batch_timeout=seconds)`` (concepts/batches)."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import jetkit as jk
from conftest import wait_until, wait_until_async
from jetkit._asyncapi import asyncapi_document


@dataclasses.dataclass
class Item:
    n: int


async def settled(s: jk.Stream, topic: str, durable: str, last: int) -> bool:
    info = await s.consumer_info(topic, durable)
    return info.ack_floor >= last and info.ack_pending == 0 and info.pending == 0


async def test_lists_of_decoded_values_up_to_n(js: jk.Stream, topic: str) -> None:
    for n in range(25):
        await js.publish_json(topic, {"n": n})
    batches: list[list[int]] = []

    async def bulk(items: list[Item]) -> None:
        batches.append([i.n for i in items])

    sub = await js.subscribe(
        topic, bulk, durable="bulk", start_at=jk.StartAt.ALL, batch=10, batch_timeout=0.2
    )
    await wait_until_async(lambda: settled(js, topic, "bulk", 25))
    assert [n for b in batches for n in b] == list(range(25))  # each once, in order
    assert all(1 <= len(b) <= 10 for b in batches) and max(map(len, batches)) > 1
    assert sub.stats.acked == 25
    await sub.stop()


async def test_a_partial_batch_is_handed_over_on_drain(js: jk.Stream, topic: str) -> None:
    batches: list[list[bytes]] = []

    def bulk(msgs: list[jk.Message]) -> None:  # a sync handler, run in a thread
        batches.append([m.data for m in msgs])

    sub = await js.subscribe(topic, bulk, durable="partial", batch=10, batch_timeout=3600)
    for word in (b"a", b"b", b"c"):
        await js.publish(topic, word)
    await wait_until(lambda: sub.stats.received == 3 and sub.buffered == 0)
    assert batches == []  # waiting for the batch to fill
    await sub.drain(timeout=10)
    assert batches == [[b"a", b"b", b"c"]]
    await wait_until_async(lambda: settled(js, topic, "partial", 3))  # (acks are not awaited)


async def test_a_batch_that_fails_once_is_retried_whole(js: jk.Stream, topic: str) -> None:
    for n in range(5):
        await js.publish_json(topic, n)
    calls: list[list[int]] = []

    async def flaky(values: list[int]) -> None:
        calls.append(values)
        if len(calls) == 1:
            raise RuntimeError("the database said no")

    sub = await js.subscribe(
        topic,
        flaky,
        durable="flaky",
        start_at=jk.StartAt.ALL,
        batch=5,
        batch_timeout=30,
        backoff=0.05,
    )
    await wait_until_async(lambda: settled(js, topic, "flaky", 5))
    assert calls[0] == [0, 1, 2, 3, 4]
    assert sorted(n for c in calls[1:] for n in c) == [0, 1, 2, 3, 4]
    assert sub.stats.failed == 1 and sub.stats.retried == 5 and sub.stats.acked == 5
    await sub.stop()


async def test_manual_ack_settles_messages_on_their_own(js: jk.Stream, topic: str) -> None:
    for n in range(4):
        await js.publish_json(topic, n)
    seen: collections.Counter[int] = collections.Counter()

    async def picky(msgs: list[jk.Message]) -> None:
        for m in msgs:
            seen[int(m.data)] += 1
        first = {int(m.data): m for m in msgs}
        if 0 in first:
            await first[0].ack()  # done, whatever happens to the others
        if 1 in first:
            await first[1].term("not wanted")  # never again
        if seen[2] == 1 and 2 in first:
            raise RuntimeError("2 and 3 once more")

    sub = await js.subscribe(
        topic,
        picky,
        durable="picky",
        ack=jk.AckPolicy.MANUAL,
        start_at=jk.StartAt.ALL,
        batch=4,
        batch_timeout=0.1,  # the retried two do not fill a batch
    )
    await wait_until_async(lambda: settled(js, topic, "picky", 4))
    assert seen == {0: 1, 1: 1, 2: 2, 3: 2}
    assert sub.stats.terminated == 1
    await sub.stop()


async def test_retries_and_dead_letters_apply_per_message(js: jk.Stream, topic: str) -> None:
    dlq = f"{topic}.dlq"
    await js.publish_json(topic, 1)
    await js.publish(topic, b"not json")  # poison: dead-lettered on its own
    await js.publish_json(topic, 2)
    calls: list[list[int]] = []

    async def always(values: list[int]) -> None:
        calls.append(values)
        raise RuntimeError("down")

    sub = await js.subscribe(
        topic,
        always,
        durable="always",
        start_at=jk.StartAt.ALL,
        batch=3,
        batch_timeout=0.1,  # the retried two do not fill a batch
        max_deliver=2,
        dlq=dlq,
    )
    await wait_until_async(lambda: settled(js, topic, "always", 3))
    assert sorted(n for c in calls for n in c) == [1, 1, 2, 2]
    letters = [m.data async for m in js.read_stored(dlq, limit=3)]
    assert sorted(letters) == [b"1", b"2", b"not json"]
    assert sub.stats.dead_lettered == 3
    await sub.stop()


async def test_a_batch_pipeline_emits_per_message_once(js: jk.Stream, topic: str) -> None:
    out = f"{topic}.out"
    for n in range(6):
        await js.publish_json(topic, n)
    calls = 0

    async def squares(values: list[int]) -> list[int | None]:
        nonlocal calls
        calls += 1
        return [v * v if v % 3 else None for v in values]  # None: no output for it

    sub = await js.subscribe(
        topic, squares, durable="sq", start_at=jk.StartAt.ALL, emit=out, batch=6, batch_timeout=30
    )
    await wait_until_async(lambda: settled(js, topic, "sq", 6))
    await js.reset_consumer(topic, "sq", start_at=jk.StartAt.ALL)  # every input again
    await wait_until(lambda: sub.stats.acked == 12)
    stored = [int(m.data) async for m in js.read_stored(out, limit=10)]
    assert stored == [1, 4, 16, 25]  # once each
    assert calls >= 2 and sub.stats.emitted == 4
    await sub.stop()


async def test_a_batch_pipeline_must_return_one_entry_per_message(
    js: jk.Stream, topic: str
) -> None:
    out, dlq = f"{topic}.out", f"{topic}.dlq"
    await js.publish_json(topic, 1)
    await js.publish_json(topic, 2)

    async def short(values: list[int]) -> list[int]:
        return [sum(values)]

    sub = await js.subscribe(
        topic,
        short,
        durable="short",
        start_at=jk.StartAt.ALL,
        emit=out,
        batch=2,
        batch_timeout=30,
        max_deliver=1,
        dlq=dlq,
    )
    await wait_until_async(lambda: settled(js, topic, "short", 2))
    letters = [m async for m in js.read_stored(dlq, limit=2)]
    assert len(letters) == 2
    assert "one entry per message" in letters[0].headers["Jetkit-Error"]
    assert (await js.topic_info(out)).messages == 0
    await sub.stop()


async def test_an_app_batch_subscriber_and_its_asyncapi(store: Path, topic: str) -> None:
    app = jk.App(store_dir=store, default_mode=jk.TopicMode.JETSTREAM)
    got: list[list[int]] = []

    @app.subscriber(topic, durable="app-batch", batch=3, batch_timeout=0.1)
    async def bulk(items: list[Item]) -> None:
        got.append([i.n for i in items])

    text = json.dumps(asyncapi_document(app))
    assert "Item" in text  # the channel's payload: one element of the list
    assert "Handled in batches of up to 3 messages" in text
    async with app.serve() as s:
        for n in range(3):
            await s.publish_json(topic, {"n": n})
        await wait_until_async(lambda: settled(s, topic, "app-batch", 3))
    assert [n for b in got for n in b] == [0, 1, 2]

"""Exactly-once pipelines: ``subscribe(..., emit=...)`` and ``jk.Emit`` (concepts/pipelines).

Every output is stored before its input is acked; an input that comes again (its ack
undone: here by ``reset_consumer``, which redelivers everything acked, and by a server
kill -9) runs again and its outputs, having the same msg ids, are refused as duplicates.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from pathlib import Path

import pytest

import jetkit as jk
import jetkit.sync as jsync
from conftest import kill_server, server_of, wait_until, wait_until_async


async def stored(s: jk.Stream, topic: str) -> list[jk.Message]:
    """Every message stored on ``topic``, oldest first (read, not consumed)."""
    info = await s.topic_info(topic)
    if info.messages == 0:
        return []
    return [m async for m in s.read_stored(topic, limit=info.messages)]


async def settled(s: jk.Stream, topic: str, durable: str, last: int) -> bool:
    info = await s.consumer_info(topic, durable)
    return info.ack_floor >= last and info.ack_pending == 0 and info.pending == 0


async def test_outputs_of_a_redelivered_input_are_not_stored_again(
    js: jk.Stream, topic: str
) -> None:
    out = f"{topic}.out"
    calls: collections.Counter[int] = collections.Counter()

    async def double(n: int) -> int:
        calls[n] += 1
        return n * 2

    sub = await js.subscribe(topic, double, durable="pipe", emit=out, start_at=jk.StartAt.ALL)
    for n in range(20):
        await js.publish_json(topic, n)
    await wait_until_async(lambda: settled(js, topic, "pipe", 20))
    first = await stored(js, out)
    assert [int(m.data) for m in first] == [n * 2 for n in range(20)]
    ids = [m.headers["Nats-Msg-Id"] for m in first]
    assert len(set(ids)) == 20 and all(i.startswith("jk-emit-") for i in ids)
    assert sub.stats.emitted == 20 and sub.stats.acked == 20

    # every ack undone: all 20 inputs come again and run again
    await js.reset_consumer(topic, "pipe", start_at=jk.StartAt.ALL)
    await wait_until(lambda: all(calls[n] == 2 for n in range(20)), state=lambda: calls)
    await wait_until_async(lambda: settled(js, topic, "pipe", 20))
    again = await stored(js, out)
    assert [m.headers["Nats-Msg-Id"] for m in again] == ids  # nothing stored twice
    assert sub.stats.emitted == 20 and sub.stats.acked == 40
    await sub.stop()


async def test_several_outputs_to_several_topics_in_order_with_headers(
    js: jk.Stream, topic: str
) -> None:
    a, b = f"{topic}.a", f"{topic}.b"

    async def split(text: str) -> list[jk.Emit]:
        return [
            jk.Emit(a, f"{text}-1", headers={"Part": "1"}),
            jk.Emit(b, {"text": text}),
            jk.Emit(a, f"{text}-3".encode()),
        ]

    async def nothing(text: str) -> None:
        return None

    sub = await js.subscribe(topic, split, durable="split", emit=a)
    other = await js.subscribe(f"{topic}.quiet", nothing, durable="quiet", emit=b)
    await js.publish(f"{topic}.quiet", b"x")
    for word in ("x", "y"):
        await js.publish(topic, word.encode())
    await wait_until_async(lambda: settled(js, topic, "split", 2))
    got_a = await stored(js, a)
    assert [m.data for m in got_a] == [b"x-1", b"x-3", b"y-1", b"y-3"]
    assert [m.headers.get("Part") for m in got_a] == ["1", None, "1", None]
    assert [m.data for m in await stored(js, b)] == [b'{"text":"x"}', b'{"text":"y"}']
    # the quiet pipeline's input (None returned) was acked and emitted nothing
    await wait_until_async(lambda: settled(js, f"{topic}.quiet", "quiet", 1))
    assert other.stats.emitted == 0
    await sub.stop()
    await other.stop()


async def test_a_failed_output_publish_retries_the_input_and_stores_each_output_once(
    js: jk.Stream, topic: str
) -> None:
    first, full = f"{topic}.first", f"{topic}.full"
    # one message fills it, and the next is refused: the second output fails
    await js.declare_topic(full, max_msgs=1, discard=jk.Discard.NEW)
    await js.publish(full, b"filler")
    calls: list[int] = []

    async def two(n: int) -> list[jk.Emit]:
        calls.append(n)
        return [jk.Emit(first, n), jk.Emit(full, n)]

    sub = await js.subscribe(topic, two, durable="two", emit=first, max_deliver=5, backoff=0.05)
    await js.publish_json(topic, 7)
    await wait_until(lambda: sub.stats.retried >= 1)
    await js.purge_topic(full)  # room again: the retry stores the second output
    await wait_until_async(lambda: settled(js, topic, "two", 1))
    assert len(calls) >= 2
    assert [m.data for m in await stored(js, first)] == [b"7"]  # its retry was a duplicate
    assert [m.data for m in await stored(js, full)] == [b"7"]
    assert sub.stats.dead_lettered == 0
    await sub.stop()


async def test_a_dead_lettered_input_emits_nothing(js: jk.Stream, topic: str) -> None:
    out, dlq = f"{topic}.out", f"{topic}.dlq"
    seen: list[int] = []

    async def picky(n: int) -> int:
        seen.append(n)
        if n % 3 == 0:
            raise ValueError(f"no {n}")
        return n

    sub = await js.subscribe(
        topic, picky, durable="picky", emit=out, max_deliver=2, dlq=dlq, backoff=0.01
    )
    for n in range(1, 10):
        await js.publish_json(topic, n)
    await wait_until_async(lambda: settled(js, topic, "picky", 9))
    assert sorted(int(m.data) for m in await stored(js, out)) == [1, 2, 4, 5, 7, 8]
    assert sorted(int(m.data) for m in await stored(js, dlq)) == [3, 6, 9]
    assert collections.Counter(seen)[3] == 2
    await sub.stop()


async def test_order_per_key_is_kept(js: jk.Stream, topic: str) -> None:
    out = f"{topic}.out"

    async def tag(msg: jk.Message) -> str:
        if int(msg.data) % 5 == 0:
            await asyncio.sleep(0.01)  # a slow one: the others of its key wait for it
        return f"{msg.headers['K']}:{msg.data.decode()}"

    sub = await js.subscribe(topic, tag, durable="keyed", emit=out, key="K", concurrency=4)
    for n in range(60):
        await js.publish(topic, str(n).encode(), headers={"K": f"k{n % 4}"})
    await wait_until_async(lambda: settled(js, topic, "keyed", 60))
    per_key: dict[str, list[int]] = collections.defaultdict(list)
    for m in await stored(js, out):
        key, n = m.data.decode().split(":")
        per_key[key].append(int(n))
    assert per_key == {f"k{k}": list(range(k, 60, 4)) for k in range(4)}
    await sub.stop()


async def test_the_handler_may_not_settle_its_input(js: jk.Stream, topic: str) -> None:
    out = f"{topic}.out"
    refused: list[Exception] = []

    async def settles(msg: jk.Message) -> bytes:
        try:
            await msg.ack()
        except jk.ConfigError as exc:
            refused.append(exc)
        return msg.data

    sub = await js.subscribe(topic, settles, durable="settles", emit=out)
    await js.publish(topic, b"a")
    await wait_until_async(lambda: settled(js, topic, "settles", 1))
    assert len(refused) == 1 and "settled by jetkit" in str(refused[0])
    assert [m.data for m in await stored(js, out)] == [b"a"]
    await sub.stop()


async def test_emit_returned_without_emit_option_is_logged_not_published(
    js: jk.Stream, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    out = f"{topic}.out"
    await js.declare_topic(out)
    sentinel = asyncio.Event()

    async def forgot(msg: jk.Message) -> jk.Emit | None:
        if msg.data == b"end":
            sentinel.set()
            return None
        return jk.Emit(out, msg.data)

    with caplog.at_level(logging.ERROR, logger="jetkit"):
        sub = await js.subscribe(topic, forgot, durable="forgot")
        await js.publish(topic, b"a")
        await js.publish(topic, b"end")
        await asyncio.wait_for(sentinel.wait(), 10)
    assert "returned jk.Emit, but the subscription has no emit=" in caplog.text
    assert (await js.topic_info(out)).messages == 0
    await sub.stop()


async def test_emit_to_a_core_topic_is_refused(js: jk.Stream, topic: str) -> None:
    out = f"{topic}.core"
    await js.declare_topic(out, mode=jk.TopicMode.CORE)

    async def h(data: bytes) -> bytes:
        return data

    with pytest.raises(jk.ConfigError, match="is a core topic: outputs are stored"):
        await js.subscribe(topic, h, emit=out)


async def test_duplicate_window_is_set_and_checked(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(topic, duplicate_window=600)
    info = await js._rt.api.call(f"STREAM.INFO.{(await js._rt.topics.stream_of(topic))[0]}")
    assert info["config"]["duplicate_window"] == 600 * 10**9
    with pytest.raises(jk.ConfigError, match=r"duplicate_window .* is longer than max_age"):
        await js.declare_topic(topic, max_age=60, duplicate_window=120)


def test_a_sync_handler_in_jetkit_sync(topic: str) -> None:
    out = f"{topic}.out"

    def upper(text: str) -> str:
        return text.upper()

    with jsync.Stream.open(default_mode=jk.TopicMode.JETSTREAM) as s:
        sub = s.subscribe(topic, upper, durable="sync", emit=out)
        s.publish(topic, b"abc")
        for _ in range(1000):
            info = s.consumer_info(topic, "sync")  # a round trip per look
            if info.ack_floor == 1 and info.ack_pending == 0:
                break
        assert [m.data for m in s.read_stored(out)] == [b"ABC"]
        sub.stop()


async def test_an_app_pipeline(store: Path, topic: str) -> None:
    app = jk.App(store_dir=store, default_mode=jk.TopicMode.JETSTREAM)
    out = f"{topic}.out"

    @app.subscriber(topic, durable="app", emit=out)
    def shout(text: str) -> str:  # a sync handler, run in a thread
        return text + "!"

    async with app.serve() as s:
        await s.publish(topic, b"hi")
        await wait_until_async(lambda: settled(s, topic, "app", 1))
        assert [m.data for m in await stored(s, out)] == [b"hi!"]


async def test_outputs_once_across_server_kills(tmp_path: Path, topic: str) -> None:
    out = f"{topic}.out"
    count = 600
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        server = server_of(s)
        await s.publish_many(topic, (str(n).encode() for n in range(count)))
        calls: collections.Counter[bytes] = collections.Counter()

        async def copy(data: bytes) -> bytes:
            calls[data] += 1
            return data

        sub = await s.subscribe(
            topic, copy, durable="kills", emit=out, start_at=jk.StartAt.ALL, ack_wait=2
        )
        for part in (1, 2):
            await wait_until(lambda p=part: len(calls) >= count * p // 3, 60)  # type: ignore[misc]
            server._crashes = 0  # one crash each, not a crash loop
            kill_server(server)
        await wait_until(lambda: len(calls) == count, 120)
        await wait_until_async(lambda: settled(s, topic, "kills", count), 120)
        data = [m.data for m in await stored(s, out)]
        assert len(data) == count and set(data) == {str(n).encode() for n in range(count)}
        await sub.stop()


async def test_an_output_that_cannot_be_encoded_fails_the_attempt(
    js: jk.Stream, topic: str
) -> None:
    out, dlq = f"{topic}.out", f"{topic}.dlq"

    async def odd(data: bytes) -> object:
        return object()  # not JSON

    sub = await js.subscribe(topic, odd, durable="odd", emit=out, max_deliver=1, dlq=dlq)
    await js.publish(topic, b"x")
    await wait_until_async(lambda: settled(js, topic, "odd", 1))
    [letter] = [m async for m in js.read_stored(dlq, limit=1)]
    assert "cannot encode object as JSON" in letter.headers["Jetkit-Error"]
    assert (await js.topic_info(out)).messages == 0
    await sub.stop()

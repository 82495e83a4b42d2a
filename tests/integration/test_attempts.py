"""max_deliver counts handler calls: deliveries that never reached a handler (a stop, a
kill -9, a copy of a message still held) do not count, and a message whose handler
succeeded is never dead-lettered."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import jetkit as jk
from conftest import wait_until, wait_until_async
from jetkit.testing import Collector


async def settled(s: jk.Stream, topic: str, durable: str) -> bool:
    info = await s.consumer_info(topic, durable)
    return info.pending == 0 and info.ack_pending == 0


async def test_messages_handed_back_by_stop_keep_their_attempts(js: jk.Stream, topic: str) -> None:
    # two subscriptions stop while one message is in the handler and four wait in the
    # buffer: those never reached a handler, so they keep their attempts (max_deliver=2);
    # a message cut short in the handler both times had its two, and is dead-lettered
    dlq = f"{topic}.dlq"
    gate = asyncio.Event()
    options = dict(durable="d", ack=jk.AckPolicy.MANUAL, max_deliver=2, dlq=dlq, ack_wait=30)
    await js.declare_topic(topic)
    payloads = [f"m{i}".encode() for i in range(5)]
    for data in payloads:
        await js.publish(topic, data)
    cut: list[bytes] = []
    for _ in range(2):
        started: list[bytes] = []

        async def blocked(msg: jk.Message, started: list[bytes] = started) -> None:
            started.append(msg.data)
            await gate.wait()

        sub = await js.subscribe(topic, blocked, start_at=jk.StartAt.ALL, **options)  # type: ignore[arg-type]
        await wait_until(lambda sub=sub, started=started: len(started) == 1 and sub.buffered == 4)
        await sub.stop()
        cut += started
    handled = Collector()
    sub = await js.subscribe(topic, handled, **options)  # type: ignore[arg-type]
    twice = [data for data in payloads if cut.count(data) == 2]
    await handled.wait(5 - len(twice))
    await wait_until_async(lambda: settled(js, topic, "d"))
    await sub.stop()
    assert sorted((m.data, m.num_delivered) for m in handled.messages) == sorted(
        (data, 1 + cut.count(data)) for data in payloads if data not in twice
    )
    letters = await js.dead_letters(dlq)
    assert [(letter.data, letter.deliveries) for letter in letters] == [(d, 2) for d in twice]
    for letter in letters:
        assert letter.error is not None
        assert letter.error.startswith("Interrupted: handler call 2 of 2")


async def test_a_nak_by_the_handler_is_an_attempt(js: jk.Stream, topic: str) -> None:
    seen: list[int] = []

    async def handler(msg: jk.Message) -> None:
        seen.append(msg.num_delivered)
        await msg.nak()

    dlq = f"{topic}.dlq"
    sub = await js.subscribe(
        topic, handler, durable="n", ack=jk.AckPolicy.MANUAL, max_deliver=3, dlq=dlq
    )
    await js.publish(topic, b"x")
    await wait_until(lambda: sub.stats.terminated == 1)
    await sub.stop()
    assert seen == [1, 2, 3]
    [letter] = await js.dead_letters(dlq)
    assert letter.deliveries == 3


async def test_a_blocked_loop_dead_letters_nothing_that_succeeded(
    js: jk.Stream, topic: str
) -> None:
    # the event loop is blocked past ack_wait once: the server sends copies of what was
    # pulled; each message is handled once and none is dead-lettered
    dlq = f"{topic}.dlq"
    calls: list[bytes] = []

    async def handler(msg: jk.Message) -> None:
        calls.append(msg.data)
        if msg.data == b"m0":
            time.sleep(2.0)  # noqa: ASYNC251 - the point: no keep-alive can go out

    sub = await js.subscribe(
        topic,
        handler,
        durable="blocked",
        ack=jk.AckPolicy.MANUAL,
        max_deliver=1,
        ack_wait=0.5,
        dlq=dlq,
    )
    for i in range(5):
        await js.publish(topic, f"m{i}".encode())
    await js.publish(topic, b"sentinel")
    await wait_until(lambda: b"sentinel" in calls)
    await wait_until_async(lambda: settled(js, topic, "blocked"))
    info = await js.consumer_info(topic, "blocked")
    assert info.ack_floor_consumer_seq > 6, "the server sent no copies: nothing was tested"
    assert sorted(calls) == [b"m0", b"m1", b"m2", b"m3", b"m4", b"sentinel"]
    assert sub.stats.dead_lettered == 0
    await sub.stop()
    assert await js.dead_letters(dlq) == []


async def test_a_copy_of_a_keyed_message_that_finished_does_not_run_again(
    js: jk.Stream, topic: str
) -> None:
    # ordered per key, no max_deliver: a copy of a message that already succeeded must
    # not run after the later messages of its key
    calls: list[bytes] = []

    async def handler(msg: jk.Message) -> None:
        calls.append(msg.data)
        if msg.data == b"k0":
            time.sleep(2.0)  # noqa: ASYNC251 - the point: no keep-alive can go out

    sub = await js.subscribe(
        topic,
        handler,
        durable="keyed",
        ack=jk.AckPolicy.MANUAL,
        ack_wait=0.5,
        key="K",
        concurrency=4,
    )
    for i in range(4):
        await js.publish(topic, f"k{i}".encode(), headers={"K": "same"})
    await js.publish(topic, b"sentinel", headers={"K": "same"})
    await wait_until(lambda: b"sentinel" in calls)
    await wait_until_async(lambda: settled(js, topic, "keyed"))
    info = await js.consumer_info(topic, "keyed")
    assert info.ack_floor_consumer_seq > 5, "the server sent no copies: nothing was tested"
    assert calls == [b"k0", b"k1", b"k2", b"k3", b"sentinel"]
    await sub.stop()


BUFFERING_CHILD = """
import asyncio, sys
import jetkit as jk

async def main():
    s = await jk.Stream.open(store_dir=sys.argv[1], default_mode=jk.TopicMode.JETSTREAM)

    async def handler(msg: jk.Message) -> None:
        print("handling", msg.data.decode(), flush=True)
        await asyncio.sleep(60)  # killed here; the other messages wait in the buffer

    await s.subscribe("buffered.test", handler, durable="worker", ack=jk.AckPolicy.MANUAL,
                      max_deliver=2, ack_wait=1, dlq="buffered.dlq", start_at=jk.StartAt.ALL)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def deliveries(s: jk.Stream) -> int:
    """How many deliveries the consumer made so far (copies and redeliveries included)."""
    info = await s._rt.api.call("CONSUMER.INFO.buffered_test.worker")
    return int(info["delivered"]["consumer_seq"])


async def test_messages_buffered_by_a_killed_worker_keep_their_attempts(tmp_path: Path) -> None:
    # kill -9 twice while one message is in the handler and four are buffered: the four
    # are handled by the next worker; the one handled (and killed) twice is handled too,
    # since a first call cut by kill -9 is the one call not counted (see _attempts)
    async with await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        for i in range(5):
            await s.publish("buffered.test", f"m{i}".encode())
        for round_ in (1, 2):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", BUFFERING_CHILD, str(tmp_path), stdout=subprocess.PIPE
            )
            try:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line.decode().split() == ["handling", "m0"]
                # all five were delivered to this worker before it dies
                await wait_until_async(lambda round_=round_: _at_least(s, 5 * round_), timeout=20)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGKILL)
                await proc.wait()
        handled = Collector()
        sub = await s.subscribe(
            "buffered.test",
            handled,
            durable="worker",
            ack=jk.AckPolicy.MANUAL,
            max_deliver=2,
            ack_wait=1,
            dlq="buffered.dlq",
        )
        await handled.wait(5, timeout=20)
        await wait_until_async(lambda: settled(s, "buffered.test", "worker"))
        assert sorted((m.data, m.num_delivered) for m in handled.messages) == [
            (b"m0", 2), (b"m1", 1), (b"m2", 1), (b"m3", 1), (b"m4", 1)
        ]  # fmt: skip
        assert sub.stats.dead_lettered == 0
        await sub.stop()


async def _at_least(s: jk.Stream, n: int) -> bool:
    return await deliveries(s) >= n


async def test_a_message_that_succeeds_starts_its_count_over(js: jk.Stream, topic: str) -> None:
    # a kill -9 of the server can undo an ack: the message comes again, and the calls it
    # had before it succeeded must not count, or a message that succeeded is
    # dead-lettered (seen in the keyed fault scenario: a message that failed twice,
    # succeeded, and came back twice more). Its record is 0 once it succeeded.
    handled = Collector(fail_first=1)
    sub = await js.subscribe(topic, handled, durable="over", ack=jk.AckPolicy.MANUAL, max_deliver=2)
    await js.publish(topic, b"x")
    await handled.wait(2)
    await wait_until_async(lambda: settled(js, topic, "over"))
    key = sub._record(1)  # type: ignore[attr-defined]
    await sub.stop()

    async def recorded() -> bytes:
        record = await js._rt.api.call(
            "STREAM.MSG.GET.JK-ATTEMPTS", {"last_by_subj": f"$JK.ATTEMPTS.{key}"}
        )
        return jk.Message.stored(record["message"]).data

    assert await recorded() in (b"2", b"0")  # 2 was written before the second call
    await wait_until_async(lambda: _is(recorded(), b"0"))


async def _is(value: Awaitable[bytes], expected: bytes) -> bool:
    return await value == expected

"""Kills and stops: the server, the owner, consumers. Nothing acknowledged may be lost.

Each scenario counts what was acknowledged, stored, processed, lost (must be 0) and
duplicated, and how long recovery took; the figures are printed at the end of the run
(``--faults-report PATH`` writes them as JSON for RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import jetkit as jk
from conftest import kill_server, server_of, wait_until

from .conftest import Child, Figures, read_all

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(900)]

TOPIC = "fault.events"
RETRYABLE = (jk.ConnectionError, jk.TimeoutError, jk.JetStreamError)


async def publish_until_acked(s: jk.Stream, index: int, deadline: float) -> jk.PubAck:
    """Publish m<index> with its msg_id, again and again until the server acks it."""
    while True:
        try:
            ack = await s.publish(TOPIC, f"m{index}".encode(), msg_id=f"m{index}")
        except RETRYABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
            continue
        assert ack is not None
        return ack


def isolated_crash(server: Any) -> None:
    """Each kill here is one crash, not a crash loop: the supervisor's growing delay for
    crash loops (tested in test_resilience.py) would otherwise be measured instead."""
    server._crashes = 0


async def until_all_acked(s: jk.Stream, durable: str, count: int, timeout: float = 180) -> None:
    """Wait until the server's ack floor of ``durable`` reaches ``count``.

    The consumers' own lines cannot tell: an ack whose confirmation was cut off (or
    whose line was never printed) may still have been recorded, and then the message
    is rightly not delivered again.
    """
    deadline = time.monotonic() + timeout
    while (await s.consumer_info(TOPIC, durable)).ack_floor < count:
        assert time.monotonic() < deadline, f"{durable} did not acknowledge all {count}"
        await asyncio.sleep(0.1)


def counted(fig: Figures, acked_ids: set[str], stored: list[jk.Message]) -> None:
    ids = [m.data.decode() for m in stored]
    fig.acked = len(acked_ids)
    fig.stored = len(ids)
    fig.lost = len(acked_ids - set(ids))
    fig.duplicated = len(ids) - len(set(ids))


async def test_server_kill_during_publish(
    tmp_path: Path, scale: Callable[[int, int], int], figures: Callable[[str], Figures]
) -> None:
    count, cycles, workers = scale(3_000, 30_000), scale(3, 15), 32
    fig = figures("server kill -9 during publish (msg_id retries)")
    fig.cycles = cycles
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        server = server_of(s)
        assert server is not None
        acked: set[str] = set()
        next_index = iter(range(count))
        deadline = time.monotonic() + 600

        async def worker() -> None:
            for i in next_index:
                await publish_until_acked(s, i, deadline)
                acked.add(f"m{i}")

        tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
        for k in range(cycles):
            await wait_until(lambda k=k: len(acked) >= count * (k + 1) // (cycles + 1), 120)  # type: ignore[misc]
            before = len(acked)
            killed = time.monotonic()
            isolated_crash(server)
            kill_server(server)
            await wait_until(lambda b=before: len(acked) > b + workers, 60)  # type: ignore[misc]
            fig.recoveries.append(time.monotonic() - killed)
        await asyncio.gather(*tasks)
        counted(fig, acked, await read_all(s, TOPIC))
        assert server.restart_count == cycles
    assert fig.lost == 0
    assert fig.duplicated == 0  # msg_id dedupes the retries


@pytest.mark.parametrize("sync_always", [False, True], ids=["default", "sync_always"])
async def test_server_kill_during_consume(
    tmp_path: Path,
    scale: Callable[[int, int], int],
    figures: Callable[[str], Figures],
    sync_always: bool,
) -> None:
    count, cycles = scale(3_000, 20_000), scale(3, 10)
    fig = figures(f"server kill -9 during consume (ack(wait=True){', sync_always' * sync_always})")
    fig.cycles = cycles
    async with jk.Stream.open(
        store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM, sync_always=sync_always
    ) as s:
        server = server_of(s)
        assert server is not None
        await s.publish_many(TOPIC, (f"m{i}".encode() for i in range(count)))
        deliveries: collections.Counter[str] = collections.Counter()
        confirmed: set[str] = set()
        forgotten: set[str] = set()

        async def handler(msg: jk.Message) -> None:
            data = msg.data.decode()
            deliveries[data] += 1
            if data in confirmed:
                forgotten.add(data)  # the server confirmed this ack before, then forgot it
            try:
                await msg.ack(wait=True)
            except RETRYABLE:
                return  # not confirmed: it comes back after ack_wait
            confirmed.add(data)

        await s.subscribe(
            TOPIC,
            handler,
            durable="proc",
            ack=jk.AckPolicy.MANUAL,
            start_at=jk.StartAt.ALL,
            ack_wait=2,
            concurrency=8,
        )
        began = time.monotonic()
        await wait_until(lambda: len(confirmed) >= count // (cycles + 1), 120)
        rate = len(confirmed) / (time.monotonic() - began)
        for k in range(cycles):
            await wait_until(lambda k=k: len(confirmed) >= count * (k + 1) // (cycles + 1), 120)  # type: ignore[misc]
            before = len(confirmed)
            killed = time.monotonic()
            isolated_crash(server)
            kill_server(server)
            await wait_until(lambda b=before: len(confirmed) > b + 10, 60)  # type: ignore[misc]
            fig.recoveries.append(time.monotonic() - killed)
        await wait_until(lambda: len(deliveries) == count, 180)
        await until_all_acked(s, "proc", count)
        fig.acked = len(confirmed)
        fig.stored = (await s.topic_info(TOPIC)).messages
        fig.processed = sum(deliveries.values())
        fig.lost = count - len(deliveries)
        fig.duplicated = fig.processed - len(deliveries)
        fig.acks_forgotten = len(forgotten)
        fig.note = (
            f"{len(forgotten) / cycles:.0f} confirmed acks undone per kill at ~{rate:.0f} acks/s"
        )
        info = await s.consumer_info(TOPIC, "proc")
        assert info.ack_floor == count and info.pending == 0
    assert fig.lost == 0


async def test_owner_kill_during_publish(
    tmp_path: Path,
    scale: Callable[[int, int], int],
    figures: Callable[[str], Figures],
    children: Any,
) -> None:
    cycles, per_cycle = scale(3, 12), scale(300, 1_000)
    fig = figures("owner process kill -9 during publish (msg_id)")
    fig.cycles = cycles
    acked: set[str] = set()
    start = 0
    killed: float | None = None
    for _ in range(cycles):
        child: Child = await children("owner.py", tmp_path, TOPIC, start, 1_000_000)
        goal = start + per_cycle
        line = await child.read_until(lambda ln: ln.startswith("acked"))
        if killed is not None:
            fig.recoveries.append(time.monotonic() - killed)
        while True:
            index = int(line.split()[1])
            acked.add(f"m{index}")
            if index >= goal:
                break
            line = await child.read_until(lambda ln: ln.startswith("acked"))
        child.signal(signal.SIGKILL)
        killed = time.monotonic()
        await child.kill()
        # what it printed while dying counts too; go on after the last acknowledged one
        for ln in child.lines:
            if ln.startswith("acked"):
                acked.add(f"m{int(ln.split()[1])}")
        start = max(int(a[1:]) for a in acked) + 1
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        assert s.embedded  # the killed owner's server went with it
        counted(fig, acked, await read_all(s, TOPIC))
    assert fig.lost == 0


async def test_consumer_kill_cycles(
    tmp_path: Path,
    scale: Callable[[int, int], int],
    figures: Callable[[str], Figures],
    children: Any,
) -> None:
    count, cycles = scale(2_000, 20_000), scale(4, 15)
    fig = figures("consumer process kill -9 cycles (ack(wait=True))")
    fig.cycles = cycles
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        await s.publish_many(TOPIC, (f"m{i}".encode() for i in range(count)))
        lines: list[str] = []
        killed: float | None = None
        for k in range(cycles + 1):
            child: Child = await children("consumer.py", tmp_path, TOPIC, "worker", 1)
            await child.read_until(lambda ln: ln == "ready")
            if k == cycles:  # the last one finishes the work
                await until_all_acked(s, "worker", count)
                await child.kill()
                lines += child.lines
                break
            await child.read_until(lambda ln: ln.startswith("acked"))
            if killed is not None:
                fig.recoveries.append(time.monotonic() - killed)
            for _ in range(count // (cycles + 2)):
                await child.read_until(lambda ln: ln.startswith("acked"))
            killed = time.monotonic()
            await child.kill()
            lines += child.lines
        got = [ln.split()[1] for ln in lines if ln.startswith("got")]
        acked = {ln.split()[1] for ln in lines if ln.startswith("acked")}
        redelivered_after_ack = 0
        seen_ack: set[str] = set()
        for ln in lines:
            kind, data = ln.split()[:2] if " " in ln else (ln, "")
            if kind == "acked":
                seen_ack.add(data)
            elif kind == "got" and data in seen_ack:
                redelivered_after_ack += 1
        fig.acked = len(acked)
        fig.stored = (await s.topic_info(TOPIC)).messages
        fig.processed = len(got)
        fig.lost = count - len(set(got))
        fig.duplicated = len(got) - len(set(got))
        fig.acks_forgotten = redelivered_after_ack
    assert fig.lost == 0
    assert redelivered_after_ack == 0  # the server never died: a confirmed ack holds


async def test_sigstop_longer_than_heartbeats_and_ack_wait(
    tmp_path: Path,
    scale: Callable[[int, int], int],
    figures: Callable[[str], Figures],
    children: Any,
) -> None:
    count, cycles = scale(1_000, 5_000), scale(1, 3)
    fig = figures("consumer SIGSTOP 12 s (> 2 heartbeats, > ack_wait), another takes over")
    fig.cycles = cycles
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        stopped: Child = await children("consumer.py", tmp_path, TOPIC, "shared", 1)
        other: Child = await children("consumer.py", tmp_path, TOPIC, "shared", 1)
        for child in (stopped, other):
            await child.read_until(lambda ln: ln == "ready")
        total = 0
        for _ in range(cycles):
            await s.publish_many(TOPIC, (f"m{total + i}".encode() for i in range(count)))
            total += count
            await stopped.read_until(lambda ln: ln.startswith("got"))
            stopped.signal(signal.SIGSTOP)
            frozen = time.monotonic()
            # the other consumer gets everything, including what the stopped one held
            # the other consumer gets everything the stopped one held (the server's ack
            # floor tells: the stopped one may have acked a message it could not report)
            await until_all_acked(s, "shared", total, timeout=60)
            fig.recoveries.append(time.monotonic() - frozen)  # until all were handled
            await asyncio.sleep(max(0.0, 12 - (time.monotonic() - frozen)))
            stopped.signal(signal.SIGCONT)
        # the stopped one still works: stop the other and give it new messages
        await other.kill()
        await s.publish_many(TOPIC, (f"m{total + i}".encode() for i in range(50)))
        total += 50
        fresh = {f"m{i}" for i in range(total - 50, total)}
        await wait_until(lambda: _acked(stopped) >= fresh, 60)
        got = [ln.split()[1] for c in (stopped, other) for ln in c.lines if ln.startswith("got")]
        fig.acked = len(_acked(other) | _acked(stopped))
        fig.stored = (await s.topic_info(TOPIC)).messages
        fig.processed = len(got)
        fig.lost = total - len(set(got))
        fig.duplicated = len(got) - len(set(got))
    assert fig.lost == 0


def _acked(child: Child) -> set[str]:
    return {ln.split()[1] for ln in child.lines if ln.startswith("acked")}


def _all(total: int) -> set[str]:
    return {f"m{i}" for i in range(total)}


async def restarted(s: jk.Stream, server: Any, restarts: int, topic: str) -> None:
    """Wait until the supervisor has restarted the server ``restarts`` times in all and
    the new one answers a call."""
    deadline = time.monotonic() + 60
    while True:
        if server.restart_count >= restarts:
            try:
                await s.topic_info(topic)
                return
            except RETRYABLE:
                pass
        assert time.monotonic() < deadline, "the server did not come back within 60 s"
        await asyncio.sleep(0.02)


async def test_server_kill_with_scheduled_messages(
    tmp_path: Path, scale: Callable[[int, int], int], figures: Callable[[str], Figures]
) -> None:
    """Messages held for deliver_after survive kill -9 of the server; cancels hold."""
    count, cycles, spread = scale(200, 2_000), scale(3, 6), scale(3, 8)
    topic, lead = "fault.scheduled", 2.0
    fig = figures("server kill -9 while scheduled messages are held and fall due")
    fig.cycles = cycles
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        server = server_of(s)
        await s.declare_topic(topic)
        deliveries: collections.Counter[str] = collections.Counter()
        seqs: dict[str, set[int]] = collections.defaultdict(set)

        async def handler(msg: jk.Message) -> None:
            data = msg.data.decode()
            deliveries[data] += 1
            seqs[data].add(msg.seq or 0)
            await msg.ack()  # an ack the kill undoes shows up as a duplicate

        await s.subscribe(
            topic, handler, durable="sched", ack=jk.AckPolicy.MANUAL, ack_wait=2, concurrency=8
        )

        async def schedule(i: int) -> jk.ScheduledMessage:
            # due from ``lead`` to ``lead + spread`` seconds from now, in index order
            return await s.publish(
                topic, f"s{i}".encode(), deliver_after=lead + spread * i / count, msg_id=f"s{i}"
            )

        held = await asyncio.gather(*(schedule(i) for i in range(count)))
        assert not any(h.duplicate for h in held)
        # cancelled: every 10th before any kill, every 10th + 5 while the server is killed
        outcome: dict[int, bool | str] = {}
        for i in range(0, count, 10):
            outcome[i] = await s.cancel_scheduled(held[i])
        assert all(outcome.values())  # nothing was due yet

        failed_tries: list[float] = []  # how long a cancel cut off by a kill took to fail

        async def cancel_during_kills() -> None:
            deadline = time.monotonic() + 120
            for i in range(5, count, 10):
                # each one about half a second before it falls due
                early = (held[i].deliver_at - dt.datetime.now(dt.UTC)).total_seconds() - 0.5
                await asyncio.sleep(max(0.0, early))
                unsure = False
                while True:
                    began = time.monotonic()
                    try:
                        result = await s.cancel_scheduled(held[i])
                    except RETRYABLE:
                        failed_tries.append(time.monotonic() - began)
                        assert time.monotonic() < deadline, "cancel_scheduled kept failing"
                        unsure = True  # that try may have cancelled it
                        await asyncio.sleep(0.02)
                        continue
                    break
                # False after a failed try: cancelled by that try, or delivered before
                outcome[i] = "unsure" if unsure and not result else result

        canceller = asyncio.ensure_future(cancel_during_kills())
        expected_first = count - len(outcome)
        for k in range(cycles):
            # the first kill while everything is held, the others while they fall due
            if k:
                goal = expected_first * k // cycles
                await wait_until(lambda g=goal: len(deliveries) >= g, 60)  # type: ignore[misc]
            killed = time.monotonic()
            isolated_crash(server)
            kill_server(server)
            await restarted(s, server, k + 1, topic)
            fig.recoveries.append(time.monotonic() - killed)
        await asyncio.wait_for(canceller, 120)
        # the sentinel falls due after every other message: once it is here, all of them
        # have been put on the topic before it
        last_due = max(h.deliver_at for h in held)
        wait = (last_due - dt.datetime.now(dt.UTC)).total_seconds() + 1
        await s.publish(topic, b"sentinel", deliver_after=max(wait, 1.0), msg_id="sentinel")
        await wait_until(lambda: deliveries["sentinel"] > 0, 120)
        # redeliveries of acks the kills undid come after ack_wait: wait for the ack floor
        deadline = time.monotonic() + 120
        while (info := await s.consumer_info(topic, "sched")).pending or info.ack_pending:
            assert time.monotonic() < deadline, f"sched still has {info} to deliver"
            await asyncio.sleep(0.1)
        cancelled = {f"s{i}" for i, r in outcome.items() if r is True}
        unsure = {f"s{i}" for i, r in outcome.items() if r == "unsure"}
        expected = {f"s{i}" for i in range(count)} - cancelled - unsure
        got = set(deliveries) - {"sentinel"}
        fig.acked = count  # scheduled publishes the server acknowledged
        fig.stored = (await s.topic_info(topic)).messages - 1  # delivered, not the sentinel
        fig.processed = sum(deliveries.values()) - deliveries["sentinel"]
        fig.lost = len(expected - got)
        fig.duplicated = fig.processed - len(got)
        stored_twice = sum(len(seqs[d]) - 1 for d in got)
        arrived_cancelled = cancelled & got
        fig.note = (
            f"{len(cancelled)} cancelled (True), {len(arrived_cancelled)} of them arrived; "
            f"{sum(r is False for r in outcome.values())} cancels too late (False), "
            f"{len(unsure)} unsure (failed try, then False); "
            f"{stored_twice} stored twice by the scheduler; a cancel cut off by a kill "
            f"failed after {max(failed_tries, default=0):.1f} s"
        )
        assert server.restart_count == cycles
    assert fig.lost == 0
    assert not arrived_cancelled
    assert (got - expected) <= unsure  # nothing arrived that was not scheduled

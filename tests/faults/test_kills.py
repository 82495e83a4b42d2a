"""Kills and stops: the server, the owner, consumers. Nothing acknowledged may be lost.

Each scenario counts what was acknowledged, stored, processed, lost (must be 0) and
duplicated, and how long recovery took; the figures are printed at the end of the run
(``--faults-report PATH`` writes them as JSON for RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import random
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
    count, cycles, spread = scale(200, 2_000), scale(3, 6), scale(3.0, 8.0)
    topic, lead = "fault.scheduled", 2.0
    # a JetStream API call cut off by a kill fails after its timeout (5 s), not at once:
    # the messages cancelled at the kills fall due after that, so that it is known
    # whether a cut-off cancel took effect
    late = lead + spread + 8
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
        # every 10th is cancelled before the kills, every 10th + 5 just before a kill
        before, during = range(0, count, 10), list(range(5, count, 10))

        async def schedule(i: int) -> jk.ScheduledMessage:
            # due from ``lead`` to ``lead + spread`` seconds from now in index order, the
            # ones cancelled at the kills after ``late``
            due = (late if i % 10 == 5 else lead) + spread * i / count
            return await s.publish(topic, f"s{i}".encode(), deliver_after=due, msg_id=f"s{i}")

        held = await asyncio.gather(*(schedule(i) for i in range(count)))
        assert not any(h.duplicate for h in held)
        outcome: dict[int, str] = {}
        for i in before:
            assert await s.cancel_scheduled(held[i])  # nothing is due yet
            outcome[i] = "cancelled"
        failed: collections.Counter[str] = collections.Counter()  # cut-off tries, by error
        failed_for: list[float] = []  # how long they took to fail

        async def cancel(i: int) -> None:
            deadline = time.monotonic() + 120
            cut_off = False
            while True:
                began = time.monotonic()
                try:
                    result = await s.cancel_scheduled(held[i])
                except RETRYABLE as exc:
                    failed[type(exc).__name__] += 1
                    failed_for.append(time.monotonic() - began)
                    assert time.monotonic() < deadline, "cancel_scheduled kept failing"
                    cut_off = True  # that try may have cancelled it
                    await asyncio.sleep(0.02)
                    continue
                break
            answered = dt.datetime.now(dt.UTC)
            if result:
                outcome[i] = "cancelled"
            elif cut_off and answered < held[i].deliver_at - dt.timedelta(seconds=0.5):
                # not due yet and no longer held: the cut-off try cancelled it
                outcome[i] = "cancelled by the cut-off try"
            else:
                outcome[i] = "too late" if not cut_off else "unsure"

        expected_first = count - len(before) - len(during)
        cancels: list[asyncio.Future[None]] = []
        for k in range(cycles):
            # the first kill while everything is held, the others while they fall due
            if k:
                goal = expected_first * k // cycles
                await wait_until(lambda g=goal: len(deliveries) >= g, 60)  # type: ignore[misc]
            chunk = during[len(during) * k // cycles : len(during) * (k + 1) // cycles]
            cancels += [asyncio.ensure_future(cancel(i)) for i in chunk]
            await asyncio.sleep(0)  # the cancels send their requests, then the kill
            killed = time.monotonic()
            isolated_crash(server)
            kill_server(server)
            await restarted(s, server, k + 1, topic)
            fig.recoveries.append(time.monotonic() - killed)
        await asyncio.wait_for(asyncio.gather(*cancels), 120)
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
        kinds = collections.Counter(outcome.values())
        absent = {f"s{i}" for i, r in outcome.items() if r.startswith("cancelled")}
        unsure = {f"s{i}" for i, r in outcome.items() if r == "unsure"}
        expected = {f"s{i}" for i in range(count)} - absent - unsure
        got = set(deliveries) - {"sentinel"}
        fig.acked = count  # scheduled publishes the server acknowledged
        fig.stored = (await s.topic_info(topic)).messages - 1  # delivered, not the sentinel
        fig.processed = sum(deliveries.values()) - deliveries["sentinel"]
        fig.lost = len(expected - got)
        fig.duplicated = fig.processed - len(got)
        stored_twice = sum(len(seqs[d]) - 1 for d in got)
        arrived_cancelled = absent & got
        fig.note = (
            f"{len(before)} cancelled before the kills; of {len(during)} cancelled at a kill "
            f"({sum(failed.values())} tries cut off), {kinds['cancelled'] - len(before)} True "
            "on a later try, "
            f"{kinds['cancelled by the cut-off try']} done by the cut-off try, "
            f"{kinds['too late']} too late, {kinds['unsure']} unsure; "
            f"{len(arrived_cancelled)} cancelled ones arrived; {stored_twice} stored twice; "
            f"the cut-off tries failed with {', '.join(failed)} after "
            f"{max(failed_for, default=0):.1f} s"
        )
        assert server.restart_count == cycles
    assert fig.lost == 0
    assert not arrived_cancelled
    assert got - expected <= unsure  # nothing arrived that was not scheduled
    assert stored_twice == 0  # the scheduler put each message on the topic once


async def test_server_kill_during_keyed_consume(
    tmp_path: Path, scale: Callable[[int, int], int], figures: Callable[[str], Figures]
) -> None:
    """subscribe(key=) keeps each key's order, and loses nothing, across kill -9s."""
    count, keys, cycles = scale(1_500, 10_000), scale(20, 50), scale(3, 10)
    topic, dlq, header, max_deliver = "fault.keyed", "fault.keyed.dlq", "Order-Id", 4
    fig = figures("server kill -9 during keyed consume (key=, retries in place, dlq)")
    fig.cycles = cycles
    rng = random.Random(19)
    # message n is the ``counter``-th of its key; a few fail 1-2 times, 1% always (dlq)
    plan = [(f"order-{rng.randrange(keys)}", rng.choice([0] * 8 + [1, 2])) for _ in range(count)]
    poison = set(rng.sample(range(count), count // 100))
    counters: collections.Counter[str] = collections.Counter()
    items: list[tuple[str, int]] = []  # (key, counter) of message n
    for key, _ in plan:
        items.append((key, counters[key]))
        counters[key] += 1
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        server = server_of(s)
        await s.declare_topic(topic)
        await s.declare_topic(dlq)

        async def publish_key(key: str, numbers: list[int]) -> None:
            # one publisher per key, one at a time: the key's counter is its stream order
            for n in numbers:
                k, c = items[n]
                await s.publish(topic, f"{k}:{c}:{n}".encode(), headers={header: k}, msg_id=f"n{n}")

        by_key: dict[str, list[int]] = collections.defaultdict(list)
        for n, (key, _) in enumerate(items):
            by_key[key].append(n)
        await asyncio.gather(*(publish_key(k, ns) for k, ns in by_key.items()))

        index_of = {item: n for n, item in enumerate(items)}
        attempts: collections.Counter[int] = collections.Counter()  # handler calls
        successes: collections.Counter[int] = collections.Counter()
        done: set[tuple[str, int]] = set()  # (key, counter) that ended a handler call
        firsts: dict[str, list[int]] = collections.defaultdict(list)
        highest: dict[str, int] = {}  # per key, the highest counter started
        running: dict[str, int] = {}  # per key, the counter in the handler now
        violations: list[tuple[str, int, str]] = []
        # (key, counter, the poison message before it, when it started): checked against
        # the dead letter's time at the end (jetkit stores it before the key moves on)
        after_poison: list[tuple[str, int, int, dt.datetime]] = []

        def check_order(key: str, counter: int, index: int) -> None:
            if key in running:
                violations.append((key, counter, f"while {running[key]} runs"))
            high = highest.get(key, -1)
            if counter < high:
                # the key moved on past it: fine if it had ended (succeeded, or failed
                # for good and was dead-lettered) and this is a redelivery after a kill
                ended = successes[index] or (index in poison and attempts[index])
                if not ended:
                    violations.append((key, counter, f"after {high} started"))
            elif counter > high and counter:
                before = index_of[key, counter - 1]
                if before in poison and attempts[before]:
                    after_poison.append((key, counter, before, dt.datetime.now(dt.UTC)))
                elif not successes[before]:
                    violations.append((key, counter, f"before {counter - 1} ended"))
            highest[key] = max(high, counter)

        async def handler(msg: jk.Message) -> None:
            key, c, n = msg.data.decode().split(":")
            counter, index = int(c), int(n)
            check_order(key, counter, index)
            running[key] = counter
            attempts[index] += 1
            try:
                await asyncio.sleep(rng.random() * 0.002)
                if index in poison or attempts[index] <= plan[index][1]:
                    raise RuntimeError(f"planned failure of n{index}")
                if not successes[index]:
                    firsts[key].append(counter)
                successes[index] += 1
            finally:
                del running[key]
                done.add((key, counter))

        sub = await s.subscribe(
            topic,
            handler,
            durable="keyed",
            ack=jk.AckPolicy.MANUAL,
            start_at=jk.StartAt.ALL,
            ack_wait=2,
            concurrency=8,
            buffer_size=64,
            key=header,
            max_deliver=max_deliver,
            backoff=[0.02, 0.05, 0.1],
            dlq=dlq,
        )
        for k in range(cycles):
            goal = count * (k + 1) // (cycles + 1)
            await wait_until(lambda g=goal: len(done) >= g, 120)  # type: ignore[misc]
            killed = time.monotonic()
            isolated_crash(server)
            kill_server(server)
            # held messages go on meanwhile: count from the restarted server's first acks
            await restarted(s, server, k + 1, topic)
            before = len(done)
            await wait_until(lambda b=before: len(done) > b + 10, 60)  # type: ignore[misc]
            fig.recoveries.append(time.monotonic() - killed)
        # sentinels: one more message per key, after everything else of that key
        sentinels = {key: counters[key] for key in by_key}
        for key, c in sentinels.items():
            items.append((key, c))
            index_of[key, c] = len(items) - 1
            plan.append((key, 0))
            by_key[key] = [len(items) - 1]
        await asyncio.gather(*(publish_key(k, ns) for k, ns in by_key.items()))
        await wait_until(lambda: all((k, c) in done for k, c in sentinels.items()), 120)
        # and the server agrees that every message was acked or terminated
        deadline = time.monotonic() + 120
        while (info := await s.consumer_info(topic, "keyed")).pending or info.ack_pending:
            assert time.monotonic() < deadline, f"keyed still has {info} to deliver"
            await asyncio.sleep(0.1)
        await sub.stop()
        letters = await read_all(s, dlq)
        dead = {int(m.data.decode().split(":")[2]) for m in letters}
        lettered: dict[int, dt.datetime] = {}  # the first dead letter of each
        for m in letters:
            index = int(m.data.decode().split(":")[2])
            lettered[index] = min(m.timestamp, lettered.get(index, m.timestamp))
        for key, counter, before, started in after_poison:
            if before not in lettered or started < lettered[before]:
                violations.append((key, counter, f"before {counter - 1} was dead-lettered"))
        # a server redelivery of a message held across a kill counts as an attempt
        short = {
            int(m.data.decode().split(":")[2])
            for m in letters
            if attempts[int(m.data.decode().split(":")[2])] < max_deliver
        }
        total = len(items)
        fig.acked = sum(1 for n in range(total) if successes[n])
        fig.stored = (await s.topic_info(topic)).messages
        fig.processed = sum(attempts.values())
        fig.lost = sum(1 for n in range(total) if not successes[n] and n not in dead)
        fig.duplicated = sum(successes.values()) - fig.acked
        out_of_order = sum(
            1 for seq in firsts.values() for a, b in itertools.pairwise(seq) if b < a
        )
        fig.note = (
            f"{len(violations)} order violations, {out_of_order} out-of-order first "
            f"completions; {len(dead)} dead-lettered ({len(poison)} planned); "
            f"{sum(1 for c in successes.values() if c > 1)} messages handled twice or more; "
            f"{sub.stats.retried} retries in place; {len(short)} dead-lettered after fewer "
            f"than {max_deliver} handler calls (a redelivery after a kill counts)"
        )
        assert server.restart_count == cycles
    assert fig.lost == 0
    assert dead == poison, f"dead-lettered besides the planned ones: {dead - poison}"
    assert not violations, f"handled before the one before it of its key: {violations[:10]}"
    assert out_of_order == 0

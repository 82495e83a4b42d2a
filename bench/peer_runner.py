"""One peer-baseline run, in the peer venv (Python >= 3.13): natsio or nats-core + nats-jetstream.

``python -m bench`` starts this script once per run with the peer venv's interpreter
(see ``bench/peers.py``) and writes the run's spec to its stdin as JSON::

    {"client": "natsio" | "nats-core", "scenario": "pubsub" | "publish" | "consume"
     | "replay", "connect": {"servers": [...], "user": ..., "password": ...}
     | {"servers": [...], "token": ...}, "subject": ..., "stream": ..., "durable": ...,
     "n": ..., "m": ..., "window": 256, "concurrency": 1, "max_ack_pending": ...,
     "payload": "...", "idle": 1.0, "limit": 600.0}

It prints one JSON line: ``{"values": {...}, "sent": n, "received": k, "notes": [...]}``.
Values: ``throughput`` (msg/s); ``publish`` adds ``tasks`` (msg/s, a task per publish
in a window) and ``p50`` / ``p99`` (µs, one publish at a time), and no counts (every
ack is checked: a missing one fails the run). Each scenario does what the bench does
for jetkit and nats-py, the same way, with the client's fastest idiomatic API (see
bench/README.md). The handler is an ``async`` function taking the payload ``bytes``
that only counts, as everywhere in the bench.

This file imports neither jetkit nor the bench (the peer venv has neither), and every
wait in it is bounded (``idle`` without progress, ``limit`` overall).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

DISTRIBUTIONS = ("natsio", "nats-core", "nats-jetstream")
CLOSE_TIMEOUT = 5.0
# nats-jetstream's messages() tops its pull up from a loop that wakes every 100 ms, so
# its rate is at most 10 batches a second (the default batch of 100: 1,000 msg/s). It
# gets a batch just under the consumer's max_ack_pending (4,100 / 4,128 in the bench).
JETSTREAM_BATCH = 4096


class Counter:
    """Counts handled messages; remembers when the last one arrived; fires at ``target``."""

    __slots__ = ("done", "last", "n", "target")

    def __init__(self, target: int) -> None:
        self.target = target
        self.n = 0
        self.last = 0.0
        self.done = asyncio.Event()

    def hit(self) -> None:
        self.n += 1
        self.last = time.perf_counter()
        if self.n >= self.target:
            self.done.set()

    async def wait(self, *, idle: float, limit: float) -> bool:
        """Wait for ``target`` hits; give up after ``idle`` s without progress or ``limit`` s."""
        deadline = time.monotonic() + limit
        seen = -1
        while not self.done.is_set():
            if self.n == seen or time.monotonic() > deadline:
                return False
            seen = self.n
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), idle)
        return True


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


async def task_window(n: int, window: int, publish: Callable[[], Awaitable[Any]]) -> int:
    """``n`` publishes, one asyncio task each, at most ``window`` in flight; returns failures.

    The same helper as the bench's (``bench/scenarios/_common.py``): every ack is checked.
    """
    slots = asyncio.Semaphore(window)
    bad = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        nonlocal bad
        try:
            ack = await publish()
            # natsio's PubAck has .seq, nats-jetstream's PublishAck .sequence
            if (getattr(ack, "seq", None) or getattr(ack, "sequence", 0) or 0) <= 0:
                bad += 1
        except Exception:
            bad += 1
        finally:
            slots.release()

    for _ in range(n):
        await slots.acquire()
        task = asyncio.ensure_future(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for _ in range(window):
        await slots.acquire()
    return bad


async def stop_task(task: asyncio.Task[Any], notes: list[str]) -> None:
    """Cancel a reader/worker task, wait (bounded) until it has ended; note how it failed."""
    if not task.done():
        task.cancel()
    await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
    if task.done() and not task.cancelled() and task.exception() is not None:
        text = f"a reader failed: {type(task.exception()).__name__}: {task.exception()}"
        if text not in notes:
            notes.append(text[:200])


def checked(bad: int, n: int) -> None:
    if bad:
        raise RuntimeError(f"{bad} of {n} publishes failed or had bad acks")


async def publish_rest(js: Any, spec: dict[str, Any], pipelined: float) -> dict[str, Any]:
    """The publish scenario after its pipelined part: a task per publish, then latency."""
    n, subject, payload = spec["n"], spec["subject"], spec["payload"].encode()
    started = time.perf_counter()
    checked(await task_window(n, spec["window"], lambda: js.publish(subject, payload)), n)
    tasks = n / (time.perf_counter() - started)
    lat = []
    for _ in range(spec["m"]):
        t = time.perf_counter()
        await js.publish(subject, payload)
        lat.append((time.perf_counter() - t) * 1e6)
    values = {
        "throughput": pipelined,
        "tasks": tasks,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
    }
    return {"values": values, "notes": []}


def throughput(counter: Counter, started: float, expected: int, notes: list[str]) -> dict[str, Any]:
    if counter.n == 0:
        raise RuntimeError("no message was received")
    if counter.n < expected:
        notes.append(f"received {counter.n:,} of {expected:,}")
    elapsed = (counter.last or time.perf_counter()) - started
    return {"throughput": counter.n / elapsed if elapsed > 0 else 0.0}


# -- natsio ------------------------------------------------------------------------------


async def natsio_connect(spec: dict[str, Any]) -> Any:
    import natsio

    info = spec["connect"]
    auth = {k: info[k] for k in ("user", "password", "token") if info.get(k)}
    return await natsio.connect(
        *info["servers"], name="jetkit-bench-natsio", max_reconnect_attempts=1, **auth
    )


async def natsio_close(nc: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT)


async def natsio_run(spec: dict[str, Any]) -> dict[str, Any]:
    from natsio.jetstream import AckPolicy, ConsumerConfig, DeliverPolicy

    scenario, n = spec["scenario"], spec["n"]
    payload = spec["payload"].encode()
    subject = spec["subject"]
    idle, limit = spec["idle"], spec["limit"]
    notes: list[str] = []
    counter = Counter(n)

    async def handler(data: bytes) -> None:
        counter.hit()

    if scenario in ("consume", "replay"):
        started = time.perf_counter()  # as the bench: connecting is part of the run
    nc = await natsio_connect(spec)
    try:
        if scenario == "pubsub":
            # 1 pub -> 1 sub on this one connection; the subscription is read as an
            # async iterator, natsio's default consumption mode.
            sub = nc.subscribe(subject)

            async def read() -> None:
                async for msg in sub:
                    await handler(msg.data)

            reader = asyncio.ensure_future(read())
            await nc.flush()
            started = time.perf_counter()
            for _ in range(n):
                await nc.publish(subject, payload)
            await counter.wait(idle=idle, limit=limit)
            values = throughput(counter, started, n, notes)
            dropped = sub.dropped
            await stop_task(reader, notes)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if dropped:
                notes.append(f"the client dropped {dropped:,} (slow consumer)")
            return {"values": values, "sent": n, "received": counter.n, "notes": notes}

        if scenario == "publish":
            # pipelined: publish_async with at most `window` acks outstanding, every
            # PubAck checked; then a task per js.publish; then one at a time (latency)
            js = nc.jetstream(
                publish_async_max_pending=spec["window"], publish_async_stall_wait=limit
            )
            await js.publish(subject, payload)
            started = time.perf_counter()
            futures = [await js.publish_async(subject, payload) for _ in range(n)]
            acks = [await f for f in futures]
            elapsed = time.perf_counter() - started
            checked(sum(1 for ack in acks if ack.seq <= 0), n)
            return await publish_rest(js, spec, n / elapsed)

        js = nc.jetstream()
        stream = await js.stream(spec["stream"])
        if scenario == "consume":
            # a durable pull consumer read through consume() (the ADR-37 continuous
            # pull); concurrency N: N worker tasks reading the one consume() session.
            durable = spec["durable"]
            consumer = await stream.create_consumer(
                ConsumerConfig(
                    durable_name=durable,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.EXPLICIT,
                    max_ack_pending=spec["max_ack_pending"],
                )
            )
            async with consumer.consume() as messages:

                async def work() -> None:
                    while True:
                        msg = await messages.next()
                        await handler(msg.data)
                        await msg.ack()

                workers = [asyncio.ensure_future(work()) for _ in range(spec["concurrency"])]
                try:
                    await counter.wait(idle=idle, limit=limit)
                finally:
                    for task in workers:
                        await stop_task(task, notes)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.delete_consumer(durable), CLOSE_TIMEOUT)
            values = throughput(counter, started, n, notes)
            return {"values": values, "sent": n, "received": counter.n, "notes": notes}

        if scenario == "replay":
            # the ordered consumer: natsio's replay API (ephemeral, AckPolicy none,
            # deliver all, in order), read as an async iterator.
            ordered = stream.ordered_consumer()

            async def read() -> None:
                async for msg in ordered.messages():
                    await handler(msg.data)

            reader = asyncio.ensure_future(read())
            try:
                await counter.wait(idle=idle, limit=limit)
            finally:
                await stop_task(reader, notes)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ordered.stop(), CLOSE_TIMEOUT)
            values = throughput(counter, started, n, notes)
            return {"values": values, "sent": n, "received": counter.n, "notes": notes}
        raise ValueError(f"unknown scenario {scenario!r}")
    finally:
        await natsio_close(nc)


# -- nats-core + nats-jetstream ----------------------------------------------------------


async def core_connect(spec: dict[str, Any]) -> Any:
    from nats.client import connect

    info = spec["connect"]
    auth = {k: info[k] for k in ("user", "password", "token") if info.get(k)}
    return await connect(info["servers"][0], timeout=5.0, reconnect_max_attempts=1, **auth)


async def core_run(spec: dict[str, Any]) -> dict[str, Any]:
    import nats.jetstream

    scenario, n = spec["scenario"], spec["n"]
    payload = spec["payload"].encode()
    subject = spec["subject"]
    idle, limit = spec["idle"], spec["limit"]
    notes: list[str] = []
    counter = Counter(n)

    async def handler(data: bytes) -> None:
        counter.hit()

    if scenario in ("consume", "replay"):
        started = time.perf_counter()
    nc = await core_connect(spec)
    try:
        if scenario == "pubsub":
            # nats-core's subscription is an async iterator (its only consumption mode)
            sub = await nc.subscribe(subject)

            async def read() -> None:
                async for msg in sub:
                    await handler(msg.data)

            reader = asyncio.ensure_future(read())
            await nc.flush()
            started = time.perf_counter()
            for _ in range(n):
                await nc.publish(subject, payload)
            await counter.wait(idle=idle, limit=limit)
            values = throughput(counter, started, n, notes)
            dropped = sub.dropped[0]
            await stop_task(reader, notes)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if dropped:
                notes.append(f"the client dropped {dropped:,} (slow consumer)")
            return {"values": values, "sent": n, "received": counter.n, "notes": notes}

        js = nats.jetstream.new(nc)
        if scenario == "publish":
            # nats-jetstream has no async publish: its pipelined publishing is a window
            # of tasks each awaiting js.publish, the same as the task-per-publish row
            await js.publish(subject, payload)
            started = time.perf_counter()
            window = spec["window"]
            checked(await task_window(n, window, lambda: js.publish(subject, payload)), n)
            return await publish_rest(js, spec, n / (time.perf_counter() - started))

        stream = await js.get_stream(spec["stream"])
        if scenario == "consume":
            # a durable pull consumer read through messages() (its continuous pull);
            # concurrency N: N worker tasks reading the one stream; msg.ack() each
            durable = spec["durable"]
            consumer = await stream.create_consumer(
                name=durable,
                durable_name=durable,
                deliver_policy="all",
                ack_policy="explicit",
                max_ack_pending=spec["max_ack_pending"],
            )
            messages = await consumer.messages(max_messages=JETSTREAM_BATCH)

            async def work() -> None:
                async for msg in messages:
                    await handler(msg.data)
                    await msg.ack()

            workers = [asyncio.ensure_future(work()) for _ in range(spec["concurrency"])]
            try:
                await counter.wait(idle=idle, limit=limit)
            finally:
                for task in workers:
                    await stop_task(task, notes)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(messages.stop(), CLOSE_TIMEOUT)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stream.delete_consumer(durable), CLOSE_TIMEOUT)
            values = throughput(counter, started, n, notes)
            return {"values": values, "sent": n, "received": counter.n, "notes": notes}

        if scenario == "replay":
            # the ordered consumer (ephemeral, AckPolicy none), read with messages()
            ordered = await stream.ordered_consumer()
            messages = await ordered.messages(max_messages=JETSTREAM_BATCH)

            async def read() -> None:
                async for msg in messages:
                    await handler(msg.data)

            reader = asyncio.ensure_future(read())
            try:
                await counter.wait(idle=idle, limit=limit)
            finally:
                await stop_task(reader, notes)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(messages.stop(), CLOSE_TIMEOUT)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ordered.close(), CLOSE_TIMEOUT)
            values = throughput(counter, started, n, notes)
            return {"values": values, "sent": n, "received": counter.n, "notes": notes}
        raise ValueError(f"unknown scenario {scenario!r}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT)


RUNNERS = {"natsio": natsio_run, "nats-core": core_run}


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def main() -> int:
    if sys.argv[1:] == ["--versions"]:
        print(json.dumps(versions()))
        return 0
    spec = json.loads(sys.stdin.read())
    run = RUNNERS[spec["client"]]
    result = asyncio.run(asyncio.wait_for(run(spec), spec["limit"] + 30))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers shared by scenarios: stored topics on the bench server, pre-filling, timing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jetkit as jk

from ..config import PAYLOAD, PUBLISH_WINDOW
from ..measure import Run, percentile
from ..runner import Context

REDIS_FIELD = b"d"


@contextlib.asynccontextmanager
async def stored_topic(ctx: Context, topic: str) -> AsyncIterator[str]:
    """A fresh JetStream topic (jetkit's stream config) for the block; yields the stream name.

    Baselines use the same stream so that every client reads and writes the same store.
    """
    server = ctx.env.server
    with contextlib.suppress(jk.NotFoundError):
        await server.delete_topic(topic)
    info = await server.declare_topic(topic, mode=jk.TopicMode.JETSTREAM)
    assert info is not None
    try:
        yield info.name
    finally:
        with contextlib.suppress(jk.JetkitError):
            await server.delete_topic(topic)


@contextlib.asynccontextmanager
async def prefilled(ctx: Context, topic: str, redis_key: str, count: int) -> AsyncIterator[str]:
    """``stored_topic`` holding ``count`` payloads, and the Redis stream too when Redis runs."""
    async with stored_topic(ctx, topic) as stream:
        seconds = await prefill(ctx, topic, count)
        ctx.say(f"pre-filled {count:,} messages in {seconds:.1f}s")
        if ctx.env.redis is not None:
            client = ctx.env.redis.client()
            await client.delete(redis_key)
            await redis_prefill(client, redis_key, count)
            await client.aclose()
        yield stream


async def prefill(ctx: Context, topic: str, count: int, chunk: int = 20_000) -> float:
    """Store ``count`` payloads in ``topic`` through the bench server's Stream; returns seconds."""
    started = time.perf_counter()
    left = count
    while left > 0:
        n = min(chunk, left)
        await ctx.env.server.publish_many(
            topic, itertools.repeat(PAYLOAD, n), window=PUBLISH_WINDOW
        )
        left -= n
    return time.perf_counter() - started


async def redis_prefill(client: object, key: str, count: int, chunk: int = 1_000) -> None:
    """XADD ``count`` payloads to ``key`` in pipelined chunks."""
    left = count
    while left > 0:
        n = min(chunk, left)
        pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
        for _ in range(n):
            pipe.xadd(key, {REDIS_FIELD: PAYLOAD})
        await pipe.execute()
        left -= n


def latency_run(prefix: str, seconds: list[float]) -> Run:
    """p50 / p99 in microseconds from per-operation latencies in seconds."""
    micros = [s * 1e6 for s in seconds]
    return Run({f"{prefix}_p50": percentile(micros, 50), f"{prefix}_p99": percentile(micros, 99)})


async def task_window(n: int, window: int, publish: Callable[[], Awaitable[Any]]) -> int:
    """``n`` publishes, one asyncio task each, at most ``window`` in flight; returns failures.

    Each task awaits one ``publish()`` (a plain per-message publish returning its PubAck)
    and checks the ack. ``bench/peer_runner.py`` has the same helper for the peers.
    """
    slots = asyncio.Semaphore(window)
    bad = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        nonlocal bad
        try:
            ack = await publish()
            if ack is None or ack.seq <= 0:
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

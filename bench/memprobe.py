"""Child process of scenario 7: RSS of one slow subscriber under 10x overload.

Run by the bench as ``python -m bench.memprobe MODE TOPIC`` with the bench server's
``Stream.connect_info()`` as JSON in the environment (JETKIT_BENCH_CONNECT). It connects,
subscribes with a slow handler (``--handler-ms``), measures the idle RSS, then a
separate raw connection publishes ``--rate`` msg/s for ``--seconds`` while RSS is
sampled every 20 ms. Prints one JSON line: idle and peak RSS, growth, handled, dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import time
from typing import Any

import nats
import psutil

import jetkit as jk

from .config import PAYLOAD

MODES = ("jetkit-js", "jetkit-core", "nats-py-js", "nats-py-core")


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


async def probe(
    mode: str, topic: str, seconds: float, rate: int, handler_ms: float
) -> dict[str, Any]:
    info = json.loads(os.environ["JETKIT_BENCH_CONNECT"])
    handled = 0
    delay = handler_ms / 1000

    async def slow(data: bytes) -> None:
        nonlocal handled
        await asyncio.sleep(delay)
        handled += 1

    async def slow_cb(msg: Any) -> None:
        await slow(msg.data)

    publisher = await nats.connect(**info)
    stream: jk.Stream | None = None
    nc: Any = None
    sub: Any = None
    try:
        if mode.startswith("jetkit"):
            core = mode == "jetkit-core"
            stream = await jk.Stream.open(
                **info,
                default_mode=jk.TopicMode.CORE if core else jk.TopicMode.JETSTREAM,
                drain_timeout=1.0,
            )
            sub = await stream.subscribe(topic, slow, buffer_size=1024)
        else:
            nc = await nats.connect(**info)
            if mode == "nats-py-core":
                sub = await nc.subscribe(topic, cb=slow_cb)
            else:
                sub = await nc.jetstream().subscribe(topic, cb=slow_cb)
            await nc.flush()
        gc.collect()
        await asyncio.sleep(0.5)
        idle = rss()
        peak = idle
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss())
                await asyncio.sleep(0.02)

        sampler = asyncio.ensure_future(sample())
        sent = 0
        total = int(rate * seconds)
        tick = 0.01
        per_tick = max(1, int(rate * tick))
        started = time.perf_counter()
        while sent < total:
            for _ in range(min(per_tick, total - sent)):
                await publisher.publish(topic, PAYLOAD)
            sent += per_tick
            await publisher.flush()
            wait = started + (sent / rate) - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
        publish_seconds = time.perf_counter() - started
        await asyncio.sleep(0.5)
        stop.set()
        await sampler
        dropped = 0
        if stream is not None:
            dropped = sub.stats.dropped
        result = {
            "mode": mode,
            "idle_mb": idle / 2**20,
            "peak_mb": peak / 2**20,
            "growth_mb": (peak - idle) / 2**20,
            "sent": sent,
            "publish_rate": sent / publish_seconds,
            "handled": handled,
            "dropped": dropped,
        }
    finally:
        if stream is not None:
            if sub is not None:
                await sub.stop()
            await stream.close()
        if nc is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            await nc.close()
        await publisher.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memprobe")
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("topic")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--handler-ms", type=float, default=2.0)
    args = parser.parse_args()
    result = asyncio.run(probe(args.mode, args.topic, args.seconds, args.rate, args.handler_ms))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

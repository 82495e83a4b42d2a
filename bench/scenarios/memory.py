"""7. Memory: one slow subscriber under 10x overload; peak RSS growth over idle.

Each run is a fresh child process (``bench.memprobe``), so earlier scenarios do not
inflate its RSS: the handler sleeps HANDLER_MS per message (at most ~450 msg/s) while
RATE msg/s are published for ``memory_seconds`` (>= 10x overload). jetkit subscribes
with ``buffer_size=1024`` (JetStream: flow control; core: BLOCK, then drops counted);
nats-py uses its defaults (``js.subscribe`` push consumer / ``nc.subscribe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

from ..measure import Metric, Run, Target
from ..runner import Context
from ._common import stored_topic

NAME = "memory"
TITLE = "7 memory, 10x overload"
HANDLER_MS = 2.0
RATE = 5_000

JS = Metric(
    "mem_js",
    TITLE,
    f"JetStream sub, handler {HANDLER_MS:g} ms, {RATE:,} msg/s: RSS growth",
    "MB",
    False,
    ("nats-py",),
    (Target(max_value=50.0),),
    ratios=False,
)
CORE = Metric(
    "mem_core",
    TITLE,
    f"core sub, handler {HANDLER_MS:g} ms, {RATE:,} msg/s: RSS growth",
    "MB",
    False,
    ("nats-py",),
    (Target(max_value=50.0),),
    ratios=False,
)


async def _probe(ctx: Context, mode: str, topic: str, key: str) -> Run:
    env = {**os.environ, "JETKIT_BENCH_CONNECT": json.dumps(ctx.env.connect)}
    seconds = ctx.sizes.memory_seconds
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.memprobe",
        mode,
        topic,
        "--seconds",
        str(seconds),
        "--rate",
        str(RATE),
        "--handler-ms",
        str(HANDLER_MS),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
    finally:  # a timeout, a failed run or Ctrl-C: the child does not outlive its run
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)
    if proc.returncode != 0:
        raise RuntimeError(f"memprobe {mode} failed: {err.decode()[-500:]}")
    data = json.loads(out.decode().strip().splitlines()[-1])
    run = Run({key: data["growth_mb"]})
    run.notes.append(
        f"idle {data['idle_mb']:.0f} MB, handled {data['handled']:,} of {data['sent']:,}"
        + (f", dropped {data['dropped']:,}" if data["dropped"] else "")
    )
    return run


async def run(ctx: Context) -> None:
    reps = ctx.sizes.memory_reps
    for metric, kind in ((JS, "js"), (CORE, "core")):
        topic = f"bench.mem.{kind}"

        def runner(impl: str, kind: str = kind, key: str = metric.key, topic: str = topic):
            async def one(rep: int) -> Run:
                return await _probe(ctx, f"{impl}-{kind}", topic, key)

            return one

        if kind == "js":
            async with stored_topic(ctx, topic):
                await ctx.alternate(
                    [metric], {"jetkit": runner("jetkit"), "nats-py": runner("nats-py")}, reps=reps
                )
        else:
            await ctx.alternate(
                [metric], {"jetkit": runner("jetkit"), "nats-py": runner("nats-py")}, reps=reps
            )

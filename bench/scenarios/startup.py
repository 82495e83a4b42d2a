"""8. Start-up: ``Stream.open()`` to ready, on an empty store and on a store with messages.

Each open starts jetkit's own nats-server (a new child process on a random port) and
connects; it is closed again before the next. The non-empty store is filled once
(``startup_messages`` order events in one topic) and reopened ``startup_reps`` times.
jetkit only: there is no baseline to alternate with.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from pathlib import Path

import jetkit as jk

from ..config import PAYLOAD, PUBLISH_WINDOW
from ..measure import Metric, Run, Target
from ..runner import Context

NAME = "startup"
TITLE = "8 start-up"

EMPTY = Metric(
    "open_empty", TITLE, "Stream.open(), empty store", "s", False, (), (Target(max_value=0.1),)
)


def full_metric(n: int) -> Metric:
    return Metric("open_full", TITLE, f"Stream.open(), store with {n:,} messages", "s", False)


async def _open_close(store: Path) -> float:
    started = time.perf_counter()
    s = await jk.Stream.open(store_dir=store)
    elapsed = time.perf_counter() - started
    await s.close()
    return elapsed


async def run(ctx: Context) -> None:
    n = ctx.sizes.startup_messages
    full = full_metric(n)
    root = Path(tempfile.mkdtemp(prefix="jetkit-bench-startup-"))
    try:
        counter = itertools.count()

        async def empty_run(rep: int) -> Run:
            return Run({EMPTY.key: await _open_close(root / f"empty-{next(counter)}")})

        await ctx.alternate([EMPTY], {"jetkit": empty_run}, reps=ctx.sizes.startup_reps)

        store = root / "full"
        started = time.perf_counter()
        async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
            left = n
            while left > 0:
                chunk = min(20_000, left)
                await s.publish_many(
                    "bench.startup", itertools.repeat(PAYLOAD, chunk), window=PUBLISH_WINDOW
                )
                left -= chunk
        ctx.say(f"filled a store with {n:,} messages in {time.perf_counter() - started:.1f}s")

        async def full_run(rep: int) -> Run:
            return Run({full.key: await _open_close(store)})

        await ctx.alternate([full], {"jetkit": full_run}, reps=ctx.sizes.startup_reps)
    finally:
        shutil.rmtree(root, ignore_errors=True)

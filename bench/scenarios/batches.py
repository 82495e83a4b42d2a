"""11. Batch handlers: ``subscribe(..., batch=100)`` against a per-message handler.

One stored topic, pre-filled. Each run is a new durable from the first message,
``ack=MANUAL``, ``concurrency=1``:

* jetkit: ``subscribe(..., batch=100, batch_timeout=0.05)``, a handler taking
  ``list[bytes]``; the batch is acked when it returns;
* per message: the same subscription without ``batch=``, a handler taking ``bytes``,
  measured in the same repetitions, so the ratio is batch / per message.

Two handlers: one that only counts, and one that waits 1 ms on the event loop per call
(a round trip to a database: one bulk insert per batch, one insert per message).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jetkit as jk

from ..measure import Counter, Metric, Run
from ..runner import Context
from ._common import stored_topic
from .keys import IO_WAIT, prefill_keyed

NAME = "batches"
TITLE = "11 batch handlers"
BATCHED = "jetkit"
SINGLE = "per message"
BATCH = 100


def _metric(io: bool) -> Metric:
    handler = f"{IO_WAIT * 1000:g} ms per call" if io else "counting handler"
    return Metric(
        f"batches_{'io' if io else 'count'}",
        TITLE,
        f"batch={BATCH} against one at a time, {handler}",
        "msg/s",
        baselines=(SINGLE,),
    )


METRICS = {io: _metric(io) for io in (False, True)}


async def consume(
    ctx: Context, topic: str, durable: str, n: int, batched: bool, io: bool
) -> Counter:
    async with ctx.env.jetkit() as s:
        counter = Counter(n)
        options: dict[str, Any] = {}
        if batched:
            options = {"batch": BATCH, "batch_timeout": 0.05}

            async def bulk(items: list[bytes]) -> None:
                if io:
                    await asyncio.sleep(IO_WAIT)
                for _ in items:
                    counter.hit()

            handler: Any = bulk
        else:

            async def one(data: bytes) -> None:
                if io:
                    await asyncio.sleep(IO_WAIT)
                counter.hit()

            handler = one
        sub = await s.subscribe(
            topic,
            handler,
            durable=durable,
            ack=jk.AckPolicy.MANUAL,
            start_at=jk.StartAt.ALL,
            **options,
        )
        await counter.wait()
        await sub.stop()
        await s.delete_consumer(topic, durable)
    return counter


async def run(ctx: Context) -> None:
    n_count = ctx.sizes.consume
    n_io = max(1000, ctx.sizes.consume // 20)
    topic = "bench.batches"
    async with stored_topic(ctx, topic):
        seconds = await prefill_keyed(ctx, topic, n_count, 1)
        ctx.say(f"pre-filled {n_count:,} messages in {seconds:.1f}s")
        for io in (False, True):
            metric = METRICS[io]
            n = n_io if io else n_count
            ctx.say(metric.label)

            def runner(kind: str, n: int = n, io: bool = io, key: str = metric.key) -> Any:
                async def one(rep: int) -> Run:
                    tag = "b" if kind == BATCHED else "s"
                    durable = f"bench-batches-{tag}-{'io' if io else 'c'}-{rep}"
                    started = time.perf_counter()
                    counter = await consume(ctx, topic, durable, n, kind == BATCHED, io)
                    if counter.n == 0:
                        raise RuntimeError("no message was handled")
                    end = counter.last or time.perf_counter()
                    result = Run({key: counter.n / (end - started)})
                    result.sent, result.received = n, counter.n
                    if counter.n < n:
                        result.notes.append(f"handled {counter.n:,} of {n:,}")
                    return result

                return one

            await ctx.alternate([metric], {BATCHED: runner(BATCHED), SINGLE: runner(SINGLE)})

"""9. Ordered per key: durable consume + explicit ack with ``key=``, against no key.

One stored topic per key count (1, 10, 1,000 distinct keys), pre-filled with the
keys round-robin in an ``Order-Id`` header. Each run is a new durable from the first
message, ``ack=MANUAL``, ``concurrency=8``:

* jetkit: ``subscribe(..., key="Order-Id")``: ordered per key, parallel across keys;
* no key: the same subscription without ``key=`` (the same messages, headers unread),
  measured in the same repetitions, so the ratio is keyed / keyless.

Two handlers: one that only counts (the cost of the per-key bookkeeping), and one
that waits 1 ms on the event loop (as a call to a database would), where the number
of keys bounds the parallelism: 1 key runs one at a time, 10 keys at most 8 at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jetkit as jk

from ..config import PAYLOAD, PUBLISH_WINDOW
from ..measure import Counter, Metric, Run
from ..runner import Context
from ._common import stored_topic

NAME = "keys"
TITLE = "9 ordered per key"
KEYED = "jetkit"
KEYLESS = "no key"
KEY_COUNTS = (1, 10, 1000)
CONCURRENCY = 8
IO_WAIT = 0.001  # the waiting handler's await
HEADER = "Order-Id"


def _metric(keys: int, io: bool) -> Metric:
    handler = f"{IO_WAIT * 1000:g} ms handler" if io else "counting handler"
    return Metric(
        f"keys_{'io_' if io else ''}k{keys}",
        TITLE,
        f"{keys:,} keys, concurrency {CONCURRENCY}, {handler}",
        "msg/s",
        baselines=(KEYLESS,),
    )


METRICS = {(k, io): _metric(k, io) for io in (False, True) for k in KEY_COUNTS}


async def prefill_keyed(ctx: Context, topic: str, count: int, keys: int) -> float:
    """``count`` payloads, keys round-robin in the header; returns seconds."""
    server = ctx.env.server
    started = time.perf_counter()
    window: set[asyncio.Future[Any]] = set()
    for i in range(count):
        window.add(
            asyncio.ensure_future(server.publish(topic, PAYLOAD, headers={HEADER: f"o{i % keys}"}))
        )
        if len(window) >= PUBLISH_WINDOW:
            done, window = await asyncio.wait(window, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                fut.result()
    if window:
        await asyncio.gather(*window)
    return time.perf_counter() - started


async def consume(ctx: Context, topic: str, durable: str, n: int, keyed: bool, io: bool) -> Counter:
    async with ctx.env.jetkit() as s:
        counter = Counter(n)

        if io:

            async def handler(data: bytes) -> None:
                await asyncio.sleep(IO_WAIT)
                counter.hit()

        else:

            async def handler(data: bytes) -> None:
                counter.hit()

        sub = await s.subscribe(
            topic,
            handler,
            durable=durable,
            ack=jk.AckPolicy.MANUAL,
            start_at=jk.StartAt.ALL,
            concurrency=CONCURRENCY,
            key=HEADER if keyed else None,
        )
        await counter.wait()
        await sub.stop()
        await s.delete_consumer(topic, durable)
    return counter


async def run(ctx: Context) -> None:
    n_count = ctx.sizes.consume
    n_io = max(1000, ctx.sizes.consume // 20)
    for keys in KEY_COUNTS:
        topic = f"bench.keys.k{keys}"
        async with stored_topic(ctx, topic):
            seconds = await prefill_keyed(ctx, topic, n_count, keys)
            ctx.say(f"{keys:,} keys: pre-filled {n_count:,} messages in {seconds:.1f}s")
            for io in (False, True):
                metric = METRICS[(keys, io)]
                n = n_io if io else n_count
                ctx.say(metric.label)

                def runner(
                    kind: str,
                    n: int = n,
                    io: bool = io,
                    key: str = metric.key,
                    keys: int = keys,
                    topic: str = topic,
                ) -> Any:
                    async def one(rep: int) -> Run:
                        tag = "k" if kind == KEYED else "nk"
                        durable = f"bench-keys{keys}-{tag}-{'io' if io else 'c'}-{rep}"
                        started = time.perf_counter()
                        counter = await consume(ctx, topic, durable, n, kind == KEYED, io)
                        if counter.n == 0:
                            raise RuntimeError("no message was handled")
                        end = counter.last or time.perf_counter()
                        result = Run({key: counter.n / (end - started)})
                        result.sent, result.received = n, counter.n
                        if counter.n < n:
                            result.notes.append(f"handled {counter.n:,} of {n:,}")
                        return result

                    return one

                await ctx.alternate([metric], {KEYED: runner(KEYED), KEYLESS: runner(KEYLESS)})

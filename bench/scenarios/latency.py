"""6. End-to-end latency, publish -> handler, at a fixed rate on a JetStream topic.

The publisher (its own connection) publishes ``payload(i)`` at ``e2e_rate`` msg/s,
awaiting each ack, and notes the send time of message i; the subscriber's handler
reads i from the payload and records now - sent[i]. The first 100 messages are a
warm-up and not counted.

* jetkit: ``publish`` / ``subscribe`` (ephemeral, AckPolicy.AUTO, start NEW).
* nats-py: ``js.publish`` / ``js.subscribe(cb=..., manual_ack=True)`` (push consumer),
  ``msg.ack()`` in the callback.
* Redis: XADD / XREADGROUP BLOCK + XACK per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from ..config import FETCH_BATCH, index_of, payload
from ..measure import Counter, Metric, Run
from ..runner import Context
from ._common import REDIS_FIELD, latency_run, stored_topic

NAME = "latency"
TITLE = "6 end-to-end latency"
BASELINES = ("nats-py", "redis")
WARMUP = 100

P50 = Metric("e2e_p50", TITLE, "publish -> handler p50", "µs", False, BASELINES)
P99 = Metric("e2e_p99", TITLE, "publish -> handler p99", "µs", False, BASELINES)


class Probe:
    """Send times by message index, and the latencies the handler saw."""

    def __init__(self, n: int) -> None:
        self.sent = [0.0] * n
        self.latencies: list[float] = []
        self.counter = Counter(n)

    def received(self, data: bytes) -> None:
        i = index_of(data)
        if i >= WARMUP:
            self.latencies.append(time.perf_counter() - self.sent[i])
        self.counter.hit()

    async def publish_paced(
        self, rate: float, publish: Callable[[int, bytes], Awaitable[object]]
    ) -> float:
        """Publish every message at ``rate``/s; returns the rate achieved."""
        n = len(self.sent)
        payloads = [payload(i) for i in range(n)]
        started = time.perf_counter()
        for i, data in enumerate(payloads):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.sent[i] = time.perf_counter()
            await publish(i, data)
        return n / (time.perf_counter() - started)

    def result(self, achieved: float, rate: float) -> Run:
        run = latency_run("e2e", self.latencies)
        n = len(self.sent)
        run.sent, run.received = n, self.counter.n
        if self.counter.n < n:
            run.notes.append(f"received {self.counter.n:,} of {n:,}")
        if achieved < 0.95 * rate:
            run.notes.append(f"publisher reached only {achieved:,.0f} msg/s")
        return run


async def run(ctx: Context) -> None:
    rate = ctx.sizes.e2e_rate
    n = int(rate * ctx.sizes.e2e_seconds) + WARMUP
    redis = ctx.env.redis

    async def jetkit_run(rep: int) -> Run:
        topic = f"bench.e2e.jetkit.{rep}"
        probe = Probe(n)
        async with stored_topic(ctx, topic), ctx.env.jetkit() as pub, ctx.env.jetkit() as sub:

            async def handler(data: bytes) -> None:
                probe.received(data)

            subscription = await sub.subscribe(topic, handler)

            async def publish(i: int, data: bytes) -> None:
                await pub.publish(topic, data)

            achieved = await probe.publish_paced(rate, publish)
            await probe.counter.wait()
            await subscription.stop()
        return probe.result(achieved, rate)

    async def nats_run(rep: int) -> Run:
        topic = f"bench.e2e.natspy.{rep}"
        probe = Probe(n)
        async with stored_topic(ctx, topic), ctx.env.nats() as pub, ctx.env.nats() as subc:
            js_pub, js_sub = pub.jetstream(), subc.jetstream()

            async def cb(msg: object) -> None:
                probe.received(msg.data)  # type: ignore[attr-defined]
                await msg.ack()  # type: ignore[attr-defined]

            subscription = await js_sub.subscribe(topic, cb=cb, manual_ack=True)

            async def publish(i: int, data: bytes) -> None:
                await js_pub.publish(topic, data)

            achieved = await probe.publish_paced(rate, publish)
            await probe.counter.wait()
            await subscription.unsubscribe()
        return probe.result(achieved, rate)

    async def redis_run(rep: int) -> Run:
        assert redis is not None
        key, group = f"bench:e2e:{rep}", "e2e"
        probe = Probe(n)
        pub, sub = redis.client(), redis.client()
        try:
            await pub.delete(key)
            await sub.xgroup_create(key, group, id="$", mkstream=True)

            async def consume() -> None:
                while not probe.counter.done.is_set():
                    reply = await sub.xreadgroup(
                        group, "c", {key: ">"}, count=FETCH_BATCH, block=200
                    )
                    if not reply:
                        continue
                    entries = reply[0][1]
                    for _, fields in entries:
                        probe.received(fields[REDIS_FIELD])
                    await sub.xack(key, group, *(entry_id for entry_id, _ in entries))

            consumer = asyncio.ensure_future(consume())

            async def publish(i: int, data: bytes) -> None:
                await pub.xadd(key, {REDIS_FIELD: data})

            try:
                achieved = await probe.publish_paced(rate, publish)
                await probe.counter.wait()
            finally:
                probe.counter.done.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer, 2.0)
            await pub.delete(key)
        finally:
            await pub.aclose()
            await sub.aclose()
        return probe.result(achieved, rate)

    await ctx.alternate(
        [P50, P99],
        {
            "jetkit": jetkit_run,
            "nats-py": nats_run,
            "redis": redis_run if redis else ctx.env.redis_note,
        },
    )

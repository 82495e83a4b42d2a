"""2. JetStream acked publish: pipelined throughput (every ack checked) and one-at-a-time latency.

jetkit ``publish_many(window=W)`` vs nats-py ``publish_async`` with at most W in flight
(``publish_async_max_pending=W``), then every future's PubAck checked; Redis: XADD in
pipelines of W commands, every reply checked. Latency: each publish awaits its ack
before the next (jetkit ``publish`` vs nats-py ``js.publish`` vs Redis ``XADD``).
"""

from __future__ import annotations

import itertools
import time

from ..config import PAYLOAD, PUBLISH_WINDOW
from ..measure import Metric, Run, Target
from ..runner import Context
from ._common import REDIS_FIELD, latency_run, stored_topic

NAME = "publish"
TITLE = "2 JetStream acked publish"
BASELINES = ("nats-py", "redis")

THROUGHPUT = Metric(
    "js_publish",
    TITLE,
    f"pipelined, window {PUBLISH_WINDOW}, every ack checked",
    "msg/s",
    baselines=BASELINES,
    targets=(Target("nats-py", min_ratio=3.0),),
)
P50 = Metric(
    "js_publish_lat_p50", TITLE, "one publish awaiting its ack, p50", "µs", False, BASELINES
)
P99 = Metric(
    "js_publish_lat_p99", TITLE, "one publish awaiting its ack, p99", "µs", False, BASELINES
)


async def run(ctx: Context) -> None:
    n = ctx.sizes.js_publish
    m = ctx.sizes.js_latency
    redis = ctx.env.redis

    async def jetkit_run(rep: int) -> Run:
        topic = f"bench.pub.jetkit.{rep}"
        async with stored_topic(ctx, topic), ctx.env.jetkit() as s:
            await s.publish(topic, PAYLOAD)  # warm up: the Stream looks the topic up once
            started = time.perf_counter()
            acks = await s.publish_many(topic, itertools.repeat(PAYLOAD, n), window=PUBLISH_WINDOW)
            bad = sum(1 for ack in acks if ack is None or ack.seq <= 0)
            elapsed = time.perf_counter() - started
            assert len(acks) == n and not bad, f"{bad} bad acks of {len(acks)}"
            lat = []
            for _ in range(m):
                t = time.perf_counter()
                await s.publish(topic, PAYLOAD)
                lat.append(time.perf_counter() - t)
        run = latency_run("js_publish_lat", lat)
        run.values[THROUGHPUT.key] = n / elapsed
        return run

    async def nats_run(rep: int) -> Run:
        topic = f"bench.pub.natspy.{rep}"
        async with stored_topic(ctx, topic), ctx.env.nats() as nc:
            js = nc.jetstream(publish_async_max_pending=PUBLISH_WINDOW)
            await js.publish(topic, PAYLOAD)
            started = time.perf_counter()
            futures = [await js.publish_async(topic, PAYLOAD) for _ in range(n)]
            acks = [await f for f in futures]
            bad = sum(1 for ack in acks if ack.seq <= 0)
            elapsed = time.perf_counter() - started
            assert not bad, f"{bad} bad acks"
            lat = []
            for _ in range(m):
                t = time.perf_counter()
                await js.publish(topic, PAYLOAD)
                lat.append(time.perf_counter() - t)
        run = latency_run("js_publish_lat", lat)
        run.values[THROUGHPUT.key] = n / elapsed
        return run

    async def redis_run(rep: int) -> Run:
        assert redis is not None
        key = f"bench:pub:{rep}"
        client = redis.client()
        try:
            await client.delete(key)
            started = time.perf_counter()
            left = n
            while left > 0:
                size = min(PUBLISH_WINDOW, left)
                pipe = client.pipeline(transaction=False)
                for _ in range(size):
                    pipe.xadd(key, {REDIS_FIELD: PAYLOAD})
                ids = await pipe.execute()
                assert all(ids), "an XADD returned no id"
                left -= size
            elapsed = time.perf_counter() - started
            lat = []
            for _ in range(m):
                t = time.perf_counter()
                await client.xadd(key, {REDIS_FIELD: PAYLOAD})
                lat.append(time.perf_counter() - t)
            await client.delete(key)
        finally:
            await client.aclose()
        run = latency_run("js_publish_lat", lat)
        run.values[THROUGHPUT.key] = n / elapsed
        return run

    await ctx.alternate(
        [THROUGHPUT, P50, P99],
        {"jetkit": jetkit_run, "nats-py": nats_run, "redis": redis_run if redis else None},
        skip_reason=ctx.env.redis_note,
    )

"""2. JetStream acked publish: pipelined, a task per publish, and one-at-a-time latency.

Every run publishes to a fresh stored topic and checks every PubAck.

* pipelined, window W: jetkit ``publish_many(window=W)``; nats-py ``publish_async``
  with at most W in flight (``publish_async_max_pending=W``), then every future
  awaited; natsio the same with its ``publish_async``; nats-jetstream has no async
  publish, so its pipelined row is W tasks each awaiting ``js.publish`` (its fastest
  way); Redis: XADD in pipelines of W commands, every reply checked.
* a task per publish: a plain per-message ``publish`` in a sliding window of W asyncio
  tasks (a task per message, at most W unfinished): jetkit ``publish``, nats-py /
  natsio / nats-jetstream ``js.publish``.
* latency: each publish awaits its ack before the next (jetkit ``publish``, the NATS
  clients ``js.publish``, Redis ``XADD``).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from ..config import PAYLOAD, PUBLISH_WINDOW
from ..measure import Metric, Run, Target
from ..natsgo import NATS_GO
from ..peers import NATS_JETSTREAM, NATSIO
from ..runner import Context, RunFn
from ._common import REDIS_FIELD, latency_run, stored_topic, task_window

NAME = "publish"
TITLE = "2 JetStream acked publish"
NATS = ("nats-py", NATSIO, NATS_JETSTREAM, NATS_GO)
BASELINES = (*NATS, "redis")

THROUGHPUT = Metric(
    "js_publish",
    TITLE,
    f"pipelined (publish_many), window {PUBLISH_WINDOW}, every ack checked",
    "msg/s",
    baselines=BASELINES,
    targets=(
        Target("nats-py", min_ratio=3.0),
        Target(NATSIO, min_ratio=1.5),
        Target(NATS_GO, min_ratio=1.0),  # the reference client (issue 27)
    ),
)
TASKS = Metric(
    "js_publish_tasks",
    TITLE,
    f"a plain publish per message, window of {PUBLISH_WINDOW} tasks",
    "msg/s",
    baselines=NATS,
    targets=(Target("nats-py", min_ratio=2.0),),
)
P50 = Metric(
    "js_publish_lat_p50", TITLE, "one publish awaiting its ack, p50", "µs", False, BASELINES
)
P99 = Metric(
    "js_publish_lat_p99", TITLE, "one publish awaiting its ack, p99", "µs", False, BASELINES
)


async def _latency(publish: Any, m: int) -> list[float]:
    lat = []
    for _ in range(m):
        t = time.perf_counter()
        await publish()
        lat.append(time.perf_counter() - t)
    return lat


def _checked(bad: int, n: int) -> None:
    if bad:
        raise RuntimeError(f"{bad} of {n} publishes failed or had bad acks")


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
            elapsed = time.perf_counter() - started
            _checked(n - sum(1 for ack in acks if ack is not None and ack.seq > 0), n)
            started = time.perf_counter()
            _checked(await task_window(n, PUBLISH_WINDOW, lambda: s.publish(topic, PAYLOAD)), n)
            tasks = time.perf_counter() - started
            lat = await _latency(lambda: s.publish(topic, PAYLOAD), m)
        run = latency_run("js_publish_lat", lat)
        run.values[THROUGHPUT.key] = n / elapsed
        run.values[TASKS.key] = n / tasks
        return run

    async def nats_run(rep: int) -> Run:
        topic = f"bench.pub.natspy.{rep}"
        async with stored_topic(ctx, topic), ctx.env.nats() as nc:
            js = nc.jetstream(publish_async_max_pending=PUBLISH_WINDOW)
            await js.publish(topic, PAYLOAD)
            started = time.perf_counter()
            futures = [await js.publish_async(topic, PAYLOAD) for _ in range(n)]
            acks = [await f for f in futures]
            elapsed = time.perf_counter() - started
            _checked(sum(1 for ack in acks if ack.seq <= 0), n)
            started = time.perf_counter()
            _checked(await task_window(n, PUBLISH_WINDOW, lambda: js.publish(topic, PAYLOAD)), n)
            tasks = time.perf_counter() - started
            lat = await _latency(lambda: js.publish(topic, PAYLOAD), m)
        run = latency_run("js_publish_lat", lat)
        run.values[THROUGHPUT.key] = n / elapsed
        run.values[TASKS.key] = n / tasks
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
            lat = await _latency(lambda: client.xadd(key, {REDIS_FIELD: PAYLOAD}), m)
            await client.delete(key)
        finally:
            await client.aclose()
        run = latency_run("js_publish_lat", lat)
        run.values[THROUGHPUT.key] = n / elapsed
        return run

    def peer(client: str) -> RunFn | str:
        def spec(rep: int) -> dict[str, Any]:
            return {"scenario": "publish", "subject": f"bench.pub.{client}.{rep}", "n": n, "m": m}

        keys = {"throughput": THROUGHPUT.key, "tasks": TASKS.key, "p50": P50.key, "p99": P99.key}
        fn = ctx.peer(client, spec, keys)
        if isinstance(fn, str):
            return fn

        async def one(rep: int) -> Run:
            async with stored_topic(ctx, f"bench.pub.{client}.{rep}"):
                return await fn(rep)

        return one

    await ctx.alternate(
        [THROUGHPUT, TASKS, P50, P99],
        {
            "jetkit": jetkit_run,
            "nats-py": nats_run,
            NATSIO: peer("natsio"),
            NATS_JETSTREAM: peer("nats-core"),
            NATS_GO: peer(NATS_GO),
            "redis": redis_run if redis else ctx.env.redis_note,
        },
    )

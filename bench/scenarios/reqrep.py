"""5. Request/reply: 32 concurrent requesters, throughput and per-request latency.

Responder and requesters use separate connections (two jetkit Streams / two nats-py
clients), as two services would. The responder echoes the payload.
"""

from __future__ import annotations

import asyncio
import time

import jetkit as jk

from ..config import PAYLOAD, REQUESTERS
from ..measure import Metric, Run, Target
from ..runner import Context
from ._common import latency_run

NAME = "reqrep"
TITLE = "5 request/reply"

THROUGHPUT = Metric(
    "reqrep",
    TITLE,
    f"{REQUESTERS} concurrent requesters",
    "req/s",
    baselines=("nats-py",),
    targets=(Target("nats-py", min_ratio=0.9),),
)
P50 = Metric("reqrep_p50", TITLE, "latency p50", "µs", False, ("nats-py",))
P99 = Metric("reqrep_p99", TITLE, "latency p99", "µs", False, ("nats-py",))


async def _drive(request: object, n: int) -> Run:
    """Run ``n`` requests over REQUESTERS tasks; throughput and latency percentiles."""
    per_task = n // REQUESTERS
    latencies: list[float] = []

    async def requester() -> None:
        for _ in range(per_task):
            t = time.perf_counter()
            await request()  # type: ignore[operator]
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(requester() for _ in range(REQUESTERS)))
    elapsed = time.perf_counter() - started
    run = latency_run("reqrep", latencies)
    run.values[THROUGHPUT.key] = len(latencies) / elapsed
    return run


async def run(ctx: Context) -> None:
    n = ctx.sizes.reqrep

    async def jetkit_run(rep: int) -> Run:
        topic = f"bench.rpc.jetkit.{rep}"
        async with (
            ctx.env.jetkit(jk.TopicMode.CORE) as server,
            ctx.env.jetkit(jk.TopicMode.CORE) as client,
        ):

            async def echo(data: bytes) -> bytes:
                return data

            await server.respond(topic, echo)

            async def request() -> None:
                await client.request(topic, PAYLOAD, timeout=10.0)

            await request()
            return await _drive(request, n)

    async def nats_run(rep: int) -> Run:
        topic = f"bench.rpc.natspy.{rep}"
        async with ctx.env.nats() as server, ctx.env.nats() as client:

            async def echo(msg: object) -> None:
                await server.publish(msg.reply, msg.data)  # type: ignore[attr-defined]

            await server.subscribe(topic, cb=echo)
            await server.flush()

            async def request() -> None:
                await client.request(topic, PAYLOAD, timeout=10.0)

            await request()
            return await _drive(request, n)

    await ctx.alternate([THROUGHPUT, P50, P99], {"jetkit": jetkit_run, "nats-py": nats_run})

"""1. Core pub/sub throughput: one publisher, one subscriber, a trivial handler.

Publisher and subscriber share one connection (one jetkit Stream / one client), as one
service would. Core mode is at-most-once: a subscriber that falls behind loses messages
to slow-consumer protection, so throughput counts what was received, and the table's
``lost`` column shows what was not.

* jetkit: ``publish`` + ``subscribe(handler)``;
* nats-py: ``nc.publish`` + ``nc.subscribe(cb=)``;
* natsio / nats-core (peer venv): ``nc.publish`` + ``nc.subscribe`` read as an async
  iterator (their default consumption mode), each message handed to the handler.
"""

from __future__ import annotations

import time
from typing import Any

import jetkit as jk

from ..config import PAYLOAD
from ..measure import Counter, Metric, Run, Target
from ..natsgo import NATS_GO
from ..peers import METRICS_ON, NATS_CORE, NATSIO, TRACING_ON
from ..runner import Context, RunFn

NAME = "pubsub"
TITLE = "1 core pub/sub"

THROUGHPUT = Metric(
    "core_pubsub",
    TITLE,
    "1 pub -> 1 sub, trivial handler",
    "msg/s",
    baselines=("nats-py", NATSIO, NATS_CORE, NATS_GO, METRICS_ON, TRACING_ON),
    targets=(
        *(Target(b, min_ratio=1.0) for b in ("nats-py", NATSIO, NATS_CORE)),
        Target(NATS_GO, min_ratio=0.5),  # the reference client (issue 27)
    ),
)


def _result(counter: Counter, n: int, started: float) -> Run:
    elapsed = (counter.last or time.perf_counter()) - started
    if counter.n == 0:
        raise RuntimeError("no message was received")
    run = Run({THROUGHPUT.key: counter.n / elapsed if elapsed > 0 else 0.0})
    run.sent, run.received = n, counter.n
    if counter.n < n:
        run.notes.append(f"received {counter.n:,} of {n:,} (the rest dropped)")
    return run


async def run(ctx: Context) -> None:
    n = ctx.sizes.pubsub

    async def jetkit_run(rep: int, metrics: bool = False, tracing: bool = False) -> Run:
        kind = "-metrics" if metrics else "-tracing" if tracing else ""
        topic = f"bench.core.jetkit{kind}.{rep}"
        async with ctx.env.jetkit(jk.TopicMode.CORE, metrics=metrics, tracing=tracing) as s:
            counter = Counter(n)

            async def handler(data: bytes) -> None:
                counter.hit()

            sub = await s.subscribe(topic, handler)
            started = time.perf_counter()
            for _ in range(n):
                await s.publish(topic, PAYLOAD)
            await counter.wait()
            result = _result(counter, n, started)
            await sub.stop()
            return result

    async def nats_run(rep: int) -> Run:
        topic = f"bench.core.natspy.{rep}"
        async with ctx.env.nats() as nc:
            counter = Counter(n)

            async def cb(msg: object) -> None:
                counter.hit()

            sub = await nc.subscribe(topic, cb=cb)
            await nc.flush()
            started = time.perf_counter()
            for _ in range(n):
                await nc.publish(topic, PAYLOAD)
            await counter.wait()
            result = _result(counter, n, started)
            await sub.unsubscribe()
            return result

    def peer(client: str) -> RunFn | str:
        def spec(rep: int) -> dict[str, Any]:
            return {"scenario": "pubsub", "subject": f"bench.core.{client}.{rep}", "n": n}

        return ctx.peer(client, spec, {"throughput": THROUGHPUT.key})

    await ctx.alternate(
        [THROUGHPUT],
        {
            "jetkit": jetkit_run,
            METRICS_ON: lambda rep: jetkit_run(rep, metrics=True),
            TRACING_ON: lambda rep: jetkit_run(rep, tracing=True),
            "nats-py": nats_run,
            NATSIO: peer(NATSIO),
            NATS_CORE: peer(NATS_CORE),
            NATS_GO: peer(NATS_GO),
        },
    )

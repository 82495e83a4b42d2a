"""3. Durable consume + explicit ack over a pre-filled topic, concurrency 1 and 8.

All NATS clients read the same stored topic, each run through a new durable that
starts at the first message; the handler only counts.

* jetkit: ``subscribe(durable=..., ack=MANUAL, start_at=ALL, concurrency=N)``.
* nats-py: ``pull_subscribe`` + ``fetch(batch)`` + ``msg.ack()`` per message; with
  concurrency N, N such loops bound to the one durable.
* natsio (peer venv): ``consumer.consume()`` (its continuous pull, default batch) read
  with ``next()``, ``msg.ack()``; concurrency N: N worker tasks on the one session.
* nats-jetstream (peer venv): ``consumer.messages(max_messages=4096)`` (its continuous
  pull; see ``bench/peer_runner.py`` for the batch), ``msg.ack()``; concurrency N: N
  worker tasks on the one stream.
* FastStream: ``NatsBroker`` JetStream pull subscriber (``PullSub(batch_size)``), ack
  after the handler (``AckPolicy.ACK``), ``max_workers=N`` for N > 1. It is given a
  decoder that returns the raw body, so its handler takes ``bytes`` like every other
  handler here (FastStream's default decoder would parse the JSON into a dict first).
* Redis Streams: XREADGROUP COUNT batch + one XACK per batch; N consumers in the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import nats.errors
from nats.js.api import AckPolicy as NatsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy

import jetkit as jk

from ..config import FETCH_BATCH
from ..measure import Counter, Metric, Run, Target
from ..natsgo import NATS_GO
from ..peers import METRICS_ON, NATS_JETSTREAM, NATSIO, TRACING_ON
from ..runner import Context, RunFn
from ._common import prefilled

NAME = "consume"
TITLE = "3 durable consume+ack"
BASELINES = (
    "nats-py",
    NATSIO,
    NATS_JETSTREAM,
    NATS_GO,
    "faststream",
    "redis",
    METRICS_ON,
    TRACING_ON,
)
CONCURRENCY = (1, 8)
TARGETS = {
    1: (
        Target("nats-py", min_ratio=6.0),
        Target(NATSIO, min_ratio=1.5),
        Target("faststream", min_ratio=3.0),
        Target(NATS_GO, min_ratio=1.0),  # the reference client (issue 27)
    ),
    8: (Target("nats-py", min_ratio=5.0), Target("faststream", min_ratio=3.0)),
}


def _metric(concurrency: int) -> Metric:
    return Metric(
        f"consume_c{concurrency}",
        TITLE,
        f"MANUAL ack, concurrency {concurrency}",
        "msg/s",
        baselines=BASELINES,
        targets=TARGETS[concurrency],
    )


METRICS = {c: _metric(c) for c in CONCURRENCY}


def max_ack_pending(concurrency: int) -> int:
    """What jetkit gives its consumer (buffer 1024); the baselines get the same."""
    return max(1000, 4 * (1024 + concurrency))


def _result(key: str, counter: Counter, n: int, started: float) -> Run:
    if counter.n == 0:
        raise RuntimeError("no message was handled")
    run = Run({key: counter.n / ((counter.last or time.perf_counter()) - started)})
    run.sent, run.received = n, counter.n
    if counter.n < n:
        run.notes.append(f"handled {counter.n:,} of {n:,}")
    return run


async def jetkit_consume(
    ctx: Context,
    topic: str,
    durable: str,
    n: int,
    conc: int,
    metrics: bool = False,
    tracing: bool = False,
) -> Counter:
    async with ctx.env.jetkit(metrics=metrics, tracing=tracing) as s:
        counter = Counter(n)

        async def handler(data: bytes) -> None:
            counter.hit()

        sub = await s.subscribe(
            topic,
            handler,
            durable=durable,
            ack=jk.AckPolicy.MANUAL,
            start_at=jk.StartAt.ALL,
            concurrency=conc,
        )
        await counter.wait()
        await sub.stop()
        await s.delete_consumer(topic, durable)
    return counter


async def nats_consume(
    ctx: Context, topic: str, stream: str, durable: str, n: int, conc: int, ack: bool = True
) -> Counter:
    async with ctx.env.nats() as nc:
        js = nc.jetstream()
        config = ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=NatsAckPolicy.EXPLICIT if ack else NatsAckPolicy.NONE,
            max_ack_pending=max_ack_pending(conc) if ack else None,
        )
        counter = Counter(n)

        async def handler(data: bytes) -> None:
            counter.hit()

        async def loop() -> None:
            psub = await js.pull_subscribe_bind(durable=durable, stream=stream)
            deadline = time.monotonic() + ctx.run_timeout
            while not counter.done.is_set() and time.monotonic() < deadline:
                try:
                    msgs = await psub.fetch(FETCH_BATCH, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    await handler(msg.data)
                    if ack:
                        await msg.ack()
            await psub.unsubscribe()

        await js.add_consumer(stream, config)
        tasks = [asyncio.ensure_future(loop()) for _ in range(conc)]
        try:
            await counter.wait()
        finally:
            counter.done.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, durable)
    return counter


async def faststream_consume(
    ctx: Context, topic: str, stream: str, durable: str, n: int, conc: int
) -> Counter:
    from faststream import AckPolicy as FsAckPolicy
    from faststream.nats import JStream, NatsBroker, NatsMessage, NatsToken, PullSub
    from faststream.security import SASLPlaintext

    env = ctx.env
    info = env.connect
    security = (
        NatsToken(info["token"])
        if info.get("token")
        else SASLPlaintext(username=info["user"], password=info["password"])
    )
    broker = NatsBroker(
        info["servers"],
        security=security,
        logger=None,
        log_level=logging.WARNING,
        graceful_timeout=10.0,
    )
    counter = Counter(n)
    options: dict[str, Any] = {"max_workers": conc} if conc > 1 else {}

    async def raw_body(msg: NatsMessage) -> bytes:
        """The payload as it came (FastStream's default decoder parses JSON into a dict)."""
        return msg.body

    @broker.subscriber(
        topic,
        stream=JStream(stream, declare=False),
        durable=durable,
        config=ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=NatsAckPolicy.EXPLICIT,
            max_ack_pending=max_ack_pending(conc),
        ),
        pull_sub=PullSub(batch_size=FETCH_BATCH, timeout=1.0),
        ack_policy=FsAckPolicy.ACK,
        decoder=raw_body,
        **options,
    )
    async def handler(body: bytes) -> None:
        counter.hit()

    await broker.start()
    try:
        await counter.wait()
    finally:
        await broker.stop()
        async with env.nats() as nc:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_consumer(stream, durable)
    return counter


async def redis_consume(ctx: Context, key: str, group: str, n: int, conc: int) -> Counter:
    redis = ctx.env.redis
    assert redis is not None
    client = redis.client(max_connections=conc + 2)
    counter = Counter(n)

    async def handler(data: bytes) -> None:
        counter.hit()

    async def loop(name: str) -> None:
        deadline = time.monotonic() + ctx.run_timeout
        while not counter.done.is_set() and time.monotonic() < deadline:
            reply = await client.xreadgroup(group, name, {key: ">"}, count=FETCH_BATCH, block=1000)
            if not reply:
                continue
            entries = reply[0][1]
            for _, fields in entries:
                await handler(fields[b"d"])
            await client.xack(key, group, *(entry_id for entry_id, _ in entries))

    try:
        await client.xgroup_create(key, group, id="0")
        tasks = [asyncio.ensure_future(loop(f"c{i}")) for i in range(conc)]
        try:
            await counter.wait()
        finally:
            counter.done.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        await client.xgroup_destroy(key, group)
    finally:
        await client.aclose()
    return counter


async def run(ctx: Context) -> None:
    n = ctx.sizes.consume
    topic = "bench.consume"
    redis = ctx.env.redis
    redis_key = "bench:consume"
    async with prefilled(ctx, topic, redis_key, n) as stream:
        for conc in CONCURRENCY:
            metric = METRICS[conc]
            ctx.say(f"concurrency {conc}")

            def runner(kind: str, conc: int = conc, key: str = metric.key) -> Any:
                async def one(rep: int) -> Run:
                    durable = f"bench-{kind.replace('+', '-')}-c{conc}-{rep}"
                    started = time.perf_counter()
                    if kind in ("jetkit", METRICS_ON, TRACING_ON):
                        counter = await jetkit_consume(
                            ctx, topic, durable, n, conc, kind == METRICS_ON, kind == TRACING_ON
                        )
                    elif kind == "nats-py":
                        counter = await nats_consume(ctx, topic, stream, durable, n, conc)
                    elif kind == "faststream":
                        counter = await faststream_consume(ctx, topic, stream, durable, n, conc)
                    else:
                        counter = await redis_consume(ctx, redis_key, durable, n, conc)
                    return _result(key, counter, n, started)

                return one

            def peer(client: str, conc: int = conc, key: str = metric.key) -> RunFn | str:
                def spec(rep: int) -> dict[str, Any]:
                    return {
                        "scenario": "consume",
                        "subject": topic,
                        "stream": stream,
                        "durable": f"bench-{client.replace('.', '-')}-c{conc}-{rep}",
                        "n": n,
                        "concurrency": conc,
                        "max_ack_pending": max_ack_pending(conc),
                        "fetch": FETCH_BATCH,
                    }

                return ctx.peer(client, spec, {"throughput": key})

            await ctx.alternate(
                [metric],
                {
                    "jetkit": runner("jetkit"),
                    METRICS_ON: runner(METRICS_ON),
                    TRACING_ON: runner(TRACING_ON),
                    "nats-py": runner("nats-py"),
                    NATSIO: peer("natsio"),
                    NATS_JETSTREAM: peer("nats-core"),
                    NATS_GO: peer(NATS_GO),
                    "faststream": runner("faststream"),
                    "redis": runner("redis") if redis else ctx.env.redis_note,
                },
            )
        if redis is not None:
            client = redis.client()
            await client.delete(redis_key)
            await client.aclose()

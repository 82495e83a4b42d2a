"""4. Replay a large stored topic from the start without acks (analytics).

* jetkit: ``subscribe(ack=AckPolicy.NONE, start_at=StartAt.ALL)`` (ephemeral).
* nats-py core sub (the target's "raw core subscribe"): a push consumer (ack none,
  deliver all, flow control) whose deliver subject a plain ``nc.subscribe(cb=...)``
  reads, answering the flow-control requests: about the fastest a Python client can
  take a replay in. (Without flow control the server cuts a client that falls
  behind, and most of a 1M-message replay is lost.)
* nats-py fetch: ``pull_subscribe`` + ``fetch(batch)`` with ack none.
* natsio (peer venv): ``stream.ordered_consumer()`` read as an async iterator (its
  replay API: ephemeral, ack none, in order).
* nats-jetstream (peer venv): ``stream.ordered_consumer()`` + ``messages()``
  (``max_messages=4096``, see ``bench/peer_runner.py``).
* Redis: XREAD COUNT batch from id 0 to the end.
"""

from __future__ import annotations

import time
from typing import Any

from nats.js.api import AckPolicy as NatsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy

import jetkit as jk

from ..config import FETCH_BATCH
from ..measure import Counter, Metric, Run, Target
from ..peers import NATS_JETSTREAM, NATSIO
from ..runner import Context, RunFn
from ._common import REDIS_FIELD, prefilled
from .consume import nats_consume

NAME = "replay"
TITLE = "4 replay, AckPolicy.NONE"
CORE = "nats-py core sub"

THROUGHPUT = Metric(
    "replay",
    TITLE,
    "whole topic from the start",
    "msg/s",
    baselines=(CORE, "nats-py fetch", NATSIO, NATS_JETSTREAM, "redis"),
    targets=(Target(CORE, min_ratio=0.9),),
)


def _result(counter: Counter, n: int, started: float) -> Run:
    if counter.n == 0:
        raise RuntimeError("no message was received")
    run = Run({THROUGHPUT.key: counter.n / ((counter.last or time.perf_counter()) - started)})
    run.sent, run.received = n, counter.n
    if counter.n < n:
        run.notes.append(f"received {counter.n:,} of {n:,}")
    return run


async def run(ctx: Context) -> None:
    n = ctx.sizes.replay
    topic = "bench.replay"
    redis = ctx.env.redis
    redis_key = "bench:replay"
    async with prefilled(ctx, topic, redis_key, n) as stream:

        async def jetkit_run(rep: int) -> Run:
            counter = Counter(n)
            started = time.perf_counter()
            async with ctx.env.jetkit() as s:

                async def handler(data: bytes) -> None:
                    counter.hit()

                sub = await s.subscribe(
                    topic, handler, ack=jk.AckPolicy.NONE, start_at=jk.StartAt.ALL
                )
                await counter.wait()
                await sub.stop()
            return _result(counter, n, started)

        async def core_run(rep: int) -> Run:
            counter = Counter(n)
            started = time.perf_counter()
            async with ctx.env.nats() as nc:
                js = nc.jetstream()

                async def cb(msg: Any) -> None:
                    if not msg.data:  # flow control request (answer it) or heartbeat
                        if msg.reply:
                            await nc.publish(msg.reply, b"")
                        return
                    counter.hit()

                inbox = nc.new_inbox()
                sub = await nc.subscribe(inbox, cb=cb, pending_msgs_limit=0, pending_bytes_limit=0)
                info = await js.add_consumer(
                    stream,
                    ConsumerConfig(
                        deliver_subject=inbox,
                        deliver_policy=DeliverPolicy.ALL,
                        ack_policy=NatsAckPolicy.NONE,
                        flow_control=True,
                        idle_heartbeat=5.0,
                    ),
                )
                await counter.wait()
                await sub.unsubscribe()
                await js.delete_consumer(stream, info.name)
            return _result(counter, n, started)

        async def fetch_run(rep: int) -> Run:
            started = time.perf_counter()
            counter = await nats_consume(ctx, topic, stream, f"replay-{rep}", n, 1, ack=False)
            return _result(counter, n, started)

        async def redis_run(rep: int) -> Run:
            assert redis is not None
            counter = Counter(n)
            started = time.perf_counter()
            client = redis.client()

            async def handler(data: bytes) -> None:
                counter.hit()

            try:
                last = b"0"
                while counter.n < n:
                    reply = await client.xread({redis_key: last}, count=FETCH_BATCH)
                    if not reply:
                        break
                    for entry_id, fields in reply[0][1]:
                        await handler(fields[REDIS_FIELD])
                        last = entry_id
            finally:
                await client.aclose()
            return _result(counter, n, started)

        def peer(client: str) -> RunFn | str:
            def spec(rep: int) -> dict[str, Any]:
                return {"scenario": "replay", "subject": topic, "stream": stream, "n": n}

            return ctx.peer(client, spec, {"throughput": THROUGHPUT.key})

        await ctx.alternate(
            [THROUGHPUT],
            {
                "jetkit": jetkit_run,
                CORE: core_run,
                "nats-py fetch": fetch_run,
                NATSIO: peer("natsio"),
                NATS_JETSTREAM: peer("nats-core"),
                "redis": redis_run if redis else ctx.env.redis_note,
            },
        )
        if redis is not None:
            client = redis.client()
            await client.delete(redis_key)
            await client.aclose()

"""10. ``jetkit run --workers N``: a CPU-bound handler, 2 worker processes against 1.

A service module (written to a temp dir) whose handler spends about 1 ms of pure
Python on each message (calibrated on this machine before the runs) is run by
``jetkit run service:app --workers N`` against the bench's server. Each run: a new
stored topic, ``jetkit run`` started and waited for until ``/readyz`` says every worker
is subscribed, then ``workers`` messages published (``publish_many``) and the time
taken until the durable has acked them all (its ``pending`` and ``ack_pending`` both 0,
asked every 10 ms), then SIGTERM. The figure is messages per second from the first
publish to the last ack; the ratio, in the same repetitions, is 2 workers / 1 worker.

Both get ``buffer_size=16``: a worker pulls at most 16 messages ahead, so two workers
share the work evenly to the end (with the default 1,024 one of them could hold the
last thousand messages, a second of work, while the other waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jetkit as jk
from jetkit._probes import fetch

from ..config import PAYLOAD, PUBLISH_WINDOW
from ..measure import Metric, Run, Target
from ..runner import Context

NAME = "workers"
TITLE = "10 jetkit run --workers"
TWO = "jetkit"  # --workers 2: the measured implementation
ONE = "1 worker"  # --workers 1: its baseline, in the same repetitions
WORK_SECONDS = 0.001  # the handler's CPU time per message

METRIC = Metric(
    "workers_cpu",
    TITLE,
    f"CPU-bound handler ({WORK_SECONDS * 1000:g} ms of Python), --workers 2 vs 1",
    "msg/s",
    baselines=(ONE,),
    targets=(Target(baseline=ONE, min_ratio=1.6),),
)

SERVICE = """
import json
import os

import jetkit as jk

ROUNDS = int(os.environ["JK_BENCH_ROUNDS"])
app = jk.App(
    default_mode=jk.TopicMode.JETSTREAM, **json.loads(os.environ["JK_BENCH_CONNECT"])
)


def spin(rounds):
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


@app.subscriber(
    os.environ["JK_BENCH_TOPIC"], durable="bench-workers", buffer_size=16, start_at=jk.StartAt.ALL
)
async def handle(data: bytes) -> None:
    spin(ROUNDS)  # on the event loop: pure CPU, no thread
"""


def spin(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


def calibrate() -> int:
    """The rounds of ``spin`` that take WORK_SECONDS here (the best of a few tries)."""
    rounds = 20_000
    best = min(_time(rounds) for _ in range(5))
    return max(1, round(rounds * WORK_SECONDS / best))


def _time(rounds: int) -> float:
    started = time.perf_counter()
    spin(rounds)
    return time.perf_counter() - started


async def _free_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port


async def one_run(ctx: Context, where: Path, workers: int, rounds: int, n: int, rep: int) -> Run:
    server = ctx.env.server
    topic = f"bench.workers.w{workers}.r{rep}"
    with contextlib.suppress(jk.NotFoundError):
        await server.delete_topic(topic)
    await server.declare_topic(topic, mode=jk.TopicMode.JETSTREAM)
    connect: dict[str, Any] = {
        k: v for k, v in ctx.env.connect.items() if k in ("servers", "user", "password", "token")
    }
    env = {
        **os.environ,
        "JK_BENCH_TOPIC": topic,
        "JK_BENCH_ROUNDS": str(rounds),
        "JK_BENCH_CONNECT": json.dumps(connect),
    }
    port = await _free_port()
    log = (where / f"run-w{workers}-{rep}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jetkit",
        "run",
        "service:app",
        "--workers",
        str(workers),
        "--health-port",
        str(port),
        cwd=where,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while await fetch(f"http://127.0.0.1:{port}/readyz") is None:
            if proc.returncode is not None or loop.time() > deadline:
                log.flush()
                tail = Path(log.name).read_text(errors="replace").splitlines()[-3:]
                raise RuntimeError("jetkit run did not get ready: " + " / ".join(tail))
            await asyncio.sleep(0.05)
        started = time.perf_counter()
        await server.publish_many(topic, [PAYLOAD] * n, window=PUBLISH_WINDOW)
        while True:
            info = await server.consumer_info(topic, "bench-workers")
            if info.pending == 0 and info.ack_pending == 0:
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()
        with contextlib.suppress(jk.JetkitError):
            await server.delete_topic(topic)
    return Run({METRIC.key: n / elapsed}, sent=n, received=n)


async def run(ctx: Context) -> None:
    n = ctx.sizes.workers
    rounds = calibrate()
    ctx.say(f"{rounds:,} rounds of the handler's loop take {WORK_SECONDS * 1000:g} ms here")
    ctx.say(f"{os.cpu_count()} CPUs; {n:,} messages a run")
    where = Path(tempfile.mkdtemp(prefix="jetkit-bench-workers-"))
    try:
        (where / "service.py").write_text(SERVICE)

        def runner(workers: int) -> Any:
            async def one(rep: int) -> Run:
                return await one_run(ctx, where, workers, rounds, n, rep)

            return one

        await ctx.alternate([METRIC], {TWO: runner(2), ONE: runner(1)})
    finally:
        shutil.rmtree(where, ignore_errors=True)

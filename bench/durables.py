"""Scale: subscribe and close() with many durable subscriptions (issue 29).

    python -m bench.durables                 # 10, 100, 1000, 2000 durables
    python -m bench.durables 10 400 --msgs 2
    python -m bench.durables 2000 --at-once --ephemeral
    python -m bench.durables 2000 --busy

For each count N, in a fresh temporary store: N JetStream topics with one durable
MANUAL-ack subscription each, ``--msgs`` messages published to each topic and handled
(acked) before the close; then ``close()``. Printed per N: the mean ``subscribe`` time,
the client's and the server's resident memory once all are subscribed, ``close()``'s
duration, of which the server's own stop (from its log: SIGTERM trapped to its last
line), and whether the embedded server had to be killed (jetkit's warning
"... killing it" was logged). ``--at-once`` subscribes all N concurrently (one gather;
"subscribe, each" is then the whole divided by N), ``--ephemeral`` without durable
names (each consumer is deleted by the close), ``--busy`` closes while a task keeps
publishing to every topic in turn (each durable has handled one more message since it
started: the close meets every consumer handling and acking, as a service's stop does
under load). Linux only (memory is read from /proc). The server is the bundled one, or
``$JETKIT_NATS_SERVER``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import jetkit as jk
from jetkit._server import binary_version, find_binary


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


_STAMP = re.compile(r"^\[\d+\] (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) ")


def _server_stop_s(log: Path) -> float:
    """Seconds from the server trapping SIGTERM to its last log line (nan: not found)."""
    trapped = last = None
    for line in log.read_text(errors="replace").splitlines():
        stamp = _STAMP.match(line)
        if stamp is None:
            continue
        at = dt.datetime.strptime(stamp.group(1), "%Y/%m/%d %H:%M:%S.%f")
        if "Trapped" in line and trapped is None:
            trapped = at
        last = at
    if trapped is None or last is None:
        return float("nan")
    return (last - trapped).total_seconds()


class _Kills(logging.Handler):
    """Counts jetkit's warnings that the server was killed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "killing it" in text:
            self.lines.append(text)


async def _feed(s: jk.Stream, count: int) -> None:
    """Publishes to every topic in turn until the Stream closes (``--busy``)."""
    with contextlib.suppress(jk.JetkitError):
        while True:
            for i in range(count):
                await s.publish(f"scale.t{i}", b"y")


async def _one(
    count: int, msgs: int, at_once: bool, ephemeral: bool, busy: bool
) -> dict[str, float | int | str]:
    kills = _Kills()
    logging.getLogger("jetkit").addHandler(kills)
    with tempfile.TemporaryDirectory(prefix="jk-durables-") as tmp:
        rss_before = _rss_mb(os.getpid())
        s = await jk.Stream.open(store_dir=Path(tmp) / "store", default_mode=jk.TopicMode.JETSTREAM)
        store = s._rt.store
        server = store.server if store is not None else None
        handled = 0
        target = count * msgs  # ``reached`` is set when ``handled`` gets there
        reached = asyncio.Event()

        async def handler(data: bytes) -> None:
            nonlocal handled
            handled += 1
            if handled == target:
                reached.set()

        def subscribe(i: int) -> Awaitable[jk.Subscription]:
            durable = None if ephemeral else f"d{i}"
            return s.subscribe(f"scale.t{i}", handler, durable=durable, ack=jk.AckPolicy.MANUAL)

        failed = ""
        started = time.perf_counter()
        try:
            if at_once:
                await asyncio.gather(*(subscribe(i) for i in range(count)))
            else:
                for i in range(count):
                    await subscribe(i)
        except jk.JetkitError as exc:
            failed = f"{type(exc).__name__}: {exc}"
        subscribe_each = (time.perf_counter() - started) / count
        feeder: asyncio.Task[None] | None = None
        if not failed:
            for _ in range(msgs):
                for i in range(count):
                    await s.publish(f"scale.t{i}", b"x")
            if msgs:
                await asyncio.wait_for(reached.wait(), 120)
            if busy:
                # one more message for each topic handled: every durable is acking now
                reached.clear()
                target = handled + count
                feeder = asyncio.create_task(_feed(s, count))
                await asyncio.wait_for(reached.wait(), 120)
        client_rss = _rss_mb(os.getpid()) - rss_before
        server_rss = _rss_mb(server.pid) if server and server.pid else 0.0
        started = time.perf_counter()
        await s.close()
        closing = time.perf_counter() - started
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, jk.JetkitError):
                await feeder
        server_stop = _server_stop_s(Path(tmp) / "store" / "nats-server.log")
    logging.getLogger("jetkit").removeHandler(kills)
    return {
        "durables": count,
        "subscribe_ms": subscribe_each * 1000,
        "client_mb": client_rss,
        "server_mb": server_rss,
        "close_s": closing,
        "server_stop_s": server_stop,
        "killed": "yes" if kills.lines else "no",
        "failed": failed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.durables", description=__doc__)
    parser.add_argument("counts", nargs="*", type=int, default=[10, 100, 1000, 2000])
    parser.add_argument("--msgs", type=int, default=1, help="messages acked per topic")
    parser.add_argument("--at-once", action="store_true", help="subscribe all concurrently")
    parser.add_argument("--ephemeral", action="store_true", help="no durable names")
    parser.add_argument(
        "--busy", action="store_true", help="close while every durable is handling and acking"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    binary = find_binary()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    version = ".".join(map(str, binary_version(binary)))
    how = f"{args.msgs} msgs/topic" + " at once" * args.at_once + " ephemeral" * args.ephemeral
    how += " busy" * args.busy
    print(f"nats-server {version} ({binary}); load average {load}; {how}")
    what = "subscriptions" if args.ephemeral else "durables"
    print(
        f"| {what} | subscribe, each | client RSS | server RSS | close() "
        "| of which the server's stop | server killed |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|")
    for count in args.counts:
        row = asyncio.run(_one(count, args.msgs, args.at_once, args.ephemeral, args.busy))
        if row["failed"]:
            print(f"| {count:,} | subscribe failed: {row['failed']} |", flush=True)
        stop = "(killed)" if row["killed"] == "yes" else f"{row['server_stop_s']:.2f} s"
        print(
            f"| {row['durables']:,} | {row['subscribe_ms']:.1f} ms | +{row['client_mb']:.0f} MB "
            f"| {row['server_mb']:.0f} MB | {row['close_s']:.2f} s "
            f"| {stop} | {row['killed']} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

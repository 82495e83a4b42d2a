"""Basic pub/sub on jetkit: fan-out to every subscriber, and a queue group sharing work.

Run it with ``python -m jetkit.examples.basic`` (Ctrl+C or ``--duration`` stops it):

    Publisher --+-- greetings --+-- Subscriber A        (each gets every greeting)
                |               +-- Subscriber B
                +-- tasks ------+-- worker-1 \\
                                +-- worker-2  > queue group "workers": each task once
                                +-- worker-3 /

Both topics are core NATS (in memory, at most once), on an embedded server with a
temporary store unless ``--store-dir`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import jetkit as jk

GREETINGS = "greetings"
TASKS = "tasks"
WORKERS = 3


def positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number > 0")
    return value


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every example shares: --duration, --interval, --store-dir."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(
        "--duration",
        type=positive,
        default=None,
        help="stop by itself after this many seconds (default: run until Ctrl+C)",
    )
    p.add_argument("--interval", type=positive, default=1.0, help="seconds between rounds")
    p.add_argument("--store-dir", default=None, help="the store (default: a temporary one)")
    return p


def stop_event(duration: float | None) -> asyncio.Event:
    """An event set by Ctrl+C, SIGTERM or after ``duration`` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    return stop


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early when ``stop`` is set; True if it was."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


class Counts:
    """What was published, and what each subscriber got."""

    def __init__(self) -> None:
        self.sent = 0
        self.received: collections.Counter[str] = collections.Counter()
        self.handled: collections.Counter[str] = collections.Counter()

    def report(self) -> None:
        greetings = ", ".join(f"{name}: {self.received[name]}" for name in ("A", "B"))
        print(f"📊 Fan-out: {self.sent} greetings published; received by {greetings}")
        split = ", ".join(
            f"worker-{n}: {self.handled[f'worker-{n}']}" for n in range(1, WORKERS + 1)
        )
        print(
            f"📊 Queue group: {self.sent * 3} tasks published, {self.handled.total()} "
            f"handled ({split})"
        )


async def run(s: jk.Stream, interval: float, stop: asyncio.Event, counts: Counts) -> None:
    received, handled = counts.received, counts.handled

    def fan_out(name: str) -> Callable[[str], Awaitable[None]]:
        async def greet(text: str) -> None:
            received[name] += 1
            print(f"📨 Subscriber {name} got: {text}")

        return greet

    def worker(name: str) -> Callable[[str], Awaitable[None]]:
        async def work(task: str) -> None:
            handled[name] += 1
            print(f"⚙️  {name} handled {task}")

        return work

    print("📨 Starting Subscribers A and B on greetings (fan-out: both get every message)")
    for name in ("A", "B"):
        await s.subscribe(GREETINGS, fan_out(name))
    print(f"⚙️  Starting {WORKERS} workers on tasks (queue group 'workers': one gets each task)")
    for n in range(1, WORKERS + 1):
        await s.subscribe(TASKS, worker(f"worker-{n}"), queue_group="workers")
    print("📤 Starting Publisher")
    while not stop.is_set():
        counts.sent = sent = counts.sent + 1
        await s.publish(GREETINGS, f"hello #{sent}".encode())
        print(f"📤 Published greeting: hello #{sent}")
        for k in range(1, 4):
            await s.publish(TASKS, f"task-{sent}.{k}".encode())
        print(f"📤 Published tasks: task-{sent}.1 .. task-{sent}.3")
        await sleep_or_stop(stop, interval)
    print("\n🛑 Shutting down: the subscribers finish what they received...")


async def main_async(args: argparse.Namespace) -> int:
    stop = stop_event(args.duration)
    print("jetkit basic pub/sub example\nPress Ctrl+C to stop\n")
    counts = Counts()
    async with jk.Stream.open(store_dir=args.store_dir) as s:
        await run(s, args.interval, stop, counts)
    counts.report()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser(
        "python -m jetkit.examples.basic", "Pub/sub: fan-out and a queue group."
    ).parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

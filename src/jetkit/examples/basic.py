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
import io
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TextIO

import jetkit as jk

GREETINGS = "greetings"
TASKS = "tasks"
WORKERS = 3


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
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


class _PipeSafe(io.TextIOBase):
    """stdout for an example: when its reader goes away (``| head -3``), the example
    stops cleanly instead of dying of a BrokenPipeError on its next print."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.stop: asyncio.Event | None = None

    def write(self, text: str) -> int:
        try:
            self._out.write(text)
        except BrokenPipeError:
            self._gone()
        return len(text)

    def flush(self) -> None:
        try:
            self._out.flush()
        except BrokenPipeError:
            self._gone()

    def _gone(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)  # what is still printed goes nowhere
        os.dup2(devnull, self._out.fileno())
        os.close(devnull)
        if self.stop is not None:
            self.stop.set()


def run_example(work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run an example's main coroutine: an error of jetkit's is one line and exit code
    2, Ctrl+C exits 130, and a pipe whose reader left ends it quietly."""
    out = _PipeSafe(sys.stdout)
    sys.stdout = out
    try:
        return asyncio.run(work())
    except jk.JetkitError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout = out._out


def stop_event(duration: float | None) -> asyncio.Event:
    """An event set by Ctrl+C, SIGTERM, after ``duration`` seconds, or when stdout's
    reader goes away."""
    stop = asyncio.Event()
    if isinstance(sys.stdout, _PipeSafe):
        sys.stdout.stop = stop
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
    return run_example(lambda: main_async(args))


if __name__ == "__main__":
    sys.exit(main())

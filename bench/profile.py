"""``python -m bench.profile [consume|publish|replay]``: where jetkit's hot paths spend time.

Runs one jetkit path against its own bench server and samples only the measured part:

* consume: durable, AckPolicy.MANUAL, concurrency 1, over a pre-filled topic;
* publish: ``publish_many`` with every ack checked;
* replay: AckPolicy.NONE from the start.

``--sampler py-spy`` (default when installed; low overhead, samples a child process from
outside) or ``--sampler pyinstrument`` (in process, every call hooked, slower). Prints the
self time per package and the functions with the most self time, as shares of the
sampled (non-idle) time; the raw data goes to ``bench/results/profile-<path>.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jetkit as jk

from .config import PAYLOAD, PUBLISH_WINDOW
from .env import BenchEnv
from .measure import Counter

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PATHS = ("consume", "publish", "replay")
START, STOP = "== measure: start ==", "== measure: stop =="


class Hooks:
    """Start/stop the sampler around the measured part."""

    def __init__(self, start: Callable[[], Any], stop: Callable[[], Any]) -> None:
        self.start = start
        self.stop = stop


async def _marker(text: str, pause: float) -> None:
    print(text, flush=True)
    await asyncio.sleep(pause)  # let py-spy attach (or write) while we are idle


async def measured(path: str, n: int, hooks: Hooks, pause: float = 0.0) -> float:
    """Run one path against a new bench server; returns msg/s."""
    env = BenchEnv(use_redis=False)
    await env.start()
    topic = f"bench.profile.{path}"
    try:
        await env.server.declare_topic(topic, mode=jk.TopicMode.JETSTREAM)
        if path != "publish":
            for start in range(0, n, 20_000):
                count = min(20_000, n - start)
                await env.server.publish_many(topic, itertools.repeat(PAYLOAD, count))
        async with env.jetkit() as s:
            if path == "publish":
                await s.publish(topic, PAYLOAD)
                await _marker(START, pause)
                hooks.start()
                started = time.perf_counter()
                acks = await s.publish_many(
                    topic, itertools.repeat(PAYLOAD, n), window=PUBLISH_WINDOW
                )
                elapsed = time.perf_counter() - started
                hooks.stop()
                await _marker(STOP, pause)
                assert len(acks) == n
                return n / elapsed
            counter = Counter(n)

            async def handler(data: bytes) -> None:
                counter.hit()

            manual = path == "consume"
            await _marker(START, pause)
            hooks.start()
            started = time.perf_counter()
            sub = await s.subscribe(
                topic,
                handler,
                durable="profile" if manual else None,
                ack=jk.AckPolicy.MANUAL if manual else jk.AckPolicy.NONE,
                start_at=jk.StartAt.ALL,
            )
            await counter.wait()
            hooks.stop()
            await _marker(STOP, pause)
            await sub.stop()
            return counter.n / (counter.last - started)
    finally:
        await env.close()


def _package(where: str) -> str:
    for marker, name in (
        ("jetkit/", "jetkit"),
        ("nats/", "nats-py"),
        ("asyncio/", "asyncio"),
        ("bench/", "bench (handler, counters)"),
    ):
        if marker in where:
            return name
    return "other (stdlib, builtins)"


def report(
    path: str,
    rate: float,
    sampler: str,
    by_function: collections.Counter[str],
    top: int,
    by_line: collections.Counter[str] | None = None,
    inclusive: collections.Counter[str] | None = None,
) -> str:
    total = sum(by_function.values()) or 1.0
    by_package: collections.Counter[str] = collections.Counter()
    for name, t in by_function.items():
        by_package[_package(name)] += t
    lines = [
        f"== {path}: {rate:,.0f} msg/s while sampled by {sampler} ==",
        "self time by package:",
        *(f"  {t / total:6.1%}  {name}" for name, t in by_package.most_common()),
        f"self time, top {top} functions:",
        *(f"  {t / total:6.1%}  {name}" for name, t in by_function.most_common(top)),
    ]
    if inclusive:
        lines.append(f"total time (self + callees), top {top} jetkit functions:")
        jetkit = collections.Counter({k: v for k, v in inclusive.items() if "jetkit/" in k})
        lines += [f"  {t / total:6.1%}  {name}" for name, t in jetkit.most_common(top)]
    if by_line:
        lines.append(f"self time, top {top} lines:")
        lines += [f"  {t / total:6.1%}  {name}" for name, t in by_line.most_common(top)]
    return "\n".join(lines)


# -- pyinstrument (in process) -------------------------------------------------------------


def run_pyinstrument(path: str, n: int, top: int) -> str:
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    profiler = Profiler(interval=0.001, async_mode="disabled")
    rate = asyncio.run(measured(path, n, Hooks(profiler.start, profiler.stop)))
    session = profiler.last_session
    assert session is not None
    root = session.root_frame()
    by_function: collections.Counter[str] = collections.Counter()
    stack = [root] if root is not None else []
    while stack:
        frame = stack.pop()
        children = list(frame.children)
        stack.extend(children)
        own = frame.time - sum(c.time for c in children)
        if own <= 0:
            continue
        if frame.function == "[self]" and frame.parent is not None:
            frame = frame.parent  # pyinstrument shows a function's own time as a child
        where = f"{frame.file_path_short or frame.file_path or ''}:{frame.line_no}"
        by_function[f"{frame.function}  {where}"] += own
    text = report(path, rate, "pyinstrument", by_function, top)
    tree = ConsoleRenderer(time="percent_of_total").render(session)
    return text + "\n\n" + tree


# -- py-spy (from outside, on a child process) ---------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(file: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def run_pyspy(path: str, n: int, top: int) -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(tempfile.mkdtemp(prefix="jetkit-bench-pyspy-")) / "raw.txt"
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.profile", path, "--messages", str(n), "--sampler", "none"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.stdout is not None
    spy: subprocess.Popen[bytes] | None = None
    rate = 0.0
    try:
        for line in child.stdout:
            if line.strip() == START:
                args = [exe, "record", "--pid", str(child.pid), "--rate", "1000"]
                args += ["--format", "raw", "--output", str(out), "--nonblocking"]
                spy = subprocess.Popen(
                    args,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            elif line.strip() == STOP and spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            elif line.startswith("rate "):
                rate = float(line.split()[1])
        child.wait(60)
    finally:
        for proc in (spy, child):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    by_function: collections.Counter[str] = collections.Counter()
    by_line: collections.Counter[str] = collections.Counter()
    raw = out.read_text() if out.exists() else ""
    shutil.rmtree(out.parent, ignore_errors=True)
    inclusive: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        names = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            names.append(f"{m['func']}  {_short(m['file'])}" if m else frame)
        for name in set(names):
            inclusive[name] += int(count)
        by_function[names[-1]] += int(count)
        m = _FRAME.match(stack.split(";")[-1])
        if m is not None:
            by_line[f"{m['func']}  {_short(m['file'])}:{m['line'] or ''}"] += int(count)
    return report(path, rate, "py-spy (1000 Hz)", by_function, top, by_line, inclusive)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("paths", nargs="*", choices=[*PATHS, []], help=", ".join(PATHS))
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=25, help="functions to print")
    has_spy = bool(shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists())
    parser.add_argument(
        "--sampler",
        choices=("py-spy", "pyinstrument", "none"),
        default="py-spy" if has_spy else "pyinstrument",
    )
    args = parser.parse_args()
    args.paths = args.paths or list(PATHS)
    if args.sampler == "none":  # the child py-spy samples
        for path in args.paths:
            rate = asyncio.run(measured(path, args.messages, Hooks(int, int), pause=0.5))
            print(f"rate {rate}", flush=True)
        return
    RESULTS_DIR.mkdir(exist_ok=True)
    for path in args.paths:
        if args.sampler == "py-spy":
            text = run_pyspy(path, args.messages, args.top)
        else:
            text = run_pyinstrument(path, args.messages, args.top)
        target = RESULTS_DIR / f"profile-{path}.txt"
        target.write_text(text + "\n")
        print(text.split("\n\n", 1)[0])
        print(f"(written to {target})", flush=True)


if __name__ == "__main__":
    main()

"""Fault-suite helpers: the scale (quick in CI, ``--faults-full`` for the documented run),
the figures each scenario records, child processes the tests kill, and read-backs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import jetkit as jk
from conftest import FAULT_FIGURES

CHILDREN = Path(__file__).parent / "children"


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> Callable[[int, int], int]:
    """``scale(quick, full)``: the quick number, or the full one with --faults-full."""
    full = bool(request.config.getoption("--faults-full"))
    return lambda quick, big: big if full else quick


@dataclasses.dataclass
class Figures:
    """What one scenario counted. ``lost`` must be 0."""

    scenario: str
    cycles: int = 0
    acked: int = 0
    stored: int = 0
    processed: int = 0
    lost: int = 0
    duplicated: int = 0
    acks_forgotten: int | str = "-"
    note: str = ""
    recoveries: list[float] = dataclasses.field(default_factory=list)

    def row(self) -> dict[str, object]:
        row = dataclasses.asdict(self)
        del row["recoveries"]
        times = sorted(self.recoveries)
        row["recovery_s"] = (
            f"{times[len(times) // 2]:.2f} median, {times[-1]:.2f} max" if times else "-"
        )
        return row


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], Figures]:
    """``figures(name)``: a Figures that is reported at the end of the session."""
    made: list[Figures] = []

    def make(name: str) -> Figures:
        made.append(Figures(name))
        return made[-1]

    yield make  # type: ignore[misc]
    failed = getattr(request.node, "rep_call", None)
    for fig in made:
        row = fig.row()
        if failed is not None and failed.failed:
            row["scenario"] = f"{fig.scenario} (FAILED)"
        FAULT_FIGURES.append(row)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.when == "call":  # type: ignore[attr-defined]
        item.rep_call = report  # type: ignore[attr-defined]
    return report


class Child:
    """A Python child process running one of ``children/*.py``; its output is read all
    the time (into ``lines``), so it never blocks on a full pipe."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._next = 0  # the first line read_until has not looked at
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, script: str, *args: object) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILDREN / script),
            *map(str, args),
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().strip())
            self._changed.set()
        self._changed.set()

    async def read_until(self, predicate: Callable[[str], bool], timeout: float = 60) -> str:
        """The next line that matches; fails after ``timeout`` or if the child exits."""
        deadline = time.monotonic() + timeout
        while True:
            while self._next < len(self.lines):
                line = self.lines[self._next]
                self._next += 1
                if predicate(line):
                    return line
            if self._reader.done():
                raise AssertionError(f"child exited ({await self.proc.wait()}) too early")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"child said nothing matching within {timeout}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        await self.proc.wait()
        await self._reader


@pytest.fixture
async def children() -> AsyncIterator[Callable[..., object]]:
    """Start children with ``await children(script, *args)``; all are killed at the end."""
    started: list[Child] = []

    async def start(script: str, *args: object) -> Child:
        child = await Child.start(script, *args)
        started.append(child)
        return child

    yield start
    for child in started:
        await child.kill()


async def read_all(s: jk.Stream, topic: str, timeout: float = 60) -> list[jk.Message]:
    """Every message stored on ``topic``, in order (read without acks)."""
    info = await s.topic_info(topic)
    got: list[jk.Message] = []
    if info.messages == 0:
        return got
    done = asyncio.Event()

    async def collect(msg: jk.Message) -> None:
        got.append(msg)
        if (msg.seq or 0) >= info.last_seq:
            done.set()

    sub = await s.subscribe(topic, collect, ack=jk.AckPolicy.NONE, start_at=jk.StartAt.ALL)
    await asyncio.wait_for(done.wait(), timeout)
    await sub.stop()
    return got

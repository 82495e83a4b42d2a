"""What a measurement is: metrics with targets, counters, percentiles and the results store."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import statistics
import time
from collections import defaultdict
from typing import Any


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal for jetkit's median: a ratio against a baseline, or an absolute bound."""

    baseline: str | None = None  # ratio target: jetkit / this baseline
    min_ratio: float | None = None  # ratio target: jetkit/baseline >= min_ratio
    max_value: float | None = None  # absolute target: jetkit's value <= max_value

    def describe(self, unit: str) -> str:
        if self.min_ratio is not None:
            return f">= {self.min_ratio:g}x {self.baseline}"
        return f"<= {self.max_value:g} {unit}"


@dataclasses.dataclass(frozen=True)
class Metric:
    """One number each implementation produces per run."""

    key: str
    scenario: str  # e.g. "3 durable consume"
    label: str  # e.g. "MANUAL ack, concurrency 8"
    unit: str
    higher_is_better: bool = True
    baselines: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()
    ratios: bool = True  # False: jetkit/baseline is not meaningful (e.g. growth near zero)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank on sorted values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


class Counter:
    """Counts handled messages; remembers when the last one arrived; fires at ``target``."""

    __slots__ = ("done", "first", "last", "n", "target")

    def __init__(self, target: int) -> None:
        self.target = target
        self.n = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()

    def hit(self) -> None:
        self.n += 1
        self.last = time.perf_counter()
        if self.n >= self.target:
            self.done.set()

    async def wait(self, *, idle: float = 1.0, limit: float = 600.0) -> bool:
        """Wait for ``target`` hits; give up after ``idle`` s without progress or ``limit`` s.

        Returns True if the target was reached.
        """
        deadline = time.monotonic() + limit
        seen = -1
        while not self.done.is_set():
            if self.n == seen or time.monotonic() > deadline:
                return False
            seen = self.n
            try:
                await asyncio.wait_for(self.done.wait(), idle)
            except TimeoutError:
                pass
        return True


@dataclasses.dataclass
class Run:
    """What one run of one implementation produced.

    ``sent`` / ``received``: messages the run sent (or pre-filled) and the ones its
    handler got, where a run can come up short (the table's ``lost`` column).
    """

    values: dict[str, float]
    notes: list[str] = dataclasses.field(default_factory=list)
    sent: int | None = None
    received: int | None = None


@dataclasses.dataclass(frozen=True)
class Lost:
    """Messages sent but not received, over an implementation's measured runs."""

    lost: int
    sent: int
    runs: int


class Results:
    """Samples per (metric, implementation), notes and skips, in the order they came.

    Warm-up samples are kept apart (``warmup``): recorded, never in a median.
    """

    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}
        self.samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.warmup: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.counts: dict[str, dict[str, list[tuple[int, int]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.notes: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.skipped: dict[str, dict[str, str]] = defaultdict(dict)
        self.seconds: dict[str, float] = {}

    def declare(self, *metrics: Metric) -> None:
        for metric in metrics:
            self.metrics[metric.key] = metric

    def add(self, key: str, impl: str, value: float, *, warmup: bool = False) -> None:
        (self.warmup if warmup else self.samples)[key][impl].append(value)

    def add_counts(self, key: str, impl: str, sent: int, received: int) -> None:
        """One measured run's sent / received messages."""
        self.counts[key][impl].append((sent, received))

    def lost(self, key: str, impl: str) -> Lost | None:
        """Sent minus received over the measured runs (None: the runs report no counts)."""
        counts = self.counts.get(key, {}).get(impl)
        if not counts:
            return None
        sent = sum(s for s, _ in counts)
        return Lost(sent - sum(r for _, r in counts), sent, len(counts))

    def note(self, key: str, impl: str, text: str) -> None:
        if text not in self.notes[key][impl]:
            self.notes[key][impl].append(text)

    def skip(self, key: str, impl: str, reason: str) -> None:
        self.skipped[key][impl] = reason

    def median(self, key: str, impl: str) -> float | None:
        values = self.samples.get(key, {}).get(impl)
        return statistics.median(values) if values else None

    def as_json(self) -> dict[str, Any]:
        rows = []
        for key, metric in self.metrics.items():
            impls = {}
            for impl in ("jetkit", *metric.baselines):
                samples = self.samples.get(key, {}).get(impl, [])
                lost = self.lost(key, impl)
                impls[impl] = {
                    "samples": samples,
                    "warmup": self.warmup.get(key, {}).get(impl, []),
                    "median": statistics.median(samples) if samples else None,
                    "sent_received": self.counts.get(key, {}).get(impl, []),
                    "lost": dataclasses.asdict(lost) if lost else None,
                    "skipped": self.skipped.get(key, {}).get(impl),
                    "notes": self.notes.get(key, {}).get(impl, []),
                }
            rows.append(
                {
                    "key": key,
                    "scenario": metric.scenario,
                    "label": metric.label,
                    "unit": metric.unit,
                    "higher_is_better": metric.higher_is_better,
                    "implementations": impls,
                    "targets": [dataclasses.asdict(t) for t in metric.targets],
                }
            )
        return {"metrics": rows, "scenario_seconds": self.seconds}

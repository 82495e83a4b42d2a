"""Runs scenarios: implementations alternate within each repetition, every run is bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence

from rich.console import Console
from rich.markup import escape

from .config import Sizes
from .env import BenchEnv
from .measure import Metric, Results, Run

RunFn = Callable[[int], Awaitable[Run]]


def _num(value: float) -> str:
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.4g}"


@dataclasses.dataclass
class Context:
    """What a scenario gets: the servers, the sizes, where results go."""

    env: BenchEnv
    sizes: Sizes
    results: Results
    console: Console
    run_timeout: float
    quick: bool

    def say(self, text: str) -> None:
        self.console.print(f"  [dim]{escape(text)}[/dim]", highlight=False)

    def skip(self, metrics: Sequence[Metric], impl: str, reason: str) -> None:
        for metric in metrics:
            self.results.skip(metric.key, impl, reason)

    async def alternate(
        self,
        metrics: Sequence[Metric],
        impls: dict[str, RunFn | None],
        *,
        reps: int | None = None,
        skip_reason: str = "",
    ) -> None:
        """Run every implementation once per repetition, in turn (jetkit, baseline, ...).

        An implementation given as None is skipped with ``skip_reason``. A run that
        fails or exceeds ``run_timeout`` is noted and leaves no sample.
        """
        self.results.declare(*metrics)
        live = {}
        for name, fn in impls.items():
            if fn is None:
                self.skip(metrics, name, skip_reason or "not available")
            else:
                live[name] = fn
        keys = {m.key for m in metrics}
        for rep in range(reps or self.sizes.reps):
            for name, fn in live.items():
                started = time.perf_counter()
                try:
                    run = await asyncio.wait_for(fn(rep), self.run_timeout)
                except Exception as exc:
                    text = f"{type(exc).__name__}: {exc}".strip()
                    self.console.print(
                        f"  [red]{name} run {rep + 1} failed: {escape(text)}[/red]", highlight=False
                    )
                    if not isinstance(exc, TimeoutError):
                        self.console.print(
                            f"[dim]{escape(traceback.format_exc(limit=6))}[/dim]", highlight=False
                        )
                    for key in keys:
                        self.results.note(key, name, f"run failed: {text[:120]}")
                    continue
                shown = ", ".join(f"{k}={_num(v)}" for k, v in run.values.items() if k in keys)
                self.say(
                    f"{name} run {rep + 1}: {shown} ({time.perf_counter() - started:.1f}s)"
                    + (f" [{'; '.join(run.notes)}]" if run.notes else "")
                )
                for key, value in run.values.items():
                    if key in keys:
                        self.results.add(key, name, value)
                for text in run.notes:
                    for key in run.values:
                        self.results.note(key, name, text)

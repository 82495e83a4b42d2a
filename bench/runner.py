"""Runs scenarios: a warm-up, then repetitions in rotated order; every run is bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from .config import PAYLOAD, PUBLISH_WINDOW, Sizes
from .env import BenchEnv
from .measure import Metric, Results, Run
from .natsgo import NATS_GO, GoPeer
from .peers import Peers

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
    peers: Peers | None = None
    peers_note: str = ""
    go: GoPeer | None = None
    go_note: str = ""

    def peer(
        self, client: str, spec: Callable[[int], dict[str, Any]], keys: dict[str, str]
    ) -> RunFn | str:
        """A run of ``client`` ("natsio" / "nats-core" in the peer venv, or "nats.go", the
        built Go runner), or why there is none.

        ``spec(rep)`` gives the scenario and its parameters (see ``bench/peer_runner.py``);
        ``keys`` maps the runner's values (``throughput``, ``p50``, ...) to metric keys.
        """
        peers: Peers | GoPeer | None = self.go if client == NATS_GO else self.peers
        if peers is None:
            note = self.go_note if client == NATS_GO else self.peers_note
            return note or "no runner"

        async def one(rep: int) -> Run:
            full = {
                "client": client,
                "connect": self.env.connect,
                "payload": PAYLOAD.decode(),
                "window": PUBLISH_WINDOW,
                "idle": 1.0,
                "limit": self.run_timeout,
                **spec(rep),
            }
            result = await peers.run(full, self.run_timeout + 30)
            values = {keys[k]: v for k, v in result["values"].items() if k in keys}
            return Run(values, result.get("notes", []), result.get("sent"), result.get("received"))

        return one

    def say(self, text: str) -> None:
        self.console.print(f"  [dim]{escape(text)}[/dim]", highlight=False)

    def skip(self, metrics: Sequence[Metric], impl: str, reason: str) -> None:
        for metric in metrics:
            self.results.skip(metric.key, impl, reason)

    async def alternate(
        self,
        metrics: Sequence[Metric],
        impls: dict[str, RunFn | str],
        *,
        reps: int | None = None,
    ) -> None:
        """A warm-up repetition, then ``reps`` measured ones, each running every implementation.

        Repetition k (0 is the warm-up) starts at implementation k mod n and goes round
        (n = 3: A B C, then B C A, then C A B, ...), so no implementation always runs
        first or right after the same one. The warm-up's samples are recorded apart and
        never enter a median. An implementation given as a string is skipped, the string
        saying why. A run that fails or exceeds ``run_timeout`` is noted and
        leaves no sample. ``fn(k)`` gets the repetition (unique names per run).
        """
        self.results.declare(*metrics)
        live: list[tuple[str, RunFn]] = []
        for name, fn in impls.items():
            if isinstance(fn, str):
                self.skip(metrics, name, fn or "not available")
            else:
                live.append((name, fn))
        if not live:
            return
        keys = {m.key for m in metrics}
        for rep in range(1 + (reps or self.sizes.reps)):
            warmup = rep == 0
            first = rep % len(live)
            for name, fn in live[first:] + live[:first]:
                label = f"{name} warm-up" if warmup else f"{name} run {rep}"
                started = time.perf_counter()
                try:
                    run = await asyncio.wait_for(fn(rep), self.run_timeout)
                except Exception as exc:
                    text = f"{type(exc).__name__}: {exc}".strip()
                    self.console.print(
                        f"  [red]{escape(label)} failed: {escape(text)}[/red]", highlight=False
                    )
                    if not isinstance(exc, TimeoutError):
                        self.console.print(
                            f"[dim]{escape(traceback.format_exc(limit=6))}[/dim]", highlight=False
                        )
                    prefix = "warm-up run failed" if warmup else "run failed"
                    for key in keys:
                        self.results.note(key, name, f"{prefix}: {text[:120]}")
                    continue
                shown = ", ".join(f"{k}={_num(v)}" for k, v in run.values.items() if k in keys)
                if run.sent is not None and run.received is not None:
                    shown += f", received {run.received:,} of {run.sent:,}"
                self.say(
                    f"{label}: {shown} ({time.perf_counter() - started:.1f}s)"
                    + (f" [{'; '.join(run.notes)}]" if run.notes else "")
                )
                measured = [k for k in run.values if k in keys]
                for key in measured:
                    self.results.add(key, name, run.values[key], warmup=warmup)
                    if not warmup and run.sent is not None and run.received is not None:
                        self.results.add_counts(key, name, run.sent, run.received)
                if not warmup:
                    for text in run.notes:
                        for key in measured:
                            self.results.note(key, name, text)

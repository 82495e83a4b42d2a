"""Instructions per message in the client, counted by callgrind (docs/performance.md).

    python -m bench.callgrind                      # core pub/sub, publish_many, consume
    python -m bench.callgrind --tracing            # the same with tracing on
    python -m bench.callgrind --src /tmp/base/src  # another checkout's jetkit (before/after)

Each figure is the difference of two runs of the same script under
``valgrind --tool=callgrind`` (the client only: the nats-server it starts is not
traced), divided by the messages: core pub/sub and ``publish_many`` run with
``--messages`` and with none; the durable consume (MANUAL ack) runs as a prefill plus
the consume against the prefill alone, so start-up, imports and the prefill cancel
out. ``PYTHONHASHSEED=0`` keeps dict and set layouts the same from run to run.
With ``--tracing`` the Stream gets a TracerProvider whose spans go through the SDK's
BatchSpanProcessor to an exporter that drops them (the SDK's cost without a network).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PAYLOAD = b'{"order_id": "ord-000001", "customer": "cus-42", "amount": 99.5}'.ljust(150)
MESSAGES = 20_000
SCENARIOS = ("pubsub", "publish_many", "consume")


async def _child(kind: str, n: int, tracing: bool) -> None:
    import jetkit as jk

    from .tracing import dropping_provider

    extra: dict[str, Any] = {"tracing": dropping_provider()} if tracing else {}
    mode = jk.TopicMode.CORE if kind == "pubsub" else jk.TopicMode.JETSTREAM
    async with jk.Stream.open(default_mode=mode, **extra) as s:
        done = asyncio.Event()
        seen = 0

        async def handler(data: bytes) -> None:
            nonlocal seen
            seen += 1
            if seen >= n:
                done.set()

        if kind == "pubsub":
            await s.subscribe("cg.core", handler)
            for _ in range(n):
                await s.publish("cg.core", PAYLOAD)
        else:
            await s.declare_topic("cg.stored", mode=jk.TopicMode.JETSTREAM)
            if n:
                await s.publish_many("cg.stored", [PAYLOAD] * n, window=256)
            if kind == "consume":
                await s.subscribe(
                    "cg.stored",
                    handler,
                    durable="cg",
                    ack=jk.AckPolicy.MANUAL,
                    start_at=jk.StartAt.ALL,
                )
            else:
                done.set()
        if n:
            await asyncio.wait_for(done.wait(), 600)


def _instructions(kind: str, n: int, tracing: bool, src: str | None) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bench.callgrind",
            "--child",
            kind,
            str(n),
        ]
        if tracing:
            command.append("--tracing")
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=1800)
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        assert found, "no totals in callgrind's output"
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--tracing", action="store_true", help="Stream.open(tracing=...)")
    parser.add_argument("--src", help="put this directory first on the path (another jetkit)")
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("scenarios", nargs="*", help=f"of {', '.join(SCENARIOS)} (all)")
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"no scenario {', '.join(sorted(unknown))}; they are {', '.join(SCENARIOS)}")
    if args.child:
        asyncio.run(_child(args.child[0], int(args.child[1]), args.tracing))
        return
    n = args.messages
    runs: dict[tuple[str, int], int] = {}

    def count(kind: str, messages: int) -> int:
        if (kind, messages) not in runs:
            runs[kind, messages] = _instructions(kind, messages, args.tracing, args.src)
        return runs[kind, messages]

    for scenario in args.scenarios or SCENARIOS:
        if scenario == "pubsub":
            per = (count("pubsub", n) - count("pubsub", 0)) / n
        elif scenario == "publish_many":
            per = (count("publish_many", n) - count("publish_many", 0)) / n
        else:
            per = (count("consume", n) - count("publish_many", n)) / n
        print(f"{scenario}: {per:,.0f} instructions per message", flush=True)


if __name__ == "__main__":
    main()

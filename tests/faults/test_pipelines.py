"""Exactly-once pipelines under kill -9: a 2-stage ``emit=`` pipeline, its stages'
process and the server killed in turns, stores every output exactly once; the same
pipeline written with a plain ``publish`` in the handler is at least once (its
duplicates are counted for comparison). Figures go to RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import jetkit as jk
from conftest import kill_server, server_of

from .conftest import Child, Figures

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(900)]

SOURCE, MID, OUT = "pipe.in", "pipe.mid", "pipe.out"


async def stored(s: jk.Stream, topic: str) -> list[bytes]:
    info = await s.topic_info(topic)
    if not info.messages:
        return []
    return [m.data async for m in s.read_stored(topic, limit=info.messages)]


async def count(s: jk.Stream, topic: str) -> int:
    try:
        # bounded: a call made while the server restarts would wait for its whole timeout
        # (5 s), and the recovery measured would be that wait
        return (await asyncio.wait_for(s.topic_info(topic), 0.5)).messages
    except (jk.JetkitError, TimeoutError):  # the server is restarting
        return -1


async def grown(s: jk.Stream, topic: str, goal: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while await count(s, topic) < goal:
        assert time.monotonic() < deadline, f"{topic} did not reach {goal}"
        await asyncio.sleep(0.1)


async def drained(s: jk.Stream, topic: str, durable: str, timeout: float = 240) -> None:
    """Until ``durable`` has acknowledged everything stored on ``topic``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = await s.consumer_info(topic, durable)
            last = (await s.topic_info(topic)).last_seq
            if info.ack_floor >= last and info.ack_pending == 0 and info.pending == 0:
                return
        except jk.JetkitError:
            pass
        assert time.monotonic() < deadline, f"{durable} did not acknowledge all of {topic}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("mode", ["emit", "publish"])
async def test_two_stage_pipeline_under_stage_and_server_kills(
    tmp_path: Path,
    scale: Callable[[int, int], int],
    figures: Callable[[str], Figures],
    children: Any,
    mode: str,
) -> None:
    total, cycles = scale(2_000, 20_000), scale(4, 10)
    what = "emit= (exactly once)" if mode == "emit" else "plain publish in the handler"
    fig = figures(f"2-stage pipeline, stage and server kill -9 in turns ({what})")
    fig.cycles = cycles
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        server = server_of(s)
        for topic in (SOURCE, MID, OUT):
            await s.declare_topic(topic)
        await s.publish_many(SOURCE, (f"m{i}".encode() for i in range(total)))
        child: Child = await children("pipeline.py", tmp_path, SOURCE, MID, OUT, mode)
        await child.read_until(lambda ln: ln == "ready")
        kills = {"stage": 0, "server": 0}
        recovered: dict[str, list[float]] = {"stage": [], "server": []}
        for k in range(cycles):
            await grown(s, OUT, total * (k + 1) // (cycles + 2))
            killed = time.monotonic()
            before = await count(s, OUT)
            what = "stage" if k % 2 == 0 else "server"
            if what == "stage":
                await child.kill()
                child = await children("pipeline.py", tmp_path, SOURCE, MID, OUT, mode)
                await child.read_until(lambda ln: ln == "ready")
            else:
                server._crashes = 0  # one crash each, not a crash loop
                kill_server(server)
            kills[what] += 1
            await grown(s, OUT, min(before + 10, total))
            fig.recoveries.append(time.monotonic() - killed)
            recovered[what].append(time.monotonic() - killed)
        await drained(s, SOURCE, "stage1")
        await drained(s, MID, "stage2")
        await child.kill()
        mid, out = await stored(s, MID), await stored(s, OUT)
    expected = {f"2.1.m{i}".encode() for i in range(total)}
    fig.acked = total
    fig.stored = len(out)
    fig.processed = len(mid)
    fig.lost = len(expected - set(out))
    fig.duplicated = len(out) - len(set(out))
    fig.note = (
        f"{total} inputs; {kills['stage']} stage kills, {kills['server']} server kills; "
        f"stored twice: {len(mid) - len(set(mid))} at stage 1, {fig.duplicated} at stage 2; "
        f"recovery after a stage kill {_median(recovered['stage'])}, after a server kill "
        f"{_median(recovered['server'])}"
    )
    assert set(out) <= expected
    assert fig.lost == 0
    if mode == "emit":
        assert fig.duplicated == 0 and len(mid) == len(set(mid)) == total


def _median(times: list[float]) -> str:
    ordered = sorted(times)
    return f"{ordered[len(ordered) // 2]:.2f} s median" if ordered else "-"

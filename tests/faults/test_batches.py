"""Batch handlers under server kill -9: nothing acknowledged is lost (a batch whose acks
a kill undid, or that was cut off, comes again). Figures go to RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import jetkit as jk
from conftest import kill_server, server_of, wait_until

from .conftest import Figures

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(900)]

TOPIC = "fault.batches"


async def test_server_kill_during_batch_consume(
    tmp_path: Path, scale: Callable[[int, int], int], figures: Callable[[str], Figures]
) -> None:
    count, cycles = scale(3_000, 20_000), scale(3, 10)
    fig = figures("server kill -9 during batch consume (batch=100, concurrency 2)")
    fig.cycles = cycles
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        server = server_of(s)
        await s.publish_many(TOPIC, (f"m{i}".encode() for i in range(count)))
        calls: collections.Counter[bytes] = collections.Counter()
        batches: list[int] = []

        async def bulk(msgs: list[jk.Message]) -> None:
            batches.append(len(msgs))
            for m in msgs:
                calls[m.data] += 1
            await asyncio.sleep(0.002)  # a bulk insert's round trip

        await s.subscribe(
            TOPIC,
            bulk,
            durable="bulk",
            start_at=jk.StartAt.ALL,
            batch=100,
            batch_timeout=0.2,
            concurrency=2,
            ack_wait=2,
        )
        for k in range(cycles):
            await wait_until(lambda k=k: len(calls) >= count * (k + 1) // (cycles + 1), 120)  # type: ignore[misc]
            before = len(calls)
            server._crashes = 0  # one crash each, not a crash loop
            kill_server(server)
            await wait_until(lambda b=before: len(calls) > min(b + 10, count - 1), 60)  # type: ignore[misc]
        await wait_until(lambda: len(calls) == count, 180)
        deadline = time.monotonic() + 180
        while True:
            info = await s.consumer_info(TOPIC, "bulk")
            if info.ack_floor >= count and info.ack_pending == 0:
                break
            assert time.monotonic() < deadline, "the batches were not all acknowledged"
            await asyncio.sleep(0.1)
        fig.acked = count
        fig.stored = (await s.topic_info(TOPIC)).messages
        fig.processed = sum(calls.values())
        fig.lost = count - len(calls)
        fig.duplicated = fig.processed - len(calls)
        fig.note = (
            f"{len(batches)} batches, {fig.processed / len(batches):.0f} messages each on average"
        )
    assert fig.lost == 0

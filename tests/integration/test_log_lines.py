"""The log lines an operator reads: the reconnect line names the server by its URL;
retry, poison and dead-letter lines name the consumer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

import jetkit as jk
from conftest import ExternalServer, nc_of, wait_until


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("jetkit")]


@pytest.mark.slow
async def test_reconnect_line_shows_the_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jetkit")
    server = ExternalServer(tmp_path / "external")
    await server.start()
    try:
        async with jk.Stream.open(servers=[server.url]) as s:
            await server.stop()
            await wait_until(lambda: not nc_of(s).is_connected)
            await server.start()
            await wait_until(lambda: nc_of(s).is_connected, timeout=20)
            await wait_until(lambda: any("reconnected" in line for line in lines(caplog)))
    finally:
        await server.stop()
    reconnected = [line for line in lines(caplog) if "reconnected" in line]
    assert reconnected == [f"reconnected to NATS at {server.url}"]


@dataclasses.dataclass
class Order:
    order_id: str


async def test_retry_poison_and_dead_letter_lines_name_the_consumer(
    js: jk.Stream, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jetkit")
    done = asyncio.Event()

    async def handle(order: Order, msg: jk.Message) -> None:
        if msg.num_delivered == 2:
            done.set()
        raise RuntimeError("boom")

    await js.subscribe(
        topic,
        handle,
        durable="logged-proc",
        ack=jk.AckPolicy.MANUAL,
        max_deliver=2,
        backoff=[0.05],
        dlq=f"failed.{topic}",
    )
    await js.publish(topic, b"not json")
    await js.publish_json(topic, Order("order-1"))
    await asyncio.wait_for(done.wait(), 10)
    await wait_until(lambda: any("last attempt" in line for line in lines(caplog)))
    logged = "\n".join(lines(caplog))
    prefix = "consumer 'logged-proc': "
    assert f"{prefix}poison message on '{topic}' seq 1: " in logged
    assert f"{prefix}handler for '{topic}' seq 2 failed on attempt 1 (RuntimeError: boom)" in logged
    assert f"{prefix}handler for '{topic}' seq 2 failed on its last attempt 2" in logged


async def test_a_standard_format_names_jetkit_once(
    js: jk.Stream, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jetkit")
    failed = asyncio.Event()

    async def handle(msg: jk.Message) -> None:
        failed.set()
        raise RuntimeError("once")

    sub = await js.subscribe(
        topic, handle, durable="named-once", ack=jk.AckPolicy.MANUAL, backoff=[30], max_deliver=2
    )
    await js.publish(topic, b"x")
    await asyncio.wait_for(failed.wait(), 10)
    await wait_until(lambda: any("failed on attempt 1" in line for line in lines(caplog)))
    formatter = logging.Formatter("%(name)s: %(message)s")
    (record,) = [r for r in caplog.records if "failed on attempt 1" in r.getMessage()]
    assert formatter.format(record).startswith("jetkit: consumer 'named-once': handler for ")
    await sub.drain(timeout=5)

"""The inspection commands, run in-process against a store they start or attach to."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import jetkit as jk
from conftest import wait_until_async
from jetkit import cli
from jetkit.cli import app

runner = CliRunner()


def fill(store: Path) -> None:
    """A stored topic with two messages, a durable with lag, and one dead letter."""

    async def work() -> None:
        async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
            await s.publish("orders.events", b'{"order_id": "order-1"}', headers={"t": "1"})
            await s.publish("orders.events", b'{"order_id": "order-2"}')
            done = asyncio.Event()

            async def fail(msg: jk.Message) -> None:
                done.set()
                if b"order-1" in msg.data:
                    raise RuntimeError("boom")

            await s.subscribe(
                "orders.events",
                fail,
                durable="proc",
                ack=jk.AckPolicy.MANUAL,
                max_deliver=1,
                dlq="failed.orders",
                start_at=jk.StartAt.ALL,
                buffer_size=1,
            )
            await asyncio.wait_for(done.wait(), 10)

            async def dead_lettered() -> bool:
                try:
                    return (await s.topic_info("failed.orders")).messages == 1
                except jk.NotFoundError:  # the DLQ topic is created with its first letter
                    return False

            # fails the fixture (not silently on) if the dead letter never arrives
            await wait_until_async(dead_lettered, timeout=10, interval=0.02)

    asyncio.run(work())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    fill(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "out", Console(width=200, highlight=False))


def run(*args: str) -> str:
    result = runner.invoke(app, list(args), terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_topics_topic_and_consumers(store: Path) -> None:
    out = run("topics", "--store-dir", str(store))
    assert "orders.events" in out and "failed.orders" in out
    out = run("topic", "orders.events", "--store-dir", str(store))
    assert "orders_events" in out and "last_seq" in out
    out = run("consumers", "orders.events", "--store-dir", str(store))
    assert "proc" in out


def test_pub_and_sub(store: Path) -> None:
    out = run(
        "pub",
        "orders.events",
        '{"order_id": "order-3"}',
        "-H",
        "k=v",
        "--msg-id",
        "o3",
        "--store-dir",
        str(store),
    )
    assert "stored in orders_events at seq 3" in out
    out = run("pub", "orders.events", "again", "--msg-id", "o3", "--store-dir", str(store))
    assert "duplicate" in out
    out = run("pub", "live.only", "hi", "--store-dir", str(store))
    assert "core" in out
    out = run("sub", "orders.events", "--from-start", "--count", "2", "--store-dir", str(store))
    assert "#1 orders.events" in out and "#2 orders.events" in out and "#3" not in out


@pytest.mark.parametrize("flag", ["--redrive", "--republish"])
def test_dlq_lists_and_redrives(store: Path, flag: str) -> None:
    out = run("dlq", "failed.orders", "--store-dir", str(store))
    assert "1 dead letter(s)" in out and "RuntimeError: boom" in out and "orders.events" in out
    out = run("dlq", "failed.orders", flag, "--store-dir", str(store))
    assert "re-drove 1" in out
    out = run("dlq", "failed.orders", "--store-dir", str(store))
    assert "0 dead letter(s)" in out
    out = run("topic", "orders.events", "--store-dir", str(store))
    assert re.search(r"messages\s*│\s*3\s", out), out


def test_dlq_redrive_refuses_a_topic_that_is_not_a_dlq(store: Path) -> None:
    result = runner.invoke(app, ["dlq", "orders.events", "--redrive", "--store-dir", str(store)])
    assert result.exit_code == 2 and "no dead letter" in result.output
    out = run("topic", "orders.events", "--store-dir", str(store))
    assert re.search(r"messages\s*│\s*2\s", out), out  # nothing was deleted


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["topic", "no.such.topic", "--store-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "error:" in result.output and "no.such.topic" in result.output
    result = runner.invoke(app, ["pub", "bad topic", "x", "--store-dir", str(tmp_path)])
    assert result.exit_code == 2 and "whitespace" in result.output
    result = runner.invoke(app, ["pub", "a.b", "x", "-H", "novalue", "--store-dir", str(tmp_path)])
    assert result.exit_code == 2

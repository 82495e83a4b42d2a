"""The command line as a child process (``jetkit(...)``, ``ok(...)``) and the stores the
CLI tests read: ``filled`` (stored topics, a lagging durable, hostile dead letters) and
``letters`` (a DLQ of three dead letters). Imported as ``from .conftest import ...``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import jetkit as jk
from conftest import wait_until_async
from jetkit._retry import H_CONSUMER, H_DELIVERIES, H_ERROR, H_SEQ, H_TOPIC

HOSTILE = [
    b"[/red]",
    b"[link=http://x]click[/link]",
    b"\x1b[31mred\x1b[0m",
    b"x" * 5000,
    b"\xff\xfe not utf-8",
    b"two\r\nlines\tand a tab",
]


def jetkit(
    *args: str | Path, stdin: bytes | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m jetkit ARGS`` to the end, stdout and stderr pipes (killed on timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "jetkit", *map(str, args)],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def ok(*args: str | Path, stdin: bytes | None = None) -> str:
    result = jetkit(*args, stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def fill(store: Path) -> None:
    """A stored topic with two messages, a durable with lag, and dead letters: one that
    failed, and one for each hostile payload."""

    async def work() -> None:
        async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
            await s.publish("orders.events", b'{"order_id": "order-1"}', headers={"t": "1"})
            await s.publish("orders.events", b'{"order_id": "order-2"}')
            for data in HOSTILE:
                await s.publish("hostile.events", data, headers={"h": "[/red]"})
            done = asyncio.Event()

            async def fail(msg: jk.Message) -> None:
                done.set()
                if b"order-1" in msg.data:
                    raise RuntimeError("boom [/red]")

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

            async def reject(msg: jk.Message) -> None:
                raise RuntimeError("no")

            await s.subscribe(
                "hostile.events",
                reject,
                durable="hostile-processor-with-a-long-name",
                ack=jk.AckPolicy.MANUAL,
                max_deliver=1,
                dlq="failed.hostile.events",
                start_at=jk.StartAt.ALL,
            )
            await asyncio.wait_for(done.wait(), 10)

            async def dead_lettered() -> bool:
                try:
                    return (await s.topic_info("failed.orders")).messages == 1 and (
                        await s.topic_info("failed.hostile.events")
                    ).messages == len(HOSTILE)
                except jk.NotFoundError:  # the DLQ topic is created with its first letter
                    return False

            # fails the fixture (not silently on) if the dead letters never arrive
            await wait_until_async(dead_lettered, timeout=10, interval=0.02)

    asyncio.run(work())


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A filled store the read-only tests share (each command starts its server)."""
    store = tmp_path_factory.mktemp("cli-store")
    fill(store)
    return store


def tsv(text: str) -> list[dict[str, str]]:
    header, *rows = text.splitlines()
    keys = header.split("\t")
    return [dict(zip(keys, row.split("\t"), strict=True)) for row in rows]


LONG_ERROR = (
    "TimeoutError: the payment gateway did not answer within 30 seconds while charging "
    "the card of customer-17 for order-9 [/red]"
)


LETTERS = [  # original topic, original seq, consumer, error, payload
    ("orders.events", 1, "proc", "RuntimeError: boom", b'{"order_id": "order-1"}'),
    ("payments.events", 4, "payments-processor-with-a-long-name", LONG_ERROR, b"\xff\xfe bin"),
    ("payments.events", 7, "payments-processor-with-a-long-name", "ValueError: declined", b"c"),
]


def fill_letters(store: Path) -> None:
    """A DLQ topic ``failed.mixed`` holding the three dead letters of ``LETTERS``."""

    async def work() -> None:
        async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
            for topic, seq, consumer, error, data in LETTERS:
                headers = {
                    H_TOPIC: topic,
                    H_SEQ: str(seq),
                    H_DELIVERIES: "3",
                    H_CONSUMER: consumer,
                    H_ERROR: error,
                    "trace": f"t{seq}",
                }
                await s.publish("failed.mixed", data, headers=headers)

    asyncio.run(work())


@pytest.fixture(scope="module")
def letters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("letters-store")
    fill_letters(store)
    return store

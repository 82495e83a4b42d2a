"""``jetkit demo`` as a user runs it: a subprocess, stopped with SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import jetkit as jk
from jetkit.examples import orders

pytestmark = pytest.mark.slow

FAST = ["--order-interval", "0.3", "--user-interval", "0.4", "--analytics-delay", "0.5"]


class Demo:
    """A running demo whose output lines are collected as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, store: Path, *args: str) -> Demo:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jetkit",
            "demo",
            "--store-dir",
            str(store),
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        return cls(proc)

    async def wait_for_line(self, pattern: str, timeout: float = 30) -> str:
        for line in self.lines:
            if re.search(pattern, line):
                return line
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, f"demo exited before printing {pattern!r}:\n" + "\n".join(self.lines)
                line = raw.decode().rstrip()
                self.lines.append(line)
                if re.search(pattern, line):
                    return line

    async def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        assert self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), 30)
        self.lines.extend(rest.decode().splitlines())
        return await self.proc.wait()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    def numbers(self, pattern: str) -> list[int]:
        return [int(m.group(1)) for line in self.lines if (m := re.search(pattern, line))]


PROCESSED = r"Processing order: order-(\d+)"
PUBLISHED = r"Published order event: order-(\d+)"
ANALYSED = r"Analytics: Order order-(\d+)"


async def test_demo_runs_and_stops_gracefully_on_sigint(tmp_path: Path) -> None:
    demo = await Demo.start(tmp_path / "store", *FAST)
    try:
        await demo.wait_for_line(r"Analytics: Order order-2 ")
        await demo.wait_for_line(r"already verified")
        # a shipped order schedules a follow-up (deliver_after): it comes after the order
        await demo.wait_for_line(r"Follow-up for order-3: asking customer-3 whether it arrived")
        code = await demo.stop(signal.SIGINT)
    finally:
        await demo.kill()
    out = "\n".join(demo.lines)
    assert code == 0, out
    for expected in (
        "JetStream Durable Messaging Example",
        "Press Ctrl+C to stop",
        "📦 Starting Order Processing Service (durable consumer)",
        "👤 Starting User Verification Service",
        "📤 Starting Order Event Publisher",
        "📤 Starting User Registration Publisher",
        "📊 Starting Analytics Service (replaying historical data)",
        "📤 Published order event: order-1 (status: created)",
        "📦 Processing order: order-1 (status: created, amount: $11.99)",
        "✅ Order order-1 validated and ready for payment",
        "📤 Published order event: order-2 (status: paid)",
        "📤 Published user registration: User 1 (needs verification)",
        "👤 📧 Sending verification email to User 1 (user1@example.com)",
        "📤 Published user registration: User 3 (already verified)",
        "📊 Analytics: Order order-1 processed (status: created, timestamp: ",
        f"💾 All messages are persisted in {tmp_path / 'store'}",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
    shipped = demo.lines.index("📤 Published order event: order-3 (status: shipped)")
    assert "📬 Follow-up for order-3" in "\n".join(demo.lines[shipped + 1 :])
    # every published order was processed before exit (graceful drain)
    assert set(demo.numbers(PUBLISHED)) <= set(demo.numbers(PROCESSED))


async def test_demo_goes_on_publishing_after_its_server_is_killed(tmp_path: Path) -> None:
    """kill -9 of the demo's nats-server: the supervisor starts it again, and the
    publishers send what was not acknowledged again (same msg_id) and go on."""
    from jetkit._store import read_attach_info

    store = tmp_path / "store"
    demo = await Demo.start(store, *FAST)
    try:
        await demo.wait_for_line(r"Processing order: order-2 ")
        info = read_attach_info(store)
        assert info is not None and isinstance(info.get("pid"), int)
        os.kill(int(info["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        before = max(demo.numbers(PUBLISHED))
        # orders published after the kill are processed: publishing went on
        await demo.wait_for_line(rf"Processing order: order-{before + 3} ", timeout=60)
        code = await demo.stop(signal.SIGINT)
    finally:
        await demo.kill()
    assert code == 0, "\n".join(demo.lines)
    published = demo.numbers(PUBLISHED)
    assert published == sorted(set(published))  # each order printed once, in order


async def test_second_run_resumes_and_continues_numbering(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = await Demo.start(store, *FAST)
    try:
        await first.wait_for_line(r"Analytics: Order order-3 ")
        assert await first.stop(signal.SIGTERM) == 0
    finally:
        await first.kill()
    second = await Demo.start(store, *FAST)
    try:
        await second.wait_for_line(r"Analytics: Order order-\d+ ")
        await asyncio.sleep(1.5)
        assert await second.stop(signal.SIGINT) == 0
    finally:
        await second.kill()
    published_1, published_2 = first.numbers(PUBLISHED), second.numbers(PUBLISHED)
    assert published_2[0] == max(published_1) + 1, (published_1, published_2)
    assert not set(first.numbers(PROCESSED)) & set(second.numbers(PROCESSED))
    assert not set(first.numbers(ANALYSED)) & set(second.numbers(ANALYSED))
    assert second.numbers(ANALYSED), "\n".join(second.lines)
    users_1 = [int(n) for n in re.findall(r"registration: User (\d+)", "\n".join(first.lines))]
    users_2 = [int(n) for n in re.findall(r"registration: User (\d+)", "\n".join(second.lines))]
    assert users_2[0] == max(users_1) + 1


async def test_fail_rate_one_sends_orders_to_the_dlq_after_three_attempts(
    tmp_path: Path,
) -> None:
    demo = await Demo.start(
        tmp_path / "store",
        "--fail-rate",
        "1",
        "--order-interval",
        "30",
        "--user-interval",
        "30",
        "--analytics-delay",
        "30",
    )
    try:
        await demo.wait_for_line(r"order-1 failed \(attempt 1/3\)")
        await demo.wait_for_line(r"order-1 failed \(attempt 2/3\)")
        await demo.wait_for_line(r"order-1 failed \(attempt 3/3\); giving up")
        line = await demo.wait_for_line(r"Dead letter: order-1 ")
        assert "after 3 attempts" in line and "simulated processing failure" in line
        assert await demo.stop(signal.SIGTERM) == 0
    finally:
        await demo.kill()


async def test_demo_survives_foreign_data_and_continues_the_highest_number(
    tmp_path: Path,
) -> None:
    """Messages on orders.events that are not the demo's (``jetkit pub``, the README
    quickstart) neither crash it nor reset its numbering."""
    store = tmp_path / "store"

    async def stored_orders() -> None:
        async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
            for n in (1, 2, 7, 3):  # order-7 was published by hand (README's `jetkit pub`)
                await s.publish_json(orders.ORDERS, orders.make_order(n))
            await s.publish_json(orders.ORDERS, {"order_id": "order-1", "amount": 11.99})

    await stored_orders()
    for foreign in ("hello", "[/red]"):  # the newest messages are not orders at all
        assert (await jetkit_cli("pub", orders.ORDERS, foreign, "--store-dir", str(store))) == 0
    demo = await Demo.start(store, *FAST)
    try:
        await demo.wait_for_line(r"Analytics: Order order-9 ")
        # while it runs: a message that is not an order goes to the DLQ as a poison message
        assert (await jetkit_cli("pub", orders.ORDERS, "[/red]", "--store-dir", str(store))) == 0
        await demo.wait_for_line(r"Dead letter: seq \d+ of orders.events \(not a demo order\)")
        published = demo.numbers(PUBLISHED)[-1]
        await demo.wait_for_line(rf"Published order event: order-{published + 1} ")
        assert await demo.stop(signal.SIGINT) == 0
    finally:
        await demo.kill()
    out = "\n".join(demo.lines)
    assert demo.numbers(PUBLISHED)[0] == 8, out  # after order-7, the highest stored
    assert "Traceback" not in out
    # the analytics replay meets the foreign messages: logged, naming the consumer
    assert re.search(
        r"consumer 'analytics-processor': poison message on 'orders.events' seq 6", out
    )
    assert re.search(r"consumer 'order-processor': poison message on 'orders.events' seq", out)


async def jetkit_cli(*args: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jetkit",
        *args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_demo_serves_metrics(tmp_path: Path) -> None:
    demo = await Demo.start(tmp_path / "store", *FAST, "--metrics-port", "0")
    try:
        line = await demo.wait_for_line(r"Prometheus metrics at http://127\.0\.0\.1:\d+/metrics")
        url = line.split(" at ", 1)[1].strip()
        await demo.wait_for_line(r"Processing order: order-2 ")

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return str(resp.read().decode())

        text = await asyncio.to_thread(scrape)
        assert await demo.stop(signal.SIGINT) == 0
    finally:
        await demo.kill()
    assert 'jetkit_received_total{consumer="order-processor",topic="orders.events"}' in text
    assert re.search(r'jetkit_published_total\{topic="orders\.events"\} [1-9]', text)
    assert 'jetkit_consumer_pending{consumer="order-processor",topic="orders.events"}' in text
    assert "jetkit_server_up 1.0" in text

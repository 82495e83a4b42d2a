"""``jetkit.examples.service`` as a user runs it: ``python -m jetkit.examples.service``
(the app and its client) and the service copied to a file of its own, ``python
service.py`` (``app.run()``); subprocesses, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import jetkit as jk
import jetkit.examples.service as service
from conftest import wait_until_async

pytestmark = pytest.mark.slow


class Proc:
    """A subprocess whose output lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def wait_for_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Read lines until one matches ``pattern``; the match."""
        assert self.proc.stdout is not None
        for line in self.lines:
            if found := re.search(pattern, line):
                return found
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, f"exited before {pattern!r}:\n" + "".join(self.lines)
                self.lines.append(raw.decode())
                if found := re.search(pattern, self.lines[-1]):
                    return found

    async def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send ``sig`` and read the rest: (exit code, all of stdout, stderr)."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.send_signal(sig)
        out, err = await asyncio.wait_for(self.proc.communicate(), 60)
        self.lines.append(out.decode())
        return self.proc.returncode or 0, "".join(self.lines), err.decode()


@contextlib.asynccontextmanager
async def started(*args: str, cwd: Path | None = None) -> AsyncIterator[Proc]:
    """A Python subprocess; killed on the way out if the test did not stop it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield Proc(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


def billed(out: str) -> list[str]:
    return re.findall(r"💳 billed (order-\d+):", out)


async def settled(s: jk.Stream) -> bool:
    """Every order stored was billed or dead-lettered (nothing pending, nothing in a
    retry), and so was every dead letter reported."""
    infos = [
        await s.consumer_info(service.ORDERS, "shop-billing"),
        await s.consumer_info(service.DEAD_LETTERS, "shop-dead-letters"),
    ]
    return all(i.pending == 0 and i.ack_pending == 0 for i in infos)


async def test_the_service_bills_retries_dead_letters_quotes_and_resumes(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    # 1. the app and its client until the first dead letter (order-4: three failed calls)
    async with started(
        "-m", "jetkit.examples.service", "--store-dir", store, "--interval", "0.05"
    ) as first:
        await first.wait_for_line(r"✅ shop: ready")
        await first.wait_for_line(r"💀 dead letter")
        code, out, err = await first.stop(signal.SIGTERM)
    assert code == 0, out + err
    assert "Traceback" not in err, err
    for expected in (
        "💳 billed order-1: 10.99",
        "🧾 quote for [10.99, 5.0]: 15.99 + tax = 19.19",
        "❗ order-4: cannot bill it, call 1 of 3",
        "❗ order-4: cannot bill it, call 2 of 3",
        "❗ order-4: cannot bill it, call 3 of 3",
        '💀 dead letter after 3 calls: {"order_id":"order-4","amount":0.0} '
        "(ValueError: amount must be positive, got 0.0)",
        "🛑 shop: stopping; handlers in flight finish and ack, the rest goes back",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
    assert "retrying in 0.5s" in err  # jetkit's own log line of a retry
    placed = re.findall(r"📤 placed (order-(\d+)) ", out)
    good = {name for name, n in placed if int(n) % 4 != 0}
    first_billed = billed(out)
    assert len(first_billed) == len(set(first_billed))  # none billed twice
    summary = re.search(r"📊 this process: (\d+) placed, (\d+) billed, .*, (\d+) quotes", out)
    assert summary is not None, out
    assert int(summary.group(1)) == len(placed) and int(summary.group(2)) == len(first_billed)
    assert int(summary.group(3)) == len(re.findall("🧾 quote", out)) == len(placed)

    # 2. the app alone on the same store: the durable resumes with what was left, and
    # bills nothing the first run had billed
    no_client = ("--store-dir", store, "--no-client")
    async with started("-m", "jetkit.examples.service", *no_client) as again:
        await again.wait_for_line(r"✅ shop: ready")
        async with jk.Stream.open(store_dir=store) as s:  # attaches, as `jetkit pub` would
            await wait_until_async(lambda: settled(s), timeout=30)
        code, out, err = await again.stop(signal.SIGTERM)
    assert code == 0, out + err
    assert "📤" not in out  # no client
    second_billed = billed(out)
    assert not set(first_billed) & set(second_billed), (first_billed, second_billed)
    assert set(first_billed) | set(second_billed) == good


async def test_the_service_in_a_file_of_its_own_runs_with_app_run(tmp_path: Path) -> None:
    """The docs' "complete small service" is the package's ``__init__.py``: copied to
    ``service.py`` and run as ``python service.py``, it serves ``./jetstream-store``
    until SIGTERM (exit 0)."""
    shutil.copy(Path(service.__file__), tmp_path / "service.py")
    async with (
        jk.Stream.open(store_dir=tmp_path / "jetstream-store") as s,
        started("service.py", cwd=tmp_path) as proc,
    ):

        async def quoted() -> bool:
            with contextlib.suppress(jk.NoRespondersError):
                reply = await s.request_json(service.QUOTES, {"prices": [10, 5]}, dict)
                assert reply == {"subtotal": 15.0, "tax": 3.0, "total": 18.0}
                return True
            return False

        await wait_until_async(quoted, timeout=30)  # the responder is registered last
        with pytest.raises(jk.RemoteError, match="an empty cart has no quote"):
            await s.request_json(service.QUOTES, {"prices": []}, dict)
        await s.declare_topic(service.ORDERS, mode=jk.TopicMode.JETSTREAM)
        await s.publish_json_stored(service.ORDERS, {"order_id": "o-1", "amount": 12.5})
        await proc.wait_for_line(r"💳 billed o-1: 12.50")
        code, out, err = await proc.stop(signal.SIGTERM)
    assert code == 0, out + err
    assert out.rstrip().endswith(
        "🛑 shop: stopping; handlers in flight finish and ack, the rest goes back"
    )
    assert "Traceback" not in err, err


async def test_jetkit_examples_lists_the_service() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jetkit", "examples", stdout=subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert re.search(r"^service +a jk\.App service", out.decode(), re.MULTILINE), out
    assert "run: python -m jetkit.examples.service [--duration SECONDS]" in out.decode()


async def test_duration_stops_it_as_sigterm_does(tmp_path: Path) -> None:
    async with started(
        "-m", "jetkit.examples.service", "--store-dir", str(tmp_path / "s"), "--duration", "0.5"
    ) as proc:
        assert proc.proc.stdout is not None and proc.proc.stderr is not None
        out, err = await asyncio.wait_for(proc.proc.communicate(), 60)
    assert proc.proc.returncode == 0, err
    text = out.decode()
    assert "✅ shop: ready" in text and "🛑 shop: stopping" in text and "📊 this process" in text


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
async def test_a_bad_duration_is_a_usage_error(value: str) -> None:
    async with started("-m", "jetkit.examples.service", "--duration", value) as proc:
        out, err = await asyncio.wait_for(proc.proc.communicate(), 30)
    assert proc.proc.returncode == 2 and out == b""
    assert b"error: argument --duration:" in err

"""``python -m jetkit.examples.basic`` and ``.requestreply`` as a user runs them, and
``jetkit examples``: subprocesses, stopped by ``--duration`` or a signal."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


async def run_example(
    name: str, *args: str, stop_with: int | None = None, after: str | None = None
) -> tuple[int, str, str]:
    """Run an example to its end (or send ``stop_with`` once a line matches ``after``);
    (exit code, stdout, stderr). The process never outlives the call."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"jetkit.examples.{name}",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines: list[str] = []
        if stop_with is not None and after is not None:
            async with asyncio.timeout(30):
                while not any(re.search(after, line) for line in lines):
                    raw = await proc.stdout.readline()
                    assert raw, "\n".join(lines)
                    lines.append(raw.decode())
            proc.send_signal(stop_with)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, "".join(lines) + out.decode(), err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_basic_fans_out_and_shares_tasks_in_the_queue_group() -> None:
    code, out, err = await run_example("basic", "--duration", "1.5", "--interval", "0.1")
    assert code == 0, out + err
    assert "Traceback" not in err, err
    published = re.search(r"Fan-out: (\d+) greetings published", out)
    assert published is not None, out
    sent = int(published.group(1))
    assert sent >= 3, out
    # fan-out: both subscribers got every greeting
    for name in ("A", "B"):
        got = re.findall(rf"Subscriber {name} got: hello #(\d+)", out)
        assert sorted(map(int, got)) == list(range(1, sent + 1)), out
    assert f"received by A: {sent}, B: {sent}" in out
    # queue group: every task handled exactly once, by one of the three workers
    handled = re.findall(r"(worker-\d) handled (task-\d+\.\d)", out)
    tasks = [task for _, task in handled]
    assert sorted(tasks) == sorted(f"task-{n}.{k}" for n in range(1, sent + 1) for k in (1, 2, 3))
    assert {worker for worker, _ in handled} <= {"worker-1", "worker-2", "worker-3"}
    assert len({worker for worker, _ in handled}) >= 2, out
    assert f"{sent * 3} tasks published, {sent * 3} handled" in out


async def test_requestreply_answers_and_returns_errors_as_remote_error() -> None:
    code, out, err = await run_example("requestreply", "--duration", "2", "--interval", "0.05")
    assert code == 0, out + err
    assert "Traceback" not in err, err
    for expected in (
        "🧮 Starting 3 calculators (queue group 'calculators')",
        "✅ 2 + 3 = 5 (answered by calculator-",
        "✅ 10 - 4 = 6 (answered by calculator-",
        "✅ 6 * 7 = 42 (answered by calculator-",
        "✅ 1 / 4 = 0.25 (answered by calculator-",
        "❗ RemoteError: ZeroDivisionError: float division by zero",
        "❗ RemoteError: ValueError: unknown operation 'pow'; use one of add, sub, mul, div",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
    summary = re.search(r"📊 (\d+) requests: (\d+) answered, (\d+) RemoteError \((.*)\)", out)
    assert summary is not None, out
    sent, answered, errors = (int(summary.group(n)) for n in (1, 2, 3))
    assert sent == answered + errors and errors >= 2
    by = re.findall(r"answered by (calculator-\d)", out)
    assert len(by) == answered and len(set(by)) >= 2, out  # the group shares the work


@pytest.mark.parametrize("name", ["basic", "requestreply"])
async def test_examples_stop_on_sigint_and_sigterm(name: str, tmp_path: Path) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        code, out, err = await run_example(
            name,
            "--store-dir",
            str(tmp_path / "store"),
            "--interval",
            "0.1",
            stop_with=sig,
            after=r"✅|handled",
        )
        assert code == 0, out + err
        assert "🛑 Shutting down" in out and "📊" in out, out
        assert "Traceback" not in err, err
    assert (tmp_path / "store").is_dir()  # --store-dir was used


@pytest.mark.parametrize("name", ["basic", "requestreply"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
async def test_bad_duration_is_a_usage_error(name: str, value: str) -> None:
    code, out, err = await run_example(name, "--duration", value)
    assert code == 2
    assert out == ""
    assert "error: argument --duration:" in err


async def test_the_orders_module_runs_as_jetkit_demo(tmp_path: Path) -> None:
    # python -m jetkit.examples.orders is `jetkit demo` (its options, its one-line errors)
    code, out, err = await run_example("orders", "--fail-rate", "3")
    assert (code, out) == (2, "")
    assert err.startswith("error: invalid value for --fail-rate: 3 is not between 0 and 1"), err
    code, out, err = await run_example(
        "orders", "--store-dir", str(tmp_path / "store"), "--duration", "1"
    )
    assert code == 0, out + err
    assert "🛑 Shutting down" in out and "Traceback" not in err, err


async def test_jetkit_examples_lists_each_with_how_to_run_it() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jetkit",
        "examples",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    text = out.decode()
    for name, command in (
        ("demo", "jetkit demo"),
        ("basic", "python -m jetkit.examples.basic"),
        ("requestreply", "python -m jetkit.examples.requestreply"),
    ):
        assert re.search(rf"^{name} +\S", text, re.MULTILINE), text
        assert f"run: {command} [--duration SECONDS]" in text


@pytest.mark.parametrize("name", ["basic", "requestreply"])
def test_an_example_in_a_pipe_ends_quietly_when_the_reader_goes(name: str) -> None:
    """``python -m jetkit.examples.X | head -1``: exit 0, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", f"jetkit.examples.{name}", "--duration", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()
        proc.stdout.close()
        assert proc.wait(30) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize("name", ["basic", "requestreply"])
def test_an_examples_error_is_one_line(name: str, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", f"jetkit.examples.{name}", "--store-dir", str(a_file)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.startswith("error: store directory") and err.count("\n") == 1, err


def test_jetkit_examples_in_a_pipe_exits_0() -> None:
    proc = subprocess.run(
        f"{sys.executable} -m jetkit examples | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr

"""Bad input to the cli surface, gathered here (made table-driven in the next commit)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import jetkit


def test_errors_are_one_line_on_stderr_and_exit_2(tmp_path: Path, filled: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    long_dir = tmp_path / ("d" * 120)
    cases = [
        (["server", "--port", "-1", "--store-dir", tmp_path / "a"], "invalid value for '--port'"),
        (["server", "--port", "99999", "--store-dir", tmp_path / "a"], "or equal to 65535"),
        (["demo", "--metrics-port", "99999", "--store-dir", tmp_path / "a"], "--metrics-port"),
        (["sub", "a b", "--store-dir", tmp_path / "a"], "whitespace"),
        (["pub", "a.b", "x", "--header", "bad", "--store-dir", tmp_path / "a"], "KEY=VALUE"),
        (["pub", "a.b", "x", "--store-dir", not_a_dir / "s"], "not writable"),
        (["topics", "--server", "nats://127.0.0.1:1"], "connection refused"),
        (["topics", "--store-dir", long_dir], "no jetkit store"),
        (["topic", "no.such.topic", "--store-dir", filled], "no.such.topic"),
        (["dlq", "orders.events", "--redrive", "--store-dir", filled], "no dead letter"),
        (["sub", "x", "--count", "0"], "--count: 0 is not 1 or more"),
        (["sub", "x", "--count", "-3"], "--count: -3 is not 1 or more"),
        (["demo", "--duration", "-1", "--store-dir", tmp_path / "d"], "--duration: -1"),
        (["demo", "--duration", "0", "--store-dir", tmp_path / "d"], "--duration: 0"),
        (["demo", "--order-interval", "nan", "--store-dir", tmp_path / "d"], "--order-interval"),
        (["demo", "--fail-rate", "2", "--store-dir", tmp_path / "d"], "--fail-rate"),
        (["pub", "a.b"], "give the payload"),
        (["pub", "a.b", "x", "--file", not_a_dir], "DATA or --file, not both"),
        (["pub", "a.b", "--file", tmp_path / "missing"], "cannot read"),
        (["server", "--port", "many"], "--port"),
        (["nosuch"], "no such command 'nosuch'"),
        (["pub"], "missing argument 'TOPIC'"),
    ]
    work = tmp_path / "cwd"
    work.mkdir()
    for args, expected in cases:
        result = jetkit(*args, cwd=work)
        err = result.stderr.decode()
        assert result.returncode == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)
        assert expected in err, (args, err)
        for python in ("port=None", "ParseResult", "Traceback", "╭", "Errno", "=None"):
            assert python not in err, (args, err)
        assert result.stdout == b"", (args, result.stdout)
    # refused before anything was created
    assert not (tmp_path / "d").exists() and list(work.iterdir()) == []


def test_top_bad_interval(filled: Path) -> None:
    for value in ("0", "-1", "nan", "5000"):
        result = jetkit("top", "--interval", value, "--store-dir", filled)
        assert result.returncode == 2
        assert result.stderr.decode().startswith("error: invalid value for --interval")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--fail-rate", "2"),
        ("--duration", "-1"),
        ("--duration", "0"),
        ("--order-interval", "0"),
        ("--analytics-delay", "-1"),
    ],
)
async def test_bad_demo_options(tmp_path: Path, option: str, value: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jetkit",
        "demo",
        "--store-dir",
        str(tmp_path / "store"),
        option,
        value,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert out == b""
    assert err.decode().startswith(f"error: invalid value for {option}: {value} ")
    assert err.count(b"\n") == 1
    assert not (tmp_path / "store").exists()

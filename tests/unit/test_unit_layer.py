"""The guards of tests/unit (tests/unit/conftest.py) work: a unit test that asks for a
server fixture, or starts a nats-server itself, fails and says so; one that needs no
server passes. Run as a user's suite would be: a copy of the test tree's conftests and
three unit tests, in a ``python -m pytest`` of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

UNIT_TESTS = """
import jetkit as jk
import jetkit.sync as jsync


def test_needs_no_server():
    assert jk.exponential_backoff(1, 2) == [1, 2]


async def test_asks_for_a_server(js):
    pass


async def test_starts_a_server():
    async with jk.Stream.open():
        pass


def test_starts_a_server_from_jetkit_sync():
    with jsync.Stream.open():
        pass
"""
INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
"""


def test_a_unit_test_that_asks_for_or_starts_a_server_fails_saying_so(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    (tests / "unit").mkdir(parents=True)
    for name in ("conftest.py", "waiting.py", "unit/conftest.py", "unit/__init__.py"):
        shutil.copy(ROOT / "tests" / name, tests / name)
    (tests / "unit" / "test_layer.py").write_text(UNIT_TESTS)
    (tmp_path / "pytest.ini").write_text(INI)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "tests/unit"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 passed" in out, out
    assert (
        "test_asks_for_a_server is a unit test but asks for core, js, store, which start a "
        "server: move it to tests/integration"  # (js needs core, core the session's store)
    ) in out
    for name in ("test_starts_a_server", "test_starts_a_server_from_jetkit_sync"):
        assert f"{name} started a nats-server" in out, out

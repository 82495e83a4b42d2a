"""tests/unit holds the tests that need no server at all. Two guards keep it so:

1. A unit test that asks for a server fixture (``SERVER_FIXTURES``: the session's
   ``store``, ``core`` and ``js``, the plugin's ``jetkit_server`` and ``jetkit_stream``),
   directly or through another fixture, fails at setup, before the fixture starts
   anything.
2. While a unit test runs (its setup, call and teardown), starting a nats-server from
   this process fails: an audit hook watches ``subprocess.Popen`` (which subprocess and
   asyncio both use) and refuses any program named nats-server run for more than its
   ``--version``; the test then fails saying what it started. (Shell scripts that play
   a server, as in test_server_start.py, are not nats-server.)

A test that needs a server belongs in tests/integration (or tests/tools, tests/faults).
These hooks apply to the tests under tests/unit only (pytest scopes a conftest's
setup and teardown hooks to its directory).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

SERVER_FIXTURES = frozenset({"store", "core", "js", "jetkit_server", "jetkit_stream"})

_running: list[str] = []  # the node id of the unit test running now (none: empty)
_started: list[str] = []  # what it tried to start


class ServerInUnitTest(BaseException):
    """Raised where a unit test starts a nats-server (a BaseException, so that no
    ``except Exception`` on the way hides it)."""


def _program(executable: object, args: object) -> str:
    if executable is not None:
        return os.fsdecode(executable)  # type: ignore[arg-type]
    if isinstance(args, (str, bytes, os.PathLike)):
        return os.fsdecode(args).split()[0]
    return os.fsdecode(next(iter(args)))  # type: ignore[call-overload]


def _refuse_a_server(event: str, args: tuple[object, ...]) -> None:
    if event != "subprocess.Popen" or not _running:
        return
    argv = args[1]
    program = _program(args[0], argv)
    words = [os.fsdecode(a) for a in argv] if isinstance(argv, (list, tuple)) else []
    if Path(program).name.startswith("nats-server") and "--version" not in words:
        _started.append(" ".join(words) or program)
        raise ServerInUnitTest(
            f"{_running[0]} started a nats-server ({program}): unit tests run without a "
            "server; this one belongs in tests/integration"
        )


sys.addaudithook(_refuse_a_server)  # once per session: audit hooks cannot be removed


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    asked = sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if asked:
        pytest.fail(
            f"{item.nodeid} is a unit test but asks for {', '.join(asked)}, which start a "
            "server: move it to tests/integration",
            pytrace=False,
        )
    _running[:] = [item.nodeid]
    _started.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        yield
    finally:
        _running.clear()
    if _started:
        started, _started[:] = list(_started), []
        pytest.fail(
            f"{item.nodeid} started a nats-server ({'; '.join(started)}): unit tests run "
            "without a server; this one belongs in tests/integration",
            pytrace=False,
        )

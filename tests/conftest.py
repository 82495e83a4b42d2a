"""Test fixtures: one real embedded nats-server per test session (random port, temp store).

``core`` owns the server (default mode CORE); ``js`` is a second Stream attached to the
same store as a client, with default mode JETSTREAM. Each test gets unique topic names.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import settings
from nats.aio.client import Client

import jetkit as jk
import waiting
from jetkit import _server
from jetkit._server import EmbeddedServer

_counter = itertools.count(1)

ROOT = Path(__file__).resolve().parent.parent  # the repository: docs/, tools/, src/


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
async def core(store: Path) -> AsyncIterator[jk.Stream]:
    s = await jk.Stream.open(store_dir=store, drain_timeout=5)
    yield s
    await s.close()


@pytest.fixture(scope="session")
async def js(core: jk.Stream, store: Path) -> AsyncIterator[jk.Stream]:
    s = await jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM, drain_timeout=5)
    yield s
    await s.close()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"t.{name}.{next(_counter)}"


async def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.01,
    *,
    state: Callable[[], object] | None = None,
) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds,
    saying what it waited on: the predicate's source, the values it compares and the
    variables it reads (tests/waiting.py), and ``state()`` if given."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            shown = None if state is None else waiting.short(state())
            raise AssertionError(waiting.not_met(predicate, timeout, shown, evaluate=True))
        await asyncio.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    state: Callable[[], object] | None = None,
) -> None:
    """Like ``wait_until`` for a predicate that must ask the server (re-read every poll).
    On failure it shows the predicate's source and the variables it reads (its parts
    are not evaluated again: they would be coroutines), and ``state()`` (awaited if it
    returns an awaitable) if given."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            shown = None if state is None else waiting.short(await outcome(state()))
            raise AssertionError(waiting.not_met(predicate, timeout, shown, evaluate=False))
        await asyncio.sleep(interval)


async def outcome(result: object) -> object:
    """``result``, awaited if it is awaitable: a call of the bad-input tables may be
    refused at the call (a check before anything starts) or when awaited."""
    if inspect.isawaitable(result):
        return await result
    return result


async def wait_for(awaitable: Awaitable[object], timeout: float = 10.0) -> object:
    return await asyncio.wait_for(awaitable, timeout)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` if it still runs, reap it, and close its pipes (a test's cleanup)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


# -- the fault and cluster suites' scale and figures -------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jetkit")
    group.addoption(
        "--faults-full",
        action="store_true",
        help="run the fault suite at full scale (more cycles and messages; see RELIABILITY.md)",
    )
    group.addoption(
        "--partition-full",
        action="store_true",
        help="run every partition scenario at full length (see docs/development.md)",
    )
    group.addoption(
        "--faults-report",
        metavar="PATH",
        help="write the fault suite's figures as JSON to PATH",
    )


FAULT_FIGURES: list[dict[str, object]] = []
CLUSTER_FIGURES: list[dict[str, object]] = []  # filled by the cluster suite (test_cluster.py)
PARTITION_FIGURES: list[dict[str, object]] = []  # filled by the partition suite


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Two kinds of test run only when asked for, and a plain ``pytest`` skips them,
    saying how to run them: the partition suite (``-m partition``,
    ``--partition-full``: it needs root, makes network namespaces and takes minutes)
    and the large scale of the scale tests (``-m scale``: a minute each)."""
    markexpr = config.getoption("markexpr") or ""
    skips = {
        "partition": pytest.mark.skip(
            reason="the partition suite runs with `pytest -m partition` (quick) or "
            "`pytest -m partition --partition-full` (see docs/development.md)"
        ),
        "scale": pytest.mark.skip(
            reason="the large scale runs with `pytest -m scale` (see docs/development.md)"
        ),
    }
    if "partition" in markexpr or config.getoption("--partition-full"):
        del skips["partition"]
    if "scale" in markexpr:
        del skips["scale"]
    for item in items:
        for marker, skip in skips.items():
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    full = bool(config.getoption("--faults-full", default=False))
    settings.register_profile("jetkit", max_examples=1_000 if full else 60)
    settings.load_profile("jetkit")


def _figures_table(
    reporter: pytest.TerminalReporter, title: str, columns: list[str], rows: list[dict[str, object]]
) -> None:
    """One suite's figures in the terminal summary: a section, its columns, a line a row."""
    reporter.section(title)
    reporter.write_line(" | ".join(columns))
    for row in rows:
        reporter.write_line(" | ".join(str(row.get(c, "")) for c in columns))


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if CLUSTER_FIGURES:
        columns = ["scenario", "acked", "stored", "lost", "publish_errors", "failover_s", "note"]
        _figures_table(
            terminalreporter, "cluster figures (3 nodes, leader killed)", columns, CLUSTER_FIGURES
        )
    if PARTITION_FIGURES:
        columns = ["scenario", "acked", "stored", "lost", "twice", "longest_gap_s"]
        columns += ["consumer_gap_s", "note"]
        _figures_table(
            terminalreporter,
            "partition figures (3 nodes in network namespaces)",
            columns,
            PARTITION_FIGURES,
        )
    if not FAULT_FIGURES:
        return
    scale = "full" if config.getoption("--faults-full") else "quick"
    columns = ["scenario", "cycles", "acked", "stored", "processed", "lost", "duplicated"]
    columns += ["acks_forgotten", "recovery_s", "note"]
    _figures_table(terminalreporter, f"fault suite figures ({scale} scale)", columns, FAULT_FIGURES)
    path = config.getoption("--faults-report")
    if path:
        Path(path).write_text(json.dumps({"scale": scale, "rows": FAULT_FIGURES}, indent=2))


# -- reaching inside a Stream (tests only) -----------------------------------------------


def nc_of(s: jk.Stream) -> Client:
    """The nats-py client under a Stream."""
    return s._rt.conn.nc


def server_of(s: jk.Stream) -> EmbeddedServer:
    """The embedded server a Stream owns (fails the test if it has none)."""
    assert s._rt.store is not None and s._rt.store.server is not None, "no embedded server here"
    return s._rt.store.server


def kill_server(server: EmbeddedServer) -> None:
    """SIGKILL an embedded server as if it crashed (its supervisor restarts it)."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ExternalServer:
    """A nats-server the tests start themselves, to play an external NATS.

    ``extra`` are more command-line options (TLS, auth); ``scheme`` is the URL's.
    """

    def __init__(self, store: Path, extra: Sequence[str] = (), scheme: str = "nats") -> None:
        self.store = store
        self.port = free_port()
        self.extra = list(extra)
        self.scheme = scheme
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            [
                _server.find_binary(),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                if self.proc.poll() is not None or loop.time() > deadline:
                    await self.stop()
                    raise AssertionError("external nats-server did not start") from None
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 10)
        self.proc = None


# -- helpers several test modules share --------------------------------------------------


class Recorder:
    """A handler that records what it saw; optionally fails for chosen payloads."""

    def __init__(self, fail: set[bytes] | None = None) -> None:
        self.msgs: list[jk.Message] = []
        self.fail = fail or set()

    async def __call__(self, msg: jk.Message) -> None:
        self.msgs.append(msg)
        if msg.data in self.fail:
            raise RuntimeError(f"cannot process {msg.data.decode()}")

    @property
    def data(self) -> list[bytes]:
        return [m.data for m in self.msgs]


async def consumer_settled(s: jk.Stream, topic: str, durable: str) -> bool:
    """Nothing left to deliver and nothing delivered without its ack/term."""
    info = await s.consumer_info(topic, durable)
    return info.pending == 0 and info.ack_pending == 0


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False

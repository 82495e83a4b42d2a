"""``jetkit run MODULE:APP``: worker processes on one store, restarted when they die,
stopped gracefully, probed by Kubernetes, reloaded on a change. Every test runs the real
command on a service module it writes, against the real nats-server, and stops every
process it started (the supervisor, its workers, their nats-server) in a ``finally``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import jetkit as jk
from conftest import free_port, wait_until
from jetkit._files import CREDS_FILE, INFO_FILE
from jetkit._store import process_alive

SERVICE = """
import asyncio
import os

import jetkit as jk

EVENTS = {events!r}
GATE = {gate!r}
DELAY = {delay!r}

app = jk.App(
    store_dir={store!r}, default_mode=jk.TopicMode.JETSTREAM, drain_timeout=30,
    metrics_port={metrics_port!r},
)


def note(*words):
    # one write per line, appended: lines of several workers never mix
    fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (" ".join(map(str, words)) + "\\n").encode())
    finally:
        os.close(fd)


@app.on_startup
async def declare(s):
    await s.declare_topic("jobs")
    while GATE and not os.path.exists(GATE):  # readiness held back until the test says
        await asyncio.sleep(0.05)
    note("up", os.getpid())


@app.subscriber(
    "jobs", durable="jobs", ack=jk.AckPolicy.MANUAL, start_at=jk.StartAt.ALL,
    buffer_size=4, concurrency={concurrency}, ack_wait={ack_wait},
)
async def handle(msg: jk.Message) -> None:
    data = msg.data.decode()
    note("start", data, os.getpid(), msg.num_delivered)
    await asyncio.sleep(DELAY if msg.num_delivered == 1 else 0)  # slow the first time
    await msg.ack()
    note("done", data, os.getpid())
"""


class Run:
    """One ``jetkit run`` of the service, its log in a file, its probes on a port."""

    def __init__(self, where: Path, *args: str) -> None:
        self.where = where
        self.port = free_port()
        self.log = where.parent / f"run-{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jetkit",
                    "run",
                    "service:app",
                    "--health-port",
                    str(self.port),
                    *args,
                ],
                cwd=where,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def probe(self, path: str) -> int | None:
        """The status of GET ``path`` on the probes' port (None: nothing answers)."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return None
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return int(line.split()[1]) if line else None

    async def ready(self) -> None:
        status: list[int | None] = [None]

        async def probe() -> None:
            status[0] = await self.probe("/readyz")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while status[0] != 200:
            assert self.proc.poll() is None, self.text()
            assert loop.time() < deadline, f"not ready within 60s:\n{self.text()}"
            await probe()
            await asyncio.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return await asyncio.to_thread(self.proc.wait, 90)

    def kill(self) -> None:
        """Whatever happened: the supervisor stops, gracefully if it can."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGINT)  # a second signal: at once
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Service:
    """The service module in its own directory, its store and its events file."""

    def __init__(self, tmp: Path, **params: object) -> None:
        self.dir = tmp / "app"
        self.dir.mkdir()
        self.store = tmp / "store"
        self.events = tmp / "events.log"
        self.gate = str(tmp / "gate") if params.pop("gate", False) else ""
        self.params = {
            "delay": 0.005,
            "concurrency": 1,
            "ack_wait": 30.0,
            "metrics_port": None,
            **params,
        }
        self.write()
        self.runs: list[Run] = []
        self.pids: set[int] = set()  # every process to be gone at the end

    def write(self, extra: str = "") -> None:
        source = SERVICE.format(
            store=str(self.store), events=str(self.events), gate=self.gate, **self.params
        )
        (self.dir / "service.py").write_text(source + extra)

    def run(self, *args: str) -> Run:
        self.runs.append(Run(self.dir, *args))
        self.pids.add(self.runs[-1].proc.pid)
        return self.runs[-1]

    def lines(self) -> list[list[str]]:
        if not self.events.exists():
            return []
        return [line.split() for line in self.events.read_text().splitlines()]

    def count(self, event: str) -> collections.Counter[str]:
        return collections.Counter(words[1] for words in self.lines() if words[0] == event)

    def workers(self) -> list[int]:
        """The pids of the workers that started, in order."""
        pids = [int(words[1]) for words in self.lines() if words[0] == "up"]
        self.pids.update(pids)
        return pids

    def server(self) -> dict[str, int]:
        """The store's server now: its pid and its owner's (the info file)."""
        info = json.loads((self.store / INFO_FILE).read_text())
        self.pids.add(info["pid"])
        return info  # type: ignore[no-any-return]

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[jk.Stream]:
        """A plain client of the store's server (never its owner, never taking it over)."""
        info = self.server()
        creds = json.loads((self.store / CREDS_FILE).read_text())
        async with jk.Stream.open(
            servers=[f"nats://127.0.0.1:{info['port']}"],
            user=creds["user"],
            password=creds["password"],
            default_mode=jk.TopicMode.JETSTREAM,
        ) as s:
            yield s

    async def gone(self) -> None:
        """Every process the runs started has exited (bounded wait)."""
        self.workers()
        await wait_until(lambda: not any(process_alive(pid) for pid in self.pids), 30)

    def clean_up(self) -> None:
        for run in self.runs:
            run.kill()
        self.workers()
        for pid in self.pids:
            if process_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


Services = Callable[..., Service]


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """``services(**params)``: the service, every process of its runs stopped at the end."""
    made: list[Service] = []

    def make(**params: object) -> Service:
        made.append(Service(tmp_path, **params))
        return made[-1]

    try:
        yield make
    finally:
        for service in made:
            service.clean_up()


@pytest.mark.slow
async def test_two_workers_share_a_durable_each_message_once(
    services: Services,
) -> None:
    service = services(metrics_port=0)  # N workers, one metrics port: the supervisor's
    run = service.run("--workers", "2")
    await run.ready()
    async with service.client() as s:
        for i in range(200):
            await s.publish("jobs", b"m%d" % i)
        await s.publish("jobs", b"end")  # the sentinel: published last
        await wait_until(lambda: len(service.count("done")) == 201, 60)
    done = service.count("done")
    assert set(done.values()) == {1}, [m for m, n in done.items() if n > 1]  # none twice
    handlers = {words[2] for words in service.lines() if words[0] == "done"}
    assert len(handlers) == 2  # both workers handled messages
    [url] = re.findall(r"metrics of every worker at (\S+)", run.text())
    text = (await asyncio.to_thread(urllib.request.urlopen, url, timeout=30)).read().decode()
    for worker in ("0", "1"):  # each worker's own counters, labelled, in one scrape
        assert re.search(rf'jetkit_acked_total{{[^}}]*worker="{worker}"[^}}]*}} [1-9]', text)
        assert f'jetkit_run_worker_ready{{worker="{worker}"}} 1.0' in text
    assert await run.stop() == 0
    await service.gone()


@pytest.mark.slow
async def test_a_killed_worker_is_started_again_and_nothing_is_lost(
    services: Services,
) -> None:
    service = services(delay=0.02, ack_wait=3.0)
    run = service.run("--workers", "2")
    await run.ready()
    await wait_until(lambda: len(service.workers()) == 2)
    owner = service.server()["owner_pid"]
    [victim] = [pid for pid in service.workers() if pid != owner]
    async with service.client() as s:
        for i in range(100):
            await s.publish("jobs", b"m%d" % i)
        await wait_until(lambda: len(service.count("start")) >= 20, 30)
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: len(service.workers()) == 3, 30)  # started again
        await wait_until(lambda: len(service.count("done")) == 100, 60)  # none lost
        await run.ready()
    assert "was killed by SIGKILL; starting it again" in run.text()
    # handled twice: at most the message in the killed worker's handler (concurrency 1)
    # and one whose ack it had not sent yet; what it had buffered came back after ack_wait
    twice = [m for m, n in service.count("start").items() if n > 1]
    assert len(twice) <= 2, twice
    assert await run.stop() == 0
    await service.gone()


@pytest.mark.slow
async def test_sigterm_lets_running_handlers_finish_and_nothing_finished_runs_again(
    services: Services,
) -> None:
    # ack_wait 5 s: what the workers had pulled and not started when the whole app
    # stopped comes back that long after its delivery (the server, stopped with the app,
    # forgets the hand-back)
    service = services(delay=1.5, concurrency=2, ack_wait=5.0)
    run = service.run("--workers", "2")
    await run.ready()
    service.server()  # its nats-server too must be gone at the end
    async with service.client() as s:
        for i in range(12):
            await s.publish("jobs", b"m%d" % i)
        await wait_until(lambda: len(service.count("start")) >= 3, 30)
    assert await run.stop() == 0
    await service.gone()  # no worker, no nats-server left
    first = service.lines()
    started = {words[1] for words in first if words[0] == "start"}
    finished = {words[1] for words in first if words[0] == "done"}
    assert started == finished  # what was in a handler finished (and was acked)

    again = service.run("--workers", "2")
    await again.ready()
    async with service.client() as s:
        await s.publish("jobs", b"end")
        await wait_until(lambda: len(service.count("done")) == 13, 60)
    later = service.lines()[len(first) :]
    assert not {words[1] for words in later if words[0] == "start"} & finished
    assert set(service.count("done").values()) == {1}
    assert await again.stop() == 0
    await service.gone()


@pytest.mark.slow
async def test_a_second_signal_stops_at_once_and_the_message_comes_back(
    services: Services,
) -> None:
    service = services(delay=600.0, ack_wait=5.0)  # a handler that would never finish
    run = service.run()
    await run.ready()
    service.server()
    async with service.client() as s:
        await s.publish("jobs", b"m0")
        await wait_until(lambda: service.count("start")["m0"] == 1, 30)
    run.proc.send_signal(signal.SIGTERM)
    await wait_until(lambda: "stopping the workers gracefully" in run.text(), 30)
    assert await run.stop(signal.SIGINT) == 0  # at once: not after drain_timeout (30 s)
    await service.gone()
    assert service.count("done")["m0"] == 0

    again = service.run()
    await again.ready()
    await wait_until(lambda: service.count("done")["m0"] == 1, 30)  # never lost
    assert await again.stop() == 0
    await service.gone()


@pytest.mark.slow
async def test_readyz_is_503_until_the_subscriptions_are_registered(
    services: Services,
) -> None:
    service = services(gate=True)
    run = service.run()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (status := await run.probe("/readyz")) is None:
        assert loop.time() < deadline and run.proc.poll() is None, run.text()
        await asyncio.sleep(0.05)
    assert status == 503  # the startup hook waits for the gate: not registered yet
    assert await run.probe("/healthz") == 200
    assert not service.workers()
    Path(service.gate).touch()
    await run.ready()  # then 200
    assert await run.probe("/nothing") == 404
    assert await run.stop(signal.SIGINT) == 0
    await service.gone()


@pytest.mark.slow
async def test_reload_restarts_the_workers_when_a_py_file_changes(
    services: Services,
) -> None:
    service = services()
    run = service.run("--reload")
    await run.ready()
    await wait_until(lambda: len(service.workers()) == 1)
    service.write(extra="\n# changed\n")
    await wait_until(lambda: len(service.workers()) == 2, 60)
    await run.ready()
    assert "service.py changed: restarting the workers" in run.text()
    async with service.client() as s:
        await s.publish("jobs", b"after")
        await wait_until(lambda: service.count("done")["after"] == 1, 30)
    assert await run.stop() == 0
    await service.gone()


@pytest.mark.slow
async def test_the_owner_killed_another_worker_takes_the_store_over(
    services: Services,
) -> None:
    service = services(ack_wait=3.0)
    run = service.run("--workers", "2")
    await run.ready()
    await wait_until(lambda: len(service.workers()) == 2)
    first = service.server()
    async with service.client() as s:
        for i in range(30):
            await s.publish("jobs", b"a%d" % i)
        await wait_until(lambda: len(service.count("done")) == 30, 30)
        os.kill(first["owner_pid"], signal.SIGKILL)

        def taken_over() -> bool:
            with contextlib.suppress(OSError, ValueError):
                now = service.server()
                return now["owner_pid"] != first["owner_pid"] and process_alive(now["pid"])
            return False

        await wait_until(taken_over, 30)
        assert service.server()["owner_pid"] in service.workers()  # a worker serves it now
        await wait_until(lambda: s.connected, 30)
        for i in range(30):
            await s.publish("jobs", b"b%d" % i)
        await wait_until(lambda: len(service.count("done")) == 60, 60)
        await wait_until(lambda: len(service.workers()) == 3, 30)  # the dead one came back
        await run.ready()
    assert await run.stop() == 0
    await service.gone()


# -- bad input: one line, exit code 2, nothing started ------------------------------------


def jetkit_run(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jetkit", "run", *args],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("nosuchmodule:app", "no module named 'nosuchmodule'"),
        ("service:missing", "module 'service' has no attribute 'missing' (its jk.App: 'app')"),
        ("service:note", "is a function, not a jk.App"),
        ("service", "expected MODULE:APP (e.g. service:app), got 'service'"),
        ("broken:app", "importing 'broken' failed: ZeroDivisionError: division by zero"),
    ],
)
def test_a_wrong_module_app_is_one_line_and_exit_2(tmp_path: Path, ref: str, says: str) -> None:
    Service(tmp_path)
    (tmp_path / "app" / "broken.py").write_text("x = 1 / 0\n")
    done = jetkit_run(tmp_path / "app", ref)
    assert done.returncode == 2
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_zero_workers_and_a_port_in_use_are_refused(tmp_path: Path) -> None:
    service = Service(tmp_path)
    done = jetkit_run(service.dir, "service:app", "--workers", "0")
    assert done.returncode == 2 and "--workers" in done.stderr, done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = jetkit_run(service.dir, "service:app", "--health-port", str(port))
    assert done.returncode == 2
    assert f"--health-port on 127.0.0.1:{port}: the port is in use" in done.stderr, done.stderr
    assert not service.events.exists() and not service.store.exists()  # nothing started


def test_store_dir_and_server_together_are_refused(tmp_path: Path) -> None:
    service = Service(tmp_path)
    args = ["service:app", "--store-dir", "s", "--server", "nats://127.0.0.1:4222"]
    done = jetkit_run(service.dir, *args)
    assert done.returncode == 2 and "not both" in done.stderr, done.stderr


def test_the_plan_gives_the_workers_one_store_and_the_supervisor_the_metrics_port() -> None:
    from jetkit._runner import plan

    app = jk.App(store_dir="s", metrics_port=9100)
    made = plan(app, "m:app", 3)
    assert made.overrides == {"store_dir": "s", "metrics_port": 0, "metrics_host": "127.0.0.1"}
    assert made.metrics == ("127.0.0.1", 9100) and not made.temp_store
    assert plan(jk.App(), "m:app", 2).temp_store  # one temporary store for all workers
    external = plan(app, "m:app", 2, servers=["nats://a:4222"])
    assert external.overrides["servers"] == ["nats://a:4222"] and external.store_dir is None
    # a local cluster (--cluster, $JETKIT_CLUSTER): its servers with its credentials
    clustered = plan(app, "m:app", 2, servers=["nats://a:1", "nats://b:2"], credentials=("u", "p"))
    assert clustered.overrides["servers"] == ["nats://a:1", "nats://b:2"]
    assert (clustered.overrides["user"], clustered.overrides["password"]) == ("u", "p")
    with pytest.raises(jk.ConfigError, match="at least 1"):
        plan(app, "m:app", 0)

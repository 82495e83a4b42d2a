"""``jetkit run MODULE:APP``: a supervisor process and N worker processes.

Processes and who owns them::

    jetkit run (the supervisor: asyncio; no Stream, no NATS connection)
     ├ worker 0   python -m jetkit._worker   app.run_until_stopped()
     │   └ nats-server (whichever worker opened the store first owns it)
     ├ worker 1   attached to that server as a client
     └ ...

- **Starting.** Each worker is a fresh interpreter (``subprocess``, not ``fork``: no
  copy of the supervisor's loop or threads; not ``multiprocessing``: its exit code is
  the process's own, and a signal is a plain POSIX signal). It is in a process group of
  its own, so a terminal's Ctrl+C reaches the supervisor alone, which forwards it once;
  and it gets SIGTERM if the supervisor dies (Linux's parent-death signal), so it never
  outlives it. Its nats-server, if it owns one, is bound the same way to the worker.
- **One store.** The workers share the App's ``store_dir`` (``--store-dir`` replaces
  it; ``--server`` gives ``servers=`` instead). An App without either would give each
  worker a temporary store of its own, so the supervisor makes one temporary store for
  all of them and deletes it when it exits. The first worker to open the store owns its
  server, the others attach; if the owner dies, its server dies with it, and an attached
  worker takes the store over (``_store``) on the same port while the supervisor starts
  the dead worker again, which attaches.
- **Readiness.** Each worker inherits the write end of a pipe and writes a JSON line
  when it is ready (every subscriber and responder registered: ``run_until_stopped``'s
  ``ready``), and whenever its connection drops or comes back; the pipe closing means it
  exited. ``/readyz`` is 200 when every worker reported ready, ``/healthz`` while the
  supervisor runs.
- **Restarts.** A worker that exits while the supervisor runs is started again after
  0.5 s, doubling for each exit in a row up to 30 s; a worker that was ready for 30 s
  starts the count anew. The supervisor never gives up: it logs each exit and delay.
- **Stopping.** The first SIGTERM or SIGINT goes to every worker as SIGTERM (each stops
  pulling, lets its handlers finish and ack within ``drain_timeout`` and hands the rest
  back), the owner of the store's server last: its server must outlive the others'
  acks. So the attached workers drain first while the owner goes on handling (what they
  hand back included), then the owner drains and stops its server: a stop takes at most
  twice ``drain_timeout``. A second signal makes every worker stop at once (SIGINT after
  its SIGTERM: the App's second signal; a different signal, so the two never merge into
  one pending signal): what is in a handler is handed back or, at worst, redelivered
  after ``ack_wait``. A worker still there 10 s later is killed; a third signal kills at
  once. The supervisor exits 0 once every worker has exited.
- **Reload.** ``--reload`` watches the current directory (watchfiles, the
  ``jetkit[reload]`` extra) and, when a .py file changes, stops the workers as above
  and starts them again at once.
- **Metrics.** N workers cannot share one port: with the App's ``metrics_port`` the
  supervisor serves it, and merges the workers' metrics, each on a free loopback port
  (``_probes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._app import App
from ._errors import ConfigError
from ._probes import METRICS_TYPE, TEXT, Response, exposition, fetch, start_http, url_of
from ._server import _make_child_setup
from ._store import process_alive, read_attach_info

BACKOFF_FIRST = 0.5  # seconds before a worker that exited is started again...
BACKOFF_CAP = 30.0  # ...doubling for each exit in a row, up to this
STEADY = 30.0  # a worker ready this long starts the backoff anew when it exits
FORCE_AFTER = 10.0  # after the second signal, a worker still running is killed


@dataclasses.dataclass
class Plan:
    """What the supervisor runs: decided by the command line from the App and its options."""

    app: str  # MODULE:APP
    workers: int
    overrides: dict[str, Any]  # Stream.open options replacing the App's, as JSON
    store_dir: Path | None  # the store the workers share (None: servers=, or temp_store)
    temp_store: bool  # the App has none: the supervisor makes one, deletes it at exit
    cwd: Path
    health: tuple[str, int] | None = None
    metrics: tuple[str, int] | None = None
    reload: bool = False


def plan(
    app: App,
    ref: str,
    workers: int,
    *,
    store_dir: str | os.PathLike[str] | None = None,
    servers: Sequence[str] = (),
    credentials: tuple[str | None, str | None] | None = None,
    health: tuple[str, int] | None = None,
    reload: bool = False,
    cwd: Path | None = None,
) -> Plan:
    """The run of ``app`` (named ``ref``): the store or servers its workers share (with
    ``credentials``, a local cluster's user and password), what replaces the App's own
    options, where the probes and the metrics are served."""
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if store_dir is not None and servers:
        raise ConfigError("pass --store-dir (embedded server) or --server (external), not both")
    options = app.options
    overrides: dict[str, Any] = {}
    if servers:
        overrides.update(servers=list(servers), store_dir=None)
        if credentials is not None:
            overrides.update(user=credentials[0], password=credentials[1], token=None)
    elif store_dir is not None:
        overrides.update(store_dir=os.fspath(store_dir), servers=None)
    elif options.get("servers") is None and options.get("store_dir") is not None:
        overrides.update(store_dir=os.fspath(options["store_dir"]))  # type: ignore[arg-type]
    external = bool(servers) or (store_dir is None and options.get("servers") is not None)
    metrics = None
    port = options.get("metrics_port")
    if port is not None:  # served by the supervisor; each worker on a free loopback port
        metrics = (options.get("metrics_host", "127.0.0.1"), port)
        overrides.update(metrics_port=0, metrics_host="127.0.0.1")
    where = None if external or "store_dir" not in overrides else overrides["store_dir"]
    return Plan(
        app=ref,
        workers=workers,
        overrides=overrides,
        store_dir=Path(where).expanduser().absolute() if where is not None else None,
        temp_store=not external and where is None,
        cwd=cwd or Path.cwd(),
        health=health,
        metrics=metrics,
        reload=reload,
    )


class Slot:
    """One worker's place: its process now, what it reported, how often it restarted."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = False
        self.metrics: str | None = None
        self.ready_since: float | None = None
        self.restarts = 0
        self.sent = 0  # signals sent to the current process: SIGTERM, then SIGINT
        self.reloading = False  # stopped by a reload: start again at once
        self.wake = asyncio.Event()  # cut a backoff short (stop, reload)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Supervisor:
    """Runs ``plan.workers`` workers until a signal (see the module's docstring)."""

    def __init__(self, plan: Plan, log: logging.Logger) -> None:
        self.plan = plan
        self.log = log
        self.slots = [Slot(i) for i in range(plan.workers)]
        self._signals = 0
        self._stop = asyncio.Event()
        self._forced = False
        self._reloaded = asyncio.Event()  # clear while a reload stops the workers
        self._reloaded.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def ready(self) -> bool:
        return not self.stopping and all(s.alive and s.ready for s in self.slots)

    async def run(self) -> int:
        """Serve the probes, run the workers until a signal, stop them; the exit code."""
        loop = asyncio.get_running_loop()
        servers: list[asyncio.Server] = []
        handled: list[signal.Signals] = []
        keepers: list[asyncio.Task[None]] = []
        watcher: asyncio.Task[None] | None = None
        try:
            if self.plan.temp_store:
                self.plan.store_dir = Path(tempfile.mkdtemp(prefix="jetkit-run-"))
                self.plan.overrides["store_dir"] = str(self.plan.store_dir)
                self.log.info("the App has no store_dir: a temporary store %s", self.plan.store_dir)
            if self.plan.health is not None:
                host, port = self.plan.health
                routes = {"/healthz": self._healthz, "/readyz": self._readyz}
                servers.append(await start_http(host, port, routes, "--health-port"))
                self.log.info("health probes at %s/healthz and /readyz", url_of(servers[-1]))
            if self.plan.metrics is not None:
                host, port = self.plan.metrics
                routes = {"/metrics": self._metrics}
                servers.append(await start_http(host, port, routes, "the App's metrics_port"))
                self.log.info("metrics of every worker at %s/metrics", url_of(servers[-1]))
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
                handled.append(sig)
            self.log.info(
                "running %s in %d worker%s (pid %d)",
                self.plan.app,
                len(self.slots),
                "s" if len(self.slots) > 1 else "",
                os.getpid(),
            )
            keepers = [asyncio.create_task(self._keep(slot)) for slot in self.slots]
            if self.plan.reload:
                watcher = asyncio.create_task(self._watch())
            await self._stop.wait()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await self._stop_workers()
            await asyncio.gather(*keepers)
            self.log.info("every worker stopped")
            return 0
        finally:
            for task in keepers:
                task.cancel()
            await self._kill_left()
            for server in servers:
                server.close()
            for sig in handled:
                loop.remove_signal_handler(sig)
            if self.plan.temp_store and self.plan.store_dir is not None:
                shutil.rmtree(self.plan.store_dir, ignore_errors=True)

    # -- signals and stopping -----------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            self.log.info(
                "%s: stopping the workers gracefully (they finish what they handle; a "
                "second signal stops them at once)",
                sig.name,
            )
            self._stop.set()
            self._reloaded.set()
            for slot in self.slots:
                slot.wake.set()
        elif self._signals == 2:
            self.log.warning("%s again: stopping the workers at once", sig.name)
            self._forced = True
            for slot in self.slots:
                if slot.sent:
                    self._send(slot)
            asyncio.get_running_loop().call_later(FORCE_AFTER, self._kill_all, "still running")
        else:
            self._kill_all(f"{sig.name} a third time")

    def _send(self, slot: Slot) -> None:
        """The next signal for this worker: SIGTERM (graceful), SIGINT (at once)."""
        if not slot.alive or slot.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if slot.sent == 0:
                slot.proc.send_signal(signal.SIGTERM)
                slot.sent = 1
            if self._forced and slot.sent == 1:
                slot.proc.send_signal(signal.SIGINT)
                slot.sent = 2

    def _kill_all(self, why: str) -> None:
        for slot in self.slots:
            if slot.alive and slot.proc is not None:
                self.log.warning("worker %d (pid %d) %s: killed", slot.index, slot.pid, why)
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.kill()

    def _owner_pid(self) -> int | None:
        """The worker whose nats-server serves the store now (the info file says)."""
        if self.plan.store_dir is None:
            return None
        info = read_attach_info(self.plan.store_dir) or {}
        owner = info.get("owner_pid")
        return owner if isinstance(owner, int) and process_alive(info.get("pid")) else None

    async def _stop_workers(self) -> None:
        """Signal the workers, the store's owner last, and wait until they exited."""
        owner = self._owner_pid()
        live = [s for s in self.slots if s.alive]
        for group in ([s for s in live if s.pid != owner], [s for s in live if s.pid == owner]):
            for slot in group:
                self._send(slot)
            await asyncio.gather(*(s.proc.wait() for s in group if s.proc is not None))

    async def _kill_left(self) -> None:
        """Nothing outlives the supervisor, whatever ended it."""
        left = [s for s in self.slots if s.alive and s.proc is not None]
        if left:
            self._kill_all("left when the supervisor ended")
            await asyncio.gather(*(s.proc.wait() for s in left if s.proc is not None))

    # -- one worker ----------------------------------------------------------------------

    async def _keep(self, slot: Slot) -> None:
        """Run the worker of ``slot``, again and again, until the supervisor stops."""
        loop = asyncio.get_running_loop()
        exits = 0
        while not self.stopping:
            try:
                exit_code: int | None = await self._run_once(slot)
            except OSError as exc:  # could not start one (no memory, no fds): try again
                self.log.error("worker %d could not be started: %s", slot.index, exc)
                exit_code = None
            if self.stopping:
                return
            if slot.reloading:  # start again at once, once every worker stopped
                slot.reloading = False
                exits = 0
                await self._reloaded.wait()
                continue
            steady = slot.ready_since is not None and loop.time() - slot.ready_since >= STEADY
            exits = 1 if steady else exits + 1
            delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (exits - 1))
            slot.restarts += 1
            self.log.warning(
                "worker %d (pid %s) %s; starting it again in %.1fs",
                slot.index,
                slot.pid,
                describe_exit(exit_code),
                delay,
            )
            slot.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.wake.wait(), delay)

    async def _run_once(self, slot: Slot) -> int:
        """Start the worker, follow its reports until its pipe closes; its exit code."""
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        spec = {
            "app": self.plan.app,
            "index": slot.index,
            "path": str(self.plan.cwd),
            "report_fd": write_fd,
            "overrides": self.plan.overrides,
        }
        slot.proc = None
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "jetkit._worker",
                json.dumps(spec),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(write_fd,),
                process_group=0,  # Ctrl+C in a terminal reaches the supervisor only
                preexec_fn=_make_child_setup(os.getpid()),  # SIGTERM if we die
                cwd=self.plan.cwd,
            )
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        slot.sent = 0
        slot.ready, slot.ready_since, slot.metrics = False, None, None
        self.log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)
        if self.stopping:  # a signal came while it started
            self._send(slot)
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                self._report(slot, line)
        finally:
            transport.close()
            slot.ready = False
        return await slot.proc.wait()

    def _report(self, slot: Slot, line: bytes) -> None:
        try:
            state = json.loads(line)
        except ValueError:
            return
        ready = bool(state.get("ready"))
        if ready and not slot.ready:
            slot.ready_since = asyncio.get_running_loop().time()
            role = "serves the store" if state.get("owner") else "connected"
            self.log.info("worker %d (pid %d) is ready (%s)", slot.index, slot.pid, role)
        elif slot.ready and not ready and not self.stopping:
            self.log.warning("worker %d (pid %d) lost its connection", slot.index, slot.pid)
        slot.ready = ready
        slot.metrics = state.get("metrics") or slot.metrics

    # -- reload --------------------------------------------------------------------------

    async def _watch(self) -> None:
        import watchfiles  # the jetkit[reload] extra; the command checked it is there

        async for changes in watchfiles.awatch(
            self.plan.cwd, watch_filter=watchfiles.PythonFilter()
        ):
            names = sorted({os.path.relpath(path, self.plan.cwd) for _, path in changes})
            self.log.info("%s changed: restarting the workers", ", ".join(names))
            self._reloaded.clear()  # none starts before all stopped: the new code
            for slot in self.slots:  # must not attach to an old worker's server
                slot.reloading = slot.alive
            try:
                await self._stop_workers()
            finally:
                self._reloaded.set()
                for slot in self.slots:
                    slot.wake.set()  # one waiting out a backoff starts at once

    # -- HTTP ----------------------------------------------------------------------------

    async def _healthz(self) -> Response:
        return 200, TEXT, b"ok\n"

    async def _readyz(self) -> Response:
        lines = [
            f"worker {s.index}: "
            + ("ready" if s.alive and s.ready else "starting" if s.alive else "down")
            for s in self.slots
        ]
        body = ("\n".join(lines) + "\n").encode()
        return (200 if self.ready else 503), TEXT, body

    async def _metrics(self) -> Response:
        urls = {s.index: s.metrics for s in self.slots if s.alive and s.metrics}
        texts = await asyncio.gather(*(fetch(url) for url in urls.values()))
        got = {index: text for index, text in zip(urls, texts, strict=True) if text is not None}
        ready = {s.index: s.alive and s.ready for s in self.slots}
        restarts = {s.index: s.restarts for s in self.slots}
        return 200, METRICS_TYPE, exposition(got, ready, restarts)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "did not start"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"

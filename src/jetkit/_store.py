"""The store directory: who may use it, its lock, its credentials, and serving it
(owning its server, attaching to another process's, taking it over).

A store holds a generated password and the server's data, so it is private: jetkit
creates it 0700 and refuses one that other users could write to (they could replace
the config or plant links); ``_files`` writes its files.

nats-server does not lock its store, so jetkit does: the process that starts the
server takes an exclusive ``flock`` on ``jetkit.lock`` and hands the same open file
to the server, so the lock is released only when both are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from ._errors import (
    ConfigError,
    ConnectionError,
    InsecureStoreError,
    JetkitError,
    ServerTimeoutError,
    StoreNotWritableError,
)
from ._files import (
    CLUSTER_FILE,
    CREDS_FILE,
    INFO_FILE,
    LOCK_FILE,
    PRIVATE,
    create_private,
    is_cluster_dir,
    write_private,
)
from ._server import EmbeddedServer, find_binary


def prepare(store_dir: Path) -> None:
    """Create the store (0700) or check an existing one; prove it is writable."""
    if store_dir.is_file():
        raise StoreNotWritableError(
            f"store directory {str(store_dir)!r} is a file, not a directory; choose "
            "another store_dir"
        )
    _refuse_inside_a_store(store_dir)
    try:
        store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(store_dir)
    except OSError as exc:
        raise _not_writable(store_dir, exc) from exc
    if info.st_uid != os.geteuid():
        raise InsecureStoreError(
            f"store directory {str(store_dir)!r} belongs to another user (uid {info.st_uid}); "
            "a store holds a password and your data: use a directory of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InsecureStoreError(
            f"store directory {str(store_dir)!r} is writable by other users (mode "
            f"{stat.filemode(info.st_mode)}); they could replace its files. Run "
            f"`chmod go-w {store_dir}` (or `chmod 700`), or choose another store_dir"
        )
    try:
        probe = create_private(store_dir, ".jetkit-probe")
        os.close(probe[0])
        os.unlink(probe[1])
    except OSError as exc:
        raise _not_writable(store_dir, exc) from exc


def _refuse_inside_a_store(store_dir: Path) -> None:
    """A directory inside another store (its ``jetstream/`` data, say) is not a store:
    nats-server would move that store's data into the new layout, and the real store
    would look empty."""
    path = store_dir.resolve()
    if (path / "$G").is_dir() and not (path / CREDS_FILE).exists():
        raise ConfigError(
            f"{str(store_dir)!r} holds nats-server's JetStream data itself; the store is "
            f"the directory above it: use store_dir={str(path.parent)!r}"
        )
    for parent in path.parents:
        if (parent / CREDS_FILE).is_file() and (parent / "jetstream").is_dir():
            raise ConfigError(
                f"{str(store_dir)!r} is inside the jetkit store {str(parent)!r}; use that "
                "store (store_dir is the directory holding jetkit-credentials.json), or a "
                "directory outside it"
            )


def _not_writable(store_dir: Path, exc: OSError) -> StoreNotWritableError:
    return StoreNotWritableError(
        f"store directory {str(store_dir)!r} is not writable ({exc.strerror or exc}); "
        "choose another store_dir or fix its permissions"
    )


def try_lock(store_dir: Path) -> int | None:
    """Take the store's lock; the fd on success, None if a live server holds it."""
    import fcntl  # POSIX only, like the parent-death signal: jetkit runs on Linux and macOS

    fd = os.open(
        store_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, PRIVATE
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def load_or_create_credentials(store_dir: Path, log: logging.Logger) -> tuple[str, str]:
    """The store's generated user and password, created on first use (file mode 0600).

    A file that cannot be read, or that holds an empty user or password (which would
    start a server without authentication), is replaced by new credentials.
    """
    path = store_dir / CREDS_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as fh:
            data = json.load(fh)
        user, password = data["user"], data["password"]
        if isinstance(user, str) and isinstance(password, str) and user and password:
            return user, password
        log.warning("%s holds an empty user or password; generating new ones", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read %s (%s); generating new credentials", path, exc)
    user, password = "jetkit", secrets.token_urlsafe(24)
    write_private(path, json.dumps({"user": user, "password": password}))
    return user, password


def read_attach_info(store_dir: Path) -> dict[str, object] | None:
    """Where the live server of this store listens (written by its owner), or None."""
    try:
        fd = os.open(store_dir / INFO_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_alive(pid: object) -> bool:
    """Whether ``pid`` runs (a zombie, or a Go process whose leader already exited, does not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def attach_timeout_error(store_dir: Path, timeout: float) -> ServerTimeoutError:
    return ServerTimeoutError(
        f"store {store_dir} is locked by another jetkit process but its server did not "
        f"answer within {timeout:.1f}s; if no jetkit process uses this store, remove "
        f"{store_dir / LOCK_FILE}"
    )


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """How to run a store's embedded server (``Stream.open``'s options for it)."""

    binary: str | os.PathLike[str] | None
    host: str
    port: int | None
    max_payload: int | None
    sync_always: bool
    ready_timeout: float


class EmbeddedStore:
    """A store a Stream opened: its server runs here (owner) or in another jetkit
    process (attached, as a client).

    ``open`` takes the store's lock and starts the server, or, if a live jetkit server
    holds the lock, attaches to it. When the connection to an attached server drops
    because its owner exited, ``connection_lost`` takes the store over: this process
    starts the server again on the same port, and every client reconnects to it.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str] | None,
        settings: ServerSettings,
        log: logging.Logger,
    ) -> None:
        self.temp = store_dir is None
        self.path = (
            Path(tempfile.mkdtemp(prefix="jetkit-store-"))
            if store_dir is None
            else Path(store_dir).expanduser().absolute()
        )
        self.settings = settings
        self.server: EmbeddedServer | None = None
        self.attached = False
        self.on_storage_error: Callable[[str], None] | None = None
        # (user, password, token) the server is started with, or a client attaches with
        self.credentials: tuple[str | None, str | None, str | None] = (None, None, None)
        self._log = log
        self._attached_port: int | None = None
        self._takeover: asyncio.Future[None] | None = None
        self._owner_pid = os.getpid()

    async def open(
        self,
        user: str | None,
        password: str | None,
        token: str | None,
        connect: Callable[[str, str | None, str | None], Awaitable[None]],
    ) -> None:
        """Serve or attach; ``connect(url, user, password)`` connects the Stream."""
        if is_cluster_dir(self.path):
            raise ConfigError(
                f"{self.path} is the directory of a local cluster (jetkit cluster), not a "
                f"store: connect to the cluster with the servers, user and password in its "
                f"{CLUSTER_FILE} (on the command line: --cluster {self.path})"
            )
        prepare(self.path)
        if user is None and token is None:
            user, password = load_or_create_credentials(self.path, self._log)
        self.credentials = (user, password, token)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.ready_timeout
        while True:
            lock_fd = try_lock(self.path)
            if lock_fd is not None:
                break
            # a live jetkit server owns the store (or one is just exiting): attach to it
            if await self._attach(connect, user, password):
                return
            if loop.time() >= deadline:
                raise attach_timeout_error(self.path, self.settings.ready_timeout)
            await asyncio.sleep(0.02)
        server = await self._own(lock_fd, self.settings.port)
        await connect(server.url, user, password)

    async def _own(self, lock_fd: int, port: int | None) -> EmbeddedServer:
        """We hold the store's lock: start its server (the lock passes to it)."""
        settings = self.settings
        user, password, token = self.credentials
        try:
            with contextlib.suppress(OSError):
                (self.path / INFO_FILE).unlink()
            server = EmbeddedServer(
                store_dir=self.path,
                binary=find_binary(settings.binary),
                host=settings.host,
                port=port,
                max_payload=settings.max_payload,
                sync_always=settings.sync_always,
                ready_timeout=settings.ready_timeout,
                user=user,
                password=password,
                token=token,
                lock_fd=lock_fd,
                logger=self._log.getChild("server"),
            )
        except BaseException:
            os.close(lock_fd)
            raise
        server.on_storage_error = self.on_storage_error
        self.server = server
        await server.start()
        return server

    async def _attach(
        self,
        connect: Callable[[str, str | None, str | None], Awaitable[None]],
        user: str | None,
        password: str | None,
    ) -> bool:
        """Connect as a client to the live server that owns the store; False if not ready."""
        info = read_attach_info(self.path)
        # the server dies with its owner: a dead owner means it is going away
        if (
            info is None
            or not process_alive(info.get("pid"))
            or not process_alive(info.get("owner_pid"))
        ):
            return False
        host = str(info.get("host", "127.0.0.1"))
        url = f"nats://{f'[{host}]' if ':' in host else host}:{info.get('port')}"
        try:
            await connect(url, user, password)
        except ConnectionError:
            return False
        self.attached = True
        self._attached_port = int(str(info.get("port")))
        self._log.info(
            "store %s is served by pid %s; attached as a client", self.path, info.get("pid")
        )
        return True

    def connection_lost(self, reconnected: Callable[[], bool]) -> None:
        """The connection dropped: if attached, the owner may have exited; take over."""
        if self.attached and (self._takeover is None or self._takeover.done()):
            self._takeover = asyncio.ensure_future(self._take_over(reconnected))

    async def _take_over(self, reconnected: Callable[[], bool]) -> None:
        """Serve the store ourselves once its owner let go of the lock (on the port it
        used, so the client reconnects by itself)."""
        assert self._attached_port is not None
        while not reconnected():
            lock_fd = try_lock(self.path)
            if lock_fd is None:  # the owner is still there (restarting it, or shutting down)
                await asyncio.sleep(0.1)
                continue
            try:
                await self._own(lock_fd, self._attached_port)
            except JetkitError as exc:
                self.server = None
                self._log.error("could not take over store %s: %s", self.path, exc)
                return
            self.attached = False
            self._log.warning("the owner of %s exited; this process serves it now", self.path)
            return

    async def close(self) -> None:
        """Stop taking over, stop the server if it is ours, remove a temporary store.

        Nothing in a process forked from the one that opened the store: the server and
        the store (a temporary one too) are that process's.
        """
        if os.getpid() != self._owner_pid:
            return
        if self._takeover is not None and not self._takeover.done():
            self._takeover.cancel()
            with contextlib.suppress(BaseException):
                await self._takeover
        if self.server is not None:
            await self.server.stop()
        if self.temp:
            shutil.rmtree(self.path, ignore_errors=True)

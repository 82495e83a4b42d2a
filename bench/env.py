"""The servers a bench run starts (and stops): jetkit's embedded nats-server and redis-server.

One jetkit Stream owns the embedded server (a temporary store, random loopback port).
Every measured client connects to it anew with what ``Stream.connect_info()`` gives
(servers, and user/password or token): jetkit through ``Stream.open(**info)``, the
baselines through nats-py, FastStream or the peer clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import psutil

import jetkit as jk

from .tracing import dropping_provider

log = logging.getLogger("bench")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 (AOF on, fsync every second, like a store)."""

    def __init__(self) -> None:
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    async def start(self, timeout: float = 10.0) -> None:
        exe = self.binary()
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="jetkit-bench-redis-"))
        self.port = free_port()
        args = [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
        args += ["--protected-mode", "yes", "--daemonize", "no", "--logfile", ""]
        self.proc = self._spawn(args)
        import redis.asyncio as aioredis

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start (code {self.proc.returncode})")
            try:
                client = aioredis.Redis(host="127.0.0.1", port=self.port)
                try:
                    await client.ping()
                    return
                finally:
                    await client.aclose()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    @staticmethod
    def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
        """Start the process (returns at once; start() then polls until it answers)."""
        return subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )

    def client(self, **kwargs: Any) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class BenchEnv:
    """The bench's servers and how to connect to them."""

    def __init__(self, *, use_redis: bool = True) -> None:
        self.use_redis = use_redis
        self.store: Path | None = None
        self.owner: jk.Stream | None = None
        self.connect: dict[str, Any] = {}  # Stream.connect_info(): nats.connect(**connect)
        self.url = ""
        self.redis: RedisServer | None = None
        self.redis_note = ""

    async def start(self) -> None:
        self.store = Path(tempfile.mkdtemp(prefix="jetkit-bench-"))
        self.owner = await jk.Stream.open(
            store_dir=self.store, default_mode=jk.TopicMode.JETSTREAM, name="bench-owner"
        )
        self.connect = self.owner.connect_info()
        if "tls" in self.connect:
            raise RuntimeError("the bench's embedded server uses TLS; the bench expects none")
        self.url = self.connect["servers"][0]
        if not self.use_redis:
            self.redis_note = "Redis disabled (--no-redis)"
        elif RedisServer.binary() is None:
            self.redis_note = "redis-server not installed; Redis rows skipped"
        else:
            server = RedisServer()
            try:
                await server.start()
                self.redis = server
            except Exception as exc:
                server.stop()
                self.redis_note = f"redis-server could not start ({exc}); Redis rows skipped"

    async def close(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.owner is not None:
            with contextlib.suppress(Exception):
                await self.owner.close()
            self.owner = None
        if self.store is not None:
            shutil.rmtree(self.store, ignore_errors=True)
            self.store = None

    @property
    def server(self) -> jk.Stream:
        assert self.owner is not None, "BenchEnv.start() first"
        return self.owner

    @contextlib.asynccontextmanager
    async def jetkit(
        self,
        mode: jk.TopicMode = jk.TopicMode.JETSTREAM,
        metrics: bool = False,
        tracing: bool = False,
    ) -> AsyncIterator[jk.Stream]:
        """A new jetkit client Stream on the bench server (``metrics``: serving them;
        ``tracing``: every span made, batched and dropped)."""
        provider = dropping_provider() if tracing else None
        stream = await jk.Stream.open(
            **self.connect,
            default_mode=mode,
            drain_timeout=10.0,
            metrics_port=0 if metrics else None,
            tracing=provider if provider is not None else False,
        )
        try:
            yield stream
        finally:
            await stream.close()
            if provider is not None:
                provider.shutdown()

    @contextlib.asynccontextmanager
    async def nats(self, **options: Any) -> AsyncIterator[Any]:
        """A new raw nats-py connection to the bench server."""
        nc = await nats.connect(**self.connect, max_reconnect_attempts=1, **options)
        try:
            yield nc
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()
            with contextlib.suppress(Exception):
                await nc.close()


def leftover_servers() -> list[psutil.Process]:
    """Servers and peer runs this bench started that are still running (its children only)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if child.name() in ("nats-server", "redis-server") or any(
                arg.endswith(("peer_runner.py", "bench.memprobe")) for arg in child.cmdline()
            ):
                found.append(child)
    return found


def stop_leftovers() -> list[str]:
    """Stop this bench's leftover processes (only our own children); describe them."""
    stopped = []
    for proc in leftover_servers():
        with contextlib.suppress(psutil.Error):
            stopped.append(f"{proc.name()} pid {proc.pid}")
            proc.terminate()
            try:
                proc.wait(5)
            except psutil.TimeoutExpired:
                proc.kill()
    return stopped

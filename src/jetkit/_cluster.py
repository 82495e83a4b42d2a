"""A local NATS cluster: N nats-servers from the bundled binary, routed on loopback.

Layout of the cluster's directory (each node's directory is a store like
``Stream.open(store_dir=...)``'s, with its own lock, config and log)::

    jetkit-cluster.json       urls, user, password, nodes (name, url, pid)   (0600):
                              there only while the cluster runs and answers
    jetkit-cluster-ports.json the nodes' ports, kept for the next start
    jetkit-credentials.json   the generated user and password                 (0600)
    n1/ n2/ n3/ ...           one store per node

Every node runs JetStream, listens for clients and for routes on loopback (ports chosen
free at the first start and kept in ``jetkit-cluster.json``, so a restarted cluster
finds its peers where they were), and is supervised like the embedded server: a node
that dies is started again on the same ports and store. Clients and routes use the
same generated user and password.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Unpack

from ._errors import ConfigError, JetkitError, ServerStartError, ServerTimeoutError
from ._files import CLUSTER_FILE, PORTS_FILE, is_cluster_dir, write_private
from ._server import EmbeddedServer, Routes, find_binary
from ._store import load_or_create_credentials, prepare, process_alive, try_lock
from ._stream import Stream
from ._surface import ClusterOptions, given
from ._topics import TopicMode
from ._validate import flag, number

CLUSTER_NAME = "jetkit"
MAX_NODES = 9


@dataclasses.dataclass
class Node:
    """One node: its name, ports and store, and its server while it runs."""

    name: str
    port: int
    route_port: int
    store: Path
    server: EmbeddedServer | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server is not None else None

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running


class LocalCluster:
    """``nodes`` nats-servers forming one JetStream cluster on this machine.

    ``await cluster.start()`` (or ``async with``) starts them and waits until JetStream
    answers; ``urls``, ``user`` and ``password`` are what ``Stream.open(servers=...)``
    needs. ``kill(node)`` kills one with SIGKILL (its supervisor starts it again, as
    ``jetkit cluster`` does); ``stop_node``/``start_node`` take one down and bring it
    back on purpose. ``store_dir=None`` uses a temporary directory removed on stop.
    """

    def __init__(
        self,
        nodes: int = 3,
        store_dir: str | os.PathLike[str] | None = None,
        **options: Unpack[ClusterOptions],
    ) -> None:
        o = given(ClusterOptions, "LocalCluster", options)
        self.size = number("nodes", nodes, minimum=1, maximum=MAX_NODES, integer=True)
        ready = number("ready_timeout", o["ready_timeout"], above=0, maximum=3600)
        self.ready_timeout = float(ready)
        self.sync_always = flag("sync_always", o["sync_always"])
        logger = o["logger"]
        if logger is not None and not isinstance(logger, logging.Logger):
            raise ConfigError(f"logger must be a logging.Logger, got {logger!r}")
        self._log = logger or logging.getLogger("jetkit.cluster")
        binary = o["server_binary"]
        if binary is not None and not isinstance(binary, str | os.PathLike):
            raise ConfigError(f"server_binary must be a path, got {binary!r}")
        self._binary_choice = binary
        self._temporary = store_dir is None
        self._dir_arg = store_dir
        self.store_dir: Path | None = None
        self.nodes: list[Node] = []
        self.user = ""
        self.password = ""
        self._ready = False  # the cluster answered once since start()

    # -- what clients need -----------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def describe(self) -> dict[str, Any]:
        """What ``jetkit-cluster.json`` holds."""
        return {
            "urls": self.urls,
            "user": self.user,
            "password": self.password,
            "nodes": [
                {
                    "name": n.name,
                    "url": n.url,
                    "pid": n.pid,
                    "route_port": n.route_port,
                    "store": str(n.store),
                }
                for n in self.nodes
            ],
        }

    def write_info(self) -> None:
        """``jetkit-cluster.json`` (while running) and the ports for the next start."""
        assert self.store_dir is not None
        info = self.describe()
        write_private(self.store_dir / PORTS_FILE, json.dumps(info["nodes"], indent=2))
        if self.running:
            write_private(self.store_dir / CLUSTER_FILE, json.dumps(info, indent=2))

    @property
    def running(self) -> bool:
        """Started, answered, and not stopped."""
        return self._ready and any(n.running for n in self.nodes)

    # -- starting and stopping -------------------------------------------------------------

    async def start(self) -> None:
        """Start every node, then wait until the cluster's JetStream answers."""
        binary = find_binary(self._binary_choice)
        if self._temporary:
            import tempfile

            self.store_dir = Path(tempfile.mkdtemp(prefix="jetkit-cluster-"))
        else:
            assert self._dir_arg is not None
            self.store_dir = Path(self._dir_arg).expanduser().resolve()
            self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        prepare(self.store_dir)
        self.user, self.password = load_or_create_credentials(self.store_dir, self._log)
        self.nodes = self._plan()
        try:
            # (a node of this cluster already running fails here, its file left alone)
            await asyncio.gather(*(self._start_node(node, binary) for node in self.nodes))
            # the file says "a usable cluster is here": none until the cluster answers
            with contextlib.suppress(FileNotFoundError):
                (self.store_dir / CLUSTER_FILE).unlink()
            await self.wait_ready()
            self._ready = True
            self.write_info()
        except BaseException:
            await self.stop()
            raise

    def _plan(self) -> list[Node]:
        """The nodes, on the ports an earlier run of this cluster used (else free ones)."""
        assert self.store_dir is not None
        known: dict[str, tuple[int, int]] = {}
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            ports = self.store_dir / PORTS_FILE
            if ports.exists():
                data = json.loads(ports.read_text())
            else:  # a directory of an earlier jetkit: the ports were in the cluster file
                data = json.loads((self.store_dir / CLUSTER_FILE).read_text())["nodes"]
            for entry in data:
                port = int(str(entry["url"]).rsplit(":", 1)[1])
                known[str(entry["name"])] = (port, int(entry["route_port"]))
        nodes = []
        taken: set[int] = set()
        for i in range(1, self.size + 1):
            name = f"n{i}"
            port, route_port = known.get(name, (0, 0))
            if not port or not _free(port) or port in taken:
                port = _free_port(taken)
            taken.add(port)
            if not route_port or not _free(route_port) or route_port in taken:
                route_port = _free_port(taken)
            taken.add(route_port)
            store = self.store_dir / name
            store.mkdir(exist_ok=True, mode=0o700)
            prepare(store)
            nodes.append(Node(name, port, route_port, store))
        return nodes

    async def _start_node(self, node: Node, binary: str | None = None) -> None:
        lock_fd = try_lock(node.store)
        if lock_fd is None:
            raise ServerStartError(
                f"node {node.name} of the cluster in {self.store_dir} is already running "
                "(its store is locked): stop that `jetkit cluster` first, or use another "
                "--store-dir"
            )
        routes = Routes(
            cluster=CLUSTER_NAME,
            port=node.route_port,
            peers=tuple(n.route_port for n in self.nodes if n is not node),
            user=self.user,
            password=self.password,
        )
        try:
            server = EmbeddedServer(
                store_dir=node.store,
                binary=binary or find_binary(self._binary_choice),
                host="127.0.0.1",
                port=node.port,
                max_payload=None,
                sync_always=self.sync_always,
                ready_timeout=self.ready_timeout,
                user=self.user,
                password=self.password,
                token=None,
                lock_fd=lock_fd,
                logger=self._log.getChild(node.name),
                name=node.name,
                routes=routes,
            )
        except BaseException:
            os.close(lock_fd)
            raise
        node.server = server
        await server.start()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Until the cluster's JetStream answers and can place a stream on every running
        node (so a node just started is a member again)."""
        loop = asyncio.get_running_loop()
        limit = timeout or self.ready_timeout
        deadline = loop.time() + limit
        up = [n.url for n in self.nodes if n.running]
        probe = f"_jetkit.probe.jetkit_probe_{os.getpid()}_{secrets.token_hex(4)}"
        async with Stream.open(
            servers=up, user=self.user, password=self.password, connect_timeout=5
        ) as s:
            while True:
                try:
                    await s.declare_topic(probe, mode=TopicMode.JETSTREAM, replicas=len(up))
                    await s.delete_topic(probe)
                    return
                except JetkitError as exc:
                    if loop.time() > deadline:
                        raise ServerTimeoutError(
                            f"the cluster's JetStream was not ready on {len(up)} node(s) "
                            f"within {limit:.0f}s ({exc})"
                        ) from None
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Stop every node (gracefully); a temporary directory is removed."""
        started = any(n.server is not None for n in self.nodes)
        await asyncio.gather(
            *(n.server.stop() for n in self.nodes if n.server is not None),
            return_exceptions=True,
        )
        for node in self.nodes:
            node.server = None
        self._ready = False
        if self.store_dir is not None:
            if self._temporary:
                import shutil

                shutil.rmtree(self.store_dir, ignore_errors=True)
            elif started:  # no cluster here any more; its ports are kept for the next start
                with contextlib.suppress(OSError):
                    (self.store_dir / CLUSTER_FILE).unlink(missing_ok=True)
                    self.write_info()

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- one node --------------------------------------------------------------------------

    def node(self, which: int | str) -> Node:
        """A node by index (0-based) or name (``"n1"``)."""
        for i, node in enumerate(self.nodes):
            if which == i or which == node.name:
                return node
        raise ConfigError(
            f"no node {which!r}: the nodes are {', '.join(n.name for n in self.nodes)} "
            f"(or 0..{len(self.nodes) - 1})"
        )

    async def kill(self, which: int | str, *, restart: bool = True, wait: bool = True) -> int:
        """SIGKILL one node and return its process id. ``restart``: its supervisor
        starts it again on the same ports and store, as ``jetkit cluster`` does (with
        ``wait``, this returns once it runs again); else it stays down until
        ``start_node``."""
        node = self.node(which)
        server = node.server
        pid = node.pid
        if pid is None or server is None:
            raise ConfigError(f"node {node.name} is not running")
        before = server.restart_count
        if not restart:
            server.expect_exit()
        os.kill(pid, signal.SIGKILL)
        if not restart:
            await server.stop()  # reaps it and releases its store
            node.server = None
        elif wait:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.ready_timeout
            while server.restart_count == before or not server.running:
                if loop.time() > deadline:
                    raise ServerTimeoutError(f"node {node.name} did not come back")
                await asyncio.sleep(0.02)
        self.write_info()
        return pid

    async def stop_node(self, which: int | str) -> None:
        """Take one node down (gracefully, and not restarted) until ``start_node``."""
        node = self.node(which)
        if node.server is not None:
            await node.server.stop()
            node.server = None
        self.write_info()

    async def start_node(self, which: int | str) -> None:
        """Bring a node stopped with ``stop_node`` back (same ports, same store)."""
        node = self.node(which)
        if node.server is None:
            await self._start_node(node)
        self.write_info()

    async def run_until(self, stop: asyncio.Event) -> None:
        """Keep ``jetkit-cluster.json`` current (pids change when a node restarts)
        until ``stop`` is set."""
        pids = [n.pid for n in self.nodes]
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            now = [n.pid for n in self.nodes]
            if now != pids:
                pids = now
                self.write_info()


__all__ = ["CLUSTER_FILE", "MAX_NODES", "LocalCluster", "is_cluster_dir", "local_cluster"]


def read_cluster_file(store_dir: Path) -> dict[str, Any] | None:
    """A running cluster's ``jetkit-cluster.json`` (None when absent or stale);
    ``store_dir`` is its directory or the file itself."""
    path = store_dir if store_dir.name.endswith(".json") else store_dir / CLUSTER_FILE
    try:
        data = json.loads(path.expanduser().read_text())
    except (OSError, ValueError):
        return None
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, list) or not any(process_alive(n.get("pid")) for n in nodes):
        return None
    return dict(data)


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: set[int]) -> int:
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in taken:
            return port
    raise ServerStartError("no free port on 127.0.0.1 for a cluster node")


@contextlib.asynccontextmanager
async def local_cluster(
    nodes: int = 3,
    store_dir: str | os.PathLike[str] | None = None,
    **options: Unpack[ClusterOptions],
) -> AsyncIterator[LocalCluster]:
    """A running ``LocalCluster`` for the block (see there); stopped at the end."""
    cluster = LocalCluster(nodes, store_dir, **options)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()

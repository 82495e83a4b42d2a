"""The partition suite's cluster: three nats-servers, each in a network namespace of its
own (``netns.Net``), routed over veth links the tests cut and heal; the client (the test)
in the root namespace, with a link of its own to every node.

Every namespace, link and process a test makes is removed by the fixture that made it,
whether the test passed or not, and the fixture fails the test if any is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import jetkit as jk
from jetkit import _server
from partition.netns import Net, unavailable

CLIENT_PORT = 4222
ROUTE_PORT = 6222

_why_not: list[str | None] = []


@pytest.fixture(scope="session")
def netns_ok() -> None:
    """Skip (with the reason) where namespaces and veth links cannot be made."""
    if not _why_not:
        _why_not.append(unavailable())
    if _why_not[0] is not None:
        pytest.skip(_why_not[0])


class Node:
    """One nats-server in its namespace."""

    def __init__(self, net: Net, index: int, root: Path) -> None:
        self.net = net
        self.index = index
        self.name = f"n{index}"
        self.dir = root / self.name
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return self.net.address(self.index)

    @property
    def url(self) -> str:
        return f"nats://{self.address}:{CLIENT_PORT}"

    def config(self) -> str:
        peers = [
            f'"nats-route://{self.net.address(i)}:{ROUTE_PORT}"'
            for i in range(1, self.net.size + 1)
            if i != self.index
        ]
        return "\n".join(
            [
                f"server_name: {self.name}",
                f"listen: {self.address}:{CLIENT_PORT}",
                f'log_file: "{self.dir / "server.log"}"',
                f'jetstream {{ store_dir: "{self.dir / "store"}" }}',
                "cluster {",
                "  name: partition",
                f"  listen: {self.address}:{ROUTE_PORT}",
                f"  routes: [{', '.join(peers)}]",
                "}",
                "",
            ]
        )

    def start(self) -> None:
        conf = self.dir / "server.conf"
        conf.write_text(self.config())
        # `ip netns exec` execs the server: the pid is the server's
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.net.namespace(self.index),
                _server.find_binary(),
                "-c",
                str(conf),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None


class PartitionCluster:
    """Three nodes in namespaces; ``net`` cuts and heals their links."""

    def __init__(self, net: Net, root: Path) -> None:
        self.net = net
        self.nodes = [Node(net, i, root) for i in range(1, net.size + 1)]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def by_url(self, url: str | None) -> Node:
        assert url is not None, "the Stream is not connected"
        return next(n for n in self.nodes if n.address in url)

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until JetStream answers on every node (a meta leader elected, all routed)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                assert node.proc is not None and node.proc.poll() is None, f"{node.name} died"
                try:
                    async with jk.Stream.open(servers=[node.url], connect_timeout=2) as s:
                        health = await s.health()
                    if health["jetstream"].get("enabled"):
                        break
                except jk.JetkitError:
                    pass
                assert time.monotonic() < deadline, f"{node.name}'s JetStream never answered"
                await asyncio.sleep(0.25)

    def isolate(self, node: Node) -> None:
        self.net.isolate(node.index)

    def rejoin(self, node: Node) -> None:
        self.net.rejoin(node.index)

    def heal(self) -> None:
        self.net.heal()


@pytest.fixture
async def partition_cluster(netns_ok: None) -> AsyncIterator[PartitionCluster]:
    """A fresh 3-node cluster in namespaces of its own, removed afterwards (all of it)."""
    net = Net(3)
    root = Path(tempfile.mkdtemp(prefix="jetkit-partition-"))
    cluster = PartitionCluster(net, root)
    try:
        net.create()
        for node in cluster.nodes:
            node.start()
        await cluster.wait_ready()
        yield cluster
    finally:
        for node in cluster.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        net.remove()  # raises if any namespace or link of it is left
        if os.environ.get("JETKIT_PARTITION_KEEP_LOGS"):
            print(f"partition logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        left = [n.name for n in cluster.nodes if n.proc is not None]
        assert not left, f"nats-servers left running: {left}"


@pytest.fixture
def full(request: pytest.FixtureRequest) -> Iterator[bool]:
    yield bool(request.config.getoption("--partition-full"))

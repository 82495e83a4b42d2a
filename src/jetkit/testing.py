"""Helpers for testing code that uses jetkit, against the real server (nothing mocked).

``Collector`` is a handler that records what it receives and can fail on purpose, so a
test can watch redeliveries and dead letters::

    got = Collector(fail_first=2)  # each message fails its first 2 attempts
    await s.subscribe("orders", got, durable="d", ack=jk.AckPolicy.MANUAL, backoff=[0.1])
    await s.publish("orders", b"o-1")
    assert [m.num_delivered for m in await got.wait(3)] == [1, 2, 3]

``BackgroundServer`` runs one embedded server on a temporary store from a private
thread, so any event loop (one per test or one per session) can attach to it; the
pytest plugin (``jetkit.pytest_plugin``: fixtures ``jetkit_server`` and
``jetkit_stream``) is built on it.

``local_cluster(3)`` starts three nats-servers routed on loopback (JetStream on every
node, one temporary store each) and stops them at the end of the ``async with``::

    async with jetkit.testing.local_cluster(3) as cluster:
        async with jk.Stream.open(servers=cluster.urls, user=cluster.user,
                                  password=cluster.password) as s:
            await s.declare_topic("orders.events", replicas=3)
            await cluster.kill(cluster.node((await s.topic_info("orders.events")).leader))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Unpack

from ._cluster import LocalCluster, Node, local_cluster
from ._errors import NotFoundError
from ._message import Message
from ._stream import Stream, _Opener
from ._surface import OpenOptions
from ._topics import TopicMode

__all__ = [
    "BackgroundServer",
    "Collector",
    "LocalCluster",
    "Node",
    "SimulatedFailure",
    "local_cluster",
]


class SimulatedFailure(Exception):
    """What a ``Collector`` raises when told to fail a delivery."""


class Collector:
    """A handler that records every delivery it gets and can fail some on purpose.

    Pass it wherever a handler goes (``subscribe``, ``respond``): it takes the
    ``jk.Message``. ``messages`` holds every delivery in arrival order, the failed ones
    included (so a message retried twice appears three times). ``fail_first=k`` raises
    ``SimulatedFailure`` on the first ``k`` attempts of each message (its
    ``num_delivered``; a core message is always on its first), ``fail`` raises for the
    messages it returns True for; with ``ack=MANUAL`` that means a retry, then the DLQ.
    """

    def __init__(
        self, *, fail_first: int = 0, fail: Callable[[Message], bool] | None = None
    ) -> None:
        if isinstance(fail_first, bool) or not isinstance(fail_first, int) or fail_first < 0:
            raise ValueError(f"fail_first must be a whole number >= 0, got {fail_first!r}")
        self.fail_first = fail_first
        self.fail = fail
        self.messages: list[Message] = []
        self.failures = 0
        self._arrived = asyncio.Event()

    async def __call__(self, msg: Message) -> None:
        self.messages.append(msg)
        self._arrived.set()
        if msg.num_delivered <= self.fail_first or (self.fail is not None and self.fail(msg)):
            self.failures += 1
            raise SimulatedFailure(
                f"Collector failed delivery {msg.num_delivered} of {msg.topic!r} "
                f"seq {msg.seq} on purpose"
            )

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def data(self) -> list[bytes]:
        """The payloads of every delivery, in order."""
        return [m.data for m in self.messages]

    def json(self) -> list[Any]:
        """The payloads of every delivery decoded as JSON."""
        return [json.loads(m.data) for m in self.messages]

    async def wait(self, n: int, timeout: float = 5.0) -> list[Message]:
        """Return the deliveries once at least ``n`` arrived (a copy of ``messages``).

        Raises AssertionError naming how many came if fewer than ``n`` arrive within
        ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.messages) < n:
            self._arrived.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(
                    f"Collector expected {n} messages within {timeout}s, got "
                    f"{len(self.messages)}: {self.data[:10]!r}"
                )
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass
        return list(self.messages)


class BackgroundServer:
    """An embedded jetkit server owned by a private thread and event loop.

    ``start()`` opens the owner Stream (``jk.Stream.open(store_dir=...)``) in that
    thread; code in any other event loop attaches to it with ``open()`` (the store is
    the address). ``stop()`` closes it and, for a temporary store, deletes the store.
    Usable as a (synchronous) context manager. ``options`` go to ``Stream.open``.
    """

    def __init__(
        self, store_dir: str | os.PathLike[str] | None = None, /, **options: Unpack[OpenOptions]
    ) -> None:
        store_dir = store_dir if store_dir is not None else options.pop("store_dir", None)
        self._temporary = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="jetkit-test-")).absolute()
        self._options = options
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._info: dict[str, Any] = {}
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The server's URL (it needs the credentials in ``connect_info()``)."""
        if self._url is None:
            raise RuntimeError("BackgroundServer is not running; call start()")
        return self._url

    def connect_info(self) -> dict[str, Any]:
        """``nats.connect(**info)`` arguments for another client (keep them secret)."""
        if not self._info:
            raise RuntimeError("BackgroundServer is not running; call start()")
        return dict(self._info)

    def open(self, **options: Unpack[OpenOptions]) -> _Opener:
        """``jk.Stream.open`` attached to this server (its ``store_dir`` is this server's);
        ``default_mode`` is JETSTREAM unless given. ``await`` it or use ``async with``."""
        options.setdefault("default_mode", TopicMode.JETSTREAM)
        options["store_dir"] = self.store_dir
        return Stream.open(**options)

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        if self._thread is not None:
            return self
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="jetkit-test-server", daemon=True
        )
        self._thread.start()
        try:
            started.result(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                options = self._options.copy()
                options["store_dir"] = self.store_dir
                s = await Stream.open(**options)
            except BaseException as exc:
                started.set_exception(exc)
                return
            try:
                self._info = s.connect_info()
                self._url = s.server_url
                started.set_result(None)
                await self._stop.wait()
            finally:
                await s.close()

        asyncio.run(serve())

    def stop(self, timeout: float = 30.0) -> None:
        """Close the owner Stream (stopping the server); remove a temporary store."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is not None:
            if loop is not None and stop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(stop.set)
                except RuntimeError:  # the loop already ended
                    pass
            thread.join(timeout)
        self._thread = self._loop = self._stop = None
        self._info, self._url = {}, None
        if self._temporary:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"url={self._url!r}" if self._url else "stopped"
        return f"<BackgroundServer store_dir={str(self.store_dir)!r} {state}>"


async def _snapshot(s: Stream) -> dict[str, tuple[str, set[str]]]:
    """Every stored topic's stream by name: a topic it stores, and its consumers."""
    return {
        o.topic.name: (o.topic.subjects[0], {c.name for c in o.consumers})
        for o in await s.overview()
        if o.topic.subjects  # (a stream without subjects, a mirror say, is no topic)
    }


async def _remove_new(s: Stream, before: dict[str, tuple[str, set[str]]]) -> None:
    """Delete the topics, and the consumers of older topics, made since ``before``."""
    for name, (topic, consumers) in (await _snapshot(s)).items():
        if name not in before:
            with contextlib.suppress(NotFoundError):  # gone already
                await s.delete_topic(topic)
            continue
        for consumer in consumers - before[name][1]:
            with contextlib.suppress(NotFoundError):
                await s.delete_consumer(topic, consumer)

"""The end of a ``jk.Stream``'s life: closing it (``Shutdown``), the decorator's
registrations (``Registrations``).

Closing is one task per Stream, started by the first ``close()``: the drain phase (the
decorator's registrations, then every subscription drained within ``drain_timeout``),
then ``stop()`` for whatever is left (unfinished JetStream messages are naked: handed
back, never lost), then the teardown (connection, server, the store's lock). Each
``close()`` awaits that task shielded. A caller that is cancelled (``asyncio.wait_for``,
Ctrl+C under ``asyncio.run``) hurries it: the drain phase is cut short, the stop and the
teardown still run, and only once they are done does the CancelledError go on. So a
cancelled close never leaves a server running that nothing supervises, and a second
``close()`` simply awaits the same (finished) task.

A registration started by ``@s.subscriber`` runs in the background. If it fails it is
logged at ERROR at once, raised by the next publish/request (the spec: "a failed
registration raises there") and, if nothing raised it before, by ``close()`` once the
close is complete.

In a process made by ``os.fork()`` the Stream belongs to the parent (its loop, its
connection's socket, its server): every call raises jk.ForkedStreamError and ``close()``
returns at once without touching any of it (see ``_fork``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ._connection import Connection
    from ._publish import Publisher
    from ._store import EmbeddedStore
    from ._subscription import Subscription
    from .metrics import Collector, MetricsServer

T = TypeVar("T")


async def await_shielded(task: asyncio.Future[T], hurry: Callable[[], None]) -> T:
    """Await ``task`` without a cancellation of the caller cancelling it: a cancelled
    caller calls ``hurry()``, waits for ``task`` to end all the same, then is cancelled."""
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():
            raise
        hurry()
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):  # cancelled again: still wait
                await asyncio.wait([task])
        raise


class Registrations:
    """The subscriptions ``@s.subscriber`` registers in the background.

    ``tasks`` holds those still running and those that failed unseen (the Stream's
    publish tests it for emptiness, its hot path); a registration that succeeds leaves
    it by itself.
    """

    def __init__(self, log: logging.Logger) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self._log = log

    def start(self, registration: Coroutine[Any, Any, Any], topic: str, handler: object) -> None:
        task = asyncio.ensure_future(registration)
        self.tasks.add(task)
        name = getattr(handler, "__qualname__", None) or repr(handler)
        task.add_done_callback(functools.partial(self._done, topic, name))

    def _done(self, topic: str, name: str, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.tasks.discard(task)
            return
        exc = task.exception()
        if exc is None:
            self.tasks.discard(task)
            return
        self._log.error(
            "the subscriber %s on %r could not be registered (%s: %s); the next "
            "publish or request on this Stream raises it, else close() does",
            name,
            topic,
            type(exc).__name__,
            exc,
        )

    async def settle(self) -> None:
        """Wait for every registration; raise the first failure not raised before."""
        while self.tasks:
            task = next(iter(self.tasks))
            await asyncio.wait([task])  # a cancelled caller leaves the registration going
            self.tasks.discard(task)
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def wait(self) -> None:
        """Wait until none is running (failures are kept for ``unseen``)."""
        running = [task for task in self.tasks if not task.done()]
        if running:
            await asyncio.wait(running)

    async def cancel(self) -> None:
        """Cancel those still running (a hurried close) and wait for them to end."""
        running = [task for task in self.tasks if not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)

    def unseen(self) -> BaseException | None:
        """The first failure nothing raised yet (the others were logged); then forgets all."""
        first = None
        for task in list(self.tasks):
            if task.done():
                self.tasks.discard(task)
                if first is None and not task.cancelled():
                    first = task.exception()
        return first


class Parts(Protocol):
    """What a Shutdown closes: a Stream's runtime (``_runtime.Runtime``)."""

    drain_timeout: float
    log: logging.Logger
    conn: Connection
    store: EmbeddedStore | None
    publisher: Publisher
    subs: set[Subscription]
    tasks: set[asyncio.Future[Any]]
    metrics: Collector | None
    metrics_server: MetricsServer | None
    regs: Registrations
    closed: bool
    forked_from: int | None


class Shutdown:
    """The close of one Stream: one task, started by the first ``close()``."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._closing: asyncio.Future[None] | None = None  # the close task, once started
        self._draining: asyncio.Future[None] | None = None  # its drain phase
        self._hurried = False

    async def close(self, hand_back: bool = False) -> None:
        """``Stream.close`` (see there)."""
        parts = self._parts
        if parts.forked_from is not None:
            return
        parts.closed = True
        if self._closing is None or self._closing.cancelled():
            self._closing = asyncio.ensure_future(self._shut_down(hand_back))
        await await_shielded(self._closing, self.hurry)
        error = parts.regs.unseen()
        if error is not None:
            raise error

    def hurry(self) -> None:
        """Cut the drain phase of a close short (a no-op once it is over)."""
        self._hurried = True
        if self._draining is not None:
            self._draining.cancel()

    async def _shut_down(self, hand_back: bool) -> None:
        parts = self._parts
        try:
            self._draining = asyncio.ensure_future(self._drain_all(hand_back))
            if self._hurried:
                self._draining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._draining
            await parts.regs.cancel()
            subs = list(parts.subs)
            results = await asyncio.gather(*(sub.stop() for sub in subs), return_exceptions=True)
            for sub, result in zip(subs, results, strict=True):
                if isinstance(result, Exception):
                    parts.log.warning("stopping %r: %r", sub, result)
        finally:
            await self.teardown()

    async def _drain_all(self, hand_back: bool) -> None:
        """Drain every subscription at once: stopping their feeds and waiting for their
        handlers costs nothing per subscription; what they ask of the server on the way
        (an ephemeral consumer's delete) is bounded by ``JsApi`` (``IN_FLIGHT``)."""
        parts = self._parts
        await parts.regs.wait()
        subs = list(parts.subs)
        if subs and parts.conn.is_connected:
            timeout = parts.drain_timeout
            results = await asyncio.gather(
                *(s.drain(timeout, hand_back=hand_back) for s in subs), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    parts.log.warning("%s", result)

    async def teardown(self) -> None:
        """Stop everything without draining (also what a failed open undoes)."""
        parts = self._parts
        parts.closed = True
        try:
            if parts.metrics is not None:
                parts.metrics.close()
            if parts.metrics_server is not None:
                await asyncio.to_thread(parts.metrics_server.stop)
                parts.metrics_server = None
            for task in list(parts.tasks):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await parts.publisher.acked.close()
            with contextlib.suppress(Exception):
                await parts.conn.flush(timeout=2)
            with contextlib.suppress(Exception):
                await parts.conn.close()
        finally:  # whatever happened above: the server stops, the store's lock goes
            if parts.store is not None:
                await parts.store.close()

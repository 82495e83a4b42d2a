"""The end of a ``jk.Stream``'s life: closing it, the decorator's registrations, a fork.

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
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from . import _fork
from ._errors import StreamClosedError

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


class Lifecycle:
    """Mixed into ``jk.Stream``: ``close()`` and the teardown, and what a fork changes."""

    drain_timeout: float
    _log: logging.Logger
    _conn: Connection
    _store: EmbeddedStore | None
    _publisher: Publisher
    _subs: set[Subscription]
    _tasks: set[asyncio.Future[Any]]
    _metrics: Collector | None
    _metrics_server: MetricsServer | None
    _regs: Registrations

    def _init_lifecycle(self) -> None:
        self._closed = False
        self._closing: asyncio.Future[None] | None = None  # the close task, once started
        self._draining: asyncio.Future[None] | None = None  # its drain phase
        self._hurried = False
        self._owner_pid = os.getpid()
        self._forked_from: int | None = None  # set in a forked child: the parent's pid
        _fork.track(self)

    def _after_fork_in_child(self) -> None:
        self._forked_from = self._owner_pid
        self._closed = True

    def _check_open(self) -> None:
        if self._forked_from is not None:
            raise _fork.forked_error("jk.Stream", self._forked_from)
        if self._closed:
            raise StreamClosedError("this Stream is closed; open a new one with Stream.open()")

    async def close(self) -> None:
        """Drain every subscription (within ``drain_timeout``), disconnect, stop the server.

        If the caller is cancelled meanwhile (``asyncio.wait_for``, Ctrl+C), the drain is
        cut short (unfinished JetStream messages are handed back for redelivery) but the
        server is still stopped and the store released before the cancellation goes on.
        Closing again waits for the first close. A subscription that ``@subscriber``
        failed to register, and that no publish or request raised, is raised here, after
        the close. In a process forked from the one that opened the Stream, this returns
        at once and touches nothing (the server and connection are the parent's).
        """
        if self._forked_from is not None:
            return
        self._closed = True
        if self._closing is None or self._closing.cancelled():
            self._closing = asyncio.ensure_future(self._shut_down())
        await await_shielded(self._closing, self._hurry_close)
        error = self._regs.unseen()
        if error is not None:
            raise error

    def _hurry_close(self) -> None:
        """Cut the drain phase of a close short (a no-op once it is over)."""
        self._hurried = True
        if self._draining is not None:
            self._draining.cancel()

    async def _shut_down(self) -> None:
        try:
            self._draining = asyncio.ensure_future(self._drain_all())
            if self._hurried:
                self._draining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._draining
            await self._regs.cancel()
            for sub in list(self._subs):
                try:
                    await sub.stop()
                except Exception as exc:
                    self._log.warning("stopping %r: %r", sub, exc)
        finally:
            await self._teardown()

    async def _drain_all(self) -> None:
        await self._regs.wait()
        subs = list(self._subs)
        if subs and self._conn.is_connected:
            results = await asyncio.gather(
                *(s.drain(timeout=self.drain_timeout) for s in subs), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    self._log.warning("%s", result)

    async def _teardown(self) -> None:
        self._closed = True
        try:
            if self._metrics is not None:
                self._metrics.close()
            if self._metrics_server is not None:
                await asyncio.to_thread(self._metrics_server.stop)
                self._metrics_server = None
            for task in list(self._tasks):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await self._publisher.acked.close()
            with contextlib.suppress(Exception):
                await self._conn.flush(timeout=2)
            with contextlib.suppress(Exception):
                await self._conn.close()
        finally:  # whatever happened above: the server stops, the store's lock goes
            if self._store is not None:
                await self._store.close()

"""The hand-written part of ``jetkit.sync``: the loop thread and its guards, the sync
``Subscription``, and ``StreamBase`` (see the ``jetkit.sync`` module docstring for the
design; the rest of ``jetkit.sync.Stream`` is generated into ``_sync_stream``).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import datetime as dt
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar, Unpack

from . import _fork, _stream
from ._errors import ConfigError, HandlerSignatureError, StreamClosedError
from ._message import Message
from ._subscription import Subscription as AsyncSubscription
from ._subscription import SubscriptionStats
from ._surface import OpenOptions, SubscribeOptions

if TYPE_CHECKING:
    from .metrics import Collector
from ._sync_threads import HandlerThreads, here

T = TypeVar("T")
P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger("jetkit")


class _Runner:
    """A private event loop in a daemon thread: where one sync Stream's jk.Stream lives."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.threads = HandlerThreads(self)
        self.loop.set_default_executor(self.threads)
        self.stream: _stream.Stream | None = None
        self._lock = threading.Lock()
        self._closing: concurrent.futures.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, name="jetkit-sync-loop", daemon=True)
        self._owner_pid = os.getpid()
        self.forked_from: int | None = None  # in a forked child: the pid that opened it
        _fork.track(self)
        _runners.add(self)
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        # no lock here: another thread may have held it at the fork; every call checks
        # this flag first, and the child's exit has nothing of ours to close
        self.forked_from = self._owner_pid
        _runners.discard(self)

    def refuse_if_forked(self) -> None:
        if self.forked_from is not None:
            raise _fork.forked_error("jetkit.sync.Stream", self.forked_from)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                tasks = asyncio.all_tasks(self.loop)
                for task in tasks:
                    task.cancel()
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()
                self.threads.shutdown(wait=False)
                _runners.discard(self)

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def guard(self, what: str, waits_for_handlers: bool = False) -> None:
        """Refuse a call that would wait for the thread making it."""
        if threading.current_thread() is self._thread:
            raise ConfigError(
                f"{what} was called on the jetkit.sync.Stream's own event-loop thread, where "
                "it would wait for itself; call it from another thread (sync handlers run in "
                "handler threads and may call the Stream), or use jk.Stream from async code"
            )
        if waits_for_handlers and getattr(here, "runner", None) is self:
            raise ConfigError(
                f"{what} was called from a handler of this Stream and would wait for that "
                "handler to return; call it from outside the handler (e.g. set a "
                "threading.Event in the handler and close from the thread waiting on it)"
            )

    def call(
        self, what: str, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop and return its result in this thread."""
        self.refuse_if_forked()
        self.guard(what)

        async def on_loop() -> T:
            return await fn(*args, **kwargs)

        with self._lock:
            if self._closing is not None:
                raise StreamClosedError(
                    "this jetkit.sync.Stream is closed; open a new one with Stream.open()"
                )
            future = asyncio.run_coroutine_threadsafe(on_loop(), self.loop)
        return _wait(future)

    def close(self, wait: bool = True) -> None:
        """Close the jk.Stream (draining), then end the loop thread; ``wait`` for all that.

        Raises what the async close raised (only when this call started the close).
        Ctrl+C while waiting hurries the close but does not abandon it (the server's stop
        and the store's lock must not be skipped): KeyboardInterrupt once it is over.
        In a forked child: returns at once (the loop, server and store are the parent's).
        """
        if self.forked_from is not None:
            return
        with self._lock:
            started = self._closing is None
            if started:
                self._closing = asyncio.run_coroutine_threadsafe(self._close(), self.loop)
                self._closing.add_done_callback(self._stop_loop)
            closing = self._closing
        assert closing is not None
        if not wait:
            return
        try:
            self._wait_closed(closing)
        except concurrent.futures.CancelledError:
            pass
        except KeyboardInterrupt:
            raise
        except BaseException:
            if started:
                raise
        finally:
            if threading.current_thread() is not self._thread:
                self._thread.join()
                self.threads.join_idle(timeout=1.0)

    def _wait_closed(self, closing: concurrent.futures.Future[None]) -> None:
        interrupted: KeyboardInterrupt | None = None
        while not closing.done():
            try:
                concurrent.futures.wait([closing])
            except KeyboardInterrupt as exc:  # cut the drain short; the teardown still runs
                interrupted = exc
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to hurry
                    self.loop.call_soon_threadsafe(self._hurry)
        if interrupted is not None:
            raise interrupted
        closing.result()

    def _hurry(self) -> None:
        if self.stream is not None:
            self.stream._hurry_close()

    async def _close(self) -> None:
        if self.stream is not None:
            await self.stream.close()

    def _stop_loop(self, _: object) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.loop.stop)


def _wait(future: concurrent.futures.Future[T]) -> T:
    """The future's result or its exception (the original one, not a wrapper)."""
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        if future.cancelled():  # the loop ended under the call: the Stream was closed
            raise StreamClosedError(
                "this jetkit.sync.Stream was closed while the call was running"
            ) from None
        raise
    except BaseException:
        if not future.done():  # KeyboardInterrupt while waiting: stop the call too
            future.cancel()
        raise


_runners: set[_Runner] = set()  # every loop thread still running


@atexit.register
def _close_all() -> None:
    """Close the sync Streams still open at exit (their loop threads are daemon threads)."""
    for runner in list(_runners):
        try:
            runner.close()
        except BaseException as exc:
            _log.warning("closing a jetkit.sync.Stream at exit: %r", exc)


def reject_async(handler: Callable[..., Any]) -> None:
    if inspect.iscoroutinefunction(handler) or (
        callable(handler)
        and not inspect.isroutine(handler)
        and inspect.iscoroutinefunction(type(handler).__call__)
    ):
        name = getattr(handler, "__qualname__", repr(handler))
        raise HandlerSignatureError(
            f"handler {name} is async; jetkit.sync handlers are plain functions (use "
            "jk.Stream for async def handlers)"
        )


class Subscription:
    """A running subscription of a sync Stream (returned by ``subscribe``/``respond``)."""

    def __init__(self, runner: _Runner, sub: AsyncSubscription) -> None:
        self._runner = runner
        self._sub = sub

    def __repr__(self) -> str:
        return f"<jetkit.sync.Subscription topic={self.topic!r} {self.stats}>"

    @property
    def topic(self) -> str:
        return self._sub.topic

    @property
    def stats(self) -> SubscriptionStats:
        """Counters since it started (see jk.SubscriptionStats); updated live."""
        return self._sub.stats

    @property
    def closed(self) -> bool:
        return self._sub.closed

    @property
    def buffered(self) -> int:
        """Messages received and waiting for the handler."""
        return self._sub.buffered

    def drain(self, timeout: float | None = None) -> None:
        """Stop taking messages, finish every buffered and in-flight one, then return.

        Raises jk.TimeoutError after ``timeout`` seconds (the rest is cancelled).
        Not from this Stream's own handlers (jk.ConfigError): drain waits for them.
        """
        self._runner.refuse_if_forked()
        if self._sub.closed:
            return
        self._runner.guard("Subscription.drain()", waits_for_handlers=True)
        self._runner.call("Subscription.drain()", self._sub.drain, timeout)

    def stop(self) -> None:
        """Stop at once: buffered messages are discarded (JetStream: redelivered later)."""
        self._runner.refuse_if_forked()
        if self._sub.closed:
            return
        self._runner.call("Subscription.stop()", self._sub.stop)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drain()


class StreamBase:
    """What of ``jetkit.sync.Stream`` is written by hand: opening and closing, the loop
    thread's plumbing (``_call``, ``_wrap``), the properties that depend on it, the
    decorator, and settling a message from a handler thread. The blocking twins of
    ``jk.Stream``'s calls are generated (``_sync_stream``, by tools/faces.py)."""

    def __init__(self, runner: _Runner, stream: _stream.Stream) -> None:
        """Not called directly: use ``Stream.open``."""
        self._runner = runner
        self._s = stream
        self._finalizer = weakref.finalize(self, runner.close, False)
        self._finalizer.atexit = False  # the module's atexit hook closes (and waits)

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(cls, **options: Unpack[OpenOptions]) -> Self:
        """Start (or attach to) the embedded server, or connect to ``servers``; see
        ``jk.Stream.open`` for the options. Options are checked before any thread starts."""
        opener = _stream.Stream.open(**options)  # raises jk.ConfigError here
        runner = _Runner()

        async def start() -> _stream.Stream:
            runner.stream = await opener
            return runner.stream

        try:
            stream = runner.call("Stream.open()", start)
        except BaseException:
            runner.close()
            raise
        return cls(runner, stream)

    def close(self) -> None:
        """Drain every subscription (within ``drain_timeout``), disconnect, stop the server
        and the loop thread. Closing again does nothing. Not from this Stream's handlers.

        Ctrl+C during it cuts the drain short (unfinished JetStream messages go back for
        redelivery), still stops the server, then raises KeyboardInterrupt. In a process
        forked from the one that opened the Stream, returns at once and touches nothing."""
        if self._runner.forked_from is not None:
            return
        if not self._runner.closing:
            self._runner.guard("Stream.close()", waits_for_handlers=True)
        self._finalizer.detach()
        self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self._s.server_url
        return f"<jetkit.sync.Stream {state}>"

    def _call(
        self, what: str, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return self._runner.call(what, fn, *args, **kwargs)

    def _wrap(self, sub: AsyncSubscription) -> Subscription:
        return Subscription(self._runner, sub)

    # -- properties ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether close() was called (or the Stream was closed at exit)."""
        return self._runner.closing or self._s.closed

    @property
    def connected(self) -> bool:
        """Whether the connection to NATS is up now (False while it reconnects)."""
        return not self.closed and self._s.connected

    @property
    def drain_timeout(self) -> float:
        return self._s.drain_timeout

    @property
    def subscriptions(self) -> list[Subscription]:
        return [self._wrap(sub) for sub in self._s.subscriptions]

    def connect_info(self) -> dict[str, Any]:
        """How another client reaches this Stream's server: ``nats.connect(**info)``."""
        self._check_open()
        return self._s.connect_info()

    def _check_open(self) -> None:
        self._runner.refuse_if_forked()
        if self.closed:
            raise StreamClosedError(
                "this jetkit.sync.Stream is closed; open a new one with Stream.open()"
            )

    def metrics_collector(self) -> Collector:
        """This Stream's Prometheus collector (see ``jk.Stream.metrics_collector``), made
        on the Stream's loop thread; register it in one registry per Stream."""

        async def on_loop() -> Collector:
            return self._s.metrics_collector()

        return self._call("metrics_collector()", on_loop)

    # -- the decorator -----------------------------------------------------------------------

    def subscriber(self, topic: str, **options: Unpack[SubscribeOptions]) -> Callable[[F], F]:
        """Decorator form of ``subscribe``; it subscribes at once (errors raise here)."""

        def decorate(handler: F) -> F:
            reject_async(handler)
            self._wrap(self._call("subscribe()", self._s.subscribe, topic, handler, **options))
            return handler

        return decorate

    # -- settling (handlers that take the jk.Message) --------------------------------------

    def ack(self, msg: Message, wait: bool = False) -> None:
        """``msg.ack()`` for a message this Stream delivered (see jk.Message.ack)."""
        self._call("ack()", msg.ack, wait)

    def nak(self, msg: Message, delay: float | dt.timedelta | None = None) -> None:
        """``msg.nak()``: ask for redelivery, after ``delay`` seconds if given."""
        self._call("nak()", msg.nak, delay)

    def term(self, msg: Message, reason: str | None = None) -> None:
        """``msg.term()``: stop delivering the message (not retried, not dead-lettered)."""
        self._call("term()", msg.term, reason)

    def in_progress(self, msg: Message) -> None:
        """``msg.in_progress()``: reset the ack timer, the handler is still working on it."""
        self._call("in_progress()", msg.in_progress)

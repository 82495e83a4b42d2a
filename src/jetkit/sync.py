"""``jetkit.sync.Stream``: jetkit without asyncio, for scripts, notebooks, Flask and Django.

One pattern: each sync Stream runs a ``jk.Stream`` on its own event loop in a private
daemon thread, and every method hands the async call to that loop and waits for it::

    with jetkit.sync.Stream.open() as s:
        s.subscribe("orders.new", handle)      # handle is a plain function
        s.publish("orders.new", b"...")

- Errors: the async call's own ``jk.*`` exception is raised in the caller's thread
  (a bad topic is ``jk.InvalidTopicError`` before anything is sent).
- Timeouts: none added. Every call is bounded by its async counterpart's own limit
  (``publish_timeout``, ``request(timeout=)``, the JetStream API timeout, drain's
  ``drain_timeout``), so a sync call waits exactly as long as the async one would.
  Ctrl-C while waiting cancels the call on the loop and raises KeyboardInterrupt;
  during ``close()`` it only cuts the drain short: the close still stops the server
  and frees the store, and KeyboardInterrupt comes once it is done.
- Handlers are plain functions (``async def`` is refused: use ``jk.Stream`` for those).
  They run in the Stream's handler threads, not on the loop, so a handler may call the
  Stream (publish, request, subscribe, admin calls). Decoding follows the annotations
  as in the async API. With ``AckPolicy.MANUAL`` returning acks and raising naks (retry,
  then the DLQ); a handler that takes the ``jk.Message`` settles it explicitly with
  ``s.ack(msg)``, ``s.nak(msg)``, ``s.term(msg)`` or ``s.in_progress(msg)``.
- Deadlocks are refused, not suffered: a call from the loop thread itself, or
  ``close()``/``Subscription.drain()`` from one of this Stream's handlers (they wait for
  that very handler), raises ``jk.ConfigError`` naming the fix.
- Shutdown: ``close()`` (or leaving the ``with`` block) drains every subscription as the
  async close does, stops the server and ends the loop thread; closing twice is fine and
  a closed Stream raises ``jk.StreamClosedError``. A Stream that is garbage collected
  unclosed is closed in the background, and one still open at interpreter exit is closed
  by an ``atexit`` hook (which holds no reference to the Stream itself).
- ``os.fork()``: the child has no loop thread, so the Stream stays the parent's. In
  the child every call raises ``jk.ForkedStreamError`` at once and ``close()`` (and the
  exit hook) returns at once, touching neither the parent's server nor its connection.
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
import ssl
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from . import _fork, _stream
from ._deadletters import DeadLetter, RedriveResult
from ._errors import ConfigError, HandlerSignatureError, StreamClosedError
from ._info import ConsumerInfo, TopicInfo
from ._message import Message
from ._publish import PubAck
from ._retry import Delay
from ._schedule import ScheduledMessage
from ._subscription import AckPolicy, Backpressure, StartAt, SubscriptionStats
from ._subscription import Subscription as AsyncSubscription
from ._sync_threads import HandlerThreads, here
from ._topics import Discard, Retention, TopicMode

__all__ = ["Stream", "Subscription"]

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


def _reject_async(handler: Callable[..., Any]) -> None:
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


class Stream:
    """``jk.Stream`` without asyncio: the same calls, made from ordinary threads.

    Open it with ``jetkit.sync.Stream.open(...)`` (the options of ``jk.Stream.open``);
    use it in a ``with`` block or call ``close()``. See the module docstring for how
    calls, handlers, errors and shutdown work.
    """

    def __init__(self, runner: _Runner, stream: _stream.Stream) -> None:
        """Not called directly: use ``Stream.open``."""
        self._runner = runner
        self._s = stream
        self._finalizer = weakref.finalize(self, runner.close, False)
        self._finalizer.atexit = False  # the module's atexit hook closes (and waits)

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        servers: Sequence[str] | str | None = None,
        default_mode: TopicMode = TopicMode.CORE,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
        max_payload: int | None = None,
        connect_timeout: float = 5.0,
        drain_timeout: float = 30.0,
        server_ready_timeout: float = 10.0,
        sync_always: bool = False,
        logger: logging.Logger | None = None,
        server_binary: str | os.PathLike[str] | None = None,
        publish_timeout: float = 5.0,
        name: str | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> Stream:
        """Start (or attach to) the embedded server, or connect to ``servers``; see
        ``jk.Stream.open`` for the options. Options are checked before any thread starts."""
        options = {k: v for k, v in locals().items() if k != "cls"}
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

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.server_url
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
    def default_mode(self) -> TopicMode:
        return self._s.default_mode

    @property
    def store_dir(self) -> Path | None:
        """The embedded server's store (None for an external server)."""
        return self._s.store_dir

    @property
    def server_url(self) -> str | None:
        """The URL this Stream is connected to."""
        return self._s.server_url

    @property
    def embedded(self) -> bool:
        """True when this Stream started and owns its nats-server."""
        return self._s.embedded

    @property
    def metrics_url(self) -> str | None:
        """Where this Stream serves its Prometheus metrics (None: metrics_port not set)."""
        return self._s.metrics_url

    @property
    def max_payload(self) -> int:
        return self._s.max_payload

    @property
    def subscriptions(self) -> list[Subscription]:
        return [self._wrap(sub) for sub in self._s.subscriptions]

    def connect_info(self) -> dict[str, Any]:
        """How another client reaches this Stream's server: ``nats.connect(**info)``."""
        self._check_open()
        return self._s.connect_info()

    def mode_for(self, topic: str) -> TopicMode:
        """The mode a topic uses: its declare_topic mode, else the Stream's default."""
        return self._s.mode_for(topic)

    def _check_open(self) -> None:
        self._runner.refuse_if_forked()
        if self.closed:
            raise StreamClosedError(
                "this jetkit.sync.Stream is closed; open a new one with Stream.open()"
            )

    # -- publishing ------------------------------------------------------------------------

    @overload
    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck | None: ...

    @overload
    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> ScheduledMessage: ...

    @overload
    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: float | dt.timedelta,
        ttl: float | dt.timedelta | None = None,
    ) -> ScheduledMessage: ...

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime | None = None,
        deliver_after: float | dt.timedelta | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck | ScheduledMessage | None:
        """Publish ``data`` to ``topic``; a JetStream topic returns its PubAck once stored
        (a jk.ScheduledMessage with ``deliver_at``/``deliver_after``; see jk.Stream)."""
        if deliver_at is None and deliver_after is None and ttl is None:
            return self._call(
                "publish()", self._s.publish, topic, data, headers=headers, msg_id=msg_id
            )
        return self._call(
            "publish()",
            self._s.publish,  # type: ignore[arg-type]
            topic,
            data,
            headers=headers,
            msg_id=msg_id,
            deliver_at=deliver_at,
            deliver_after=deliver_after,
            ttl=ttl,
        )

    @overload
    def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck | None: ...

    @overload
    def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> ScheduledMessage: ...

    @overload
    def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: float | dt.timedelta,
        ttl: float | dt.timedelta | None = None,
    ) -> ScheduledMessage: ...

    def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime | None = None,
        deliver_after: float | dt.timedelta | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck | ScheduledMessage | None:
        """Encode ``value`` (dataclass, Struct, pydantic model, dict, list) as JSON and publish."""
        return self._call(
            "publish_json()",
            self._s.publish_json,  # type: ignore[arg-type]
            topic,
            value,
            headers=headers,
            msg_id=msg_id,
            deliver_at=deliver_at,
            deliver_after=deliver_after,
            ttl=ttl,
        )

    def publish_stored(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck:
        """``publish`` to a JetStream topic, returning its PubAck (see jk.Stream)."""
        stored = self._s.publish_stored
        return self._call(
            "publish_stored()", stored, topic, data, headers=headers, msg_id=msg_id, ttl=ttl
        )

    def publish_json_stored(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck:
        """``publish_json`` to a JetStream topic, returning its PubAck (see jk.Stream)."""
        stored = self._s.publish_json_stored
        return self._call(
            "publish_json_stored()", stored, topic, value, headers=headers, msg_id=msg_id, ttl=ttl
        )

    def publish_many(
        self,
        topic: str,
        payloads: Iterable[bytes],
        *,
        headers: dict[str, str] | None = None,
        window: int = 256,
        ttl: float | dt.timedelta | None = None,
    ) -> list[PubAck | None]:
        """Publish many payloads with up to ``window`` acks outstanding (see jk.Stream)."""
        return self._call(
            "publish_many()",
            self._s.publish_many,
            topic,
            payloads,
            headers=headers,
            window=window,
            ttl=ttl,
        )

    def cancel_scheduled(
        self, scheduled: ScheduledMessage | str, *, msg_id: str | None = None
    ) -> bool:
        """Cancel a scheduled message (see jk.Stream.cancel_scheduled); True if it was
        still pending."""
        return self._call("cancel_scheduled()", self._s.cancel_scheduled, scheduled, msg_id=msg_id)

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        handler: Callable[..., Any],
        *,
        durable: str | None = None,
        queue_group: str | None = None,
        ack: AckPolicy = AckPolicy.AUTO,
        max_deliver: int | None = None,
        backoff: Sequence[Delay] | Delay | None = None,
        start_at: StartAt = StartAt.NEW,
        start_time: dt.datetime | float | None = None,
        start_seq: int | None = None,
        concurrency: int = 1,
        buffer_size: int = 1024,
        backpressure: Backpressure = Backpressure.BLOCK,
        dlq: str | None = None,
        ack_wait: float = 30.0,
        recreate: bool = False,
        key: str | Callable[[Message], str | None] | None = None,
    ) -> Subscription:
        """Call the plain function ``handler`` for every message on ``topic``, in a handler
        thread (the options are jk.Stream.subscribe's)."""
        _reject_async(handler)
        options = {k: v for k, v in locals().items() if k not in ("self", "topic", "handler")}
        return self._wrap(self._call("subscribe()", self._s.subscribe, topic, handler, **options))

    subscribe_json = subscribe

    def subscriber(self, topic: str, **options: Any) -> Callable[[F], F]:
        """Decorator form of ``subscribe``; it subscribes at once (errors raise here)."""

        def decorate(handler: F) -> F:
            self.subscribe(topic, handler, **options)
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

    # -- request / reply -------------------------------------------------------------------

    def request(
        self,
        topic: str,
        data: bytes,
        timeout: float = 5.0,
        *,
        headers: dict[str, str] | None = None,
    ) -> Message:
        """Send a request and return the reply (jk.NoRespondersError, jk.TimeoutError,
        jk.RemoteError as in jk.Stream.request)."""
        return self._call("request()", self._s.request, topic, data, timeout, headers=headers)

    def request_json(
        self,
        topic: str,
        value: Any,
        response_type: type[T] | Any = Any,
        timeout: float = 5.0,
    ) -> T:
        """``request`` with ``value`` as JSON; the reply decoded as ``response_type``."""
        result: T = self._call(
            "request_json()", self._s.request_json, topic, value, response_type, timeout
        )
        return result

    def respond(
        self,
        topic: str,
        handler: Callable[..., Any],
        queue_group: str | None = None,
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Answer requests on ``topic`` with the plain function ``handler``'s return value;
        an exception becomes jk.RemoteError at the requester."""
        _reject_async(handler)
        return self._wrap(
            self._call(
                "respond()", self._s.respond, topic, handler, queue_group, concurrency=concurrency
            )
        )

    # -- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Server, connection and JetStream state as a dict (closed: jk.StreamClosedError)."""
        return self._call("health()", self._s.health)

    def healthy(self) -> None:
        """Return if server, connection and JetStream work; else raise StreamUnhealthyError."""
        self._call("healthy()", self._s.healthy)

    # -- administration --------------------------------------------------------------------

    def declare_topic(
        self,
        topic: str,
        mode: TopicMode | None = None,
        max_msgs: int | None = None,
        max_bytes: int | None = None,
        max_age: float | dt.timedelta | None = None,
        discard: Discard = Discard.OLD,
        replicas: int = 1,
        retention: Retention = Retention.LIMITS,
    ) -> TopicInfo | None:
        """Set a topic's mode and, for JetStream, create or update its stream and limits."""
        return self._call(
            "declare_topic()",
            self._s.declare_topic,
            topic,
            mode,
            max_msgs=max_msgs,
            max_bytes=max_bytes,
            max_age=max_age,
            discard=discard,
            replicas=replicas,
            retention=retention,
        )

    def topics(self) -> list[TopicInfo]:
        """Every JetStream topic (stream) on the server."""
        return self._call("topics()", self._s.topics)

    def topic_info(self, topic: str) -> TopicInfo:
        """A stored topic's messages, bytes, sequences, consumers and size."""
        return self._call("topic_info()", self._s.topic_info, topic)

    def purge_topic(
        self,
        topic: str,
        subject: str | None = None,
        keep: int | None = None,
        up_to_seq: int | None = None,
    ) -> int:
        """Remove stored messages of ``topic``; returns how many were removed."""
        return self._call(
            "purge_topic()", self._s.purge_topic, topic, subject, keep=keep, up_to_seq=up_to_seq
        )

    def delete_topic(self, topic: str) -> None:
        """Delete the stream that stores ``topic``, with its messages and consumers."""
        self._call("delete_topic()", self._s.delete_topic, topic)

    def last_message(self, topic: str) -> Message | None:
        """The newest stored message on ``topic``, or None if none."""
        return self._call("last_message()", self._s.last_message, topic)

    def consumers(self, topic: str) -> list[ConsumerInfo]:
        """The consumers of a stored topic, with their lag."""
        return self._call("consumers()", self._s.consumers, topic)

    def consumer_info(self, topic: str, durable: str) -> ConsumerInfo:
        """One consumer's position: pending (lag), ack_pending, redelivered, ack_floor."""
        return self._call("consumer_info()", self._s.consumer_info, topic, durable)

    def delete_consumer(self, topic: str, durable: str) -> None:
        """Delete a durable consumer (its position is forgotten)."""
        self._call("delete_consumer()", self._s.delete_consumer, topic, durable)

    def reset_consumer(
        self,
        topic: str,
        durable: str,
        start_at: StartAt | None = None,
        start_time: dt.datetime | float | None = None,
        start_seq: int | None = None,
    ) -> ConsumerInfo:
        """Move a durable consumer to another position in its topic (see jk.Stream)."""
        return self._call(
            "reset_consumer()",
            self._s.reset_consumer,
            topic,
            durable,
            start_at,
            start_time=start_time,
            start_seq=start_seq,
        )

    def dead_letters(self, dlq_topic: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters stored on ``dlq_topic``, oldest first (at most ``limit``)."""
        return self._call("dead_letters()", self._s.dead_letters, dlq_topic, limit)

    def redrive(
        self,
        dlq_topic: str,
        *,
        limit: int | None = None,
        where: Callable[[DeadLetter], bool] | None = None,
    ) -> RedriveResult:
        """Publish dead letters again to their original topics, then delete them."""
        return self._call("redrive()", self._s.redrive, dlq_topic, limit=limit, where=where)

    def discard_dead_letter(self, dlq_topic: str, seq: int) -> bool:
        """Delete the dead letter at ``seq`` of ``dlq_topic``; False if none is there."""
        return self._call("discard_dead_letter()", self._s.discard_dead_letter, dlq_topic, seq)

"""Subscriptions: the local buffer, the handler workers, backpressure and stats.

Ownership: with ``concurrency=1`` (and no DROP_OLDEST) a subscription is *inline*:
nats-py's delivery task calls the handler itself and nats-py's queue is the buffer.
Otherwise the subscription owns ``concurrency`` worker tasks that take messages from
its own buffer (a deque) and run the handler; whatever feeds the buffer (the nats-py
callback in core mode, the pull engine in JetStream mode) only appends, waking one
idle worker per message. ``drain()`` stops the feed, lets the buffer empty and the
handlers finish, then returns; ``stop()`` stops at once, and in JetStream mode hands
every unfinished message back to the server (nak).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from ._codec import HandlerPlan
from ._connection import Connection
from ._errors import DecodeError
from ._errors import TimeoutError as jk_timeout
from ._message import Message
from ._validate import optional_number


def is_handler_failure(exc: BaseException) -> bool:
    """Whether what a handler raised is a failure of that one message.

    Everything is, ``BaseException`` subclasses included (a CancelledError the handler
    raised itself, custom ones), so no handler can kill its subscription. Except:
    KeyboardInterrupt and SystemExit, which must stop the program, and a CancelledError
    while this very task is being cancelled (``stop()``), which must end the task.
    """
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return False
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is None or task.cancelling() == 0
    return True


class AckPolicy(enum.Enum):
    """When a JetStream message is acknowledged (see the README for exact semantics)."""

    AUTO = "auto"  # acked when handed to the handler; failures are logged, not retried
    MANUAL = "manual"  # acked when the handler returns; a raise naks it (retry, then DLQ)
    NONE = "none"  # never acked (fastest replay)


class StartAt(enum.Enum):
    """Where a new consumer starts reading a JetStream topic."""

    NEW = "new"
    ALL = "all"
    BY_START_TIME = "by_start_time"
    LAST_PER_SUBJECT = "last_per_subject"
    BY_SEQUENCE = "by_start_sequence"


class Backpressure(enum.Enum):
    """What a full subscription buffer does (core mode; JetStream allows only BLOCK)."""

    BLOCK = "block"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"


@dataclasses.dataclass
class SubscriptionStats:
    """Counters of one subscription since it started.

    ``received`` counts the messages jetkit took from the connection (handled, waiting
    in jetkit's buffer, or dropped); ``failed`` counts handler exceptions and
    undecodable payloads; ``retried`` the naks jetkit sent to retry a failure;
    ``terminated`` the messages ended with term (dead-lettered ones included).
    """

    received: int = 0
    acked: int = 0
    naked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    failed: int = 0
    terminated: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Subscription:
    """A running subscription. Created by ``Stream.subscribe``; not built directly."""

    def __init__(
        self,
        topic: str,
        plan: HandlerPlan,
        *,
        concurrency: int,
        buffer_size: int,
        backpressure: Backpressure,
        logger: logging.Logger,
    ) -> None:
        self.topic = topic
        self.stats = SubscriptionStats()
        self._plan = plan
        self._concurrency = concurrency
        self._capacity = buffer_size
        self._policy = backpressure
        self._log = logger
        self._buffer: deque[Message] = deque()
        self._inflight: set[Message] = set()
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for a message
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._workers: list[asyncio.Task[None]] = []
        self._feeding = True
        self._closed = False
        self.on_closed: Callable[[Subscription], None] | None = None
        # inline mode: the handler runs in nats-py's delivery task and nats-py's queue
        # (of the subscription ``_sub``) is the buffer; there are no workers
        self._inline = False
        self._sub: NatsSubscription | None = None
        self._current: Message | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} topic={self.topic!r} {self.stats}>"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered(self) -> int:
        """Messages received and waiting for the handler."""
        if self._inline:
            return Connection.queue_size(self._sub) if self._sub is not None else 0
        return len(self._buffer)

    def _queued(self) -> list[Msg]:
        """Inline mode: the nats-py messages waiting in nats-py's queue."""
        return Connection.queued(self._sub) if self._sub is not None else []

    def _wrap(self, nmsg: Msg) -> Message:
        """A nats-py message as a jk.Message of this subscription."""
        return Message(nmsg.subject, nmsg.data, nmsg.headers, nmsg.reply)

    def _unfinished_inline(self) -> list[Message]:
        """Inline mode: the message in the handler, then those still queued."""
        held = [self._wrap(n) for n in self._queued()]
        if self._current is not None:
            held.insert(0, self._current)
        return held

    def _start_workers(self) -> None:
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(self._concurrency)]

    # -- feeding -------------------------------------------------------------------------

    def _offer(self, msg: Message) -> None:
        """Append without waiting, applying a DROP_* policy when full."""
        self.stats.received += 1
        buf = self._buffer
        if len(buf) >= self._capacity:
            if self._policy is Backpressure.DROP_NEWEST:
                self.stats.dropped += 1
                return
            if self._policy is Backpressure.DROP_OLDEST:
                buf.popleft()
                self.stats.dropped += 1
        buf.append(msg)
        if len(buf) >= self._capacity:
            self._has_room.clear()
        if self._idle:
            self._wake(1)

    def _wake(self, count: int) -> None:
        """Wake up to ``count`` idle workers (one per new message: no thundering herd)."""
        idle = self._idle
        while idle and count > 0:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    async def _put(self, msg: Message) -> None:
        """Append, waiting for room under BLOCK."""
        if self._policy is Backpressure.BLOCK:
            while len(self._buffer) >= self._capacity and self._feeding:
                await self._has_room.wait()
        self._offer(msg)

    # -- working -------------------------------------------------------------------------

    async def _work(self) -> None:
        buf = self._buffer
        while True:
            if not buf:
                if not self._feeding:
                    return
                waiter = asyncio.get_running_loop().create_future()
                self._idle.append(waiter)
                await waiter
                continue
            msg = buf.popleft()
            if not self._has_room.is_set() and len(buf) < self._capacity:
                self._has_room.set()
            self._after_take()
            self._inflight.add(msg)
            try:
                await self._process(msg)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("jetkit: internal error handling a message on %r", self.topic)
            finally:
                self._inflight.discard(msg)

    async def _run_inline(self, msg: Message) -> None:
        """Inline mode: handle one message in nats-py's delivery task."""
        self._current = msg
        try:
            await self._process(msg)
        except Exception:
            self._log.exception("jetkit: internal error handling a message on %r", self.topic)
        finally:
            self._current = None

    def _after_take(self) -> None:
        """Hook: a worker took a message from the buffer (JetStream pulls more)."""

    async def _process(self, msg: Message) -> None:
        """Run the handler for one message (core mode: no acks)."""
        try:
            args = self._plan.args(msg)
        except DecodeError as exc:
            self.stats.failed += 1
            self._log.error("jetkit: dropping undecodable message on %r: %s", msg.topic, exc)
            return
        try:
            await self._plan.fn(*args)
        except BaseException as exc:
            if not is_handler_failure(exc):
                raise
            self.stats.failed += 1
            self._log.error("jetkit: handler for %r failed", msg.topic, exc_info=exc)

    # -- stopping ------------------------------------------------------------------------

    async def _stop_feed(self) -> None:
        """Hook: stop receiving from NATS."""

    async def _release(self) -> None:
        """Hook: after the workers are done (JetStream deletes ephemeral consumers)."""

    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking messages, finish every buffered and in-flight one, then return.

        Raises jk.TimeoutError if that takes longer than ``timeout`` (the rest is
        then cancelled; in JetStream mode unfinished messages are redelivered later).
        """
        optional_number("timeout", timeout, minimum=0)
        if self._closed:
            return
        self._feeding = False
        if self._inline:
            await self._drain_inline(timeout)
            return
        await self._stop_feed()
        self._wake(len(self._idle))
        self._has_room.set()
        _, unfinished = await asyncio.wait(self._workers, timeout=timeout)
        if unfinished:
            abandoned = [*self._inflight, *self._buffer]
            await self._cancel_workers()
            with contextlib.suppress(Exception):
                await self._abandon(abandoned)
            await self._finish()
            raise jk_timeout(
                f"drain of {self.topic!r} did not finish within {timeout}s; "
                f"{len(abandoned)} messages were left unhandled"
            )
        await self._finish()

    async def _drain_inline(self, timeout: float | None) -> None:
        await self._stop_monitor()
        sub = self._sub
        assert sub is not None
        abandoned: list[Message] = []
        try:
            # nats-py's drain: unsubscribe, then hand every queued message to the handler
            await asyncio.wait_for(Connection.drain(sub), timeout)
        except TimeoutError:
            abandoned = self._unfinished_inline()
            Connection.stop_processing(sub)
        except Exception as exc:  # connection closed or draining: nothing more to handle
            self._log.debug("jetkit: drain of %r: %r", self.topic, exc)
            Connection.stop_processing(sub)
        with contextlib.suppress(Exception):
            await self._abandon(abandoned)
        await self._finish()
        if abandoned:
            raise jk_timeout(
                f"drain of {self.topic!r} did not finish within {timeout}s; "
                f"{len(abandoned)} messages were left unhandled"
            )

    async def stop(self) -> None:
        """Stop at once: buffered messages are discarded (JetStream: redelivered later)."""
        if self._closed:
            return
        self._feeding = False
        if self._inline:
            await self._stop_monitor()
            abandoned = self._unfinished_inline()
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
                Connection.stop_processing(self._sub)
        else:
            await self._stop_feed()
            abandoned = [*self._inflight, *self._buffer]
            await self._cancel_workers()
        with contextlib.suppress(Exception):
            await self._abandon(abandoned)
        await self._finish()

    async def _stop_monitor(self) -> None:
        """Hook: stop background work before an inline drain/stop (JetStream's monitor)."""

    async def _abandon(self, msgs: list[Message]) -> None:
        """Hook: messages that ``stop()`` will not handle (JetStream naks them)."""

    async def _cancel_workers(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _finish(self) -> None:
        self._closed = True
        self._buffer.clear()
        with contextlib.suppress(Exception):
            await self._release()
        if self.on_closed is not None:
            self.on_closed(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.drain()


class CoreSubscription(Subscription):
    """A plain NATS subscription: at-most-once, in memory.

    With ``concurrency=1`` and BLOCK or DROP_NEWEST (the common case) the handler runs
    right in nats-py's delivery task and nats-py's own queue, bounded to
    ``buffer_size``, is the buffer: past it, its slow-consumer protection drops the
    newest (counted). Otherwise messages go through jetkit's buffer and workers, and
    nats-py's queue is a second stage in front of it.
    """

    def __init__(
        self,
        conn: Connection,
        topic: str,
        plan: HandlerPlan,
        *,
        queue_group: str | None,
        concurrency: int,
        buffer_size: int,
        backpressure: Backpressure,
        logger: logging.Logger,
    ) -> None:
        super().__init__(
            topic,
            plan,
            concurrency=concurrency,
            buffer_size=buffer_size,
            backpressure=backpressure,
            logger=logger,
        )
        self._conn = conn
        self._queue = queue_group or ""
        self._inline = self._concurrency == 1 and self._policy is not Backpressure.DROP_OLDEST

    @property
    def sid(self) -> int | None:
        return Connection.sid(self._sub) if self._sub is not None else None

    async def _start(self) -> None:
        if self._inline:
            cb, limit = self._on_msg_inline, self._capacity
        else:
            self._start_workers()
            blocking = self._policy is Backpressure.BLOCK
            cb = self._on_msg
            limit = self._capacity if blocking else self._capacity + 1024
        self._sub = await self._conn.subscribe(self.topic, cb, queue=self._queue, limit=limit)
        # a round trip: once subscribe() returns, the server knows about us, so a
        # publish from any connection reaches this subscription
        await self._conn.flush(timeout=5)

    async def _on_msg_inline(self, nmsg: Msg) -> None:
        self.stats.received += 1
        await self._run_inline(Message(nmsg.subject, nmsg.data, nmsg.headers, nmsg.reply))

    async def _on_msg(self, nmsg: Msg) -> None:
        msg = Message(nmsg.subject, nmsg.data, nmsg.headers, nmsg.reply)
        if self._policy is Backpressure.BLOCK:
            await self._put(msg)
        else:
            self._offer(msg)

    async def _stop_feed(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            # messages nats-py already queued for us still reach the buffer
            for nmsg in Connection.take_queued(self._sub):
                self._offer(self._wrap(nmsg))

"""Subscriptions: the local buffer, the handler workers, backpressure and stats.

Ownership: a subscription owns ``concurrency`` worker tasks that take messages from
its buffer (a deque) and run the handler. What feeds the buffer is a *sink* the
connection's parser calls for every message (core mode), or the pull engine's sink
(JetStream mode): it only appends, waking one idle worker per message, never
awaits. A worker handles everything buffered before it waits again, so a burst costs
one wake-up. ``drain()`` stops the feed, lets the buffer empty and the handlers
finish, then returns; ``stop()`` stops at once, and in JetStream mode hands every
unfinished message back to the server (nak).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from nats.aio.subscription import Subscription as NatsSubscription

from ._codec import HandlerPlan
from ._connection import Connection
from ._counting import BUCKETS
from ._errors import DecodeError
from ._errors import TimeoutError as jk_timeout
from ._message import Message
from ._validate import flag, optional_number

if TYPE_CHECKING:
    from ._counting import Histogram
    from ._tracing import Tracing


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
    for a handler, or dropped); ``failed`` counts handler exceptions and
    undecodable payloads; ``retried`` the naks jetkit sent to retry a failure;
    ``terminated`` the messages ended with term (dead-lettered ones included);
    ``emitted`` the outputs an ``emit=`` subscription stored (duplicates not counted).
    """

    received: int = 0
    acked: int = 0
    naked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    failed: int = 0
    terminated: int = 0
    emitted: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Subscription:
    """A running subscription. Created by ``Stream.subscribe``; not built directly."""

    # tracing on: what the failure paths tell about the current attempt (the attempts'
    # spans wrap ``_process`` on the instance: the paths of a message never test this)
    _tracer: Tracing | None = None

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
        self._waking = 0  # workers woken that have not run yet
        # a full buffer drops (core mode); JetStream's pull credit bounds it instead
        self._drops = False
        self._workers: list[asyncio.Task[None]] = []
        self._feeding = True  # False once drain/stop began: no more pulls
        self._fed_out = False  # True once nothing can reach the buffer any more
        self._closed = False
        self.on_closed: Callable[[Subscription], None] | None = None
        self._sub: NatsSubscription | None = None  # the routed subscription feeding us
        self._timer: Histogram | None = None  # metrics on: handling times go there

    def __repr__(self) -> str:
        return f"<{type(self).__name__} topic={self.topic!r} {self.stats}>"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered(self) -> int:
        """Messages received and waiting for the handler."""
        return len(self._buffer)

    @property
    def metric_consumer(self) -> str:
        """The ``consumer`` label of this subscription's metrics ("": none)."""
        return ""

    def _fields(self, msg: Message) -> dict[str, object]:
        """The ``extra`` fields of a log record about ``msg``: its topic, seq and consumer,
        and with tracing on the ids of the current trace and span."""
        fields: dict[str, object] = {
            "topic": msg.topic,
            "seq": msg.seq,
            "consumer": self.metric_consumer or None,
        }
        if self._tracer is not None:
            fields.update(self._tracer.log_ids())
        return fields

    def time_handler(self, histogram: Histogram) -> None:
        """Observe each message's handling time in ``histogram`` from now on (metrics
        on): decoding, the handler, and settling it (the ack is only queued)."""
        self._timer = histogram

    async def _start_or_undo(self, start: Callable[[], Awaitable[None]]) -> None:
        """Run ``start``; if it fails, stop the workers and the feed it began."""
        try:
            await start()
        except BaseException:
            self._feeding = False
            self._fed_out = True
            with contextlib.suppress(Exception):
                await self._stop_feed()
            await self._cancel_workers()
            raise

    def _start_workers(self) -> None:
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(self._concurrency)]

    # -- feeding -------------------------------------------------------------------------

    def _offer(self, msg: Message) -> None:
        """Append without waiting; when full, apply the drop policy (core mode only)."""
        self.stats.received += 1
        buf = self._buffer
        if len(buf) >= self._capacity and self._drops:
            self.stats.dropped += 1
            if self._policy is not Backpressure.DROP_OLDEST:
                return
            buf.popleft()
        buf.append(msg)
        if self._idle and not self._waking:
            self._wake(1)

    def _wake(self, count: int) -> None:
        """Wake up to ``count`` idle workers.

        One at a time: a woken worker that takes a message and sees more wakes the
        next (``_work``), so a burst that one worker handles without pausing costs one
        wake-up, and handlers that do wait still get their ``concurrency`` quickly.
        """
        idle = self._idle
        while idle and count > 0:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1
                count -= 1

    # -- working -------------------------------------------------------------------------

    async def _work(self) -> None:
        buf = self._buffer
        while True:
            if not buf:
                if self._fed_out:
                    return
                waiter = asyncio.get_running_loop().create_future()
                self._idle.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter.done() and not waiter.cancelled():
                        self._waking -= 1
                continue
            msg = buf.popleft()
            if buf and self._idle and not self._waking:
                self._wake(1)  # more waiting: the next worker may take it meanwhile
            self._after_take()
            self._inflight.add(msg)
            try:
                timer = self._timer
                if timer is None:
                    await self._process(msg)
                else:
                    started = perf_counter()
                    await self._process(msg)
                    elapsed = perf_counter() - started  # Histogram.observe, inlined
                    timer.counts[bisect_left(BUCKETS, elapsed)] += 1
                    timer.sum += elapsed
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception(
                    "internal error handling a message on %r", self.topic, extra=self._fields(msg)
                )
            finally:
                self._inflight.discard(msg)

    def _after_take(self) -> None:
        """Hook: a worker took a message from the buffer (JetStream pulls more)."""

    async def _process(self, msg: Message) -> None:
        """Run the handler for one message (core mode: no acks)."""
        try:
            args = self._plan.args(msg)
        except DecodeError as exc:
            self.stats.failed += 1
            if self._tracer is not None:
                self._tracer.failed(exc)
            self._log.error(
                "dropping undecodable message on %r: %s", msg.topic, exc, extra=self._fields(msg)
            )
            return
        try:
            await self._plan.fn(*args)
        except BaseException as exc:
            if not is_handler_failure(exc):
                raise
            self.stats.failed += 1
            if self._tracer is not None:
                self._tracer.failed(exc)
            self._log.error(
                "handler for %r failed", msg.topic, exc_info=exc, extra=self._fields(msg)
            )

    # -- stopping ------------------------------------------------------------------------

    async def _stop_feed(self) -> None:
        """Hook: stop receiving from NATS."""

    async def _release(self) -> None:
        """Hook: after the workers are done (JetStream deletes ephemeral consumers)."""

    async def drain(self, timeout: float | None = None, *, hand_back: bool = False) -> None:
        """Stop taking messages, finish every buffered and in-flight one, then return.

        ``hand_back=True``: only the messages already in a handler are finished; those
        received and not yet handed to one go back at once (JetStream: a nak without
        delay, so another subscriber gets them now and they use up no attempt; core:
        dropped, and counted). What a service stopping on SIGTERM wants.

        Raises jk.TimeoutError if that takes longer than ``timeout`` (the rest is
        then cancelled; in JetStream mode unfinished messages are redelivered later).
        """
        optional_number("timeout", timeout, minimum=0)
        flag("hand_back", hand_back)
        if self._closed:
            return
        self._feeding = False
        await self._stop_feed()
        self._fed_out = True
        if hand_back:
            waiting = self._take_waiting()
            if waiting:
                with contextlib.suppress(Exception):
                    await self._hand_back_waiting(waiting)
        self._wake(len(self._idle))
        _, unfinished = await asyncio.wait(self._workers, timeout=timeout)
        if unfinished:
            abandoned = self._unfinished()
            await self._cancel_workers()
            with contextlib.suppress(Exception):
                await self._abandon(abandoned)
            await self._finish()
            raise jk_timeout(
                f"drain of {self.topic!r} did not finish within {timeout}s; "
                f"{len(abandoned)} messages were left unhandled"
            )
        await self._finish()

    async def stop(self) -> None:
        """Stop at once: buffered messages are discarded (JetStream: redelivered later)."""
        if self._closed:
            return
        self._feeding = False
        await self._stop_feed()
        self._fed_out = True
        abandoned = self._unfinished()
        await self._cancel_workers()
        with contextlib.suppress(Exception):
            await self._abandon(abandoned)
        await self._finish()

    def _take_waiting(self) -> list[Message]:
        """Remove and return the messages received and not yet handed to a handler."""
        waiting = list(self._buffer)
        self._buffer.clear()
        return waiting

    async def _hand_back_waiting(self, msgs: list[Message]) -> None:
        """Hook: ``drain(hand_back=True)`` gives these back (core: they are dropped)."""
        self.stats.dropped += len(msgs)

    def _unfinished(self) -> list[Message]:
        """Every message taken from the server and not finished: in handlers, buffered."""
        return [*self._inflight, *self._buffer]

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

    The connection's parser hands each message to ``_sink``. A core subscription
    cannot stop the server from sending: when the buffer is full, ``DROP_NEWEST``
    drops the incoming message and ``DROP_OLDEST`` the oldest buffered one. ``BLOCK``
    stops taking messages into the buffer: they wait in a second stage of the same
    size in front of it, moving in as the handlers free room, and only what finds
    that full too is dropped. Under ``BLOCK`` a filling buffer also asks the parser to
    let the handlers run (it yields to the event loop once before reading on). Every
    drop is counted.
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
        self._drops = True
        # a topic without wildcards is the subject of every message
        self._exact = "*" not in topic and ">" not in topic
        blocking = backpressure is Backpressure.BLOCK
        self._high = max(1, buffer_size // 2) if blocking else 0
        # BLOCK: messages not yet taken into the full buffer
        self._waiting: deque[Message] | None = deque() if blocking else None

    @property
    def metric_consumer(self) -> str:
        return self._queue

    @property
    def buffered(self) -> int:
        """Messages received and waiting for the handler (BLOCK: both stages)."""
        return len(self._buffer) + (len(self._waiting) if self._waiting is not None else 0)

    async def _start(self) -> None:
        self._start_workers()
        await self._start_or_undo(self._subscribe)

    async def _subscribe(self) -> None:
        self._sub = await self._conn.subscribe(self.topic, self._sink, queue=self._queue)
        # a round trip: once subscribe() returns, the server knows about us, so a
        # publish from any connection reaches this subscription
        await self._conn.flush(timeout=5)

    def _sink(self, subject: bytes, reply: bytes, hdr: bytes | None, payload: bytes) -> None:
        """The parser's hand-over: one message, as received."""
        msg = Message(
            self.topic if self._exact else subject.decode(),
            payload,
            None,
            reply.decode() if reply else None,
            None,
            hdr,
        )
        waiting = self._waiting
        if waiting is None:
            self._offer(msg)
            return
        if waiting or len(self._buffer) >= self._capacity:
            self._conn.parser.pressure = True
            self.stats.received += 1
            if len(waiting) < self._capacity:
                waiting.append(msg)
            else:
                self.stats.dropped += 1
            return
        self._offer(msg)
        if len(self._buffer) >= self._high:
            self._conn.parser.pressure = True

    def _after_take(self) -> None:
        if self._waiting:  # room in the buffer: the oldest waiting moves in
            self._buffer.append(self._waiting.popleft())

    async def _stop_feed(self) -> None:
        if self._sub is not None:
            await self._conn.unsubscribe(self._sub)
        # what waited for room is handled too (drain) or discarded with the buffer (stop)
        waiting = self._waiting
        if waiting:
            self._buffer.extend(waiting)
            waiting.clear()

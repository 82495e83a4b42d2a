"""Ordered per key: ``subscribe(..., concurrency=N, key=...)`` on a JetStream topic.

A ``KeyedSubscription`` is a JetStreamSubscription whose buffer is split by key
(docs/concepts/ordered-keys.md has the user-facing rules):

* ``_buffer`` holds the messages that may run now: no other message of their key is
  running or ready. ``_lanes[key]`` exists while a message of ``key`` is ready or
  running and holds, in stream order, the later messages of that key; when the
  running one finishes, its worker moves the next of the lane into ``_buffer``.
  Messages without a key (None) go straight to ``_buffer``.
* Lane messages count against ``buffer_size`` (``buffered``), so pulling stops when
  the buffer is full whatever keys it holds: memory stays bounded.
* A failing MANUAL handler is retried **in place**: the worker keeps the message (and
  so its key), sleeps the backoff delay and runs the handler again; it never goes
  back to the server, so nothing of its key can overtake it. ``KeyedMessage.num_delivered``
  adds the in-place retries to the server's delivery count, so ``decide`` and the
  dead letter count every attempt. A dead letter the DLQ refuses is retried in place
  too.
* The monitor's in-progress acks cover lane messages (``_unfinished``). If the server
  still redelivers a message held here, the held one takes over the new delivery's
  reply subject and the copy is dropped (``_holding``: sequence -> message).
* After a server restart the pulled messages are kept, in key order (a subscription
  without a key drops them; see ``on_reconnect``).
* ``drain()``/``stop()`` wake the backoff sleepers (``_halt``): a message waiting to
  be retried is handed back (nak) and so are the messages of its lane, in stream order.
  Handing back keeps the order for the next subscription on the consumer: nothing in
  flight is dropped when unsubscribing (``_stop_feed``), the server forgets the stopped
  pull requests first (``_forget_pulls``), and the naks go at once, in stream order.

Nothing here runs for a subscription without ``key=``: ``_subscribe`` builds this
class only when the option is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Hashable
from pathlib import Path
from time import perf_counter
from typing import Any

from ._attempts import AttemptLog
from ._codec import HandlerPlan
from ._connection import Connection
from ._consumer import UNREADABLE_DELAY, UNREADABLE_TRIES, DeadLetterSink, JetStreamSubscription
from ._counting import BUCKETS
from ._emit import Emitter
from ._errors import describe_error
from ._jsapi import JsApi
from ._message import NAK, Message
from ._options import SubscribeSettings
from ._retry import decide
from ._subscription import AckPolicy
from ._wire import parse_headers


class KeyedMessage(Message):
    """A message of a keyed subscription: its key and its attempts made in place."""

    __slots__ = ("_handed_back", "_key", "_poison", "_retries", "_retry_after")

    _key: Hashable | None
    _retries: int  # handler runs retried in place, after the server's last delivery
    _retry_after: float | None  # set by a failure to retry: the backoff delay
    _handed_back: bool  # given back to the server while its lane still held messages
    _poison: str | None  # the key function raised: dead-letter it with this error

    @property
    def num_delivered(self) -> int:
        """The handler call this is (max_deliver set: see ``_attempts``); else the
        server's delivery count plus the attempts retried in place."""
        return self._attempt or self._server_deliveries() + self._retries


def _header_key(name: str) -> Callable[[Message], Hashable | None]:
    """The key function of ``key="Name"``: that header's value ("" or missing: None).

    It reads the one header from the raw block rather than parsing them all; anything
    unusual (no raw block, the name spaced oddly) goes to ``msg.headers``, which gives
    the same answer.
    """
    exact = name.encode()
    needle = b"\r\n" + exact + b":"

    def key(msg: Message) -> Hashable | None:
        raw = msg._raw_headers
        if raw is not None and msg._headers is None:
            at = raw.rfind(needle)  # a repeated header: the last value counts
            if at >= 0:
                start = at + len(needle)
                value = raw[start : raw.find(b"\r\n", start)].strip()
                return value.decode("utf-8", "replace") if value else None
            if exact not in raw:
                return None
        return msg.headers.get(name) or None

    return key


def _check_key(key: object) -> None:
    """Raise if a key function's result cannot be a key: unhashable, or awaitable (an
    async function wrapped in a plain one: each coroutine would be a key of its own, so
    nothing would be ordered)."""
    if inspect.isawaitable(key):
        if inspect.iscoroutine(key):
            key.close()  # never awaited: no "was never awaited" warning later
        raise TypeError(
            f"it returned {type(key).__name__} {key!r}, an awaitable: the key must be "
            "computed without awaiting (a plain function returning str or None)"
        )
    hash(key)


def _seq(msg: KeyedMessage) -> int:
    return msg.seq or 0


# Handing back: how long to wait for the server to forget the stopped pull requests
FORGET_TIMEOUT = 2.0


class KeyedSubscription(JetStreamSubscription):
    """A JetStream subscription ordered per key (``subscribe(..., key=...)``)."""

    def __init__(
        self,
        conn: Connection,
        api: JsApi,
        topic: str,
        plan: HandlerPlan,
        opts: SubscribeSettings,
        *,
        stream: str,
        config: dict[str, Any],
        shared: bool,
        dead_letter: DeadLetterSink,
        attempts: AttemptLog | None,
        emitter: Emitter | None,
        store: Path | None,
        logger: logging.Logger,
    ) -> None:
        super().__init__(
            conn,
            api,
            topic,
            plan,
            opts,
            stream=stream,
            config=config,
            shared=shared,
            dead_letter=dead_letter,
            attempts=attempts,
            emitter=emitter,
            store=store,
            logger=logger,
        )
        key = opts.key
        assert key is not None
        self._copies = True  # a copy run again would break its key's order
        self._key_of: Callable[[Message], Hashable | None] = (
            _header_key(key) if isinstance(key, str) else key
        )
        self._check_keys = not isinstance(key, str)  # a header's value is a str
        self._lanes: dict[Hashable, deque[KeyedMessage]] = {}
        self._held = 0  # messages in the lanes
        self._holding: dict[int, KeyedMessage] = {}  # seq -> keyed message not finished
        self._peak = 0  # the most messages ever buffered (lanes included)
        self._halt = asyncio.Event()  # set when drain/stop begins: wakes backoff sleepers
        self._unsubscribed = asyncio.Event()  # set once nothing more can arrive
        self._forgetting: asyncio.Future[None] | None = None  # see _forget_pulls

    @property
    def buffered(self) -> int:
        """Messages received and waiting for the handler (those held behind their key
        included)."""
        return len(self._buffer) + self._held

    # -- feeding ---------------------------------------------------------------------------

    def _sink(self, subject: bytes, reply: bytes, hdr: bytes | None, payload: bytes) -> None:
        now = self._last_activity = time.monotonic()
        if not reply:
            self._on_status(parse_headers(hdr) if hdr else {})
            return
        if self._requested > 0:
            self._requested -= 1
        msg = KeyedMessage(
            self.topic if self._exact else subject.decode(),
            payload,
            None,
            reply.decode(),
            self,
            hdr,
        )
        self._last_msg = msg
        msg._held_since = now
        msg._retries = 0
        msg._retry_after = None
        msg._handed_back = False
        msg._poison = None
        try:
            key = self._key_of(msg)
            if key is not None and self._check_keys and type(key) is not str:
                _check_key(key)  # a bad key fails here, as this message's failure
        except BaseException as exc:  # it runs in the connection's reader: nothing escapes
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            key = None
            msg._poison = f"the subscription's key function failed: {describe_error(exc)}"
        msg._key = key
        if (
            self._finished_late
            and not self._first(reply)
            and msg._server_deliveries() > 1
            and msg.seq in self._finished_late
        ):
            self._ack_copy(msg)  # it succeeded here after being held too long
            return
        self._offer(msg)
        if self._requested == 0:
            self._maybe_pull()

    def _offer(self, msg: Message) -> None:
        self.stats.received += 1
        kmsg: KeyedMessage = msg  # type: ignore[assignment]  # (no cast call: hot path)
        key = kmsg._key
        if key is not None:
            seq = kmsg.seq or 0  # parsed once here; ``_seq`` reads it after
            held = self._holding.get(seq)
            if held is not None and not held.settled:
                # the server redelivered a message still held here: keep the one we
                # have (its place in the key's order), answering the newest delivery
                held.reply = kmsg.reply
                held._tokens = None
                held._held_since = kmsg._held_since
                return
            self._holding[seq] = kmsg
            lane = self._lanes.get(key)
            if lane is None:
                self._lanes[key] = deque()
            else:
                if lane and seq < (lane[-1]._seq or 0):
                    insort(lane, kmsg, key=_seq)  # a redelivery: back in stream order
                else:
                    lane.append(kmsg)
                self._held += 1
                size = len(self._buffer) + self._held
                if size > self._peak:
                    self._peak = size
                return
        buf = self._buffer
        buf.append(msg)
        if len(buf) + self._held > self._peak:
            self._peak = len(buf) + self._held
        if self._idle and not self._waking:
            self._wake(1)

    def _after_take(self) -> None:
        requested = self._requested
        free = self._capacity - len(self._buffer) - self._held - requested
        if free >= self._threshold or (free > 0 and requested == 0):
            self._maybe_pull()

    # -- working ---------------------------------------------------------------------------

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
            msg: KeyedMessage = buf.popleft()  # type: ignore[assignment]
            if buf and self._idle and not self._waking:
                self._wake(1)
            self._after_take()
            self._inflight.add(msg)
            try:
                if msg._poison is None and self._timer is None:
                    await self._process(msg)  # the common case, inlined
                    if msg._retry_after is not None:
                        await self._run(msg)
                else:
                    await self._run(msg, first=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception(
                    "internal error handling a message on %r", self.topic, extra=self._fields(msg)
                )
            finally:
                self._inflight.discard(msg)
                self._done(msg)

    async def _run(self, msg: KeyedMessage, first: bool = False) -> None:
        """Handle ``msg`` to its end: success, dead letter, or handed back (``first``:
        no attempt ran yet; else the first failed and asked for a retry)."""
        if msg._poison is not None:
            self.stats.failed += 1
            self._log.error(
                "consumer %r: poison message on %r seq %s: %s",
                self.consumer,
                msg.topic,
                msg.seq,
                msg._poison,
                extra=self._fields(msg),
            )
            await self._dead_letter(msg, msg._poison)
            return
        while True:
            if first:
                await self._attempt(msg)
            first = True
            delay = msg._retry_after
            if delay is None:
                return
            msg._retry_after = None
            if not await self._pause(delay):
                await self._hand_back(msg)
                return
            msg._retries += 1

    async def _attempt(self, msg: KeyedMessage) -> None:
        """One run of the handler (timed when metrics are on)."""
        timer = self._timer
        if timer is None:
            await self._process(msg)
            return
        started = perf_counter()
        await self._process(msg)
        elapsed = perf_counter() - started  # Histogram.observe, inlined
        timer.counts[bisect_left(BUCKETS, elapsed)] += 1
        timer.sum += elapsed

    async def _retry_or_dead_letter(self, msg: Message, exc: BaseException) -> None:
        attempt = msg.num_delivered
        retry, delay = decide(attempt, self._max_deliver, self._backoff)
        if not retry or not isinstance(msg, KeyedMessage):
            await super()._retry_or_dead_letter(msg, exc)
            return
        self._log.warning(
            "consumer %r: handler for %r seq %s failed on attempt %d (%s); retrying "
            "in place%s (key %r waits for it)",
            self.consumer,
            msg.topic,
            msg.seq,
            attempt,
            describe_error(exc),
            f" in {delay:g}s" if delay else "",
            msg._key,
            extra=self._fields(msg),
        )
        if self._tracer is not None:
            self._tracer.event("retry in place", {"jetkit.retry.delay": delay or 0.0})
        self.stats.retried += 1
        await self._count_call(msg)
        msg._retry_after = delay or 0.0

    async def _read_calls(self, msg: Message) -> int | None:
        """As for any subscription, but read again in place (the key waits): given back,
        the message would come after the later messages of its key."""
        if self._attempts is None:
            return 0
        for _ in range(UNREADABLE_TRIES):
            calls = await self._attempts.read(self._record(msg.seq or 0))
            if calls is not None:
                return calls
            if not await self._pause(UNREADABLE_DELAY):
                if isinstance(msg, KeyedMessage):
                    await self._hand_back(msg)
                return None
        return 0

    async def _dead_letter(self, msg: Message, error: str, deliveries: int | None = None) -> None:
        """Publish the dead letter, then terminate; if the DLQ refuses it, try again in
        place (the key waits) until it is taken or the subscription stops."""
        refused = 0
        while not await self._send_dead_letter(msg, error, deliveries):
            if self._ack is AckPolicy.NONE or msg.settled:
                return
            refused += 1
            if not await self._pause(decide(refused, None, self._backoff).delay or 1.0):
                self._remember_unsent(msg, error)
                if isinstance(msg, KeyedMessage):
                    await self._hand_back(msg)
                else:
                    await msg.nak()
                return
        if self._ack is not AckPolicy.NONE and not msg.settled:
            await msg.term(f"jetkit: {error}"[:256])

    async def _pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds before a retry: False if drain/stop began meanwhile."""
        if not self._feeding:
            return False
        if delay <= 0:
            await asyncio.sleep(0)
            return self._feeding
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._halt.wait(), delay)
        return self._feeding

    async def _hand_back(self, msg: KeyedMessage) -> None:
        """Give ``msg`` back to the server, then the messages held behind it.

        The lane stays in place until its messages are naked: if this worker is
        cancelled meanwhile (``stop()``, a drain timeout), they are still among the
        unfinished messages that ``_abandon`` gives back.
        """
        msg._handed_back = True
        await self._forget_pulls()
        key = msg._key
        lane = self._lanes.get(key) if key is not None else None
        later = list(lane) if lane else []
        await self._give_back([msg, *later])
        if lane is not None and self._lanes.get(key) is lane:
            del self._lanes[key]
            self._held -= len(later)
            for held in later:
                if self._holding.get(_seq(held)) is held:
                    del self._holding[_seq(held)]

    async def _forget_pulls(self) -> None:
        """Before anything is handed back: wait until the feed stopped, then make the
        server drop this subscription's pull requests.

        A pull request outlives its subscription on the server until it expires. The
        server takes the first message queued for redelivery, finds that request's
        inbox gone, and puts the message at the *back* of its redelivery queue, behind
        the later messages of its key. Asking for the consumer's info makes the server
        check its pull requests and drop those nobody listens to any more. Done once per
        subscription (shared by every hand-back, and not cancelled with a worker).
        """
        if self._forgetting is None:
            self._forgetting = asyncio.ensure_future(self._forget())
        await asyncio.shield(self._forgetting)

    async def _forget(self) -> None:
        await self._unsubscribed.wait()
        if self._ephemeral or not self._conn.nc.is_connected:
            return  # deleted with this subscription / no requests left to deliver to
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._api.call(f"CONSUMER.INFO.{self.stream}.{self.consumer}"), FORGET_TIMEOUT
            )

    def _done(self, msg: KeyedMessage) -> None:
        """``msg`` is finished: the next message of its key may run."""
        key = msg._key
        if key is None:
            return
        seq = msg._seq or 0
        if self._holding.get(seq) is msg:
            del self._holding[seq]
        if msg._handed_back:
            return
        lane = self._lanes.get(key)
        if lane is None:
            return
        if lane:
            self._held -= 1
            self._buffer.append(lane.popleft())  # this worker takes it next, or another
        else:
            del self._lanes[key]

    # -- reconnecting and stopping ---------------------------------------------------------

    def on_reconnect(self, restarted: bool = False) -> None:
        """Unlike a subscription without ``key=``, a restarted server does not make this
        one drop what it pulled before: dropping would let later messages of a key run
        before the dropped ones come back (after ``ack_wait``, if the server remembers
        delivering them). It keeps them, in key order. A delivery the server forgot
        comes again; while the message is still held the held one takes it over, else
        it is handled a second time (at-least-once)."""
        if restarted:
            self.connection_lost()
            if self.buffered:
                self._log.info(
                    "the server restarted; the %d messages of %r pulled before are "
                    "kept in key order",
                    self.buffered,
                    self.topic,
                )
        super().on_reconnect(False)

    def _take_waiting(self) -> list[Message]:
        """The ready messages and those held behind them (handed back in stream order by
        ``_give_back``). The messages held behind one still in a handler stay, to run
        after it: handed back now, another subscriber could run them first."""
        running = {msg._key for msg in self._inflight if isinstance(msg, KeyedMessage)}
        waiting: list[Message] = list(self._buffer)
        self._buffer.clear()
        for key in [k for k in self._lanes if k not in running]:
            lane = self._lanes.pop(key)
            self._held -= len(lane)
            waiting.extend(lane)
        return waiting

    def _unfinished(self) -> list[Message]:
        held = [msg for lane in self._lanes.values() for msg in lane]
        return [*self._inflight, *self._buffer, *held]

    async def _abandon(self, msgs: list[Message]) -> None:
        await self._give_back(msgs)

    async def _give_back(self, msgs: list[Message]) -> None:
        """Nak ``msgs`` at once, in stream order, once the server forgot this
        subscription's pull requests (``_forget_pulls``).

        The server queues naked messages for redelivery in the order of the naks, ahead
        of anything it has not delivered yet. The last nak waits for the server's
        answer: the server handles the acks of a connection one after the other, so by
        then every nak is queued, and a subscription that starts on this consumer next
        gets them before the messages that come after them in the stream.
        """
        # (an ephemeral consumer is deleted when this subscription ends: nobody takes
        # its messages next, so the order of its naks does not matter)
        ordered = not self._ephemeral
        await self._forget_pulls()
        left = [msg for msg in sorted(msgs, key=lambda m: m.seq or 0) if not msg.settled]
        for msg in left:
            wait = ordered and msg is left[-1] and self._conn.nc.is_connected
            with contextlib.suppress(Exception):
                await msg._settle(NAK, wait)

    async def _stop_feed(self) -> None:
        """Stop receiving, without dropping what the server already sent.

        A subscription without ``key=`` drops deliveries that arrive after it
        unsubscribed; they come back after ``ack_wait``. Here such a message would come
        back behind the later messages of its key, so the UNSUB goes first, a round
        trip makes sure everything sent before it has arrived (into the buffer: drained
        or handed back with the rest), and only then is the route removed.
        """
        self._halt.set()
        try:
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    if not self._conn.nc.is_connected:
                        raise ConnectionError  # nothing in flight to wait for
                    await self._conn.unsubscribe_now(self._sub)
                    await self._conn.flush(timeout=FORGET_TIMEOUT)
                await self._conn.unsubscribe(self._sub)
            await self._stop_monitor()
        finally:
            self._unsubscribed.set()

"""The JetStream pull engine: continuous pull, keep-alive, copies, acks.

(The consumer's config on the server is ``_consumer_config``'s; what is done with each
delivery, attempts, retries and dead letters, is ``_consumer``'s.)

Design (one PullSubscription):

* A pull consumer on the server; a private inbox subscription receives its
  messages. ``_requested`` counts messages asked for and not yet received; a new
  pull is sent whenever ``buffer_size - buffered - _requested`` reaches half the
  buffer, so batches stay ahead of the handlers and at most ``buffer_size``
  messages are ever held unhandled (flow control: nothing is dropped).
* Pulls carry an idle heartbeat. The monitor task re-issues pulls when neither a
  message nor a heartbeat arrived for two heartbeat periods (stalled or restarted
  server), recreating the consumer if it vanished; a reconnect does the same at once.
* The monitor also sends ``+WPI`` (in progress) for every message held longer than
  half of ``ack_wait`` (buffered or in a running handler), so nothing is redelivered
  just for waiting or for a slow handler.
* Copies: if the event loop was blocked for longer than ``ack_wait``, no ``+WPI`` went
  out and the server delivers a copy of a message still held here. A copy (a
  redelivery, told by its reply subject without parsing it) of a message still
  unfinished here is taken over by that message (it answers the newest delivery); a
  copy of one that succeeded after being held too long is acked, not run again.
* The inbox is a routed subscription: the connection's parser calls ``_sink`` with
  each delivery as received; it becomes a Message in the buffer (the workers run the
  handler, see ``_subscription``).
* Acks are fire-and-forget publishes to the message's reply subject, put straight
  into the connection's outgoing buffer (``ack(wait=True)`` waits for the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from time import monotonic
from typing import Any

from ._attempts import incarnation
from ._codec import HandlerPlan
from ._connection import Connection
from ._consumer_config import ensure_consumer
from ._errors import ConnectionLostError, JetkitError, NotFoundError, TimeoutError
from ._jsapi import JsApi
from ._message import ACK, NAK, TERM, WPI, Message
from ._options import SubscribeSettings
from ._subscription import AckPolicy, Subscription
from ._time import nanos
from ._wire import parse_headers, pub

PULL_EXPIRES = 30.0
HEARTBEAT = 5.0
REMEMBERED = 10_000  # per-message notes kept at most (the oldest are forgotten)


class PullSubscription(Subscription):
    """A subscription on a JetStream topic, fed by a pull consumer (the handling of each
    message is ``JetStreamSubscription``'s)."""

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
        store: Path | None,
        logger: logging.Logger,
    ) -> None:
        super().__init__(
            topic,
            plan,
            concurrency=opts.concurrency,
            buffer_size=opts.buffer_size,
            backpressure=opts.backpressure,
            logger=logger,
        )
        self._store = store
        self._conn = conn
        self._api = api
        self.stream = stream
        self._config = config
        self.consumer = config.get("durable_name") or config["name"]
        self._ephemeral = "durable_name" not in config and not shared
        self._ack = opts.ack
        self._ack_wait = opts.ack_wait
        self._recreate = opts.recreate
        self._requested = 0
        self._threshold = max(1, self._capacity // 2)
        self._last_activity = time.monotonic()
        self._last_msg: Message | None = None  # its seq tells an ephemeral where to resume
        self._inbox = ""
        self._monitor: asyncio.Task[None] | None = None
        self._exact = "*" not in topic and ">" not in topic
        self._pull_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{self.consumer}"
        self._pull_tail = b', "expires": %d, "idle_heartbeat": %d}' % (
            nanos(PULL_EXPIRES),
            nanos(HEARTBEAT),
        )
        self._recovering = False
        self._background: set[asyncio.Task[Any]] = set()
        self._confirming: set[asyncio.Future[Any]] = set()  # ack(wait=True) in flight
        self._incarnation = ""  # of the consumer on the server (see _attempts)
        # handler calls begun per seq, for messages that failed or came again (kept by
        # JetStreamSubscription when max_deliver is set; see _attempts)
        self._calls: dict[int, int] = {}
        # copies (see the module docstring): seq -> a message still unfinished that was
        # held longer than ack_wait; seqs of such messages that succeeded
        self._late: dict[int, Message] = {}
        self._finished_late: dict[int, None] = {}
        self._last_tick = time.monotonic()
        # where the delivery count starts in this consumer's reply subjects
        self._count_at = len(f"$JS.ACK.{stream}.{self.consumer}.")
        # whether copies are looked for (a subclass says: where a copy run again would
        # do harm, with max_deliver or key=; elsewhere a copy is at-least-once)
        self._copies = False

    # -- setup -----------------------------------------------------------------------------

    @property
    def metric_consumer(self) -> str:
        """The durable (or queue group) name; "" for an ephemeral consumer."""
        return "" if self._ephemeral else self.consumer

    async def _start(self) -> None:
        info = await ensure_consumer(
            self._api,
            self.stream,
            self._config,
            recreate=self._recreate,
            log=self._log,
            store=self._store,
        )
        self._incarnation = incarnation(info)
        self._inbox = self._conn.new_inbox()
        self._start_workers()
        await self._start_or_undo(self._subscribe)
        self._last_activity = time.monotonic()
        self._maybe_pull()
        self._monitor = asyncio.ensure_future(self._watch())

    async def _subscribe(self) -> None:
        self._sub = await self._conn.subscribe(self._inbox, self._sink)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- pulling ---------------------------------------------------------------------------

    def _maybe_pull(self) -> None:
        if not self._feeding or self._recovering:
            return
        free = self._capacity - self.buffered - self._requested
        if free <= 0 or (free < self._threshold and self._requested > 0):
            return
        self._requested += free
        self._spawn(self._send_pull(free))

    async def _send_pull(self, batch: int) -> None:
        try:
            await self._conn.publish(
                self._pull_subject, b'{"batch": %d' % batch + self._pull_tail, reply=self._inbox
            )
        except Exception as exc:
            self._log.debug("pull on %r failed (%s); the monitor retries", self.topic, exc)
            self._requested = max(0, self._requested - batch)

    def _after_take(self) -> None:
        # _maybe_pull's test, inlined: this runs for every message
        requested = self._requested
        free = self._capacity - len(self._buffer) - requested
        if free >= self._threshold or (free > 0 and requested == 0):
            self._maybe_pull()

    def _sink(self, subject: bytes, reply: bytes, hdr: bytes | None, payload: bytes) -> None:
        """The parser's hand-over: one delivery (or status message) from the inbox."""
        now = self._last_activity = time.monotonic()
        if not reply:
            self._on_status(parse_headers(hdr) if hdr else {})
            return
        if self._requested > 0:
            self._requested -= 1
        msg = self._last_msg = Message(
            self.topic if self._exact else subject.decode(),
            payload,
            None,
            reply.decode(),
            self,
            hdr,
        )
        msg._held_since = now
        if self._copies:  # (_first, inlined: this runs for every message)
            at = self._count_at
            first = len(reply) > at + 1 and reply[at] == 49 and reply[at + 1] == 46
            if not first and self._copy(msg, now):
                return
        self._offer(msg)
        if self._requested == 0:
            self._maybe_pull()  # that pull is complete: top up what workers freed

    def _on_status(self, headers: dict[str, str]) -> None:
        status = headers.get("Status", "")
        if status == "100" or not status:
            return
        desc = headers.get("Description", "")
        if status in ("408", "409"):
            left = headers.get("Nats-Pending-Messages")
            if left is not None:
                self._requested = max(0, self._requested - int(left))
            if status == "409" and "Consumer Deleted" in desc:
                self._log.warning("consumer %r was deleted on the server", self.consumer)
                self._requested = 0
                self._spawn(self._recover())
                return
            if status == "409" and left is None:
                self._requested = 0
            self._log.debug("pull status %s %s on %r", status, desc, self.topic)
            self._maybe_pull()
        elif status == "503":
            self._requested = 0
            self._spawn(self._recover())
        else:
            self._log.debug("pull status %s %s on %r", status, desc, self.topic)

    def hold_recovery(self, hold: bool) -> None:
        """While held, a deleted consumer is not re-created nor pulled from (an admin
        call is re-creating it); on release, pull afresh."""
        self._recovering = hold
        if not hold:
            self._requested = 0
            self._last_activity = time.monotonic()
            self._spawn(self._recover())  # (a new life of the consumer: its incarnation)

    async def _recover(self) -> None:
        """Make sure the consumer exists, then pull afresh."""
        if self._recovering or not self._feeding:
            return
        self._recovering = True
        try:
            try:
                info = await self._api.call(f"CONSUMER.INFO.{self.stream}.{self.consumer}")
            except NotFoundError:
                config = dict(self._config)
                last_seq = self._last_msg.seq if self._last_msg is not None else None
                if self._ephemeral and last_seq:
                    for key in ("opt_start_time", "opt_start_seq"):
                        config.pop(key, None)
                    config["deliver_policy"] = "by_start_sequence"
                    config["opt_start_seq"] = last_seq + 1
                self._log.warning("recreating consumer %r on %r", self.consumer, self.stream)
                info = await ensure_consumer(
                    self._api, self.stream, config, recreate=False, log=self._log
                )
            self._incarnation = incarnation(info)
        except JetkitError as exc:
            self._log.debug("consumer check for %r failed: %s", self.topic, exc)
        finally:
            self._recovering = False
            self._requested = 0
            self._last_activity = time.monotonic()
            self._maybe_pull()

    def on_reconnect(self, restarted: bool = False) -> None:
        """The connection came back: pulls in flight are gone with the old connection.

        If the server itself restarted, the messages pulled before and not yet handed to
        the handler are dropped: the server may have forgotten those deliveries (it
        persists them asynchronously), so their acks could go unanswered; it delivers
        them again.
        """
        self._requested = 0
        if restarted:
            # acks sent since the connection dropped were for deliveries of the old server
            self.connection_lost()
            stale = len(self._buffer)
            self._buffer.clear()
            if stale:
                self._log.info(
                    "the server restarted; %d messages of %r pulled before are delivered again",
                    stale,
                    self.topic,
                )
        self._spawn(self._recover())

    async def _watch(self) -> None:
        tick = min(HEARTBEAT, max(0.05, self._ack_wait / 4))
        keepalive = self._ack != AckPolicy.NONE
        while self._feeding:
            await asyncio.sleep(tick)
            now = self._last_tick = time.monotonic()
            busy = bool(self._inflight or self._buffer)
            if now - self._last_activity > 2 * HEARTBEAT + tick and not (self._recovering or busy):
                self._log.debug("no heartbeat on %r; re-issuing pulls", self.topic)
                self._requested = 0
                self._last_activity = now
                self._spawn(self._recover())
            elif self._requested == 0:
                self._maybe_pull()
            if keepalive:
                await self._keep_alive(now)

    async def _keep_alive(self, now: float) -> None:
        limit = self._ack_wait / 2
        for msg in self._unfinished():
            if not msg.settled and now - msg._held_since >= limit:
                if now - msg._held_since >= self._ack_wait:
                    self._late[msg.seq or 0] = msg  # too late: the server may send a copy
                msg._held_since = now
                await self.send_ack(msg, WPI)

    # -- settling --------------------------------------------------------------------------

    async def send_ack(self, msg: Message, token: bytes, wait: bool = False) -> None:
        if self._ack is AckPolicy.NONE or not msg.reply:
            return
        if token == ACK:
            self.stats.acked += 1
            self._finished(msg, acked=True)
        elif token.startswith(NAK):
            self.stats.naked += 1
            if self._tracer is not None:
                self._tracer.settled(token)
            if self._late:
                self._late.pop(msg.seq or 0, None)
            await self._handing_back(msg)
        elif token.startswith(TERM):
            self.stats.terminated += 1
            if self._tracer is not None:
                self._tracer.settled(token)
            self._finished(msg)
        if wait:
            await self._confirmed(msg, token)
            return
        try:
            # straight into the outgoing buffer: the flusher coalesces the acks of every
            # handler that finished in one loop turn
            self._conn.send(_ack_command(msg.reply, token), False)
        except Exception as exc:
            self._log.warning(
                "could not send %s for %r seq %s (%s); it will be redelivered after ack_wait",
                token[:5].decode(),
                msg.topic,
                msg.seq,
                exc,
                extra=self._fields(msg),
            )

    async def _confirmed(self, msg: Message, token: bytes) -> None:
        """Send an ack token and wait for the server's confirmation.

        If the connection drops meanwhile no confirmation can come: ConnectionLostError
        at once (see ``connection_lost``), not a timeout.
        """
        request = asyncio.ensure_future(
            self._conn.request(
                msg.reply or "", token, self._api.timeout, what=f"the ack of seq {msg.seq}"
            )
        )
        self._confirming.add(request)
        try:
            await request
        except TimeoutError:
            raise TimeoutError(
                f"the server did not confirm the ack of {msg.topic!r} seq {msg.seq}"
            ) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not request.cancelled() or (task is not None and task.cancelling()):
                raise
            raise ConnectionLostError(
                f"the connection dropped before the server confirmed the ack of {msg.topic!r} "
                f"seq {msg.seq}; it may or may not be recorded (the message may come again)"
            ) from None
        finally:
            self._confirming.discard(request)

    def connection_lost(self) -> None:
        """The connection dropped: confirmations still awaited cannot arrive any more."""
        for request in list(self._confirming):
            request.cancel()

    def _ack_now(self, msg: Message) -> None:
        """jetkit's own ack (AUTO before, MANUAL after the handler): the short path."""
        msg._claim()
        self.stats.acked += 1
        calls = self._calls
        if calls and calls.pop(msg.seq or 0, None) is not None:
            self._succeeded(msg)
        if self._copies and (self._late or monotonic() - msg._held_since >= self._ack_wait):
            self._finished(msg)
        try:
            self._conn.send(_ack_command(msg.reply or "", ACK), False)
        except JetkitError as exc:
            self._log.warning(
                "could not ack %r seq %s (%s); it will be redelivered after ack_wait",
                msg.topic,
                msg.seq,
                exc,
                extra=self._fields(msg),
            )

    # -- stopping --------------------------------------------------------------------------

    async def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._monitor

    async def _stop_feed(self) -> None:
        if self._sub is not None:  # first: no delivery may arrive once workers may end
            await self._conn.unsubscribe(self._sub)
        await self._stop_monitor()

    async def _abandon(self, msgs: list[Message]) -> None:
        for msg in msgs:
            if not msg.settled:
                with contextlib.suppress(Exception):
                    await msg.nak()

    async def _hand_back_waiting(self, msgs: list[Message]) -> None:
        await self._abandon(msgs)  # (never handled: no attempt is counted)

    async def _release(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._ephemeral:
            with contextlib.suppress(JetkitError):
                await self._api.call(f"CONSUMER.DELETE.{self.stream}.{self.consumer}")

    # -- copies ----------------------------------------------------------------------------

    def _first(self, reply: bytes) -> bool:
        """Whether ``reply`` is a first delivery's ("1." where the count starts): read
        without parsing (``startswith`` with an offset costs twice as much)."""
        at = self._count_at
        try:
            return reply[at] == 49 and reply[at + 1] == 46
        except IndexError:  # not a reply subject of this consumer's: look closer
            return False

    def _copy(self, msg: Message, now: float) -> bool:
        """A redelivery arrived: True if it is a copy of a message handled here, answered
        (its original succeeded: ack it) or taken over by the original still held here."""
        if msg._server_deliveries() == 1 or self._ack is AckPolicy.NONE:
            return False
        seq = msg.seq
        if seq in self._finished_late:
            self._ack_copy(msg)
            return True
        original = self._late.get(seq or 0)
        if original is None and now - self._last_tick > self._ack_wait / 2:
            # the monitor did not run for a while (a blocked loop): it could not mark
            # what was held too long yet
            original = next((m for m in self._unfinished() if m.seq == seq), None)
        if original is None or original is msg:
            return False
        if not original.settled:
            self._late[seq or 0] = original
            # the original answers the newest delivery (its ack, nak or term counts)
            original.reply = msg.reply
            original._tokens = None
            original._held_since = now
        elif self._ack is AckPolicy.AUTO:
            self._ack_copy(msg)  # acked when it was handed over
        # (settled by its handler and still running: the copy comes back after ack_wait)
        return True

    def _ack_copy(self, msg: Message) -> None:
        self._log.debug(
            "consumer %r: acked a copy of %r seq %s",
            self.consumer,
            msg.topic,
            msg.seq,
            extra=self._fields(msg),
        )
        with contextlib.suppress(JetkitError):
            self._conn.send(_ack_command(msg.reply or "", ACK), False)

    async def _handing_back(self, msg: Message) -> None:
        """Hook: ``msg`` is about to be nak'ed (its handler failed or gave it back, or
        ``stop()`` hands it back)."""

    def _succeeded(self, msg: Message) -> None:
        """Hook: ``msg``, which failed or came again before, was acked (its count of
        handler calls starts over)."""

    def _finished(self, msg: Message, acked: bool = False) -> None:
        """``msg`` was acked or terminated here: forget its attempts (an acked one's start
        over); if it was held too long, remember it, so that a copy of it is acked
        instead of run again. (``_ack_now`` inlines the tests.)"""
        seq = msg.seq or 0
        if self._calls and self._calls.pop(seq, None) is not None and acked:
            self._succeeded(msg)
        late = self._late
        if (late and late.pop(seq, None) is not None) or (
            monotonic() - msg._held_since >= self._ack_wait
        ):
            self._finished_late[seq] = None
            if len(self._finished_late) > REMEMBERED:
                del self._finished_late[next(iter(self._finished_late))]


def _ack_command(subject: str, token: bytes) -> bytes:
    """The PUB command that sends ``token`` (an ack, nak, ...) to ``subject``."""
    return pub(subject.encode(), token)

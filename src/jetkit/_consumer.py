"""The JetStream consume engine: consumer setup, continuous pull, acks, retries, DLQ.

Design (one JetStreamSubscription):

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
* Acks are fire-and-forget publishes to the message's reply subject, written straight
  into the connection's outgoing buffer (``ack(wait=True)`` waits for the server).
* With ``concurrency=1`` the handler runs inline in nats-py's delivery task (see
  ``_subscription``); messages waiting in nats-py's queue are kept alive as a group.
* Retries: a failing MANUAL handler naks with the next backoff delay; at the
  ``max_deliver``-th attempt the message is dead-lettered and terminated. The server
  consumer is given ``max_deliver + 1`` so that, if the last attempt dies with the
  process, one more delivery arrives and is routed to the DLQ without calling the
  handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import nats.errors

from ._codec import HandlerPlan
from ._damage import consumer_dir, remove_consumer_state
from ._errors import (
    ConnectionLostError,
    DamagedConsumerError,
    DecodeError,
    IncompatibleConsumerError,
    JetkitError,
    JetStreamError,
    NotFoundError,
    StreamClosedError,
    TimeoutError,
)
from ._jsapi import JsApi, nanos, rfc3339
from ._message import ACK, NAK, TERM, WPI, Message
from ._retry import dead_letter_headers, describe_error, retry_delay
from ._subscription import AckPolicy, StartAt, Subscription, is_handler_failure

PULL_EXPIRES = 30.0
HEARTBEAT = 5.0
EPHEMERAL_INACTIVE = 120.0
WORK_QUEUE_NEEDS_ALL = 10101
CONSUMER_STORE_FAILED = 10012  # "error creating store for consumer": damaged state


class DeadLetterSink(Protocol):
    async def __call__(self, topic: str, data: bytes, headers: dict[str, str]) -> None: ...


def consumer_config(
    *,
    name: str,
    durable: bool,
    filter_subject: str | None,
    ack: AckPolicy,
    max_deliver: int | None,
    ack_wait: float,
    start_at: StartAt,
    start_time: dt.datetime | None,
    start_seq: int | None,
    max_ack_pending: int,
) -> dict[str, Any]:
    """The server-side consumer config for a jetkit subscription."""
    cfg: dict[str, Any] = {
        "ack_policy": "none" if ack is AckPolicy.NONE else "explicit",
        "deliver_policy": start_at.value,
        "replay_policy": "instant",
        "max_deliver": -1 if max_deliver is None or ack is AckPolicy.NONE else max_deliver + 1,
        "max_waiting": 512,
    }
    if ack is not AckPolicy.NONE:
        cfg["ack_wait"] = nanos(ack_wait)
        cfg["max_ack_pending"] = max_ack_pending
    if durable:
        cfg["durable_name"] = name
    else:
        cfg["name"] = name
        cfg["inactive_threshold"] = nanos(EPHEMERAL_INACTIVE)
    if filter_subject:
        cfg["filter_subject"] = filter_subject
    if start_time is not None:
        cfg["opt_start_time"] = rfc3339(start_time)
    if start_seq is not None:
        cfg["opt_start_seq"] = start_seq
    return cfg


_FIXED = {"ack_policy": "ack"}
_UPDATABLE = ("max_deliver", "ack_wait", "max_ack_pending", "filter_subject", "max_waiting")
_START_FIELDS = ("deliver_policy", "opt_start_time", "opt_start_seq")


async def ensure_consumer(
    api: JsApi,
    stream: str,
    config: dict[str, Any],
    *,
    recreate: bool,
    log: logging.Logger,
    store: Path | None = None,
) -> dict[str, Any]:
    """Create the consumer, or reconcile an existing one with ``config``.

    Start fields of an existing consumer are kept (it resumes); ack policy cannot
    change (IncompatibleConsumerError unless ``recreate``); the rest is updated.
    A durable whose state on disk the server cannot load raises DamagedConsumerError,
    unless ``recreate`` and jetkit can reach the store (``store``): then its damaged
    state is removed and it is created afresh.
    """
    name = config.get("durable_name") or config["name"]
    existing: dict[str, Any] | None
    try:
        existing = await api.call(f"CONSUMER.INFO.{stream}.{name}")
    except NotFoundError:
        existing = None
    if existing is not None and recreate:
        await api.call(f"CONSUMER.DELETE.{stream}.{name}")
        existing = None
    if existing is None:
        try:
            return await _create(api, stream, name, config, store)
        except DamagedConsumerError:
            if not recreate or store is None:
                raise
            if not remove_consumer_state(store, stream, name):
                raise
            log.warning(
                "jetkit: durable %r of stream %r could not be loaded (damaged state on disk); "
                "recreate=True: removed it and created it again from its start position",
                name,
                stream,
            )
            return await _create(api, stream, name, config, store)
        except JetStreamError as exc:
            # a WORK_QUEUE topic only allows "deliver all": there, the default start
            # (NEW) means every message not yet taken, which is what ALL delivers
            if exc.err_code != WORK_QUEUE_NEEDS_ALL or config["deliver_policy"] != "new":
                raise
            return await _create(api, stream, name, {**config, "deliver_policy": "all"}, store)
    current: dict[str, Any] = existing.get("config", {})
    if current.get("deliver_subject"):
        raise IncompatibleConsumerError(
            f"consumer {name!r} on stream {stream!r} is a push consumer; jetkit needs a pull "
            "consumer: pick another durable name or pass recreate=True",
            "deliver_subject",
        )
    for key, option in _FIXED.items():
        if current.get(key) != config.get(key):
            raise IncompatibleConsumerError(
                f"durable {name!r} exists with {key}={current.get(key)!r} but this subscribe "
                f"asks for {config.get(key)!r} (option {option}=); that cannot change in place. "
                "Pass recreate=True to start it over, or use another durable name",
                option,
            )
    if any(current.get(f) != config.get(f) for f in _START_FIELDS):
        log.info(
            "jetkit: durable %r exists and resumes from its position; the requested start "
            "(%s) was not applied (pass recreate=True to start over)",
            name,
            config.get("deliver_policy"),
        )
    if current.get("filter_subjects") and "filter_subject" in config:
        current = {**current, "filter_subject": None}
    if all(current.get(f) == config.get(f) for f in _UPDATABLE):
        return existing
    merged = {**current, **{f: config[f] for f in _UPDATABLE if f in config}}
    if "filter_subject" not in config:
        merged.pop("filter_subject", None)
    merged.pop("filter_subjects", None)
    for field in _START_FIELDS:
        if field in current:
            merged[field] = current[field]
    return await api.call(
        f"CONSUMER.CREATE.{stream}.{name}",
        {"stream_name": stream, "config": merged, "action": "update"},
    )


async def _create(
    api: JsApi, stream: str, name: str, config: dict[str, Any], store: Path | None
) -> dict[str, Any]:
    try:
        return await api.call(
            f"CONSUMER.CREATE.{stream}.{name}",
            {"stream_name": stream, "config": config, "action": "create"},
        )
    except JetStreamError as exc:
        if exc.err_code != CONSUMER_STORE_FAILED:
            raise
        if store is not None and not consumer_dir(store, stream, name).exists():
            # nothing on disk to be damaged: the server could not write it (disk full?)
            raise JetStreamError(
                f"the server could not create durable {name!r} of stream {stream!r} ({exc}); "
                "is the store's disk full?",
                exc.code,
                exc.err_code,
            ) from exc
        raise DamagedConsumerError(
            f"the server cannot create or load durable {name!r} of stream {stream!r} ({exc}): "
            "its state on disk is damaged (or the disk is full). Subscribe with "
            "recreate=True to start it over from start_at (its position is lost), or use "
            "another durable name",
            exc.code,
            exc.err_code,
        ) from exc


class JetStreamSubscription(Subscription):
    """A subscription on a JetStream topic, fed by a pull consumer."""

    def __init__(
        self,
        nc: Any,
        api: JsApi,
        topic: str,
        plan: HandlerPlan,
        *,
        stream: str,
        config: dict[str, Any],
        shared: bool,
        ack: AckPolicy,
        max_deliver: int | None,
        backoff: list[float] | None,
        dlq: str | None,
        dead_letter: DeadLetterSink,
        ack_wait: float,
        recreate: bool,
        store: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(topic, plan, **kwargs)
        self._store = store
        self._nc = nc
        self._api = api
        self.stream = stream
        self._config = config
        self.consumer = config.get("durable_name") or config["name"]
        self.name = self.consumer
        self._ephemeral = "durable_name" not in config and not shared
        self._ack = ack
        self._max_deliver = max_deliver if ack is not AckPolicy.NONE else None
        self._backoff = backoff
        self._dlq = dlq
        self._dead_letter_sink = dead_letter
        self._ack_wait = ack_wait
        self._recreate = recreate
        self._requested = 0
        self._threshold = max(1, self._capacity // 2)
        self._last_activity = time.monotonic()
        self._last_msg: Message | None = None  # its seq tells an ephemeral where to resume
        self._inbox = ""
        self._monitor: asyncio.Task[None] | None = None
        self._inline = self._concurrency == 1
        self._queue_wpi_at = 0.0
        self._pull_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{self.consumer}"
        self._pull_tail = b', "expires": %d, "idle_heartbeat": %d}' % (
            nanos(PULL_EXPIRES),
            nanos(HEARTBEAT),
        )
        self._recovering = False
        self._background: set[asyncio.Task[Any]] = set()
        self._confirming: set[asyncio.Future[Any]] = set()  # ack(wait=True) in flight

    # -- setup -----------------------------------------------------------------------------

    async def _start(self) -> None:
        await ensure_consumer(
            self._api,
            self.stream,
            self._config,
            recreate=self._recreate,
            log=self._log,
            store=self._store,
        )
        self._inbox = self._nc.new_inbox()
        # concurrency=1: the handler runs in nats-py's delivery task, and nats-py's queue
        # holds what was pulled (bounded by the pull credit); otherwise jetkit's buffer
        # and workers do
        self._sub = await self._nc.subscribe(
            self._inbox,
            cb=self._on_raw_inline if self._inline else self._on_raw,
            pending_msgs_limit=0,
            pending_bytes_limit=0,
        )
        if not self._inline:
            self._start_workers()
        self._last_activity = self._queue_wpi_at = time.monotonic()
        self._maybe_pull()
        self._monitor = asyncio.ensure_future(self._watch())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- pulling ---------------------------------------------------------------------------

    def _maybe_pull(self) -> None:
        if not self._feeding or self._recovering:
            return
        free = self._capacity - len(self._buffer) - self._requested
        if free <= 0 or (free < self._threshold and self._requested > 0):
            return
        self._requested += free
        self._spawn(self._send_pull(free))

    async def _send_pull(self, batch: int) -> None:
        try:
            await self._nc.publish(
                self._pull_subject, b'{"batch": %d' % batch + self._pull_tail, reply=self._inbox
            )
        except Exception as exc:
            self._log.debug("jetkit: pull on %r failed (%s); the monitor retries", self.topic, exc)
            self._requested = max(0, self._requested - batch)

    def _after_message(self) -> None:
        self._maybe_pull()

    async def _on_raw(self, nmsg: Any) -> None:
        self._ingest(nmsg)

    def _take(self, nmsg: Any) -> Message | None:
        """A delivery from the inbox as a Message; status messages are handled here."""
        self._last_activity = time.monotonic()
        reply = nmsg.reply
        if not reply:
            self._on_status(nmsg.headers or {})
            return None
        if self._requested > 0:
            self._requested -= 1
        msg = self._last_msg = Message(nmsg.subject, nmsg.data, nmsg.headers, reply, self)
        return msg

    async def _on_raw_inline(self, nmsg: Any) -> None:
        msg = self._take(nmsg)
        if msg is None:
            return
        self.stats.received += 1
        # the server's ack timer restarted when it arrived or at the last in-progress
        # sent for the queue, whichever came later; the latter is the safe guess
        msg._held_since = self._queue_wpi_at
        await self._run_inline(msg)
        self._maybe_pull()

    def _wrap(self, nmsg: Any) -> Message:
        return Message(nmsg.subject, nmsg.data, nmsg.headers, nmsg.reply, self)

    def _ingest(self, nmsg: Any) -> None:
        msg = self._take(nmsg)
        if msg is not None:
            msg._held_since = self._last_activity
            self._offer(msg)

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
                self._log.warning("jetkit: consumer %r was deleted on the server", self.consumer)
                self._requested = 0
                self._spawn(self._recover())
                return
            if status == "409" and left is None:
                self._requested = 0
            self._log.debug("jetkit: pull status %s %s on %r", status, desc, self.topic)
            self._maybe_pull()
        elif status == "503":
            self._requested = 0
            self._spawn(self._recover())
        else:
            self._log.debug("jetkit: pull status %s %s on %r", status, desc, self.topic)

    async def _recover(self) -> None:
        """Make sure the consumer exists, then pull afresh."""
        if self._recovering or not self._feeding:
            return
        self._recovering = True
        try:
            try:
                await self._api.call(f"CONSUMER.INFO.{self.stream}.{self.consumer}")
            except NotFoundError:
                config = dict(self._config)
                last_seq = self._last_msg.seq if self._last_msg is not None else None
                if self._ephemeral and last_seq:
                    for key in ("opt_start_time", "opt_start_seq"):
                        config.pop(key, None)
                    config["deliver_policy"] = "by_start_sequence"
                    config["opt_start_seq"] = last_seq + 1
                self._log.warning(
                    "jetkit: recreating consumer %r on %r", self.consumer, self.stream
                )
                await ensure_consumer(self._api, self.stream, config, recreate=False, log=self._log)
        except JetkitError as exc:
            self._log.debug("jetkit: consumer check for %r failed: %s", self.topic, exc)
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
            self._has_room.set()
            if self._sub is not None and self._inline:
                queue = self._sub._pending_queue
                stale += queue.qsize()
                while not queue.empty():
                    queue.get_nowait()
            if stale:
                self._log.info(
                    "jetkit: the server restarted; %d messages of %r pulled before are "
                    "delivered again",
                    stale,
                    self.topic,
                )
        self._spawn(self._recover())

    async def _watch(self) -> None:
        tick = min(HEARTBEAT, max(0.05, self._ack_wait / 4))
        keepalive = self._ack != AckPolicy.NONE
        while self._feeding:
            await asyncio.sleep(tick)
            now = time.monotonic()
            busy = self._current is not None or (self._inline and self.buffered > 0)
            if now - self._last_activity > 2 * HEARTBEAT + tick and not (self._recovering or busy):
                self._log.debug("jetkit: no heartbeat on %r; re-issuing pulls", self.topic)
                self._requested = 0
                self._last_activity = now
                self._spawn(self._recover())
            elif self._requested == 0:
                self._maybe_pull()
            if keepalive:
                await self._keep_alive(now)

    async def _keep_alive(self, now: float) -> None:
        limit = self._ack_wait / 2
        held = [*self._buffer, *self._inflight]
        if self._current is not None:
            held.append(self._current)
        for msg in held:
            if not msg._settled and now - msg._held_since >= limit:
                msg._held_since = now
                await self.send_ack(msg, WPI)
        if self._inline and now - self._queue_wpi_at >= limit:
            # messages waiting in nats-py's queue carry no arrival time: every half
            # ack_wait, mark all of them in progress
            self._queue_wpi_at = now
            for nmsg in self._queued():
                if nmsg.reply:
                    await self._write(nmsg.reply, WPI)

    # -- settling --------------------------------------------------------------------------

    async def send_ack(self, msg: Message, token: bytes, wait: bool = False) -> None:
        if self._ack is AckPolicy.NONE or not msg.reply:
            return
        if token == ACK:
            self.stats.acked += 1
        elif token.startswith(NAK):
            self.stats.naked += 1
        elif token.startswith(TERM):
            self.stats.terminated += 1
        if wait:
            await self._confirmed(msg, token)
            return
        try:
            await self._write(msg.reply, token)
        except Exception as exc:
            self._log.warning(
                "jetkit: could not send %s for %r seq %s (%s); it will be redelivered after "
                "ack_wait",
                token[:5].decode(),
                msg.topic,
                msg.seq,
                exc,
            )

    async def _confirmed(self, msg: Message, token: bytes) -> None:
        """Send an ack token and wait for the server's confirmation.

        If the connection drops meanwhile no confirmation can come: ConnectionLostError
        at once (see ``connection_lost``), not a timeout.
        """
        request = asyncio.ensure_future(
            self._nc.request(msg.reply, token, timeout=self._api.timeout)
        )
        self._confirming.add(request)
        try:
            await request
        except nats.errors.TimeoutError:
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

    async def _write(self, subject: str, token: bytes) -> None:
        """Publish an ack token without waiting: straight into nats-py's outgoing buffer.

        This is what ``nc.publish`` does minus its per-call checks; the flusher task
        coalesces the acks of every handler that finished in the same loop iteration.
        """
        nc = self._nc
        if nc.is_closed:
            raise StreamClosedError("the connection is closed")
        await nc._send_command(b"PUB %b %d\r\n%b\r\n" % (subject.encode(), len(token), token))
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()

    async def _ack_for_handler(self, msg: Message) -> None:
        """jetkit's own ack (AUTO before, MANUAL after the handler): the short path."""
        msg._settled = True
        await self.send_ack(msg, ACK)

    # -- handling --------------------------------------------------------------------------

    async def _process(self, msg: Message) -> None:
        if self._max_deliver is not None and msg.num_delivered > self._max_deliver:
            await self._dead_letter(
                msg,
                f"Interrupted: delivery attempt {msg.num_delivered - 1} of {self._max_deliver} "
                "did not complete (process stopped or ack_wait expired)",
                deliveries=msg.num_delivered - 1,
            )
            return
        plan = self._plan
        try:
            args = plan.args(msg)
        except DecodeError as exc:
            self.stats.failed += 1
            self._log.error("jetkit: poison message on %r seq %s: %s", msg.topic, msg.seq, exc)
            await self._dead_letter(msg, describe_error(exc))
            return
        ack = self._ack
        if ack is AckPolicy.AUTO:
            await self._ack_for_handler(msg)
        try:
            await plan.fn(*args)
        except BaseException as exc:
            if not is_handler_failure(exc):
                if isinstance(exc, KeyboardInterrupt | SystemExit) and not msg._settled:
                    # the program is stopping: stop pulling (so the server does not send
                    # the message straight back here), hand it back, and make sure that
                    # leaves the process before the event loop stops
                    with contextlib.suppress(Exception):  # UNSUB only: this task stays
                        await self._nc._send_command(b"UNSUB %d\r\n" % self._sub._id)
                    await msg.nak()
                    with contextlib.suppress(Exception):
                        await self._nc.flush(timeout=1)
                raise
            self.stats.failed += 1
            if ack is AckPolicy.MANUAL and not msg._settled:
                await self._retry_or_dead_letter(msg, exc)
            else:
                self._log.error(
                    "jetkit: handler for %r failed (seq %s)", msg.topic, msg.seq, exc_info=exc
                )
            return
        if ack is AckPolicy.MANUAL and not msg._settled:
            await self._ack_for_handler(msg)

    async def _retry_or_dead_letter(self, msg: Message, exc: BaseException) -> None:
        attempt = msg.num_delivered
        if self._max_deliver is None or attempt < self._max_deliver:
            delay = retry_delay(self._backoff, attempt)
            self._log.warning(
                "jetkit: handler for %r failed on attempt %d (%s); retrying%s",
                msg.topic,
                attempt,
                describe_error(exc),
                f" in {delay:g}s" if delay else "",
            )
            self.stats.retried += 1
            await msg.nak(delay)
            return
        self._log.error(
            "jetkit: handler for %r failed on its last attempt %d (%s)",
            msg.topic,
            attempt,
            describe_error(exc),
        )
        await self._dead_letter(msg, describe_error(exc))

    async def _dead_letter(self, msg: Message, error: str, deliveries: int | None = None) -> None:
        """Publish to the DLQ (if any), then terminate; never lose it if the DLQ fails."""
        if self._dlq:
            headers = dead_letter_headers(
                msg.headers,
                topic=msg.topic,
                seq=msg.seq,
                deliveries=deliveries if deliveries is not None else msg.num_delivered,
                consumer=self.consumer,
                error=error,
            )
            headers["Nats-Msg-Id"] = f"jk-dlq-{self.stream}-{self.consumer}-{msg.seq}"
            try:
                await self._dead_letter_sink(self._dlq, msg.data, headers)
            except JetkitError as exc:
                self._log.error(
                    "jetkit: could not publish %r seq %s to the DLQ %r (%s); it will be "
                    "delivered again",
                    msg.topic,
                    msg.seq,
                    self._dlq,
                    exc,
                )
                if self._ack is not AckPolicy.NONE and not msg._settled:
                    await msg.nak(retry_delay(self._backoff, 1) or 1.0)
                return
            self.stats.dead_lettered += 1
        if self._ack is not AckPolicy.NONE and not msg._settled:
            await msg.term(f"jetkit: {error}"[:256])

    # -- stopping --------------------------------------------------------------------------

    async def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._monitor

    async def _stop_feed(self) -> None:
        await self._stop_monitor()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            pending = self._sub._pending_queue
            while not pending.empty():
                self._ingest(pending.get_nowait())

    async def _abandon(self, msgs: list[Message]) -> None:
        for msg in msgs:
            if not msg._settled:
                with contextlib.suppress(Exception):
                    await msg.nak()

    async def _release(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._ephemeral:
            with contextlib.suppress(JetkitError):
                await self._api.call(f"CONSUMER.DELETE.{self.stream}.{self.consumer}")

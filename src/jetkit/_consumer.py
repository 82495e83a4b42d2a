"""Handling JetStream deliveries: attempts, retries, dead letters.

(The pull engine that feeds the buffer, keeps messages alive and sends acks is
``_pull``'s; the consumer's config on the server is ``_consumer_config``'s.)

* Retries: a failing MANUAL handler naks with the next backoff delay; at the
  ``max_deliver``-th attempt the message is dead-lettered and terminated. jetkit counts
  the attempts itself, as handler calls (the server redelivers without limit, and counts
  deliveries that never reached a handler): see ``_attempts``. A message past its last
  call (that call died with the process, or its dead letter could not be sent) is
  routed to the DLQ without calling the handler.
* Dead letters: the original payload and headers plus the ``Jetkit-*`` headers, with a
  msg id unique to the message and to this life of the consumer, so a letter sent again
  after a crash is stored once, and a topic deleted and made again (its sequences start
  over) still gets its letters. A letter that would not fit the server's max_payload (or
  the DLQ's own size limit) points at the original instead (``_retry.fit_dead_letter``).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Protocol

from ._attempts import AttemptLog
from ._codec import HandlerPlan
from ._connection import Connection
from ._emit import Emitter, is_emit
from ._errors import DecodeError, JetkitError, JetStreamError, describe_error
from ._jsapi import JsApi
from ._message import Message
from ._options import SubscribeSettings
from ._pull import REMEMBERED, PullSubscription
from ._retry import dead_letter_headers, decide, fit_dead_letter
from ._subscription import AckPolicy, is_handler_failure

MESSAGE_TOO_LARGE = 10054  # the DLQ's stream refused the letter: over its max_msg_size
# a message whose count of calls cannot be read is given back this many times (then
# handled as if it had none), waiting this long each time
UNREADABLE_TRIES = 3
UNREADABLE_DELAY = 1.0


class DeadLetterSink(Protocol):
    async def __call__(self, topic: str, data: bytes, headers: dict[str, str]) -> None: ...


class JetStreamSubscription(PullSubscription):
    """A subscription on a JetStream topic: the handler, retries and the DLQ."""

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
        emitter: Emitter | None = None,
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
            store=store,
            logger=logger,
        )
        self._max_deliver = opts.max_deliver if opts.ack is not AckPolicy.NONE else None
        self._backoff = opts.backoff
        self._dlq = opts.dlq
        self._dead_letter_sink = dead_letter
        self._unsent: dict[int, str] = {}  # seq -> error of a dead letter not yet published
        # max_deliver counts handler calls (see _attempts; the calls known here are
        # PullSubscription._calls)
        self._attempts = attempts if self._max_deliver is not None else None
        # a copy of a message that succeeded must not use up max_deliver (see _pull)
        self._copies = self._max_deliver is not None
        self._unreadable: dict[int, int] = {}  # seq -> tries to read its count that failed
        self._emitter = emitter  # emit=: outputs before the input's ack (see _emit)
        self._warned_emit = False

    # -- handling --------------------------------------------------------------------------

    async def _process(self, msg: Message) -> None:
        if self._max_deliver is not None:
            if not self._calls and msg._server_deliveries() == 1:
                msg._attempt = 1  # the common case, inlined from _begin
            elif not await self._begin(msg):
                return
        plan = self._plan
        try:
            args = plan.args(msg)
        except DecodeError as exc:
            self.stats.failed += 1
            if self._tracer is not None:
                self._tracer.failed(exc)
            self._log.error(
                "consumer %r: poison message on %r seq %s: %s",
                self.consumer,
                msg.topic,
                msg.seq,
                exc,
                extra=self._fields(msg),
            )
            await self._dead_letter(msg, describe_error(exc))
            return
        ack = self._ack
        if ack is AckPolicy.AUTO:
            self._ack_now(msg)
        emitter = self._emitter
        try:
            if emitter is None:
                result = await plan.fn(*args)
                if result is not None and is_emit(result):
                    self._emits_ignored()
            else:
                msg._pipeline = True  # the handler may not settle it: jetkit does, after
                try:
                    result = await plan.fn(*args)
                finally:
                    msg._pipeline = False
                self.stats.emitted += await emitter.emit(
                    msg, result, self._incarnation, self.consumer
                )
        except BaseException as exc:
            if not is_handler_failure(exc):
                if isinstance(exc, KeyboardInterrupt | SystemExit) and not msg.settled:
                    # the program is stopping: stop pulling (so the server does not send
                    # the message straight back here), hand it back, and make sure that
                    # leaves the process before the event loop stops
                    if self._sub is not None:
                        with contextlib.suppress(Exception):
                            await self._conn.unsubscribe_now(self._sub)
                    await msg.nak()
                    with contextlib.suppress(Exception):
                        await self._conn.flush(timeout=1)
                raise
            self.stats.failed += 1
            if self._tracer is not None:
                self._tracer.failed(exc)
            if ack is AckPolicy.MANUAL and not msg.settled:
                await self._retry_or_dead_letter(msg, exc)
            else:
                self._log.error(
                    "consumer %r: handler for %r failed (seq %s)",
                    self.consumer,
                    msg.topic,
                    msg.seq,
                    exc_info=exc,
                    extra=self._fields(msg),
                )
            return
        if emitter is not None:
            await self._ack_confirmed(msg)
        elif ack is AckPolicy.MANUAL and not msg.settled:
            self._ack_now(msg)

    async def _ack_confirmed(self, msg: Message) -> None:
        """A pipeline's input, its outputs stored: acked, and the ack confirmed (one that
        is not, or is undone by a server kill, brings the input back; its outputs are
        then refused as duplicates)."""
        try:
            await msg.ack(wait=True)
        except JetkitError as exc:
            self._log.warning(
                "consumer %r: the ack of %r seq %s was not confirmed (%s); it may come "
                "again (its outputs are stored once)",
                self.consumer,
                msg.topic,
                msg.seq,
                exc,
            )

    def _emits_ignored(self) -> None:
        if not self._warned_emit:
            self._warned_emit = True
            self._log.error(
                "consumer %r: the handler for %r returned jk.Emit, but the subscription has "
                "no emit=: nothing was published. Subscribe with emit=<topic> (the default "
                "output topic) for its outputs to be published",
                self.consumer,
                self.topic,
            )

    async def _begin(self, msg: Message) -> bool:
        """Count the handler call ``msg`` is about to get (max_deliver set): False if it
        had its last one already (then it is dead-lettered here, without the handler), or
        its count cannot be read now (then it is given back)."""
        max_deliver = self._max_deliver
        assert max_deliver is not None
        seq = msg.seq or 0
        calls = self._calls.get(seq)
        if calls is None:
            if msg._server_deliveries() == 1:
                msg._attempt = 1  # nothing to look up or write
                return True
            if seq in self._finished_late:  # a copy that waited behind its original
                self._ack_copy(msg)
                return False
            calls = await self._read_calls(msg)
            if calls is None:
                return False
        if calls >= max_deliver:
            error = self._unsent.pop(seq, None) or (
                f"Interrupted: handler call {max_deliver} of {max_deliver} did not complete "
                "(the process stopped or was killed during it, or ack_wait expired)"
            )
            await self._dead_letter(msg, error, deliveries=max_deliver)
            return False
        msg._attempt = calls + 1
        self._note(self._calls, seq, msg._attempt)
        if self._attempts is not None:
            # before the handler runs: a crash during this call still counts it
            await self._attempts.write(self._record(seq), msg._attempt)
        return True

    async def _read_calls(self, msg: Message) -> int | None:
        """The calls recorded for ``msg``; None if they cannot be read now (a restart, an
        election): then it is given back, to be read again when it comes back; after
        UNREADABLE_TRIES it is handled as if it had none (never a false dead letter;
        a crash during that call may go uncounted)."""
        if self._attempts is None:
            return 0
        seq = msg.seq or 0
        calls = await self._attempts.read(self._record(seq))
        if calls is not None:
            self._unreadable.pop(seq, None)
            return calls
        tries = self._unreadable.get(seq, 0) + 1
        if tries >= UNREADABLE_TRIES:
            self._unreadable.pop(seq, None)
            return 0
        self._note(self._unreadable, seq, tries)
        with contextlib.suppress(JetkitError):
            await msg.nak(UNREADABLE_DELAY)
        return None

    def _record(self, seq: int) -> str:
        return f"{self.stream}.{self.consumer}.{self._incarnation}.{seq}"

    async def _count_call(self, msg: Message) -> None:
        """A first call that failed, gave the message back or was cut short: record it
        (``_begin`` wrote the others). Every nak of a handled message passes here."""
        seq = msg.seq or 0
        if self._max_deliver is None or not msg._attempt or seq in self._calls:
            return
        self._note(self._calls, seq, msg._attempt)
        if self._attempts is not None and self._conn.is_connected:
            await self._attempts.write(self._record(seq), msg._attempt)

    _handing_back = _count_call

    def _succeeded(self, msg: Message) -> None:
        # a kill can undo the ack: the message comes again, and its calls before this
        # success must not count (it would be dead-lettered though it succeeded)
        if self._attempts is not None:
            self._attempts.reset(self._record(msg.seq or 0))

    @staticmethod
    def _note(notes: dict[int, Any], seq: int, value: Any) -> None:
        """``notes[seq] = value``, keeping at most REMEMBERED notes (oldest forgotten)."""
        notes[seq] = value
        if len(notes) > REMEMBERED:
            del notes[next(iter(notes))]

    async def _retry_or_dead_letter(self, msg: Message, exc: BaseException) -> None:
        attempt = msg.num_delivered
        retry, delay = decide(attempt, self._max_deliver, self._backoff)
        if retry:
            self._log.warning(
                "consumer %r: handler for %r seq %s failed on attempt %d (%s); retrying%s",
                self.consumer,
                msg.topic,
                msg.seq,
                attempt,
                describe_error(exc),
                f" in {delay:g}s" if delay else "",
                extra=self._fields(msg),
            )
            self.stats.retried += 1
            await msg.nak(delay)
            return
        self._log.error(
            "consumer %r: handler for %r seq %s failed on its last attempt %d (%s)",
            self.consumer,
            msg.topic,
            msg.seq,
            attempt,
            describe_error(exc),
            extra=self._fields(msg),
        )
        await self._dead_letter(msg, describe_error(exc))

    async def _dead_letter(self, msg: Message, error: str, deliveries: int | None = None) -> None:
        """Publish to the DLQ (if any), then terminate; never lose it if the DLQ fails."""
        if await self._send_dead_letter(msg, error, deliveries):
            if self._ack is not AckPolicy.NONE and not msg.settled:
                await msg.term(f"jetkit: {error}"[:256])
            return
        if self._ack is not AckPolicy.NONE and not msg.settled:
            self._remember_unsent(msg, error)
            await msg.nak(decide(1, None, self._backoff).delay or 1.0)

    def _remember_unsent(self, msg: Message, error: str) -> None:
        """Why ``msg`` is to be dead-lettered, for when it comes back: it had its last
        call (bounded: the oldest are forgotten)."""
        seq = msg.seq or 0
        self._note(self._unsent, seq, error)
        if self._max_deliver is not None:
            self._note(self._calls, seq, self._max_deliver)

    async def _send_dead_letter(self, msg: Message, error: str, deliveries: int | None) -> bool:
        """Publish ``msg``'s dead letter: True once published (or without a DLQ), False
        if the DLQ refused it (logged)."""
        if not self._dlq:
            return True
        headers = dead_letter_headers(
            msg.headers,
            topic=msg.topic,
            seq=msg.seq,
            deliveries=deliveries if deliveries is not None else msg.num_delivered,
            consumer=self.consumer,
            error=error,
        )
        # unique to this message and this life of the consumer: a letter sent again after
        # a crash is a duplicate, a topic made again (sequences from 1) is not
        life = self._incarnation
        headers["Nats-Msg-Id"] = f"jk-dlq-{self.stream}-{self.consumer}-{life}-{msg.seq}"
        pointer = False
        while True:
            data, letter = fit_dead_letter(
                msg.data,
                headers,
                stream=self.stream,
                stored_ns=msg._time_ns(),
                limit=self._conn.max_payload,
                pointer=pointer,
            )
            try:
                await self._dead_letter_sink(self._dlq, data, letter)
            except JetkitError as exc:
                if (
                    isinstance(exc, JetStreamError)
                    and exc.err_code == MESSAGE_TOO_LARGE
                    and not pointer
                ):
                    pointer = True  # the DLQ's own size limit: a letter pointing at it
                    continue
                self._log.error(
                    "consumer %r: could not publish %r seq %s to the DLQ %r (%s); it "
                    "will be tried again",
                    self.consumer,
                    msg.topic,
                    msg.seq,
                    self._dlq,
                    exc,
                    extra=self._fields(msg),
                )
                return False
            break
        self.stats.dead_lettered += 1
        return True

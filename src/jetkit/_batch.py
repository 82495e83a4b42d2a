"""Batch handlers: ``subscribe(..., batch=N, batch_timeout=seconds)``.

Each worker (``concurrency`` of them) takes up to N messages from the buffer: once it
has the first, it waits at most ``batch_timeout`` for the rest, and a drain hands over
what it has at once. Then, per batch (``_handle``):

* every message goes through what one message goes through before its handler
  (``JetStreamSubscription._begin``: its count of calls; one past its last call is
  dead-lettered here), and is decoded (a poison payload is dead-lettered on its own:
  the batch goes on without it);
* the handler is called once with the list (decoded values, or the messages);
* it returned: every message it did not settle itself is acked (``emit=``: the
  handler returns one entry per message, each entry that message's outputs, all stored
  before the messages are acked with confirmed acks, as for one message, see
  ``_emit``); it raised: every message it did not settle is nak'ed, each with its own
  retry decision (``max_deliver``, ``backoff``, ``dlq``), so a batch that fails is
  retried as a whole unless some of its messages used up their attempts.

``ack=AUTO`` acks after the handler, as MANUAL does (a batch is settled together);
with MANUAL (or AUTO) a handler taking ``list[jk.Message]`` may settle each message on
its own, and those are left as it settled them. ``ack=NONE`` settles nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_left
from typing import Any

from ._consumer import JetStreamSubscription
from ._counting import BUCKETS
from ._errors import DecodeError, EncodeError, describe_error
from ._message import Message
from ._options import BATCH_TIMEOUT
from ._subscription import AckPolicy, is_handler_failure


class BatchSubscription(JetStreamSubscription):
    """A JetStream subscription whose handler takes lists of messages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = args[4] if len(args) > 4 else kwargs["opts"]
        self._batch: int = opts.batch
        self._batch_timeout = float(opts.batch_timeout or BATCH_TIMEOUT)

    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                return
            try:
                timer = self._timer
                started = time.perf_counter()
                await self._handle(batch)
                if timer is not None:
                    elapsed = time.perf_counter() - started
                    timer.counts[bisect_left(BUCKETS, elapsed)] += 1
                    timer.sum += elapsed
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("internal error handling a batch on %r", self.topic)
            finally:
                for msg in batch:
                    self._inflight.discard(msg)

    async def _collect(self) -> list[Message]:
        """Up to ``batch`` messages: the first as soon as there is one, the rest within
        ``batch_timeout`` of it (at once when the subscription drains). [] once
        nothing more can come."""
        buf = self._buffer
        batch: list[Message] = []
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while len(batch) < self._batch:
            if buf:
                msg = buf.popleft()
                self._after_take()
                self._inflight.add(msg)
                batch.append(msg)
                if deadline is None:
                    deadline = loop.time() + self._batch_timeout
                continue
            if self._fed_out:
                break
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                break
            waiter = loop.create_future()
            self._idle.append(waiter)
            try:
                await asyncio.wait({waiter}, timeout=left)
            finally:
                if waiter.done() and not waiter.cancelled():
                    self._waking -= 1
                else:
                    waiter.cancel()  # (_wake skips it)
        if buf and self._idle and not self._waking:
            self._wake(1)  # more waiting: another worker may start its batch
        return batch

    async def _handle(self, batch: list[Message]) -> None:
        ready: list[Message] = []
        values: list[Any] = []
        decode = self._plan.decode
        for msg in batch:
            if self._max_deliver is not None and not await self._begin(msg):
                continue  # dead-lettered (its last call was made) or given back
            if decode is not None:
                try:
                    values.append(decode(msg.data))
                except DecodeError as exc:
                    self.stats.failed += 1
                    self._log.error(
                        "consumer %r: poison message on %r seq %s: %s",
                        self.consumer,
                        msg.topic,
                        msg.seq,
                        exc,
                    )
                    await self._dead_letter(msg, describe_error(exc))
                    continue
            ready.append(msg)
        if not ready:
            return
        emitter = self._emitter
        try:
            if emitter is None:
                await self._plan.fn(values if decode is not None else list(ready))
            else:
                for msg in ready:
                    msg._pipeline = True
                try:
                    result = await self._plan.fn(values if decode is not None else list(ready))
                finally:
                    for msg in ready:
                        msg._pipeline = False
                await self._emit_each(ready, result)
        except BaseException as exc:
            unsettled = [m for m in ready if not m.settled]
            if not is_handler_failure(exc):
                for msg in unsettled:
                    with contextlib.suppress(Exception):
                        await msg.nak()
                raise
            self.stats.failed += 1
            if self._ack is AckPolicy.NONE:
                self._log.error(
                    "consumer %r: batch handler for %r failed (%d messages, seqs %s-%s)",
                    self.consumer,
                    self.topic,
                    len(ready),
                    ready[0].seq,
                    ready[-1].seq,
                    exc_info=exc,
                )
                return
            for msg in unsettled:
                await self._retry_or_dead_letter(msg, exc)
            return
        if emitter is not None:
            await asyncio.gather(*(self._ack_confirmed(m) for m in ready))
            return
        if self._ack is not AckPolicy.NONE:
            for msg in ready:
                if not msg.settled:
                    self._ack_now(msg)

    async def _emit_each(self, msgs: list[Message], result: object) -> None:
        """``emit=`` with a batch: ``result`` holds one entry per message (or is None)."""
        if result is None:
            return
        if not isinstance(result, list | tuple) or len(result) != len(msgs):
            got = f"a list of {len(result)}" if isinstance(result, list | tuple) else "one value"
            raise EncodeError(
                f"a batch handler with emit= returns one entry per message of the batch "
                f"(here {len(msgs)}; None or a list of jk.Emit for none or several outputs), "
                f"or None for no outputs at all; it returned {got}"
            )
        assert self._emitter is not None
        emitted = await asyncio.gather(
            *(
                self._emitter.emit(msg, entry, self._incarnation, self.consumer)
                for msg, entry in zip(msgs, result, strict=True)
            ),
            return_exceptions=True,
        )
        for outcome in emitted:
            if isinstance(outcome, BaseException):
                raise outcome
            self.stats.emitted += outcome

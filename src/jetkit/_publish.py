"""Acked JetStream publishing without a task per publish.

One wildcard inbox subscription receives every PubAck; each publish is a
Future keyed by a short token, with a timer that fails it after ``timeout``.
``publish_many`` keeps up to ``window`` publishes in flight (a sliding window,
so client and server overlap) and reports every failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import nats.errors

from ._errors import (
    ConnectionError,
    ConnectionLostError,
    JetkitError,
    JetStreamError,
    NotFoundError,
    StorageFullError,
    StreamClosedError,
    TimeoutError,
)
from ._jsapi import STORAGE_FULL_CODES, storage_full
from ._store import has_room


@dataclasses.dataclass(frozen=True, slots=True)
class PubAck:
    """The server stored the message: in ``stream`` at ``seq``.

    ``duplicate`` is True when a message with the same ``msg_id`` was already stored
    within the stream's duplicate window (2 minutes by default); it was not stored
    again and will not be delivered again.
    """

    stream: str
    seq: int
    duplicate: bool = False


class PublishBatchError(JetkitError):
    """Some publishes of a batch failed; ``results`` holds a PubAck or exception per item."""

    def __init__(self, results: list[PubAck | BaseException]) -> None:
        failed = [r for r in results if isinstance(r, BaseException)]
        super().__init__(f"{len(failed)} of {len(results)} publishes failed; first: {failed[0]!r}")
        self.results = results


class _AckResp(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(_AckResp).decode


class _Batch:
    """The state of one publish_many call: a result slot per payload."""

    __slots__ = ("outstanding", "results", "room")

    def __init__(self) -> None:
        self.results: list[PubAck | BaseException | None] = []
        self.outstanding = 0
        self.room = asyncio.Event()


class _Entry:
    """One publish waiting for its ack: resolves a Future, or a slot of a batch."""

    __slots__ = ("batch", "deadline", "future", "index", "subject")

    def __init__(
        self,
        deadline: float,
        subject: str,
        future: asyncio.Future[PubAck] | None,
        batch: _Batch | None = None,
        index: int = 0,
    ) -> None:
        self.deadline = deadline
        self.subject = subject
        self.future = future
        self.batch = batch
        self.index = index

    def resolve(self, result: PubAck | BaseException) -> None:
        if self.batch is not None:
            self.batch.results[self.index] = result
            self.batch.outstanding -= 1
            self.batch.room.set()
        elif self.future is not None and not self.future.done():
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)


class AckedPublisher:
    """Publishes to JetStream subjects and resolves each PubAck.

    Waiting publishes live in a dict in send order; one sweeper task (running only
    while something waits) fails those older than ``timeout``, instead of a timer
    per publish.
    """

    def __init__(self, nc: Any, timeout: float, store_dir: Path | None = None) -> None:
        self._nc = nc
        self.timeout = timeout
        self._store_dir = store_dir
        # the last "storage full" refusal, until a publish is stored again
        self.full: StorageFullError | None = None
        self._prefix = ""
        self._prefix_b = b""
        self._pending: dict[str, _Entry] = {}
        self._ids = itertools.count(1)
        self._sub: Any = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        self._prefix_b = self._prefix.encode()
        self._sub = await self._nc.subscribe(
            self._prefix + "*", cb=self._on_ack, pending_msgs_limit=0, pending_bytes_limit=0
        )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        closed = StreamClosedError("the Stream closed before the ack arrived")
        for entry in self._pending.values():
            entry.resolve(closed)
        self._pending.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    def connection_lost(self) -> None:
        """The connection dropped: no ack for what was sent before can arrive any more.

        Fail those publishes now (the message may or may not be stored) instead of
        letting them wait out the timeout; publishes made from now on are sent after
        the reconnect and resolve normally.
        """
        self.fail_waiting(
            lambda subject: ConnectionLostError(
                f"the connection to NATS dropped before the ack of a publish to {subject!r} "
                "arrived; the message may or may not be stored: publish it again with the "
                "same msg_id to be safe"
            )
        )

    def fail_waiting(self, error: Callable[[str], JetkitError]) -> None:
        """Resolve every publish waiting for its ack with ``error(subject)``."""
        if not self._pending:
            return
        waiting = list(self._pending.values())
        self._pending.clear()
        for entry in waiting:
            entry.resolve(error(entry.subject))

    def _timed_out(self, subject: str) -> JetkitError:
        if self._store_dir is not None and not has_room(self._store_dir):
            return StorageFullError(
                f"no ack for a publish to {subject!r} within {self.timeout}s and the disk of "
                f"store {self._store_dir} is full; the message may or may not be stored. Free "
                "disk space; the server stores again once it is restarted with room"
            )
        return TimeoutError(
            f"no ack from JetStream for a publish to {subject!r} within {self.timeout}s; the "
            "message may or may not be stored: publish it again with the same msg_id to be safe"
        )

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self._pending
        while pending:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            now = loop.time()
            expired = []
            for token, entry in pending.items():
                if entry.deadline > now:
                    break
                expired.append(token)
            for token in expired:
                entry = pending.pop(token)
                entry.resolve(self._timed_out(entry.subject))
        self._sweeper = None

    async def _on_ack(self, msg: Any) -> None:
        entry = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if entry is not None:
            entry.resolve(self._parse(msg, entry.subject))

    def _parse(self, msg: Any, subject: str) -> PubAck | BaseException:
        if not msg.data:
            status = (msg.headers or {}).get("Status", "")
            if status == "503":
                return NotFoundError(
                    f"no JetStream topic stores {subject!r} (it was deleted?)", 503
                )
            return JetStreamError(f"publish to {subject!r}: status {status}")
        try:
            resp = _decode_ack(msg.data)
        except msgspec.DecodeError as exc:
            return JetStreamError(f"unreadable PubAck for {subject!r}: {exc}")
        if resp.error:
            code = int(resp.error.get("code", 0))
            err_code = int(resp.error.get("err_code", 0))
            desc = resp.error.get("description", "publish refused")
            if err_code in STORAGE_FULL_CODES:
                self.full = storage_full(desc, self._store_dir, code, err_code)
                return self.full
            return JetStreamError(f"publish to {subject!r} refused: {desc}", code, err_code)
        if self.full is not None:
            self.full = None
        return PubAck(resp.stream, resp.seq, resp.duplicate)

    async def _send(
        self, subject: str, data: bytes, headers: dict[str, str] | None, entry: _Entry
    ) -> None:
        token = str(next(self._ids))
        self._pending[token] = entry
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        nc = self._nc
        try:
            if headers is None and nc.is_connected:
                # nc.publish minus its per-call checks (jetkit already validated the
                # topic and the size): the PUB goes straight into the outgoing buffer
                await nc._send_command(
                    b"PUB %b %b%b %d\r\n%b\r\n"
                    % (subject.encode(), self._prefix_b, token.encode(), len(data), data)
                )
                if nc._flush_queue is not None and nc._flush_queue.empty():
                    await nc._flush_pending()
            else:
                await nc.publish(subject, data, reply=self._prefix + token, headers=headers)
        except nats.errors.ConnectionClosedError:
            self._pending.pop(token, None)
            raise StreamClosedError("the connection is closed; open the Stream again") from None
        except (nats.errors.Error, OSError) as exc:
            self._pending.pop(token, None)
            raise ConnectionError(f"publish to {subject!r} failed: {exc}") from exc

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None) -> PubAck:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[PubAck] = loop.create_future()
        await self._send(subject, data, headers, _Entry(loop.time() + self.timeout, subject, fut))
        return await fut

    async def publish_many(
        self,
        subject: str,
        payloads: Iterable[bytes],
        headers: dict[str, str] | None,
        window: int,
    ) -> list[PubAck]:
        """Publish with up to ``window`` acks outstanding; every item gets a result.

        If sending fails part-way (e.g. the connection closed), that error is the result
        of the failing payload and of every payload not sent.
        """
        loop = asyncio.get_running_loop()
        batch = _Batch()
        results = batch.results
        items = iter(payloads)
        for data in items:
            while batch.outstanding >= window:
                batch.room.clear()
                await batch.room.wait()
            results.append(None)
            entry = _Entry(loop.time() + self.timeout, subject, None, batch, len(results) - 1)
            try:
                await self._send(subject, data, headers, entry)
            except JetkitError as exc:
                results[-1] = exc
                results.extend([exc] * sum(1 for _ in items))
                break
            batch.outstanding += 1
        while batch.outstanding > 0:
            batch.room.clear()
            await batch.room.wait()
        if any(not isinstance(r, PubAck) for r in results):
            raise PublishBatchError([r if r is not None else JetkitError("lost") for r in results])
        return [r for r in results if isinstance(r, PubAck)]

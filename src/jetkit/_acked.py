"""Acked JetStream publishing without a task per publish.

One wildcard inbox subscription receives every PubAck; each publish is a
Future keyed by a short token, and one sweeper task fails those whose ack did not
come within ``timeout`` (and, on a cluster, sends them again meanwhile).
``publish_many`` keeps up to ``window`` publishes in flight (a sliding window,
so client and server overlap) and reports every failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from nats.aio.subscription import Subscription as NatsSubscription

from ._connection import Connection
from ._errors import (
    ConnectionLostError,
    JetkitError,
    JetStreamError,
    NotFoundError,
    PublishBatchError,
    StorageFullError,
    StreamClosedError,
    TimeoutError,
)
from ._files import has_room
from ._jsapi import STORAGE_FULL_CODES, storage_full
from ._wire import header_block, hpub, parse_headers, pub

if TYPE_CHECKING:
    pass

TTL_DISABLED = 10166  # "per-message TTL is disabled" (the stream does not allow Nats-TTL)
MSG_ID = "Nats-Msg-Id"
# "duplicate message id is in process": a send of ours with that id is being replicated
# (a cluster without quorum right now); its outcome is not known yet
IN_PROCESS = 10158
RESEND = 1.0  # seconds (jittered) between sends of a publish no ack answered (cluster)


def resend_delay() -> float:
    """When an unanswered publish is sent again: ``RESEND`` seconds, +-20 %."""
    return RESEND * (0.8 + 0.4 * random.random())


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

    __slots__ = ("batch", "deadline", "frame", "future", "index", "own_id", "resend_at", "subject")

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
        self.frame: bytes | None = None  # what is sent again while no ack comes (cluster)
        self.resend_at = 0.0
        self.own_id = False  # its msg id is jetkit's: a duplicate can only be our re-send

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


def stored(entry: _Entry) -> bool | None:
    """Whether ``entry``'s publish was stored: True, False (it failed) or None (not
    answered yet). Read from its Future or batch slot, so the hot path counts nothing."""
    if entry.batch is not None:
        result = entry.batch.results[entry.index]
    elif entry.future is not None and entry.future.done():
        future = entry.future
        result = None if future.cancelled() else (future.exception() or future.result())
    else:
        return None
    if result is None:
        return None
    return not isinstance(result, BaseException)


class AckedPublisher:
    """Publishes to JetStream subjects and resolves each PubAck.

    Waiting publishes live in a dict in send order; one sweeper task (running only
    while something waits) fails those older than ``timeout``, instead of a timer
    per publish. Time the event loop was blocked does not count towards ``timeout``
    (nothing could be written or read meanwhile).

    On a cluster (``resend``) every publish carries a msg id (one of jetkit's, unique
    per message, when the caller gave none) and the sweeper sends a publish that got no
    ack again about every second: a leader that died with it unanswered is replaced
    within seconds, and the duplicate window stores it once. A dropped connection does
    not fail them either: they are sent again through the next one, and a publish of a
    batch that no stream leader takes right now (status 503, an election) is held and
    sent again like them. On a single server
    nothing of this runs (a publish there is answered or its server is gone).
    """

    def __init__(self, conn: Connection, timeout: float, store_dir: Path | None = None) -> None:
        self._conn = conn
        self.timeout = timeout
        self._store_dir = store_dir
        # the last "storage full" refusal, until a publish is stored again
        self.full: StorageFullError | None = None
        self._prefix = ""
        self._prefix_b = b""
        self._skip = 0  # len(self._prefix_b)
        self._pending: dict[bytes, _Entry] = {}
        self._ids = itertools.count(1)
        self._sub: NatsSubscription | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.resend = False  # connected to a cluster: msg ids and re-sends
        self._id_prefix = ""
        self._id_seq = itertools.count(1)
        self._id_prefix_b = b""

    async def start(self) -> None:
        self._prefix = self._conn.new_inbox() + "."
        self._prefix_b = self._prefix.encode()
        self._skip = len(self._prefix_b)
        self._sub = await self._conn.subscribe(self._prefix + "*", self._on_ack)
        self.resend = self._conn.clustered
        self._id_prefix = f"jk-{secrets.token_hex(8)}-"  # 64 random bits per Stream
        self._id_prefix_b = self._id_prefix.encode()

    def new_id(self) -> str:
        """A msg id no other publish of any Stream has (for re-sends)."""
        return f"{self._id_prefix}{next(self._id_seq)}"

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        closed = StreamClosedError("the Stream closed before the ack arrived")
        for entry in self._pending.values():
            entry.resolve(closed)
        self._pending.clear()
        if self._sub is not None:
            await self._conn.unsubscribe(self._sub)

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
            ),
            keep_resent=True,
        )

    @property
    def waiting(self) -> bool:
        """Whether a publish waits for its ack."""
        return bool(self._pending)

    def oldest(self) -> _Entry | None:
        """The publish that has waited longest for its ack (None: none waits)."""
        return next(iter(self._pending.values()), None)

    def waiting_subjects(self) -> set[str]:
        """The subjects of the publishes waiting for their ack."""
        return {entry.subject for entry in self._pending.values()}

    def fail_waiting(
        self, error: Callable[[str], JetkitError], *, keep_resent: bool = False
    ) -> None:
        """Resolve every publish waiting for its ack with ``error(subject)``
        (``keep_resent``: except those sent again until their ack comes)."""
        if not self._pending:
            return
        if keep_resent:
            gone = [t for t, e in self._pending.items() if e.frame is None]
            waiting = [self._pending.pop(t) for t in gone]
        else:
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
        if self.resend:
            return TimeoutError(
                f"no ack from JetStream for a publish to {subject!r} within {self.timeout:g}s "
                "(publish_timeout), although it was sent again every second with the same "
                "msg id; the message may or may not be stored. A cluster may be electing a "
                "leader (several seconds) or lack a majority: publish it again with the same "
                "msg_id, or open the Stream with a larger publish_timeout (e.g. 20)"
            )
        return TimeoutError(
            f"no ack from JetStream for a publish to {subject!r} within {self.timeout}s; the "
            "message may or may not be stored: publish it again with the same msg_id to be safe"
        )

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self._pending
        while pending:
            period = min(RESEND / 4 if self.resend else 1.0, self.timeout / 4)
            due = loop.time() + period
            await asyncio.sleep(period)
            now = loop.time()
            stalled = now - due - period  # the event loop was blocked this long (a sync
            if stalled > 0:  # call, a producer): no ack could be read, nor a PUB written
                for entry in pending.values():
                    entry.deadline += stalled
            expired = []
            resend = self.resend  # entries held back are not in deadline order: see all
            for token, entry in pending.items():
                if entry.deadline > now:
                    if resend:
                        continue
                    break
                expired.append(token)
            for token in expired:
                entry = pending.pop(token)
                entry.resolve(self._timed_out(entry.subject))
            if self.resend:
                self._send_again(now)
        self._sweeper = None

    def _send_again(self, now: float) -> None:
        """Send again what waited about a second for its ack (same msg id)."""
        for entry in self._pending.values():
            if entry.frame is not None and entry.resend_at <= now:
                entry.resend_at = now + resend_delay()
                with contextlib.suppress(JetkitError):  # down: the next tick tries again
                    self._conn.send(entry.frame)

    def _on_ack(self, subject: bytes, reply: bytes, hdr: bytes | None, payload: bytes) -> None:
        """The parser's hand-over: a PubAck (or a status) for the token in ``subject``."""
        token = subject[self._skip :]
        entry = self._pending.pop(token, None)
        if entry is not None:
            result = self._parse(payload, hdr, entry.subject)
            if entry.frame is not None:  # a cluster's publish, sent again while unanswered
                if isinstance(result, PubAck):
                    if entry.own_id and result.duplicate:
                        result = PubAck(result.stream, result.seq)  # our earlier send's
                elif (entry.batch is not None and isinstance(result, NotFoundError)) or (
                    isinstance(result, JetStreamError) and result.err_code == IN_PROCESS
                ):
                    # no stream leader right now (an election; a batch's stream was
                    # verified when it began), or an earlier send is still being
                    # replicated: held, and sent again until an answer says what became
                    # of it
                    self._pending[token] = entry
                    return
            entry.resolve(result)

    def _parse(self, data: bytes, hdr: bytes | None, subject: str) -> PubAck | BaseException:
        if not data:
            status = parse_headers(hdr).get("Status", "") if hdr else ""
            if status == "503":
                return NotFoundError(
                    f"no JetStream topic stores {subject!r} (it was deleted?)", 503
                )
            return JetStreamError(f"publish to {subject!r}: status {status}")
        try:
            resp = _decode_ack(data)
        except msgspec.DecodeError as exc:
            return JetStreamError(f"unreadable PubAck for {subject!r}: {exc}")
        if resp.error:
            code = int(resp.error.get("code", 0))
            err_code = int(resp.error.get("err_code", 0))
            desc = resp.error.get("description", "publish refused")
            if err_code in STORAGE_FULL_CODES:
                self.full = storage_full(desc, self._store_dir, code, err_code)
                return self.full
            if err_code == TTL_DISABLED:
                desc += (
                    " (the message has a Nats-TTL header, perhaps copied from a received "
                    "message: pass ttl= instead, which allows TTLs on the topic, or leave "
                    "the header out)"
                )
            return JetStreamError(f"publish to {subject!r} refused: {desc}", code, err_code)
        if self.full is not None:
            self.full = None
        return PubAck(resp.stream, resp.seq, resp.duplicate)

    def _register(self, entry: _Entry) -> bytes:
        """A new token whose PubAck resolves ``entry`` (the sweeper times it out)."""
        token = b"%d" % next(self._ids)
        self._pending[token] = entry
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        return token

    def _send(self, subject: str, data: bytes, entry: _Entry) -> bool:
        """Send a publish without headers; True when the outgoing buffer is full."""
        token = self._register(entry)
        try:
            # a PUB straight into the outgoing buffer (jetkit checked topic and size)
            return self._conn.send(pub(subject.encode(), data, self._prefix_b + token))
        except JetkitError:
            self._pending.pop(token, None)
            raise

    def _send_resendable(
        self, subject: str, data: bytes, headers: dict[str, str] | None, entry: _Entry
    ) -> bool:
        """Send a publish with a msg id (jetkit's if it has none), kept to be sent again
        (``_send_again``); True when the outgoing buffer is full."""
        if headers is None:  # the common case, in one format
            block = b"NATS/1.0\r\nNats-Msg-Id: %b%d\r\n\r\n" % (
                self._id_prefix_b,
                next(self._id_seq),
            )
            entry.own_id = True
        elif MSG_ID in headers:
            block = header_block(headers)
        else:
            block = header_block({**headers, MSG_ID: self.new_id()})
            entry.own_id = True
        token = self._register(entry)
        entry.frame = frame = hpub(subject.encode(), block, data, self._prefix_b + token)
        entry.resend_at = entry.deadline - self.timeout + resend_delay()
        try:
            return self._conn.send(frame)
        except JetkitError:
            self._pending.pop(token, None)
            raise

    async def _send_with_headers(
        self, subject: str, data: bytes, headers: dict[str, str], entry: _Entry
    ) -> None:
        token = self._register(entry)
        try:
            await self._conn.publish(
                subject, data, reply=self._prefix + token.decode(), headers=headers
            )
        except JetkitError:
            self._pending.pop(token, None)
            raise

    def with_id(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        """``headers`` with a msg id of jetkit's if they have none and this is a cluster
        (``resend``); as they are otherwise. For a caller that may publish the same
        message again itself: every send must carry the same id."""
        if not self.resend or (headers is not None and MSG_ID in headers):
            return headers
        return {**headers, MSG_ID: self.new_id()} if headers else {MSG_ID: self.new_id()}

    async def publish(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None,
        own_id: bool = False,
    ) -> PubAck:
        """``own_id``: the msg id in ``headers`` is jetkit's (``with_id``)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[PubAck] = loop.create_future()
        entry = _Entry(loop.time() + self.timeout, subject, fut)
        entry.own_id = own_id
        if self.resend:
            if self._send_resendable(subject, data, headers, entry):
                await self._conn.relieve()
        elif headers is not None:
            await self._send_with_headers(subject, data, headers, entry)
        elif self._send(subject, data, entry):
            await self._conn.relieve()
        return await fut

    async def publish_many(
        self,
        subject: str,
        payloads: Iterable[bytes],
        headers: dict[str, str] | None,
        window: int,
    ) -> list[PubAck]:
        """Publish with up to ``window`` acks outstanding; every item gets a result.

        ``payloads`` must be checked already. If sending fails part-way (e.g. the
        connection closed), that error is the result of the failing payload and of every
        payload not sent.
        """
        loop = asyncio.get_running_loop()
        batch = _Batch()
        results = batch.results
        items = iter(payloads)
        timeout = self.timeout
        resend = self.resend
        for data in items:
            while batch.outstanding >= window:
                batch.room.clear()
                await batch.room.wait()
            index = len(results)
            results.append(None)
            entry = _Entry(loop.time() + timeout, subject, None, batch, index)
            try:
                if resend:
                    if self._send_resendable(subject, data, headers, entry):
                        await self._conn.relieve()
                elif headers is not None:
                    await self._send_with_headers(subject, data, headers, entry)
                elif self._send(subject, data, entry):
                    await self._conn.relieve()
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

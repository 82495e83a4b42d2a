"""Publishing: the checks, the core path, and acked JetStream publishing without a
task per publish.

One wildcard inbox subscription receives every PubAck; each publish is a
Future keyed by a short token, with a timer that fails it after ``timeout``.
``publish_many`` keeps up to ``window`` publishes in flight (a sliding window,
so client and server overlap) and reports every failure.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from nats.aio.subscription import Subscription as NatsSubscription

from ._connection import Connection
from ._errors import (
    ConnectionLostError,
    EncodeError,
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
from ._topics import TopicMode, TopicRegistry
from ._validate import header_size, message_size, number
from ._validate import headers as check_headers
from ._wire import parse_headers, pub

if TYPE_CHECKING:
    from ._counting import PublishCounts

TTL_DISABLED = 10166  # "per-message TTL is disabled" (the stream does not allow Nats-TTL)


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
    per publish. Time the event loop was blocked does not count towards ``timeout``
    (nothing could be written or read meanwhile).
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
        self.acks = 0  # PubAcks that said "stored" (the failover watch reads it)

    async def start(self) -> None:
        self._prefix = self._conn.new_inbox() + "."
        self._prefix_b = self._prefix.encode()
        self._skip = len(self._prefix_b)
        self._sub = await self._conn.subscribe(self._prefix + "*", self._on_ack)

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
            )
        )

    @property
    def waiting(self) -> bool:
        """Whether a publish waits for its ack."""
        return bool(self._pending)

    def waiting_subjects(self) -> set[str]:
        """The subjects of the publishes waiting for their ack."""
        return {entry.subject for entry in self._pending.values()}

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
            period = min(1.0, self.timeout / 4)
            due = loop.time() + period
            await asyncio.sleep(period)
            now = loop.time()
            stalled = now - due - period  # the event loop was blocked this long (a sync
            if stalled > 0:  # call, a producer): no ack could be read, nor a PUB written
                for entry in pending.values():
                    entry.deadline += stalled
            expired = []
            for token, entry in pending.items():
                if entry.deadline > now:
                    break
                expired.append(token)
            for token in expired:
                entry = pending.pop(token)
                entry.resolve(self._timed_out(entry.subject))
        self._sweeper = None

    def _on_ack(self, subject: bytes, reply: bytes, hdr: bytes | None, payload: bytes) -> None:
        """The parser's hand-over: a PubAck (or a status) for the token in ``subject``."""
        entry = self._pending.pop(subject[self._skip :], None)
        if entry is not None:
            entry.resolve(self._parse(payload, hdr, entry.subject))

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
        self.acks += 1
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

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None) -> PubAck:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[PubAck] = loop.create_future()
        entry = _Entry(loop.time() + self.timeout, subject, fut)
        if headers is not None:
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
        for data in items:
            while batch.outstanding >= window:
                batch.room.clear()
                await batch.room.wait()
            index = len(results)
            results.append(None)
            entry = _Entry(loop.time() + timeout, subject, None, batch, index)
            try:
                if headers is not None:
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


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Take a background task's outcome, so an error nobody waits for is not logged."""
    if not task.cancelled():
        task.exception()


def disk_full(store_dir: Path | None, detail: str | None, what: str) -> StorageFullError:
    """The error for a store whose disk is full (the server stopped writing)."""
    return StorageFullError(
        f"store {store_dir} is out of disk space (nats-server: {detail}): {what}. Free "
        "disk space (delete files, or delete_topic() a topic you do not need); jetkit "
        "restarts the server and stores again by itself once there is room"
    )


class Publisher:
    """``Stream.publish`` and friends: checks, then the core or the acked JetStream path.

    ``disk_error()`` says whether the embedded server stopped writing its store (its
    last storage error, or None): JetStream publishes then fail at once.
    """

    def __init__(
        self,
        conn: Connection,
        topics: TopicRegistry,
        timeout: float,
        store_dir: Path | None,
        disk_error: Callable[[], str | None],
    ) -> None:
        self._conn = conn
        self._topics = topics
        self._store_dir = store_dir
        self._disk_error = disk_error
        self.acked = AckedPublisher(conn, timeout, store_dir)
        self._since_yield = 0
        self.counts: PublishCounts | None = None  # set while metrics are on

    def check_payload(self, topic: str, data: object, headers: dict[str, str] | None) -> bytes:
        """The payload as bytes, once the whole message is known to fit ``max_payload``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise EncodeError(
                f"publish() takes bytes, got {type(data).__name__}; use publish_json() for "
                "objects, or encode text with .encode()"
            )
        payload = bytes(data) if not isinstance(data, bytes) else data
        message_size(topic, payload, headers, self._conn.max_payload)
        return payload

    def _checked(
        self, topic: str, payloads: Iterable[bytes], headers: dict[str, str] | None
    ) -> Iterator[bytes]:
        """``payloads``, each checked as it is taken (the common case in one test)."""
        limit = self._conn.max_payload - header_size(headers)
        for data in payloads:
            if type(data) is bytes and len(data) <= limit:
                yield data
            else:
                yield self.check_payload(topic, data, headers)

    def label(self, topic: object) -> str:
        """``topic`` as a metrics label: a topic that failed its checks is counted as
        ``_invalid`` (it may be anything, and is not a topic)."""
        return topic if isinstance(topic, str) and topic in self._topics.valid else "_invalid"

    def count(self, counts: PublishCounts) -> None:
        """Count every publish in ``counts`` from now on (metrics on)."""
        self.counts = counts

    async def publish(
        self, topic: str, data: bytes, headers: dict[str, str] | None, msg_id: str | None
    ) -> PubAck | None:
        # the hot path: every check is a cheap test first, the full one only if needed
        # (metrics off: one test for counting; the try costs nothing until it raises)
        try:
            topics = self._topics
            if topic not in topics.valid:
                topics.check(topic)
            if headers is not None or msg_id is not None:
                headers = check_headers(headers, msg_id)
            if type(data) is not bytes or headers is not None or len(data) > self._conn.max_payload:
                data = self.check_payload(topic, data, headers)
            if (topics.modes.get(topic) or topics.mode_for(topic)) is TopicMode.CORE:
                if headers is not None:
                    await self._conn.publish(topic, data, headers=headers)
                elif self._conn.send(pub(topic.encode(), data)):
                    await self._conn.relieve()
                if self.counts is not None:
                    self.counts.ok(topic)
                self._since_yield += 1
                if self._since_yield >= 64:
                    await self._yield()
                return None
            ack = await self.stored(topic, data, headers)
        except JetkitError:
            if self.counts is not None:
                self.counts.error(self.label(topic))
            raise
        if self.counts is not None:
            self.counts.ok(topic)
        return ack

    async def _yield(self) -> None:
        """A core publish never yields to the event loop; a tight loop of them would
        starve this process's own subscriptions into dropping: let them run."""
        self._since_yield = 0
        await asyncio.sleep(0)

    async def stored(self, topic: str, data: bytes, headers: dict[str, str] | None) -> PubAck:
        """Publish to JetStream whatever the topic's mode (dead letters always are)."""
        self.refuse_if_disk_full("nothing was sent, the message is not stored")
        await self._topics.ensure_stream(topic)
        try:
            return await self.acked.publish(topic, data, headers)
        except NotFoundError:
            return await self._until_a_stream_answers(topic, data, headers)

    async def _until_a_stream_answers(
        self, topic: str, data: bytes, headers: dict[str, str] | None
    ) -> PubAck:
        """No stream answered a publish (the server said "no responders"): it was
        deleted behind our back (create it again), or, on a cluster, it has no leader
        right now (a leader died, or too few nodes are up). Nothing was stored, so the
        publish is sent again, until ``publish_timeout`` from here runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.acked.timeout
        delay = 0.05
        while True:
            left = deadline - loop.time()
            check = asyncio.ensure_future(self._topics.ensure_stream(topic, verify=True))
            check.add_done_callback(_retrieve)  # it may end after we stopped waiting
            with contextlib.suppress(builtins.TimeoutError, JetkitError):
                # bounded: the cluster's API may not answer while it elects a leader
                await asyncio.wait_for(asyncio.shield(check), max(0.01, left))
            try:
                return await self.acked.publish(topic, data, headers)
            except NotFoundError:
                left = deadline - loop.time()
                if left <= delay:
                    raise TimeoutError(
                        f"no stream leader answered the publish to {topic!r} within "
                        f"{self.acked.timeout:g}s (publish_timeout); nothing was stored. On a "
                        "cluster a majority of the topic's replicas must be up; retry it "
                        "(with msg_id= a retry is never stored twice)"
                    ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def refuse_if_disk_full(self, what: str) -> None:
        detail = self._disk_error()
        if detail is not None:
            raise disk_full(self._store_dir, detail, what)

    async def dead_letter(self, topic: str, data: bytes, headers: dict[str, str]) -> None:
        """The subscriptions' hook for dead letters."""
        await self.stored(topic, data, headers)

    async def publish_many(
        self, topic: str, payloads: Iterable[bytes], headers: dict[str, str] | None, window: int
    ) -> list[PubAck | None]:
        counts = self.counts
        if counts is None:
            return await self._publish_many(topic, payloads, headers, window)
        try:
            results = await self._publish_many(topic, payloads, headers, window)
        except PublishBatchError as exc:
            failed = sum(1 for r in exc.results if not isinstance(r, PubAck))
            counts.ok(topic, len(exc.results) - failed)
            counts.error(topic, failed)
            raise
        except JetkitError:
            counts.error(self.label(topic))
            raise
        counts.ok(topic, len(results))
        return results

    async def _publish_many(
        self, topic: str, payloads: Iterable[bytes], headers: dict[str, str] | None, window: int
    ) -> list[PubAck | None]:
        self._topics.check(topic)
        number("window", window, minimum=1, maximum=1_000_000, integer=True)
        headers = check_headers(headers)
        checked = self._checked(topic, payloads, headers)
        if self._topics.mode_for(topic) is TopicMode.CORE:
            count = 0
            conn = self._conn
            subject = topic.encode()
            for data in checked:
                if headers is not None:
                    await conn.publish(topic, data, headers=headers)
                elif conn.send(pub(subject, data)):
                    await conn.relieve()
                count += 1
                self._since_yield += 1
                if self._since_yield >= 64:
                    await self._yield()
            return [None] * count
        self.refuse_if_disk_full("nothing was sent, no message is stored")
        # a batch cannot be sent again (its payloads may come from a generator), so make
        # sure now that the stream was not deleted behind our back
        await self._topics.ensure_stream(topic, verify=True)
        return list(await self.acked.publish_many(topic, checked, headers, window))

    def disk_full_now(self) -> None:
        """The embedded server stopped writing: fail what waits for an ack now."""
        self.acked.fail_waiting(
            lambda subject: disk_full(
                self._store_dir,
                self._disk_error(),
                f"the publish to {subject!r} was not confirmed and may or may not be stored",
            )
        )

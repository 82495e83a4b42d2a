"""Publishing: the checks, the core path, and the JetStream path (acked publishing
itself is ``_acked``'s).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._acked import TTL_DISABLED, AckedPublisher, PubAck
from ._connection import Connection
from ._errors import (
    EncodeError,
    JetkitError,
    NotFoundError,
    PublishBatchError,
    StorageFullError,
    TimeoutError,
)
from ._topics import TopicMode, TopicRegistry
from ._validate import header_size, message_size, number
from ._validate import headers as check_headers
from ._wire import pub

if TYPE_CHECKING:
    from ._counting import PublishCounts


__all__ = ["TTL_DISABLED", "AckedPublisher", "PubAck", "Publisher", "disk_full"]


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
        # on a cluster: one msg id for every send of this message, ours and the loop's
        sent = self.acked.with_id(headers)
        own = sent is not headers
        try:
            return await self.acked.publish(topic, data, sent, own)
        except NotFoundError:
            return await self._until_a_stream_answers(topic, data, sent, own)

    async def _until_a_stream_answers(
        self, topic: str, data: bytes, headers: dict[str, str] | None, own_id: bool = False
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
                return await self.acked.publish(topic, data, headers, own_id)
            except NotFoundError:
                left = deadline - loop.time()
                if left <= delay:
                    if not self.acked.resend:
                        raise TimeoutError(
                            f"no stream leader answered the publish to {topic!r} within "
                            f"{self.acked.timeout:g}s (publish_timeout); nothing was stored: "
                            "retry it (with msg_id= a retry is never stored twice)"
                        ) from None
                    raise TimeoutError(
                        f"no stream leader answered the publish to {topic!r} within "
                        f"{self.acked.timeout:g}s (publish_timeout); it may or may not be "
                        "stored (it was sent more than once). A cluster may be electing a "
                        "leader (several seconds) or lack a majority of the topic's "
                        "replicas: publish it again with the same msg_id, or open the "
                        "Stream with a larger publish_timeout (e.g. 20)"
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

"""Topic and consumer administration: the part of ``jk.Stream`` that declares, inspects,
purges and deletes topics and consumers, and reads and re-drives dead letters."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _damage, _deadletters
from ._deadletters import DeadLetter, RedriveResult
from ._errors import NotFoundError
from ._info import ConsumerInfo, TopicInfo, consumer_info, topic_info
from ._jsapi import JsApi
from ._message import Message
from ._publish import Publisher
from ._topics import Discard, Retention, TopicMode, TopicRegistry, consumer_name_ok


class AdminAPI:
    """Mixed into ``jk.Stream``: its admin calls, over the Stream's JetStream API."""

    _api: JsApi
    _topics: TopicRegistry
    _publisher: Publisher
    _log: logging.Logger

    def _check_open(self) -> None:
        raise NotImplementedError

    @property
    def store_dir(self) -> Path | None:
        raise NotImplementedError

    async def declare_topic(
        self,
        topic: str,
        mode: TopicMode | None = None,
        max_msgs: int | None = None,
        max_bytes: int | None = None,
        max_age: float | dt.timedelta | None = None,
        discard: Discard = Discard.OLD,
        replicas: int = 1,
        retention: Retention = Retention.LIMITS,
    ) -> TopicInfo | None:
        """Set a topic's mode and, for JetStream, create or update its stream and limits.

        ``topic`` may be a pattern (``orders.>``): every matching subject then uses this
        mode and is stored in one stream. ``mode=None`` means JETSTREAM when any stream
        option is given, else the Stream's default mode. Declaring again with other limits
        updates them (every limit not given is then unlimited); declaring without any
        limit leaves an existing stream as it is, including one that stores the topic
        under a wider pattern. Returns the stream's TopicInfo (None for a core topic).
        """
        self._check_open()
        resp = await self._topics.declare(
            topic,
            mode,
            max_msgs=max_msgs,
            max_bytes=max_bytes,
            max_age=max_age,
            discard=discard,
            replicas=replicas,
            retention=retention,
        )
        return topic_info(resp) if resp is not None else None

    async def topics(self) -> list[TopicInfo]:
        """Every JetStream topic (stream) on the server."""
        self._check_open()
        return [topic_info(s) for s in await self._list("STREAM.LIST", "streams")]

    async def topic_info(self, topic: str) -> TopicInfo:
        """Messages, bytes, first/last sequence and consumer count of a stored topic."""
        self._check_open()
        name, _ = await self._topics.stream_of(topic)
        return topic_info(await self._api.call(f"STREAM.INFO.{name}"))

    async def purge_topic(self, topic: str) -> int:
        """Remove the stored messages of ``topic`` (only its subjects); returns how many."""
        self._check_open()
        name, subjects = await self._topics.stream_of(topic)
        body = None if subjects == [topic] else {"filter": topic}
        resp = await self._api.call(f"STREAM.PURGE.{name}", body)
        return int(resp.get("purged", 0))

    async def delete_topic(self, topic: str) -> None:
        """Delete the stream that stores ``topic``, with its messages and consumers."""
        self._check_open()
        name, _ = await self._topics.stream_of(topic)
        await self._api.call(f"STREAM.DELETE.{name}")
        self._topics.forget(name)

    async def last_message(self, topic: str) -> Message | None:
        """The newest stored message on ``topic`` (a concrete subject), or None if none."""
        self._check_open()
        self._topics.check(topic)
        name, _ = await self._topics.stream_of(topic)
        try:
            resp = await self._api.call(f"STREAM.MSG.GET.{name}", {"last_by_subj": topic})
        except NotFoundError:
            return None
        return Message.stored(resp["message"])

    async def consumers(self, topic: str) -> list[ConsumerInfo]:
        """The consumers of a stored topic, with their lag."""
        self._check_open()
        name, _ = await self._topics.stream_of(topic)
        return [consumer_info(c) for c in await self._list(f"CONSUMER.LIST.{name}", "consumers")]

    async def consumer_info(self, topic: str, durable: str) -> ConsumerInfo:
        """One consumer's position: pending (lag), ack_pending, redelivered, ack_floor."""
        self._check_open()
        consumer = consumer_name_ok(durable, "durable")
        name, _ = await self._topics.stream_of(topic)
        return consumer_info(await self._api.call(f"CONSUMER.INFO.{name}.{consumer}"))

    async def delete_consumer(self, topic: str, durable: str) -> None:
        """Delete a durable consumer (its position is forgotten).

        A durable the server could not load (its state on disk is damaged) is removed
        from an embedded store too.
        """
        self._check_open()
        consumer = consumer_name_ok(durable, "durable")
        name, _ = await self._topics.stream_of(topic)
        try:
            await self._api.call(f"CONSUMER.DELETE.{name}.{consumer}")
        except NotFoundError:
            store = self.store_dir
            if store is None or not _damage.remove_consumer_state(store, name, consumer):
                raise
            self._log.warning(
                "jetkit: durable %r of stream %r could not be loaded; removed its state",
                consumer,
                name,
            )

    async def dead_letters(self, dlq_topic: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters stored on ``dlq_topic``, oldest first (at most ``limit``).

        Messages without the dead-letter headers are not dead letters and are left out.
        """
        self._check_open()
        return await _deadletters.read(self._api, self._topics, dlq_topic, limit)

    async def redrive(
        self,
        dlq_topic: str,
        *,
        limit: int | None = None,
        where: Callable[[DeadLetter], bool] | None = None,
    ) -> RedriveResult:
        """Publish dead letters again to their original topics, then delete them from the DLQ.

        Each one goes back with its original payload and headers plus
        ``Jetkit-Redrives: n``, and is deleted from ``dlq_topic`` (by sequence) only
        after that publish was acknowledged: the DLQ is never purged, so letters
        arriving meanwhile stay. ``where`` selects which letters to re-drive (the others
        are kept), ``limit`` how many at most. Messages without the dead-letter headers
        are skipped, never deleted; if the topic holds messages but no dead letter at
        all, raises jk.NotADeadLetterTopicError. A failing publish stops the re-drive
        with its error; what was re-driven until then is done, the rest stays.
        """
        self._check_open()
        return await _deadletters.redrive(
            self._api, self._topics, self._publisher, dlq_topic, limit, where, self._log
        )

    async def _list(self, call: str, key: str) -> list[dict[str, Any]]:
        """Every item of a paged JetStream list call."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            resp = await self._api.call(call, {"offset": offset})
            batch = resp.get(key) or []
            out.extend(batch)
            offset += len(batch)
            if not batch or offset >= int(resp.get("total", 0)):
                return out

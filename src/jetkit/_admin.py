"""Topic and consumer administration: the calls of ``jk.Stream`` that declare, inspect,
purge and delete topics and consumers, and read, re-drive and discard dead letters.

``Admin`` works on a Stream's ``Runtime``; the Stream holds one and offers its public
calls through ``_faces.AdminFace`` (generated from this class: signatures and docstrings
are written here only).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from . import _browse, _damage, _deadletters
from ._attempts import STREAM as ATTEMPTS_STREAM
from ._deadletters import DeadLetter, DeadLetterScan, RedriveResult
from ._errors import (
    ConfigError,
    InvalidTopicError,
    JetStreamError,
    NotFoundError,
    TimeoutError,
)
from ._info import ConsumerInfo, TopicInfo, TopicOverview, consumer_info, topic_info
from ._message import Message
from ._options import reset_position
from ._runtime import Runtime
from ._subscription import StartAt
from ._time import rfc3339
from ._topics import (
    Discard,
    Retention,
    TopicMode,
    consumer_name_ok,
    subject_matches,
    validate_topic,
)
from ._validate import INT64_MAX, optional_number


class Admin:
    """The admin calls of one Stream (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

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
        duplicate_window: float | dt.timedelta | None = None,
    ) -> TopicInfo | None:
        """Set a topic's mode and, for JetStream, create or update its stream and limits.

        ``topic`` may be a pattern (``orders.>``): every matching subject then uses this
        mode and is stored in one stream. ``mode=None`` means JETSTREAM when any stream
        option is given, else the Stream's default mode. Declaring again with other limits
        updates them (every limit not given is then unlimited); declaring without any
        limit leaves an existing stream as it is, including one that stores the topic
        under a wider pattern. Returns the stream's TopicInfo (None for a core topic).

        ``duplicate_window``: how long (seconds or timedelta) the stream remembers msg ids
        to refuse a message published again with one (None: 2 minutes, or ``max_age`` if
        shorter). An ``emit=`` pipeline's outputs are stored once while their input comes
        again within this window.
        """
        self._rt.check_open()
        resp = await self._rt.topics.declare(
            topic,
            mode,
            max_msgs=max_msgs,
            max_bytes=max_bytes,
            max_age=max_age,
            discard=discard,
            replicas=replicas,
            retention=retention,
            duplicate_window=duplicate_window,
        )
        return topic_info(resp) if resp is not None else None

    async def topics(self) -> list[TopicInfo]:
        """Every JetStream topic (stream) on the server (jetkit's own attempt records,
        ``JK-ATTEMPTS``, are not a topic)."""
        self._rt.check_open()
        streams = [
            s
            for s in await self._list("STREAM.LIST", "streams")
            if s.get("config", {}).get("name") != ATTEMPTS_STREAM
        ]
        sizes = await asyncio.to_thread(
            lambda: [self._disk_bytes(s.get("config", {}).get("name", "")) for s in streams]
        )
        return [topic_info(s, size) for s, size in zip(streams, sizes, strict=True)]

    async def topic_info(self, topic: str) -> TopicInfo:
        """Messages, bytes, first/last sequence, consumer count, on-disk size (embedded
        store) and, on a cluster, the leader and the nodes holding a copy."""
        self._rt.check_open()
        name, _ = await self._rt.topics.stream_of(topic)
        resp = await self._rt.api.call(f"STREAM.INFO.{name}")
        return topic_info(resp, await asyncio.to_thread(self._disk_bytes, name))

    def _disk_bytes(self, stream: str) -> int | None:
        """The size of a stream's files in this Stream's store (None when not local)."""
        store = self._rt.store_dir
        if store is None or not stream or "/" in stream or stream.startswith("."):
            return None
        total = 0
        found = False
        for root, _, files in os.walk(_damage.streams_dir(store) / stream):
            found = True
            for file in files:
                try:
                    total += os.lstat(os.path.join(root, file)).st_size
                except OSError:  # removed meanwhile (compaction)
                    continue
        return total if found else None

    async def purge_topic(
        self,
        topic: str,
        subject: str | None = None,
        keep: int | None = None,
        up_to_seq: int | None = None,
    ) -> int:
        """Remove stored messages of ``topic``; returns how many were removed.

        Only ``topic``'s own subjects are purged (not the rest of a stream stored under
        a wider pattern). ``subject`` narrows it further to a subject or pattern inside
        ``topic``. ``keep=n`` keeps the newest n messages (per purged subject filter),
        ``up_to_seq=n`` removes the messages with sequence <= n only; not both.
        """
        self._rt.check_open()
        self._rt.topics.check(topic, wildcards=True)
        keep = optional_number("keep", keep, minimum=0, maximum=INT64_MAX, integer=True)
        up_to = optional_number(
            "up_to_seq", up_to_seq, minimum=1, maximum=INT64_MAX - 1, integer=True
        )
        if keep is not None and up_to is not None:
            raise ConfigError("pass keep= or up_to_seq=, not both")
        if subject is not None:
            try:
                validate_topic(subject, wildcards=True)
            except InvalidTopicError as exc:
                raise InvalidTopicError(f"subject: {exc}") from None
            if subject != topic and not subject_matches(topic, subject):
                raise ConfigError(
                    f"subject {subject!r} is not inside the topic {topic!r}; pass a subject "
                    "the topic covers, or purge that topic instead"
                )
        name, subjects = await self._rt.topics.stream_of(topic)
        body: dict[str, Any] = {}
        narrowed = subject or topic
        info: dict[str, Any] | None = None
        if subjects == [narrowed]:
            # read afresh: another process may have switched schedules on; the messages
            # held for later are not the topic's yet (cancel_scheduled removes them)
            info = await self._rt.api.call(f"STREAM.INFO.{name}")
            subjects = list((info.get("config") or {}).get("subjects") or subjects)
        if subjects != [narrowed]:
            body["filter"] = narrowed
        if keep is not None:
            body["keep"] = keep
        if up_to is not None:
            # the server purges below seq, and moves the stream's next sequence up to it
            # when seq is past the end: stop at the last message instead
            if info is None:
                info = await self._rt.api.call(f"STREAM.INFO.{name}")
            state = info.get("state", {})
            last = int(state.get("last_seq", 0))
            if last == 0:
                return 0
            body["seq"] = min(up_to, last) + 1
        resp = await self._rt.api.call(f"STREAM.PURGE.{name}", body or None)
        return int(resp.get("purged", 0))

    async def reset_consumer(
        self,
        topic: str,
        durable: str,
        start_at: StartAt | None = None,
        start_time: dt.datetime | float | None = None,
        start_seq: int | None = None,
    ) -> ConsumerInfo:
        """Move a durable consumer to another position in its topic; returns its new state.

        ``start_at``: StartAt.ALL (the oldest stored message), StartAt.NEW (only
        messages stored from now on), StartAt.BY_START_TIME with ``start_time``, or
        StartAt.BY_SEQUENCE with ``start_seq`` (``start_time``/``start_seq`` alone imply
        their StartAt). The consumer keeps its name and settings; deliveries not yet
        acknowledged are forgotten and everything from the new position is delivered
        again, also to subscribers running now (in this process or another).
        Needs nats-server 2.14 or newer (the bundled one is).
        """
        self._rt.check_open()
        self._rt.topics.check(topic, wildcards=True)
        consumer = consumer_name_ok(durable, "durable")
        position, when, seq = reset_position(start_at, start_time, start_seq)
        name, subjects = await self._rt.topics.stream_of(topic)
        try:
            info = await self._rt.api.call(f"CONSUMER.INFO.{name}.{consumer}")
        except NotFoundError:
            raise NotFoundError(
                f"no consumer {consumer!r} on the topic {topic!r} (stream {name}); "
                "s.consumers(topic) lists the ones there",
                404,
            ) from None
        _check_reset_target(info, topic, subjects, consumer)
        state = (await self._rt.api.call(f"STREAM.INFO.{name}")).get("state", {})
        after_last = int(state.get("last_seq", 0)) + 1
        if position is StartAt.BY_SEQUENCE:
            assert seq is not None
            if seq > after_last:
                raise ConfigError(
                    f"start_seq={seq} is past the end of {topic!r} (its last sequence is "
                    f"{after_last - 1}); the consumer would skip what is stored next. Use "
                    "start_at=jk.StartAt.NEW for only new messages"
                )
        else:
            seq = await self._seq_at(name, position, when, state)
        assert seq is not None
        try:
            resp = await self._rt.api.call(f"CONSUMER.RESET.{name}.{consumer}", {"seq": seq})
        except TimeoutError as exc:
            raise TimeoutError(
                f"the server did not answer the reset of consumer {consumer!r}: "
                "reset_consumer needs nats-server 2.14 or newer"
            ) from exc
        except JetStreamError as exc:
            if isinstance(exc, NotFoundError) or "reset" not in str(exc):
                raise
            # the server resets a consumer only within its own start (not one that
            # started at NEW or LAST_PER_SUBJECT, nor below its start sequence): make
            # it again at the new position, same name and settings
            resp = await self._recreate_at(name, consumer, info.get("config") or {}, seq)
        return consumer_info(resp)

    async def _recreate_at(
        self, stream: str, consumer: str, current: dict[str, Any], seq: int
    ) -> dict[str, Any]:
        config = {k: v for k, v in current.items() if k not in ("opt_start_time",)}
        config["deliver_policy"] = "by_start_sequence"
        config["opt_start_seq"] = seq
        config["metadata"] = {
            k: v for k, v in (current.get("metadata") or {}).items() if not k.startswith("_nats")
        }
        local = self._rt.local_consumers(stream, consumer)
        for sub in local:  # they would make it again with their own start meanwhile
            sub.hold_recovery(True)
        try:
            for _ in range(5):  # another process's subscriber may re-create it first
                with contextlib.suppress(NotFoundError):
                    await self._rt.api.call(f"CONSUMER.DELETE.{stream}.{consumer}")
                try:
                    return await self._rt.api.call(
                        f"CONSUMER.CREATE.{stream}.{consumer}",
                        {"stream_name": stream, "config": config, "action": "create"},
                    )
                except JetStreamError as exc:
                    if "exists" not in str(exc):
                        raise
            raise JetStreamError(
                f"consumer {consumer!r} was re-created by another process every time jetkit "
                "moved it; stop its other subscribers and reset it again"
            )
        finally:
            for sub in local:
                sub.hold_recovery(False)

    async def _seq_at(
        self, stream: str, position: StartAt, when: dt.datetime | None, state: dict[str, Any]
    ) -> int:
        """The first stream sequence a reset to ``position`` delivers."""
        after_last = int(state.get("last_seq", 0)) + 1
        if position is StartAt.ALL:
            return max(1, int(state.get("first_seq", 1)))
        if position is StartAt.NEW:
            return after_last
        assert when is not None
        try:
            resp = await self._rt.api.call(
                f"STREAM.MSG.GET.{stream}", {"start_time": rfc3339(when)}
            )
        except NotFoundError:  # nothing stored at or after that time
            return after_last
        return int(resp["message"]["seq"])

    async def delete_topic(self, topic: str) -> None:
        """Delete the stream that stores ``topic``, with its messages and consumers."""
        self._rt.check_open()
        name, _ = await self._rt.topics.stream_of(topic)
        await self._rt.api.call(f"STREAM.DELETE.{name}")
        self._rt.topics.forget(name)

    async def last_message(self, topic: str) -> Message | None:
        """The newest stored message on ``topic`` (a concrete subject), or None if none."""
        self._rt.check_open()
        self._rt.topics.check(topic)
        name, _ = await self._rt.topics.stream_of(topic)
        try:
            resp = await self._rt.api.call(f"STREAM.MSG.GET.{name}", {"last_by_subj": topic})
        except NotFoundError:
            return None
        return Message.stored(resp["message"])

    async def consumers(self, topic: str) -> list[ConsumerInfo]:
        """The consumers of a stored topic, with their lag."""
        self._rt.check_open()
        name, _ = await self._rt.topics.stream_of(topic)
        return [consumer_info(c) for c in await self._list(f"CONSUMER.LIST.{name}", "consumers")]

    async def consumer_info(self, topic: str, durable: str) -> ConsumerInfo:
        """One consumer's position: pending (lag), ack_pending, redelivered, ack_floor."""
        self._rt.check_open()
        consumer = consumer_name_ok(durable, "durable")
        name, _ = await self._rt.topics.stream_of(topic)
        return consumer_info(await self._rt.api.call(f"CONSUMER.INFO.{name}.{consumer}"))

    async def delete_consumer(self, topic: str, durable: str) -> None:
        """Delete a durable consumer (its position is forgotten).

        A durable the server could not load (its state on disk is damaged) is removed
        from an embedded store too.
        """
        self._rt.check_open()
        consumer = consumer_name_ok(durable, "durable")
        name, _ = await self._rt.topics.stream_of(topic)
        try:
            await self._rt.api.call(f"CONSUMER.DELETE.{name}.{consumer}")
        except NotFoundError:
            store = self._rt.store_dir
            if store is None or not _damage.remove_consumer_state(store, name, consumer):
                raise
            self._rt.log.warning(
                "durable %r of stream %r could not be loaded; removed its state",
                consumer,
                name,
            )

    async def dead_letters(self, dlq_topic: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters stored on ``dlq_topic``, oldest first (at most ``limit``).

        Messages without the dead-letter headers are not dead letters and are left out.
        """
        self._rt.check_open()
        return await _deadletters.read(self._rt.api, self._rt.topics, dlq_topic, limit)

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
        with its error; what was re-driven until then is done, the rest stays. Two
        re-drives of one DLQ at once re-drive each letter once (a letter the other took
        first is counted by that one).
        """
        self._rt.check_open()
        return await _deadletters.redrive(
            self._rt.api, self._rt.topics, self._rt.publisher, dlq_topic, limit, where, self._rt.log
        )

    async def _list(self, call: str, key: str) -> list[dict[str, Any]]:
        """Every item of a paged JetStream list call."""
        return await self._rt.api.every(call, key)

    async def discard_dead_letter(self, dlq_topic: str, seq: int) -> bool:
        """Delete one dead letter from ``dlq_topic``: the one at ``seq`` (``DeadLetter.seq``).

        Returns True if it was deleted, False if there is no message at ``seq`` (never
        was, or already re-driven or discarded). A message at ``seq`` that is not a dead
        letter of ``dlq_topic`` (no dead-letter headers, or another topic's message in the
        same stream) raises jk.NotADeadLetterTopicError and is left in place.
        """
        self._rt.check_open()
        return await _deadletters.discard(self._rt.api, self._rt.topics, dlq_topic, seq)

    # -- the seam for tools (jetkit top, metrics, the console, testing): _browse ----------

    async def overview(self) -> list[TopicOverview]:
        """Every stored topic with its consumers: ``topics()``, then each topic's
        ``ConsumerInfo``s (lag, ack pending, redelivered), one call per topic.

        A topic deleted while the overview is read is left out. What ``jetkit top``, the
        metrics' gauges and the web console show.
        """
        self._rt.check_open()
        return await _browse.overview(self._rt.api, await self.topics())

    def read_stored(
        self, topic: str, *, first_seq: int | None = None, limit: int = 100
    ) -> AsyncIterator[Message]:
        """The messages stored on ``topic`` (a subject or a pattern), oldest first:
        ``async for msg in s.read_stored(topic, limit=20)`` (``jetkit.sync``: a list).

        Reads at most ``limit`` messages (a whole number >= 1), from ``first_seq`` (the
        topic's first message when None), one server call per message. Reading does not
        consume: no consumer is made or moved. The arguments are checked at the call
        (jk.InvalidTopicError, jk.ConfigError); jk.NotFoundError, when no stream stores
        the topic, comes with the first message.
        """
        self._rt.check_open()
        return _browse.read_stored(self._rt.api, self._rt.topics, topic, first_seq, limit)

    async def scan_dead_letters(
        self,
        dlq_topic: str,
        *,
        limit: int | None = None,
        scan: int = 1000,
        first_seq: int | None = None,
    ) -> DeadLetterScan:
        """The dead letters among the first ``scan`` messages of ``dlq_topic`` (from
        ``first_seq``), at most ``limit`` of them: a bounded ``dead_letters``.

        ``dead_letters`` reads the whole topic to find its ``limit`` letters; this reads
        at most ``scan`` messages (a whole number >= 1) and says where it stopped: the
        returned jk.DeadLetterScan's ``next_seq`` is None when it read every message up
        to the topic's last (as of the scan's start), else the ``first_seq`` to read on
        from.
        """
        self._rt.check_open()
        return await _deadletters.scan_letters(
            self._rt.api, self._rt.topics, dlq_topic, limit, scan, first_seq
        )


def _check_reset_target(
    info: dict[str, Any], topic: str, subjects: list[str], consumer: str
) -> None:
    """ConfigError unless ``consumer`` is a durable consuming exactly ``topic``."""
    cfg = info.get("config") or {}
    if not cfg.get("durable_name"):
        raise ConfigError(
            f"consumer {consumer!r} is not durable: only a durable consumer can be reset "
            "(an ephemeral one ends with its subscriber)"
        )
    filters = list(cfg.get("filter_subjects") or []) or (
        [cfg["filter_subject"]] if cfg.get("filter_subject") else list(subjects)
    )
    if filters != [topic] and sorted(filters) != sorted(subjects if topic in subjects else [topic]):
        raise ConfigError(
            f"durable {consumer!r} consumes {', '.join(filters)}, not {topic!r}: pass the "
            "topic it was subscribed with"
        )

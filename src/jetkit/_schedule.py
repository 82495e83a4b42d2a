"""Scheduled delivery and per-message TTL: nats-server's message schedules (2.12+) and
``Nats-TTL`` (2.11+), switched on for a topic's stream the first time a publish needs them.

A scheduled message is held in the topic's stream on a subject of its own,
``$JK.SCHED.<stream>.<id>``, with ``Nats-Schedule: @at <time>`` and
``Nats-Schedule-Target: <topic>``; when it is due the server stores it on the topic
(where subscribers get it) and removes the held copy. Topics cannot start with ``$``,
so these subjects never collide with a topic, and no subscription's filter covers them.
Cancelling purges that subject. ``<id>`` is derived from topic and ``msg_id`` when one
is given (so it can be cancelled by ``msg_id``, and a retry replaces rather than adds),
else it is random.

The held subjects, the features switched on per stream, and the hook the rest of jetkit
asks about a stream's subjects (``own_subjects``) are in ``_held``, which this module owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError, JetkitError, JetStreamError, NotFoundError, TimeoutError
from ._held import Features, held_subjects, own_subjects, schedule_subject
from ._publish import TTL_DISABLED, PubAck
from ._time import rfc3339
from ._topics import TopicMode, validate_topic
from ._validate import headers_with, message_size, number

if TYPE_CHECKING:
    from ._connection import Connection
    from ._jsapi import JsApi
    from ._publish import Publisher
    from ._topics import TopicRegistry
    from ._tracing import Tracing

SCHEDULES_SINCE = (2, 12, 0)
TTL_SINCE = (2, 11, 0)
MIN_TTL = 1.0  # nats-server refuses a shorter Nats-TTL
MAX_SECONDS = 100 * 365 * 86_400.0  # a century: well inside int64 nanoseconds
# a deliver_at this far in the past still counts as "now" (clocks and the call itself)
PAST_TOLERANCE = 1.0
_RESERVED = ("nats-schedule", "nats-ttl")
_UNAVAILABLE = 503  # "JetStream system temporarily unavailable": no quorum right now
# a stream name or schedule id: one subject token, no wildcard (a '>' would cancel all)
_TOKEN = re.compile(r"[^.*>\s]+")
# a scheduled publish checks the topic's retention and max_age as read at most this long
# ago (another process may have declared the topic again with a shorter max_age)
FRESH_FOR = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduledMessage:
    """A message the server holds until ``deliver_at``; pass it to ``cancel_scheduled``.

    ``stream``/``seq`` locate the held message (not the one delivered later);
    ``duplicate`` is True when a scheduled publish with the same ``msg_id`` was already
    held within the duplicate window (this one was not stored again).
    """

    topic: str
    id: str
    deliver_at: dt.datetime
    stream: str
    seq: int
    duplicate: bool = False


def schedule_id(topic: str, msg_id: str | None, random_id: str) -> str:
    """The id of a schedule: from topic and msg_id when there is one, else ``random_id``."""
    if msg_id is None:
        return random_id
    return hashlib.sha256(f"{topic}\0{msg_id}".encode()).hexdigest()[:32]


def ttl_value(ttl: object) -> str:
    """``ttl`` (seconds or timedelta) as a ``Nats-TTL`` value; ConfigError if unusable."""
    seconds = number(
        "ttl",
        ttl,
        minimum=MIN_TTL,
        maximum=MAX_SECONDS,
        hint=" (seconds or a timedelta; nats-server's minimum is 1 second)",
    )
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def due_time(deliver_at: object, deliver_after: object, now: dt.datetime) -> dt.datetime:
    """When a scheduled message is due (aware, UTC); ConfigError for unusable input."""
    if deliver_at is not None and deliver_after is not None:
        raise ConfigError(
            "give deliver_at= (a time) or deliver_after= (seconds from now), not both"
        )
    if deliver_after is not None:
        delay = number(
            "deliver_after",
            deliver_after,
            minimum=0,
            maximum=MAX_SECONDS,
            hint=" (seconds from now, or a timedelta)",
        )
        return now + dt.timedelta(seconds=delay)
    if not isinstance(deliver_at, dt.datetime):
        raise ConfigError(
            f"deliver_at must be a timezone-aware datetime, got {type(deliver_at).__name__} "
            f"{deliver_at!r}; e.g. datetime.now(timezone.utc) + timedelta(minutes=5), or use "
            "deliver_after=seconds"
        )
    if deliver_at.tzinfo is None or deliver_at.utcoffset() is None:
        raise ConfigError(
            f"deliver_at {deliver_at.isoformat()} has no timezone, so it is ambiguous; pass "
            "an aware datetime such as datetime(..., tzinfo=timezone.utc)"
        )
    try:
        when = deliver_at.astimezone(dt.UTC)
    except OverflowError:  # datetime.max/min in a zone: not a year of UTC
        when = dt.datetime.max.replace(tzinfo=dt.UTC)
        if deliver_at.replace(tzinfo=None) < now.replace(tzinfo=None):
            when = dt.datetime.min.replace(tzinfo=dt.UTC)
    late = (now - when).total_seconds()
    if late > PAST_TOLERANCE:
        raise ConfigError(
            f"deliver_at {when.isoformat()} is {late:.1f}s in the past; schedule a future "
            "time (or publish without deliver_at to deliver now)"
        )
    if (when - now).total_seconds() > MAX_SECONDS:
        raise ConfigError(f"deliver_at {when.isoformat()} is more than a century away")
    return max(when, now)


def version_of(text: str) -> tuple[int, int, int]:
    """A server's version string ("2.12.1", "2.11.0-RC.1") as numbers (0s if unreadable)."""
    parts = text.split("-", 1)[0].split(".")
    nums = [int(p) if p.isdigit() else 0 for p in [*parts, "0", "0", "0"][:3]]
    return nums[0], nums[1], nums[2]


def require(version: tuple[int, int, int], since: tuple[int, int, int], what: str) -> None:
    """ConfigError unless the server is new enough for ``what``."""
    if version < since:
        have = ".".join(map(str, version))
        need = ".".join(map(str, since))
        raise ConfigError(
            f"{what} needs nats-server {need} or newer; the server is {have}. Upgrade it (the "
            "embedded server from jetkit's wheel is new enough)"
        )


def _features(cfg: dict[str, Any], schedules: bool, ttl: bool) -> Features:
    max_age = (cfg.get("max_age") or 0) / 1e9
    retention, discard = str(cfg.get("retention", "limits")), str(cfg.get("discard", "old"))
    return Features(schedules, ttl, retention, max_age, discard)


class Scheduler:
    """``publish`` with ``deliver_at``/``deliver_after``/``ttl``, and ``cancel_scheduled``."""

    def __init__(
        self, conn: Connection, api: JsApi, topics: TopicRegistry, publisher: Publisher
    ) -> None:
        self._conn = conn
        self._api = api
        self._topics = topics
        self._publisher = publisher
        self._enabling: dict[str, asyncio.Future[Features]] = {}
        self.tracing: Tracing | None = None  # set while tracing is on

    # -- publishing ------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        data: bytes,
        headers: dict[str, str] | None,
        msg_id: str | None,
        deliver_at: object,
        deliver_after: object,
        ttl: object,
    ) -> PubAck | ScheduledMessage:
        """Checks everything, then the held (scheduled) or the expiring publish."""
        counts = self._publisher.counts
        try:
            if self.tracing is None:
                result = await self._publish(
                    topic, data, headers, msg_id, deliver_at, deliver_after, ttl
                )
            else:
                # the context goes into the held message's headers, which the server
                # keeps when it delivers it: the consumer continues the publisher's trace
                with self.tracing.sending(topic, headers, msg_id) as (span, sent):
                    result = await self._publish(
                        topic, data, sent, msg_id, deliver_at, deliver_after, ttl
                    )
                    if isinstance(result, ScheduledMessage):
                        span.set_attribute("jetkit.deliver_at", result.deliver_at.isoformat())
        except JetkitError:
            if counts is not None:
                counts.error(self._publisher.label(topic))
            raise
        if counts is not None:
            counts.ok(topic)
        return result

    async def _publish(
        self,
        topic: str,
        data: bytes,
        headers: dict[str, str] | None,
        msg_id: str | None,
        deliver_at: object,
        deliver_after: object,
        ttl: object,
    ) -> PubAck | ScheduledMessage:
        self._topics.check(topic)
        scheduled = deliver_at is not None or deliver_after is not None
        what = "scheduled delivery (deliver_at/deliver_after)" if scheduled else "ttl"
        if self._topics.mode_for(topic) is TopicMode.CORE:
            raise ConfigError(
                f"{what} needs a JetStream topic; {topic!r} is a core topic (not stored). "
                f"Declare it stored: declare_topic({topic!r}, mode=jk.TopicMode.JETSTREAM)"
            )
        now = dt.datetime.now(dt.UTC)
        due = due_time(deliver_at, deliver_after, now) if scheduled else None
        ttl_text = ttl_value(ttl) if ttl is not None else None
        extra: dict[str, str] = {}
        if due is not None:
            extra["Nats-Schedule"] = "@at " + rfc3339(due)
            extra["Nats-Schedule-Target"] = topic
            if ttl_text is not None:
                extra["Nats-Schedule-TTL"] = ttl_text
        elif ttl_text is not None:
            extra["Nats-TTL"] = ttl_text
        sent = headers_with(headers, msg_id, extra, _RESERVED)
        # a msg_id given as a header is the server's msg_id too: cancellable by it
        msg_id = sent.get("Nats-Msg-Id", msg_id)
        payload = self._publisher.check_payload(topic, data, sent)
        version = version_of(self._conn.server_version)
        if due is not None:
            require(version, SCHEDULES_SINCE, "scheduled delivery (deliver_at/deliver_after)")
        if ttl_text is not None:
            require(version, TTL_SINCE, "a per-message ttl")
        self._publisher.refuse_if_disk_full("nothing was sent, the message is not stored")
        if due is None:
            return await self._expiring(topic, payload, sent)
        random_id = self._conn.unique_name()
        sid = schedule_id(topic, msg_id, random_id)
        # on a cluster every send of it (the publisher's re-sends, this loop's) carries
        # one msg id: held once
        with_id = self._publisher.acked.with_id(sent)
        own = with_id is not sent
        sent = with_id or sent
        # "no responders": the stream was deleted or changed behind our back, or no
        # leader answers right now (a restarted server still loading, a cluster electing
        # one): nothing was stored, so look the stream up again and send it again, as a
        # plain publish does, until publish_timeout runs out
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publisher.acked.timeout
        delay = 0.05
        verify = False
        while True:
            stream = ""
            try:
                stream, _ = await self._topics.ensure_stream(topic, verify=verify)
                subject = schedule_subject(stream, sid)
                message_size(subject, payload, sent, self._conn.max_payload)
                # checked against the stream's settings before they are switched on
                await self._enable(
                    stream,
                    schedules=True,
                    ttl=ttl_text is not None,
                    check=lambda features: self._fits(topic, features, due, now),
                )
                ack = await self._publisher.acked.publish(subject, payload, sent, own)
            except JetStreamError as exc:
                # 503: "JetStream system temporarily unavailable" (no quorum right now)
                if not isinstance(exc, NotFoundError) and exc.code != _UNAVAILABLE:
                    raise
                if isinstance(exc, NotFoundError) and stream:
                    self._topics.forget(stream)
                if loop.time() + delay >= deadline:
                    raise TimeoutError(
                        f"no stream answered the scheduled publish to {topic!r} within "
                        f"{self._publisher.acked.timeout:g}s (publish_timeout; last: {exc}). "
                        "Retry it (with msg_id= a retry is never held twice); on a cluster "
                        "a leader election takes several seconds: a larger publish_timeout "
                        "(e.g. 20) rides through it"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                verify = True
                continue
            return ScheduledMessage(topic, sid, due, ack.stream, ack.seq, ack.duplicate)

    async def expiring_many(
        self, topic: str, headers: dict[str, str] | None, ttl: object
    ) -> dict[str, str]:
        """``publish_many(..., ttl=)``: the headers every message gets, once the topic's
        stream expires messages."""
        self._topics.check(topic)
        if self._topics.mode_for(topic) is TopicMode.CORE:
            raise ConfigError(
                f"ttl needs a JetStream topic; {topic!r} is a core topic (not stored). "
                f"Declare it stored: declare_topic({topic!r}, mode=jk.TopicMode.JETSTREAM)"
            )
        sent = headers_with(headers, None, {"Nats-TTL": ttl_value(ttl)}, _RESERVED)
        require(version_of(self._conn.server_version), TTL_SINCE, "a per-message ttl")
        stream, _ = await self._topics.ensure_stream(topic)
        await self._enable(stream, schedules=False, ttl=True)
        return sent

    async def _expiring(self, topic: str, payload: bytes, sent: dict[str, str]) -> PubAck:
        stream, _ = await self._topics.ensure_stream(topic)
        try:
            await self._enable(stream, schedules=False, ttl=True)
            return await self._publisher.stored(topic, payload, sent)
        except NotFoundError:
            pass
        except JetStreamError as exc:
            if exc.err_code != TTL_DISABLED:
                raise
        # the stream was made again without TTLs (deleted behind our back): once more
        self._topics.forget(stream)
        stream, _ = await self._topics.ensure_stream(topic, verify=True)
        await self._enable(stream, schedules=False, ttl=True)
        return await self._publisher.stored(topic, payload, sent)

    @staticmethod
    def _fits(topic: str, features: Features, due: dt.datetime, now: dt.datetime) -> None:
        """ConfigError where the server would drop the held message before it is due."""
        if features.retention == "interest":
            raise ConfigError(
                f"topic {topic!r} has Retention.INTEREST, which drops a held message at once "
                "(no subscriber consumes it before it is due); schedule on a LIMITS or "
                "WORK_QUEUE topic"
            )
        if features.discard == "new":
            raise ConfigError(
                f"topic {topic!r} has discard=jk.Discard.NEW, and nats-server holds scheduled "
                "messages only in a stream that discards old messages when full; declare it "
                "with discard=jk.Discard.OLD (the default), or schedule on another topic"
            )
        delay = (due - now).total_seconds()
        if features.max_age and delay >= features.max_age:
            raise ConfigError(
                f"topic {topic!r} keeps messages for max_age={features.max_age:g}s, and a "
                f"message held for {delay:.0f}s would be removed before it is due; schedule "
                "it sooner or raise the topic's max_age (declare_topic(..., max_age=...))"
            )

    # -- switching the stream's features on ------------------------------------------------

    async def _enable(
        self,
        stream: str,
        *,
        schedules: bool,
        ttl: bool,
        check: Callable[[Features], None] | None = None,
    ) -> Features:
        """The stream's features, switched on where needed (once per stream; concurrent
        callers share one update). ``check`` may refuse the stream (raising) before
        anything of it is changed."""
        known = self._topics.features.get(stream)
        if known is not None and (known.schedules or not schedules) and (known.ttl or not ttl):
            if check is None:
                return known
            if time.monotonic() - known.read_at <= FRESH_FOR:
                check(known)
                return known
            info = await self._api.call(f"STREAM.INFO.{stream}")
            cfg = info.get("config") or {}
            if (not schedules or cfg.get("allow_msg_schedules")) and (
                not ttl or cfg.get("allow_msg_ttl")
            ):
                fresh = _features(cfg, known.schedules, known.ttl)
                check(fresh)
                self._topics.features[stream] = fresh
                return fresh
            # made again without them (behind our back): switch them on again
            self._topics.features.pop(stream, None)
        pending = self._enabling.get(stream)
        if pending is not None:
            # its failure may be its own (its check): each caller finds out for itself
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
            return await self._enable(stream, schedules=schedules, ttl=ttl, check=check)
        fut: asyncio.Future[Features] = asyncio.get_running_loop().create_future()
        self._enabling[stream] = fut
        try:
            features = await self._switch_on(stream, schedules, ttl, check)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            self._enabling.pop(stream, None)
        fut.set_result(features)
        self._topics.features[stream] = features
        return features

    async def _switch_on(
        self, stream: str, schedules: bool, ttl: bool, check: Callable[[Features], None] | None
    ) -> Features:
        info = await self._api.call(f"STREAM.INFO.{stream}")
        cfg: dict[str, Any] = dict(info["config"])
        if check is not None:
            check(_features(cfg, schedules, ttl))
        subjects = list(cfg.get("subjects") or [])
        mine = held_subjects(stream)
        changes: dict[str, Any] = {}
        if schedules or cfg.get("allow_msg_schedules"):
            schedules = True
            if not cfg.get("allow_msg_schedules"):
                changes["allow_msg_schedules"] = True
            if mine not in subjects:
                changes["subjects"] = [*subjects, mine]
        if ttl or cfg.get("allow_msg_ttl"):
            ttl = True
            if not cfg.get("allow_msg_ttl"):
                changes["allow_msg_ttl"] = True
        if changes:
            try:
                resp = await self._api.call(f"STREAM.UPDATE.{stream}", {**cfg, **changes})
            except NotFoundError:
                raise
            except JetStreamError as exc:
                raise JetStreamError(
                    f"cannot switch on {', '.join(sorted(changes))} for stream {stream!r}: "
                    f"{exc}. A mirror, a sealed stream or an older nats-server cannot hold "
                    "scheduled or expiring messages; publish to another topic",
                    exc.code,
                    exc.err_code,
                ) from exc
            got = resp.get("config", {})
            missing = [k for k in changes if k.startswith("allow_") and not got.get(k)]
            if missing:
                raise JetStreamError(
                    f"the NATS server ignored {', '.join(missing)} for stream {stream!r}: it "
                    "(or a node of its cluster) is too old for scheduled delivery or "
                    "per-message TTL; upgrade nats-server (2.12 or newer)"
                )
            cfg = got
        if schedules:
            # also when the subject was there already: whoever added it may have stopped
            # (crashed, lost its connection) before it filtered the consumers
            await self._filter_consumers(stream, own_subjects(subjects))
            self._topics.refresh(stream, list(cfg.get("subjects") or [*subjects, mine]))
        return _features(cfg, schedules, ttl)

    async def _filter_consumers(self, stream: str, subjects: list[str]) -> None:
        """Give every consumer of the whole stream a filter of the stream's own subjects,
        so the held messages (now in the stream too) are never delivered to them."""
        offset = 0
        while True:
            page = await self._api.call(f"CONSUMER.LIST.{stream}", {"offset": offset})
            consumers = page.get("consumers") or []
            for consumer in consumers:
                cfg = dict(consumer.get("config") or {})
                if cfg.get("filter_subject") or cfg.get("filter_subjects"):
                    continue
                if len(subjects) == 1:
                    cfg["filter_subject"] = subjects[0]
                else:
                    cfg["filter_subjects"] = subjects
                name = consumer.get("name", "")
                try:
                    await self._api.call(
                        f"CONSUMER.CREATE.{stream}.{name}",
                        {"stream_name": stream, "config": cfg, "action": "update"},
                    )
                except NotFoundError:
                    continue  # it ended meanwhile
            offset += len(consumers)
            if not consumers or offset >= int(page.get("total", 0)):
                return

    # -- cancelling ------------------------------------------------------------------------

    async def cancel(self, scheduled: object, msg_id: object) -> bool:
        """True if the held message was still pending and is now removed."""
        if isinstance(scheduled, ScheduledMessage):
            if msg_id is not None:
                raise ConfigError(
                    "cancel_scheduled() takes a ScheduledMessage or a topic with msg_id=, not both"
                )
            stream, sid = scheduled.stream, scheduled.id
            for field, value in (("stream", stream), ("id", sid)):
                if not isinstance(value, str) or not _TOKEN.fullmatch(value):
                    raise ConfigError(
                        f"cancel_scheduled(): the ScheduledMessage's {field} {value!r} is not "
                        "one publish() returns (a name without '.', '*', '>' or spaces); "
                        "pass the ScheduledMessage as publish() returned it"
                    )
        elif isinstance(scheduled, str):
            validate_topic(scheduled, wildcards=False)
            if not isinstance(msg_id, str) or not msg_id.strip():
                raise ConfigError(
                    "cancel_scheduled(topic) needs msg_id= (the msg_id the message was "
                    "published with), or pass the ScheduledMessage publish() returned"
                )
            try:
                stream, _ = await self._topics.stream_of(scheduled)
            except NotFoundError:
                return False
            sid = schedule_id(scheduled, msg_id, "")
        else:
            raise ConfigError(
                "cancel_scheduled() takes the jk.ScheduledMessage that publish(..., "
                f"deliver_at=/deliver_after=) returned, or a topic with msg_id=; got "
                f"{type(scheduled).__name__}"
            )
        try:
            resp = await self._api.call(
                f"STREAM.PURGE.{stream}", {"filter": schedule_subject(stream, sid)}
            )
        except NotFoundError:
            return False
        except JetStreamError:
            # the stream has no such subject: schedules were never switched on for it
            if not self._topics.features.get(stream):
                return False
            raise
        return int(resp.get("purged", 0)) > 0

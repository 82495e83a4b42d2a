"""Topics: names and their validation, stream naming, and the registry of what each
topic is (its mode, the JetStream stream storing it).

Stream naming rule (injective, so ``a.b`` and ``a_b`` never share a stream):
letters, digits and ``-`` are kept, except that ``-`` is doubled (``--``);
``.`` becomes ``_``; any other character becomes ``-<hex code point>-``.
So ``orders.events`` -> ``orders_events``, ``a_b`` -> ``a-5f-b``,
``orders.>`` -> ``orders_-3e-``, ``a-b`` -> ``a--b``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import re
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError, InvalidTopicError, JetStreamError, NotFoundError
from ._held import Features, own_subjects
from ._time import nanos
from ._validate import INT64_MAX, number, option, optional_number

if TYPE_CHECKING:
    from ._jsapi import JsApi


class TopicMode(enum.Enum):
    """CORE: plain NATS, in memory, at-most-once. JETSTREAM: stored, acked, replayable."""

    CORE = "core"
    JETSTREAM = "jetstream"


class Retention(enum.Enum):
    """When a JetStream topic forgets a message."""

    LIMITS = "limits"  # kept until max_msgs / max_bytes / max_age say otherwise
    INTEREST = "interest"  # kept until every consumer acknowledged it
    WORK_QUEUE = "workqueue"  # removed as soon as one consumer acknowledged it


class Discard(enum.Enum):
    """What a full JetStream topic does with a new message."""

    OLD = "old"  # drop the oldest stored message
    NEW = "new"  # refuse the new message (publish raises)


_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
# Bytes a topic may take: well inside nats-server's 4 KiB control line (which also
# carries the reply subject and sizes); a longer line makes the server close the
# connection.
MAX_TOPIC_BYTES = 1024
MAX_NAME = 255  # JetStream's limit for stream and consumer names
_KEEP = re.compile(r"[A-Za-z0-9]")


def validate_topic(topic: object, *, wildcards: bool) -> str:
    """Return ``topic`` if NATS accepts it; raise InvalidTopicError naming the problem."""
    if not isinstance(topic, str):
        raise InvalidTopicError(f"topic must be a str, got {type(topic).__name__}")
    if not topic:
        raise InvalidTopicError("topic is empty; use a dotted name such as 'orders.events'")
    if _BAD_CHARS.search(topic):
        raise InvalidTopicError(
            f"topic {topic!r} contains whitespace or a control character; NATS subjects are "
            "tokens separated by '.', e.g. 'orders.created'"
        )
    if topic.startswith("$"):
        raise InvalidTopicError(
            f"topic {topic!r} starts with '$': such subjects belong to NATS itself (the "
            "system and JetStream APIs); choose a topic that does not start with '$'"
        )
    size = len(topic.encode("utf-8", "surrogatepass"))
    if size > MAX_TOPIC_BYTES:
        raise InvalidTopicError(
            f"topic {topic[:40]!r}... is {size} bytes long; the limit is {MAX_TOPIC_BYTES} "
            "bytes: use a shorter topic"
        )
    tokens = topic.split(".")
    for i, token in enumerate(tokens):
        if not token:
            raise InvalidTopicError(
                f"topic {topic!r} has an empty token (leading, trailing or double '.')"
            )
        if token in ("*", ">"):
            if not wildcards:
                raise InvalidTopicError(
                    f"topic {topic!r} contains the wildcard {token!r}; publish to a concrete "
                    "topic (wildcards are for subscribe and declare_topic)"
                )
            if token == ">" and i != len(tokens) - 1:
                raise InvalidTopicError(f"topic {topic!r}: '>' is only allowed as the last token")
        elif "*" in token or ">" in token:
            raise InvalidTopicError(
                f"topic {topic!r}: wildcards '*' and '>' must be whole tokens, as in 'orders.*'"
            )
    return topic


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a concrete or wildcard ``subject`` is covered by ``pattern``."""
    p_tokens = pattern.split(".")
    s_tokens = subject.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens):
            return False
        s = s_tokens[i]
        if p == "*":
            if s == ">":
                return False
            continue
        if p != s:
            return False
    return len(s_tokens) == len(p_tokens)


def stream_name(topic: str) -> str:
    """The JetStream stream that backs ``topic`` (see the module docstring for the rule).

    Raises InvalidTopicError when the name would be longer than JetStream allows.
    """
    out: list[str] = []
    for ch in topic:
        if ch == ".":
            out.append("_")
        elif ch == "-":
            out.append("--")
        elif _KEEP.fullmatch(ch):
            out.append(ch)
        else:
            out.append(f"-{ord(ch):x}-")
    name = "".join(out)
    if len(name) > MAX_NAME:
        raise InvalidTopicError(
            f"topic {topic[:40]!r}... is too long to be stored: its stream name would be "
            f"{len(name)} characters and JetStream allows {MAX_NAME}; use a shorter topic "
            "(characters other than letters, digits and '.' count up to four times)"
        )
    return name


def consumer_name_ok(name: object, option: str = "consumer name") -> str:
    """Validate a durable / queue-group name (no '.', '*', '>', whitespace)."""
    if not isinstance(name, str):
        raise InvalidTopicError(f"{option} must be a str, got {type(name).__name__} {name!r}")
    if not name or len(name) > MAX_NAME or re.search(r"[\s\x00-\x1f\x7f.*>/\\]", name):
        raise InvalidTopicError(
            f"{option} {name!r} is not allowed: use 1 to {MAX_NAME} letters, digits, '-' and "
            "'_' (no '.', '*', '>', '/' or whitespace)"
        )
    return name


# -- stream config ------------------------------------------------------------------------

_MAX_AGE = 100 * 365 * 86_400.0  # a century, well inside JetStream's int64 nanoseconds
_STREAM_NAME_IN_USE = 10058
_SUBJECTS_OVERLAP = 10065

Stored = tuple[str, list[str]]  # a stream's name and subjects


def check_limits(
    max_msgs: object,
    max_bytes: object,
    max_age: object,
    replicas: object,
    duplicate_window: object = None,
) -> None:
    """ConfigError unless the stream limits are whole/finite numbers in range."""
    number("replicas", replicas, minimum=1, maximum=5, integer=True)
    for label, value in (("max_msgs", max_msgs), ("max_bytes", max_bytes)):
        optional_number(
            label, value, minimum=1, maximum=INT64_MAX, integer=True, hint=" (or None: no limit)"
        )
    optional_number(
        "max_age", max_age, above=0, maximum=_MAX_AGE, hint=" (seconds or timedelta, or None)"
    )
    if duplicate_window is None:
        return
    window = optional_number(
        "duplicate_window",
        duplicate_window,
        above=0,
        maximum=_MAX_AGE,
        hint=" (seconds or timedelta the stream remembers msg ids, or None: 2 minutes)",
    )
    age = optional_number("max_age", max_age, above=0, maximum=_MAX_AGE)
    if age is not None and window is not None and window > age:
        raise ConfigError(
            f"duplicate_window ({window:g}s) is longer than max_age ({age:g}s): the server "
            "cannot remember msg ids of messages it no longer keeps; make it at most max_age"
        )


def stream_config(
    name: str,
    subjects: list[str],
    *,
    max_msgs: int | None = None,
    max_bytes: int | None = None,
    max_age: float | dt.timedelta | None = None,
    discard: Discard = Discard.OLD,
    replicas: int = 1,
    retention: Retention = Retention.LIMITS,
    duplicate_window: float | dt.timedelta | None = None,
) -> dict[str, Any]:
    check_limits(max_msgs, max_bytes, max_age, replicas, duplicate_window)
    if duplicate_window is not None:
        window = nanos(duplicate_window)
    else:
        window = min(nanos(120), nanos(max_age)) if max_age else nanos(120)
    return {
        "name": name,
        "subjects": subjects,
        "retention": retention.value,
        "storage": "file",
        "max_msgs": max_msgs if max_msgs is not None else -1,
        "max_bytes": max_bytes if max_bytes is not None else -1,
        "max_age": nanos(max_age) if max_age is not None else 0,
        "discard": discard.value,
        "num_replicas": replicas,
        "duplicate_window": window,
        "allow_direct": True,
    }


# -- the registry -------------------------------------------------------------------------


class TopicRegistry:
    """Per Stream: each topic's mode, and the JetStream stream that stores it.

    Modes come from ``declare`` (a topic or a pattern) or the Stream's default.
    ``ensure_stream`` finds the stream that stores a topic (a declared pattern, or any
    stream whose subjects cover it) or creates one named by ``stream_name``; concurrent
    callers for one topic share one lookup. Streams the server could not load from a
    damaged store (``damaged``) get their metadata rewritten when jetkit recreates them.
    """

    def __init__(self, api: JsApi, default_mode: TopicMode, log: logging.Logger) -> None:
        self._api = api
        self.default_mode = default_mode
        self._log = log
        self._declared: dict[str, TopicMode] = {}
        # read directly by the publish hot path: topic -> mode, topics known valid
        self.modes: dict[str, TopicMode] = {}
        self.streams: dict[str, Stored] = {}  # topic -> its stream (cache)
        self.replicas: dict[str, int] = {}  # stream -> its num_replicas (cache)
        self._ensuring: dict[str, asyncio.Future[Stored]] = {}
        self.valid: set[str] = set()
        self.damaged: set[str] = set()
        # stream -> the features jetkit switched on for it (_schedule keeps it; _held)
        self.features: dict[str, Features] = {}

    def check(self, topic: str, *, wildcards: bool = False) -> str:
        """``topic`` if it is valid (concrete topics are remembered); else InvalidTopicError."""
        if topic in self.valid:
            return topic
        validate_topic(topic, wildcards=wildcards)
        if not wildcards:
            self.valid.add(topic)
        return topic

    def mode_for(self, topic: str) -> TopicMode:
        mode = self.modes.get(topic)
        if mode is None:
            mode = self._declared.get(topic)
            if mode is None:
                for pattern, declared in self._declared.items():
                    if subject_matches(pattern, topic):
                        mode = declared
                        break
            mode = mode or self.default_mode
            self.modes[topic] = mode
        return mode

    def set_mode(self, topic: str, mode: TopicMode) -> None:
        self._declared[topic] = mode
        self.modes.clear()
        self.streams.clear()
        self.features.clear()

    def forget(self, stream: str) -> None:
        """``stream`` was deleted (by us or behind our back): look it up again next time."""
        self.streams = {k: v for k, v in self.streams.items() if v[0] != stream}
        self.features.pop(stream, None)

    def refresh(self, stream: str, subjects: list[str]) -> None:
        """``stream`` now has ``subjects`` (jetkit added one to it)."""
        for topic, (name, _) in list(self.streams.items()):
            if name == stream:
                self.streams[topic] = name, subjects

    async def ensure_stream(self, topic: str, *, verify: bool = False, replicas: int = 1) -> Stored:
        """The stream storing ``topic``; an existing one that covers it, else a new one
        (with ``replicas``: a DLQ gets its topic's).

        ``verify``: ask the server whether a stream remembered here still exists.
        """
        found = self.streams.get(topic)
        if found is not None and verify:
            try:
                info = await self._api.call(f"STREAM.INFO.{found[0]}")
            except NotFoundError:
                self.forget(found[0])
                found = None
            else:  # its subjects may have changed (another process scheduled on it)
                found = found[0], list(info.get("config", {}).get("subjects") or found[1])
                self.streams[topic] = found
        if found is not None:
            return found
        pending = self._ensuring.get(topic)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._ensuring[topic] = fut
        try:
            result = await self._find_or_create(topic, replicas)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            self._ensuring.pop(topic, None)
        fut.set_result(result)
        self.streams[topic] = result
        return result

    async def stream_of(self, topic: str) -> Stored:
        """The stream that stores ``topic`` (never creates one); NotFoundError if none."""
        self.check(topic, wildcards=True)
        found = self.streams.get(topic) or await self.find(topic)
        if found is None:
            raise NotFoundError(f"no JetStream topic stores {topic!r}", 404)
        return found

    async def find(self, topic: str) -> Stored | None:
        for pattern, mode in self._declared.items():
            covers = pattern == topic or subject_matches(pattern, topic)
            if mode is TopicMode.JETSTREAM and covers:
                with contextlib.suppress(NotFoundError):
                    info = await self._api.call(f"STREAM.INFO.{stream_name(pattern)}")
                    self._remember(info)
                    return info["config"]["name"], list(info["config"]["subjects"])
        resp = await self._api.call("STREAM.NAMES", {"subject": topic})
        for name in resp.get("streams") or []:
            info = await self._api.call(f"STREAM.INFO.{name}")
            self._remember(info)
            subjects = list(info["config"].get("subjects") or [])
            if any(s == topic or subject_matches(s, topic) for s in subjects):
                return name, subjects
        return None

    async def replicas_of(self, stream: str) -> int:
        """How many replicas ``stream`` has (1 if it cannot be told)."""
        known = self.replicas.get(stream)
        if known is None:
            try:
                info = await self._api.call(f"STREAM.INFO.{stream}")
            except NotFoundError:
                return 1
            known = self._remember(info)
        return known

    def _remember(self, info: dict[str, Any]) -> int:
        cfg = info.get("config") or {}
        count = int(cfg.get("num_replicas") or 1)
        if cfg.get("name"):
            self.replicas[str(cfg["name"])] = count
        return count

    async def _find_or_create(self, topic: str, replicas: int = 1) -> Stored:
        found = await self.find(topic)
        if found is not None:
            return found
        name = stream_name(topic)
        try:
            await self.create(name, stream_config(name, [topic], replicas=replicas))
        except JetStreamError as exc:
            if exc.err_code not in (_STREAM_NAME_IN_USE, _SUBJECTS_OVERLAP):
                raise
            found = await self.find(topic)
            if found is None:
                raise JetStreamError(
                    f"cannot store topic {topic!r}: {exc}. Another JetStream stream overlaps "
                    "it only partly; declare_topic() a pattern that covers both, or delete one",
                    exc.code,
                    exc.err_code,
                ) from exc
            return found
        self._log.debug("created stream %s for topic %r", name, topic)
        return name, [topic]

    async def create(self, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
        resp = await self._api.call(f"STREAM.CREATE.{name}", cfg)
        self._remember(resp)
        if name in self.damaged:
            # nats-server served the old messages again but kept the damaged metadata
            # file; an update rewrites it, so the stream survives the next restart
            resp = await self._api.call(f"STREAM.UPDATE.{name}", cfg)
            self.damaged.discard(name)
            self._log.warning(
                "stream %r restored from a damaged store with %d messages and the limits given now",
                name,
                int(resp.get("state", {}).get("messages", 0)),
            )
        return resp

    async def declare(
        self,
        topic: str,
        mode: object,
        *,
        max_msgs: object,
        max_bytes: object,
        max_age: object,
        discard: object,
        replicas: object,
        retention: object,
        duplicate_window: object = None,
    ) -> dict[str, Any] | None:
        """``Stream.declare_topic``: the stream's info, or None for a core topic."""
        self.check(topic, wildcards=True)
        chosen = None if mode is None else option(TopicMode, mode, "mode")
        discard_ = option(Discard, discard, "discard")
        retention_ = option(Retention, retention, "retention")
        check_limits(max_msgs, max_bytes, max_age, replicas, duplicate_window)
        limits = (
            duplicate_window is not None
            or max_msgs is not None
            or max_bytes is not None
            or max_age is not None
            or discard_ is not Discard.OLD
            or replicas != 1
            or retention_ is not Retention.LIMITS
        )
        if chosen is None:
            chosen = TopicMode.JETSTREAM if limits else self.default_mode
        if chosen is TopicMode.CORE:
            if limits:
                raise ConfigError(
                    f"topic {topic!r} is declared CORE but given JetStream limits; core topics "
                    "are not stored. Use mode=jk.TopicMode.JETSTREAM"
                )
            self.set_mode(topic, chosen)
            return None
        if not limits:
            found = await self.find(topic)
            if found is not None:  # already stored (maybe by a wider pattern): keep as is
                self.set_mode(topic, chosen)
                return await self._api.call(f"STREAM.INFO.{found[0]}")
        name = stream_name(topic)
        cfg = stream_config(
            name,
            [topic],
            max_msgs=max_msgs,  # type: ignore[arg-type]
            max_bytes=max_bytes,  # type: ignore[arg-type]
            max_age=max_age,  # type: ignore[arg-type]
            discard=discard_,
            replicas=replicas,  # type: ignore[arg-type]
            retention=retention_,
            duplicate_window=duplicate_window,  # type: ignore[arg-type]
        )
        try:
            current = await self._api.call(f"STREAM.INFO.{name}")
        except NotFoundError:
            current = None
        try:
            if current is None:
                resp = await self.create(name, cfg)
            else:
                # keep the subjects that are not the topics' own (_held: scheduling's)
                subjects = list(current["config"].get("subjects") or [])
                own = own_subjects(subjects)
                cfg["subjects"] = [*cfg["subjects"], *(s for s in subjects if s not in own)]
                resp = await self._api.call(f"STREAM.UPDATE.{name}", {**current["config"], **cfg})
        except JetStreamError as exc:
            if exc.err_code == _SUBJECTS_OVERLAP:
                raise JetStreamError(
                    f"cannot declare {topic!r}: another stored topic overlaps it ({exc}). "
                    "Delete it with delete_topic() or declare a pattern that does not overlap",
                    exc.code,
                    exc.err_code,
                ) from exc
            raise
        self.set_mode(topic, chosen)
        self._remember(resp)
        return resp

"""Topic names: validation, wildcard matching, and topic -> JetStream stream naming.

Stream naming rule (injective, so ``a.b`` and ``a_b`` never share a stream):
letters, digits and ``-`` are kept, except that ``-`` is doubled (``--``);
``.`` becomes ``_``; any other character becomes ``-<hex code point>-``.
So ``orders.events`` -> ``orders_events``, ``a_b`` -> ``a-5f-b``,
``orders.>`` -> ``orders_-3e-``, ``a-b`` -> ``a--b``.
"""

from __future__ import annotations

import enum
import re

from ._errors import InvalidTopicError


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


def has_wildcard(topic: str) -> bool:
    return any(t in ("*", ">") for t in topic.split("."))


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

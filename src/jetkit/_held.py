"""What scheduled delivery keeps in a topic's stream, and the one hook the rest asks.

Owned by ``_schedule``, which holds a scheduled message in the topic's own stream on
``$JK.SCHED.<stream>.<id>`` (a subject it adds to the stream the first time, and which no
topic can be: topics never start with ``$``) and switches the stream's features on
(``Features``, remembered per stream in the TopicRegistry).

Everything else that reads a stream's subjects asks one hook, ``own_subjects``: which of
them are its topics' own. ``TopicInfo.subjects`` shows only those, ``declare_topic``
keeps the others when it sets a stream's subjects again, and a consumer of the whole
stream is filtered to them (``own_filter``), so no consumer gets a held message early.
This module imports nothing of jetkit's but the JetStream API, so ``_topics`` and
``_consumer_config`` can ask it without importing ``_schedule`` (which imports them).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._jsapi import JsApi

PREFIX = "$JK.SCHED"


def held_subjects(stream: str) -> str:
    """The subjects (a pattern) holding ``stream``'s scheduled messages."""
    return f"{PREFIX}.{stream}.>"


def schedule_subject(stream: str, schedule_id: str) -> str:
    """Where one scheduled message of ``stream`` is held."""
    return f"{PREFIX}.{stream}.{schedule_id}"


def own_subjects(subjects: list[str]) -> list[str]:
    """The hook: of a stream's subjects, those that are its topics' own (not the ones
    holding scheduled messages)."""
    return [s for s in subjects if not s.startswith(PREFIX + ".")]


async def own_filter(api: JsApi, stream: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` of a consumer of the whole stream, filtered to the stream's own subjects
    if the stream also holds scheduled messages: read fresh, because a subscription made
    before another process switched schedules on re-creates its consumer from its old
    config, and must not receive a held message early."""
    info = await api.call(f"STREAM.INFO.{stream}")
    subjects = list((info.get("config") or {}).get("subjects") or [])
    own = own_subjects(subjects)
    if own == subjects or not own:
        return config
    if len(own) == 1:
        return {**config, "filter_subject": own[0]}
    return {**config, "filter_subjects": own}


@dataclasses.dataclass(slots=True)
class Features:
    """What jetkit knows of a stream once it switched the features on."""

    schedules: bool
    ttl: bool
    retention: str
    max_age: float  # seconds, 0: none
    discard: str = "old"
    read_at: float = dataclasses.field(default_factory=time.monotonic)

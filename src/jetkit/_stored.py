"""``publish_stored`` and ``publish_json_stored``: a publish whose type says "stored".

``publish`` returns ``PubAck | None``: a core topic's message is not stored and has no
ack, and which topics are core is known only at run time. These two refuse a core topic
(``jk.ConfigError``, before anything is sent) and otherwise take ``publish``'s own path
with its checks, so they return a ``PubAck`` and ``ack.seq`` type-checks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Coroutine
from typing import Any

from ._codec import encode_json
from ._errors import ConfigError
from ._publish import PubAck
from ._schedule import ScheduledMessage
from ._topics import TopicMode, TopicRegistry


class StoredPublishing:
    """Mixed into ``jk.Stream``: its ``publish_stored`` and ``publish_json_stored``."""

    _topics: TopicRegistry

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> Coroutine[Any, Any, PubAck | ScheduledMessage | None]:
        raise NotImplementedError

    async def publish_stored(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck:
        """``publish`` to a JetStream topic: returns its PubAck once the server stored it.

        The same checks and path as ``publish`` (``msg_id``, ``ttl``, ``publish_timeout``
        alike); a core topic raises jk.ConfigError before anything is sent. Use it where
        the ack matters: ``ack.seq`` type-checks, where ``publish`` returns
        ``PubAck | None``.
        """
        self._topics.check(topic)
        if self._topics.mode_for(topic) is TopicMode.CORE:
            raise _core(topic, "publish_stored")
        ack = await self.publish(topic, data, headers=headers, msg_id=msg_id, ttl=ttl)
        if not isinstance(ack, PubAck):  # declared core while a registration settled
            raise ConfigError(f"{topic!r} became a core topic meanwhile: sent, not stored")
        return ack

    async def publish_json_stored(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck:
        """``publish_json`` to a JetStream topic: returns its PubAck (see
        ``publish_stored``)."""
        self._topics.check(topic)
        if self._topics.mode_for(topic) is TopicMode.CORE:
            raise _core(topic, "publish_json_stored")
        return await self.publish_stored(
            topic, encode_json(value), headers=headers, msg_id=msg_id, ttl=ttl
        )


def _core(topic: str, call: str) -> ConfigError:
    return ConfigError(
        f"{topic!r} is a core topic: {call}() returns the PubAck of a stored message, and "
        "a core one is not stored; declare_topic(topic, mode=jk.TopicMode.JETSTREAM) to "
        "store it, or use publish()"
    )

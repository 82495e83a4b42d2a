"""What ``publish_stored`` and ``publish_json_stored`` add to a publish: a type that
says "stored".

``publish`` returns ``PubAck | None``: a core topic's message is not stored and has no
ack, and which topics are core is known only at run time. The stored forms refuse a core
topic (``jk.ConfigError``, before anything is sent) and otherwise take ``publish``'s
own path with its checks, so they return a ``PubAck`` and ``ack.seq`` type-checks.
"""

from __future__ import annotations

from ._errors import ConfigError
from ._publish import PubAck
from ._schedule import ScheduledMessage
from ._topics import TopicMode, TopicRegistry


def refuse_core(topics: TopicRegistry, topic: str, call: str) -> None:
    """ConfigError if ``topic`` is a core topic (its message would not be stored)."""
    topics.check(topic)
    if topics.mode_for(topic) is TopicMode.CORE:
        raise ConfigError(
            f"{topic!r} is a core topic: {call}() returns the PubAck of a stored message, "
            "and a core one is not stored; declare_topic(topic, mode=jk.TopicMode.JETSTREAM) "
            "to store it, or use publish()"
        )


def stored_ack(topic: str, ack: PubAck | ScheduledMessage | None) -> PubAck:
    """The PubAck of a stored publish (a topic declared core while registrations settled
    was sent, not stored)."""
    if not isinstance(ack, PubAck):
        raise ConfigError(f"{topic!r} became a core topic meanwhile: sent, not stored")
    return ack

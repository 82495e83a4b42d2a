"""Exactly-once pipelines: ``subscribe(..., emit=...)`` and ``jk.Emit``.

A subscription with ``emit="topic"`` publishes what its handler returns, and settles
the input itself, in this order (``JetStreamSubscription._process``):

1. the handler runs (the input is not acked yet: jetkit runs it as ``ack=MANUAL``);
2. its outputs (``outputs``) are published, each with a msg id derived from the input
   (``output_id``: the consumer's life, the input's stream and sequence, the output's
   index), and every one is awaited until the server has stored it;
3. only then is the input acked, and that ack is confirmed by the server.

A crash or a kill anywhere before 3 completes brings the input back (a kill of the
server may even undo a confirmed ack); the handler runs again, and its outputs, having
the same msg ids, are refused by the output topic as duplicates: each output is stored
once, as long as the redelivery comes within the output topic's duplicate window
(``declare_topic(duplicate_window=...)``, 2 minutes by default).

A handler raising, or an output that cannot be published (encoded, stored), fails the
attempt: the input is nak'ed and retried (``max_deliver``, ``backoff``, ``dlq``); outputs
of that attempt already stored stay, and the retry's are their duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._codec import encode_reply
from ._errors import ConfigError, EncodeError
from ._topics import TopicMode, validate_topic

if TYPE_CHECKING:
    from ._message import Message
    from ._publish import PubAck, Publisher
    from ._topics import TopicRegistry

# longer ids are hashed: the id travels in every output's headers
MAX_ID = 128


class Emit:
    """One output of a pipeline handler (``subscribe(..., emit=...)``): ``value``
    published to ``topic`` with ``headers``. Return one, or a list of them.

    ``value`` is encoded as a reply is: bytes as they are, str as UTF-8, None as an
    empty payload, anything else as JSON.
    """

    __slots__ = ("headers", "topic", "value")

    def __init__(self, topic: str, value: Any, headers: Mapping[str, str] | None = None) -> None:
        validate_topic(topic, wildcards=False)
        if headers is not None and not isinstance(headers, Mapping):
            raise ConfigError(f"Emit headers must be a mapping of str to str, got {headers!r}")
        self.topic = topic
        self.value = value
        self.headers = dict(headers) if headers is not None else None

    def __repr__(self) -> str:
        return f"Emit({self.topic!r}, {self.value!r}, headers={self.headers!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Emit):
            return NotImplemented
        return (self.topic, self.value, self.headers) == (other.topic, other.value, other.headers)

    __hash__ = None  # type: ignore[assignment]


def is_emit(result: object) -> bool:
    """Whether a handler's return value holds a jk.Emit (returned without ``emit=``)."""
    return isinstance(result, Emit) or (
        isinstance(result, list) and any(isinstance(item, Emit) for item in result)
    )


def outputs(result: object, default: str) -> list[Emit]:
    """The outputs a handler's return value stands for.

    None: none. A jk.Emit: that one. A list that is empty or holds only jk.Emit: those,
    in order. Anything else is one value for the ``emit=`` topic ``default``.
    """
    if result is None:
        return []
    if isinstance(result, Emit):
        return [result]
    if isinstance(result, list):
        emits = [item for item in result if isinstance(item, Emit)]
        if len(emits) == len(result):
            return emits
        if emits:
            raise EncodeError(
                "the handler returned a list mixing jk.Emit and other values; return a "
                "list of jk.Emit only (one per output), or one value for the emit= topic"
            )
    return [Emit(default, result)]


def output_id(life: str, stream: str, consumer: str, seq: int, index: int) -> str:
    """The msg id of output ``index`` of input ``seq`` of ``stream``, as handled by
    ``consumer`` in its life ``life`` (``_attempts.incarnation``): the same input run
    again gets the same ids; another consumer (another pipeline on the same input), or
    the same name created again (its sequences may start over), gets others."""
    readable = f"jk-emit-{life}-{stream}-{consumer}-{seq}-{index}"
    if len(readable) <= MAX_ID:
        return readable
    digest = hashlib.blake2b(f"{stream}\0{consumer}".encode(), digest_size=12).hexdigest()
    return f"jk-emit-{life}-{digest}-{seq}-{index}"


def check_stored(topic: str, topics: TopicRegistry) -> None:
    """ConfigError unless ``topic`` is stored (outputs are deduplicated by msg id)."""
    if topics.mode_for(topic) is TopicMode.CORE:
        raise ConfigError(
            f"the output topic {topic!r} is a core topic: outputs are stored and deduplicated "
            "by msg id, which needs JetStream; "
            f"declare_topic({topic!r}, mode=jk.TopicMode.JETSTREAM) first"
        )


class Emitter:
    """Publishes one input's outputs and waits until all are stored."""

    def __init__(self, publisher: Publisher, topics: TopicRegistry, default: str) -> None:
        self._publisher = publisher
        self._topics = topics
        self.default = default

    async def emit(self, msg: Message, result: object, life: str, consumer: str) -> int:
        """Publish the outputs of ``result`` for the input ``msg``; the number stored new
        (not duplicates). Raises the first failure (the attempt fails)."""
        emits = outputs(result, self.default)
        if not emits:
            return 0
        stream, seq = msg.stream or "", msg.seq or 0
        sends = []
        for index, out in enumerate(emits):
            check_stored(out.topic, self._topics)
            data = encode_reply(out.value)
            headers = dict(out.headers) if out.headers else {}
            msg_id = output_id(life, stream, consumer, seq, index)
            sends.append((out.topic, data, headers or None, msg_id))
        # the streams first, in order, so that the publishes below leave in index order
        for topic in dict.fromkeys(send[0] for send in sends):
            await self._topics.ensure_stream(topic)
        results: list[PubAck | BaseException | None] = await asyncio.gather(
            *(self._publisher.publish(*send) for send in sends), return_exceptions=True
        )
        stored = 0
        for result in results:
            if isinstance(result, BaseException):
                raise result
            if result is not None and not result.duplicate:
                stored += 1
        return stored

"""Reading what the server holds, in bounded steps: the seam the tools read through.

``Stream.overview`` (every topic with its consumers: ``jetkit top``, the metrics'
gauges, the console, the pytest plugin's clean-up) and ``Stream.read_stored`` (the
messages stored on a topic, at most ``limit``: the console's pages) are built here;
``_deadletters`` reads a DLQ with the same loop (``messages``).

A stored message is read with ``STREAM.MSG.GET`` and ``next_by_subj``: the server finds
the next message of the topic at or after a sequence, so a read costs one call per
message returned, however many messages of other topics its stream holds between them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from ._errors import NotFoundError
from ._info import ConsumerInfo, TopicInfo, TopicOverview, consumer_info
from ._jsapi import STREAM_NOT_FOUND, JsApi
from ._message import Message
from ._topics import TopicRegistry, validate_topic
from ._validate import INT64_MAX, number, optional_number


async def consumers_of(api: JsApi, stream: str) -> list[ConsumerInfo]:
    """The consumers of the stream named ``stream`` (``TopicInfo.name``)."""
    return [consumer_info(c) for c in await api.every(f"CONSUMER.LIST.{stream}", "consumers")]


async def overview(api: JsApi, topics: list[TopicInfo]) -> list[TopicOverview]:
    """``topics`` with their consumers; a topic deleted meanwhile is left out."""
    found: list[TopicOverview] = []
    for topic in topics:
        try:
            consumers = await consumers_of(api, topic.name)
        except NotFoundError as exc:
            if exc.err_code != STREAM_NOT_FOUND:
                raise
            continue
        found.append(TopicOverview(topic, consumers))
    return found


async def messages(
    api: JsApi,
    stream: str,
    topic: str,
    *,
    first_seq: int = 1,
    last_seq: int | None = None,
    limit: int | None = None,
) -> AsyncGenerator[Message, None]:
    """The messages ``stream`` stores on ``topic`` (a subject or a pattern), oldest
    first, from ``first_seq``; none past ``last_seq``, at most ``limit``. Ends quietly
    when there is no further message (or the stream is gone)."""
    seq = max(1, first_seq)
    count = 0
    while (last_seq is None or seq <= last_seq) and (limit is None or count < limit):
        try:
            resp = await api.call(f"STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": topic})
        except NotFoundError:
            return
        msg = Message.stored(resp["message"])
        if msg.seq is None or (last_seq is not None and msg.seq > last_seq):
            return
        yield msg
        count += 1
        seq = msg.seq + 1


def read_stored(
    api: JsApi, topics: TopicRegistry, topic: object, first_seq: object, limit: object
) -> AsyncIterator[Message]:
    """``Stream.read_stored``: the arguments checked now, the messages read as they are
    iterated."""
    checked = validate_topic(topic, wildcards=True)
    first = optional_number("first_seq", first_seq, minimum=1, maximum=INT64_MAX, integer=True)
    count = number("limit", limit, minimum=1, maximum=INT64_MAX, integer=True)
    return _read_stored(api, topics, checked, first or 1, count)


async def _read_stored(
    api: JsApi, topics: TopicRegistry, topic: str, first_seq: int, limit: int
) -> AsyncGenerator[Message, None]:
    stream, _ = await topics.stream_of(topic)
    async for msg in messages(api, stream, topic, first_seq=first_seq, limit=limit):
        yield msg

"""Dead letters: reading a DLQ topic and re-driving its messages to where they came from.

A dead letter is a message a subscription gave up on (see ``_consumer``): its original
payload and headers plus the ``Jetkit-*`` headers of ``_retry.dead_letter_headers``.
Re-driving publishes it again to its original topic and only then deletes that one
message from the DLQ, by sequence: nothing is ever purged, so dead letters arriving
meanwhile stay, and a crash in between leaves the letter in the DLQ (a second
re-drive within the topic's duplicate window is recognised as a duplicate).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncGenerator, Callable

from ._errors import (
    ConfigError,
    InvalidHeaderError,
    InvalidTopicError,
    JetStreamError,
    NotADeadLetterTopicError,
    NotFoundError,
    PayloadTooLargeError,
)
from ._jsapi import JsApi
from ._message import Message
from ._publish import Publisher
from ._retry import H_CONSUMER, H_DELIVERIES, H_ERROR, H_REDRIVES, H_SEQ, H_TOPIC
from ._topics import TopicRegistry, validate_topic
from ._validate import INT64_MAX, number, optional_number
from ._validate import headers as check_headers

_DEAD_LETTER_HEADERS = (H_TOPIC, H_SEQ, H_DELIVERIES, H_CONSUMER, H_ERROR)
NO_MESSAGE = 10037  # STREAM.MSG.GET: no message at or after that sequence
NO_SUCH_MESSAGE = 10057  # STREAM.MSG.DELETE: no message at that sequence


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One message of a DLQ topic and why it is there.

    ``seq`` is its sequence in the DLQ; ``original_topic``/``original_seq`` where it
    was first stored; ``deliveries`` how many attempts it had; ``consumer`` which
    consumer gave up; ``error`` the last failure; ``redrives`` how often it was
    re-driven before. ``headers`` are the original message's headers.
    """

    seq: int
    data: bytes
    headers: dict[str, str]
    timestamp: dt.datetime
    original_topic: str
    original_seq: int | None
    deliveries: int | None
    consumer: str | None
    error: str | None
    redrives: int


@dataclasses.dataclass(frozen=True)
class RedriveResult:
    """What ``Stream.redrive`` did.

    ``redriven``: published again to their topics and deleted from the DLQ;
    ``skipped``: left in place because they are not dead letters (no dead-letter
    headers, or an original topic that cannot be published to); ``kept``: dead letters
    that ``where`` did not select (or beyond ``limit``), left in place.
    """

    redriven: int
    skipped: int
    kept: int = 0


def dead_letter(msg: Message) -> DeadLetter | None:
    """``msg`` (read from a DLQ) as a DeadLetter, or None if it lacks the headers."""
    headers = msg.headers
    topic = headers.get(H_TOPIC)
    if not topic:
        return None
    # the original's Nats-* headers were dropped on the way in; any here are jetkit's own
    original = {
        k: v
        for k, v in headers.items()
        if k not in _DEAD_LETTER_HEADERS and not k.startswith("Nats-")
    }
    return DeadLetter(
        seq=msg.seq or 0,
        data=msg.data,
        headers=original,
        timestamp=msg.timestamp,
        original_topic=topic,
        original_seq=_int(headers.get(H_SEQ)),
        deliveries=_int(headers.get(H_DELIVERIES)),
        consumer=headers.get(H_CONSUMER) or None,
        error=headers.get(H_ERROR) or None,
        redrives=_int(headers.get(H_REDRIVES)) or 0,
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


async def stored(
    api: JsApi, stream: str, topic: str, last_seq: int, first_seq: int = 1
) -> AsyncGenerator[Message, None]:
    """The messages stored on ``topic`` in ``stream``, oldest first, from ``first_seq``
    up to ``last_seq``."""
    seq = max(1, first_seq)
    while seq <= last_seq:
        try:
            resp = await api.call(f"STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": topic})
        except NotFoundError:
            return
        msg = Message.stored(resp["message"])
        if msg.seq is None or msg.seq > last_seq:
            return
        yield msg
        seq = msg.seq + 1


def redrive_message(letter: DeadLetter, stream: str) -> tuple[str, dict[str, str]]:
    """Where to publish ``letter`` again and with which headers; raises if it cannot be."""
    topic = validate_topic(letter.original_topic, wildcards=False)
    headers = {**letter.headers, H_REDRIVES: str(letter.redrives + 1)}
    # a re-drive repeated after a crash (published, not yet deleted) is a duplicate
    checked = check_headers(headers, f"jk-redrive-{stream}-{letter.seq}")
    assert checked is not None
    return topic, checked


async def read(
    api: JsApi, topics: TopicRegistry, dlq_topic: str, limit: int | None
) -> list[DeadLetter]:
    """``Stream.dead_letters``."""
    topics.check(dlq_topic)
    optional_number("limit", limit, minimum=1, integer=True)
    name, last = await _snapshot(api, topics, dlq_topic)
    found: list[DeadLetter] = []
    async for msg in stored(api, name, dlq_topic, last):
        letter = dead_letter(msg)
        if letter is not None:
            found.append(letter)
            if limit is not None and len(found) >= limit:
                break
    return found


async def redrive(
    api: JsApi,
    topics: TopicRegistry,
    publisher: Publisher,
    dlq_topic: str,
    limit: int | None,
    where: Callable[[DeadLetter], bool] | None,
    log: logging.Logger,
) -> RedriveResult:
    """``Stream.redrive``: re-publish each selected letter, then delete that one."""
    topics.check(dlq_topic)
    optional_number("limit", limit, minimum=1, integer=True)
    if where is not None and not callable(where):
        raise ConfigError(f"where must be a function DeadLetter -> bool, got {where!r}")
    name, last = await _snapshot(api, topics, dlq_topic)
    redriven = skipped = kept = letters = 0
    async for msg in stored(api, name, dlq_topic, last):
        letter = dead_letter(msg)
        if letter is None:
            skipped += 1
            continue
        letters += 1
        wanted = where is None or where(letter)
        if not wanted or (limit is not None and redriven >= limit):
            kept += 1
            continue
        try:
            topic, headers = redrive_message(letter, name)
            if topic == dlq_topic:
                raise InvalidTopicError("its original topic is the DLQ itself")
            data = publisher.check_payload(topic, letter.data, headers)
        except (InvalidTopicError, InvalidHeaderError, PayloadTooLargeError) as exc:
            log.warning(
                "dead letter %s on %r cannot be re-driven (%s); left in place",
                letter.seq,
                dlq_topic,
                exc,
            )
            skipped += 1
            continue
        ack = await publisher.stored(topic, data, headers)
        try:
            await api.call(f"STREAM.MSG.DELETE.{name}", {"seq": letter.seq, "no_erase": True})
        except JetStreamError as exc:
            # gone since it was read: another re-drive took it (a console's re-drive
            # clicked twice, two at once), and ours then was a duplicate, not stored
            # again; or the DLQ's limits removed it, and ours is the one re-driven
            if exc.err_code != NO_SUCH_MESSAGE:
                raise
            if ack.duplicate:
                continue  # the other re-drive counts it
        redriven += 1
    if letters == 0 and skipped > 0:
        raise NotADeadLetterTopicError(
            f"{dlq_topic!r} holds {skipped} messages but no dead letter (none has the "
            "Jetkit-Original-Topic header); nothing was re-driven or deleted. Pass the "
            "topic given as dlq= to subscribe()"
        )
    return RedriveResult(redriven, skipped, kept)


async def _snapshot(api: JsApi, topics: TopicRegistry, dlq_topic: str) -> tuple[str, int]:
    """The stream storing ``dlq_topic`` and its last sequence now."""
    name, _ = await topics.stream_of(dlq_topic)
    info = await api.call(f"STREAM.INFO.{name}")
    return name, int(info.get("state", {}).get("last_seq", 0))


async def discard(api: JsApi, topics: TopicRegistry, dlq_topic: str, seq: int) -> bool:
    """``Stream.discard_dead_letter``: delete the dead letter at ``seq`` of ``dlq_topic``;
    False if there is no message at ``seq``. A message there that is not a dead letter
    of ``dlq_topic`` is refused and left in place."""
    topics.check(dlq_topic)
    seq = number("seq", seq, minimum=1, maximum=INT64_MAX, integer=True)
    name, _ = await topics.stream_of(dlq_topic)
    try:
        resp = await api.call(f"STREAM.MSG.GET.{name}", {"seq": seq})
    except NotFoundError as exc:
        if exc.err_code != NO_MESSAGE:
            raise
        return False
    msg = Message.stored(resp["message"])
    if msg.topic != dlq_topic or dead_letter(msg) is None:
        where = "" if msg.topic == dlq_topic else f" (it is stored on {msg.topic!r}, not on it)"
        raise NotADeadLetterTopicError(
            f"seq {seq} of {dlq_topic!r} is not a dead letter{where}; nothing was deleted. "
            "Pass a seq that dead_letters() lists (purge_topic() removes other messages)"
        )
    try:
        await api.call(f"STREAM.MSG.DELETE.{name}", {"seq": seq, "no_erase": True})
    except JetStreamError as exc:
        if exc.err_code != NO_SUCH_MESSAGE:
            raise
        return False  # re-driven or discarded by someone else meanwhile
    return True

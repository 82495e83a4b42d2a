"""Dead letters: reading a DLQ topic and re-driving its messages to where they came from.

A dead letter is a message a subscription gave up on (see ``_consumer``): its original
payload and headers plus the ``Jetkit-*`` headers of ``_retry.dead_letter_headers``.
Re-driving publishes it again to its original topic and only then deletes that one
message from the DLQ, by sequence: nothing is ever purged, so dead letters arriving
meanwhile stay, and a crash in between leaves the letter in the DLQ. The re-publish
carries a msg id unique to the letter (the DLQ's creation time and the letter's
sequence: a DLQ deleted and made again starts at 1), so a second re-drive within the
topic's duplicate window is recognised as a duplicate; a duplicate counts as re-driven
only once the message it names is found in the topic, and a letter counts only where
this re-drive deleted it (two re-drives at once count each letter once).

A letter too large to hold a copy of its message (``_retry.fit_dead_letter``) says where
the original is; listing and re-driving read it from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable

from ._attempts import incarnation
from ._browse import messages
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
from ._publish import PubAck, Publisher
from ._retry import (
    H_CONSUMER,
    H_DELIVERIES,
    H_ERROR,
    H_NOT_COPIED,
    H_REDRIVES,
    H_SEQ,
    H_STREAM,
    H_TOPIC,
)
from ._time import parse_time_ns
from ._topics import TopicRegistry, validate_topic
from ._validate import INT64_MAX, number, optional_number
from ._validate import headers as check_headers

_DEAD_LETTER_HEADERS = (H_TOPIC, H_SEQ, H_DELIVERIES, H_CONSUMER, H_ERROR, H_STREAM, H_NOT_COPIED)
NO_MESSAGE = 10037  # STREAM.MSG.GET: no message at or after that sequence
NO_SUCH_MESSAGE = 10057  # STREAM.MSG.DELETE: no message at that sequence


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One message of a DLQ topic and why it is there.

    ``seq`` is its sequence in the DLQ; ``original_topic``/``original_seq`` where it
    was first stored; ``deliveries`` how many attempts it had; ``consumer`` which
    consumer gave up; ``error`` the last failure; ``redrives`` how often it was
    re-driven before. ``headers`` are the original message's headers.
    ``original_stream`` is the stream holding the original. ``copied`` is False for a
    letter too large to hold a copy of its message: ``data`` and ``headers`` were read
    from the original (empty if it is gone from its topic).
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
    original_stream: str | None = None
    copied: bool = True


@dataclasses.dataclass(frozen=True)
class DeadLetterScan:
    """What ``Stream.scan_dead_letters`` found in a bounded part of a DLQ topic.

    ``letters``: the dead letters read, oldest first (messages without the dead-letter
    headers are counted in ``scanned`` but not listed). ``scanned``: messages read.
    ``last_seq``: the stream's last sequence when the scan began; it read nothing
    newer. ``next_seq``: where the scan stopped short of ``last_seq`` (``limit`` letters
    found or ``scan`` messages read): pass it as ``first_seq=`` to read on; None when
    every message up to ``last_seq`` was read.
    """

    letters: list[DeadLetter]
    scanned: int
    last_seq: int
    next_seq: int | None = None


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
        original_stream=headers.get(H_STREAM) or None,
        copied=H_NOT_COPIED not in headers,
    )


async def with_original(api: JsApi, letter: DeadLetter, msg: Message) -> DeadLetter:
    """A letter that holds no copy, with its message's payload and headers read from
    where it was first stored (unchanged if that is gone, or is another message now)."""
    original = await _original(api, letter, msg)
    return letter if original is None else _copied_from(letter, original)


def _copied_from(letter: DeadLetter, original: Message) -> DeadLetter:
    headers = {k: v for k, v in original.headers.items() if not k.startswith("Nats-")}
    return dataclasses.replace(letter, data=original.data, headers=headers)


async def _original(api: JsApi, letter: DeadLetter, msg: Message) -> Message | None:
    stored_ns = _int(msg.headers.get(H_NOT_COPIED))
    if not letter.original_stream or letter.original_seq is None or stored_ns is None:
        return None
    try:
        resp = await api.call(
            f"STREAM.MSG.GET.{letter.original_stream}", {"seq": letter.original_seq}
        )
    except NotFoundError:
        return None
    original = Message.stored(resp["message"])
    # the same message, not another one at that sequence of a stream made again
    if original.topic != letter.original_topic:
        return None
    if parse_time_ns(resp["message"].get("time")) != stored_ns:
        return None
    return original


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def redrive_message(letter: DeadLetter, dlq: str) -> tuple[str, dict[str, str]]:
    """Where to publish ``letter`` again and with which headers; raises if it cannot be.

    ``dlq`` names the DLQ's stream and its life (see ``_snapshot``): a re-drive repeated
    after a crash (published, not yet deleted) is a duplicate, a letter of a DLQ made
    again is not.
    """
    topic = validate_topic(letter.original_topic, wildcards=False)
    headers = {**letter.headers, H_REDRIVES: str(letter.redrives + 1)}
    checked = check_headers(headers, f"jk-redrive-{dlq}-{letter.seq}")
    assert checked is not None
    return topic, checked


async def read(
    api: JsApi, topics: TopicRegistry, dlq_topic: str, limit: int | None
) -> list[DeadLetter]:
    """``Stream.dead_letters``: every message up to the last, until ``limit`` letters."""
    topics.check(dlq_topic)
    optional_number("limit", limit, minimum=1, integer=True)
    return (await _scan(api, topics, dlq_topic, limit, None, 1)).letters


async def scan_letters(
    api: JsApi,
    topics: TopicRegistry,
    dlq_topic: str,
    limit: object,
    scan: object,
    first_seq: object,
) -> DeadLetterScan:
    """``Stream.scan_dead_letters``: at most ``scan`` messages, at most ``limit`` letters."""
    topics.check(dlq_topic)
    most = optional_number("limit", limit, minimum=1, maximum=INT64_MAX, integer=True)
    read = number("scan", scan, minimum=1, maximum=INT64_MAX, integer=True)
    first = optional_number("first_seq", first_seq, minimum=1, maximum=INT64_MAX, integer=True)
    return await _scan(api, topics, dlq_topic, most, read, first or 1)


async def _scan(
    api: JsApi,
    topics: TopicRegistry,
    dlq_topic: str,
    limit: int | None,
    scan: int | None,
    first_seq: int,
) -> DeadLetterScan:
    name, last, _ = await _snapshot(api, topics, dlq_topic)
    found: list[DeadLetter] = []
    read = 0
    stored = messages(api, name, dlq_topic, first_seq=first_seq, last_seq=last)
    async with contextlib.aclosing(stored):
        async for msg in stored:
            read += 1
            letter = dead_letter(msg)
            if letter is not None:
                if not letter.copied:  # too large to copy: read from its message
                    letter = await with_original(api, letter, msg)
                found.append(letter)
            full = limit is not None and len(found) >= limit
            if full or (scan is not None and read >= scan):
                assert msg.seq is not None
                more = msg.seq + 1 if msg.seq < last else None
                return DeadLetterScan(found, read, last, more)
    return DeadLetterScan(found, read, last)


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
    name, last, life = await _snapshot(api, topics, dlq_topic)
    redriven = skipped = kept = letters = 0
    async for msg in messages(api, name, dlq_topic, last_seq=last):
        letter = dead_letter(msg)
        if letter is None:
            skipped += 1
            continue
        letters += 1
        if not letter.copied:
            original = await _original(api, letter, msg)
            if original is None:
                log.warning(
                    "dead letter %s on %r cannot be re-driven: it was too large to hold a "
                    "copy, and its message is no longer in stream %r at seq %s; left in place",
                    letter.seq,
                    dlq_topic,
                    letter.original_stream,
                    letter.original_seq,
                )
                skipped += 1
                continue
            letter = _copied_from(letter, original)
        wanted = where is None or where(letter)
        if not wanted or (limit is not None and redriven >= limit):
            kept += 1
            continue
        try:
            topic, headers = redrive_message(letter, life)
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
        if ack.duplicate and not await _stored_as(api, ack, headers["Nats-Msg-Id"]):
            log.warning(
                "dead letter %s on %r: %r took its re-publish as a duplicate, but the message "
                "it was taken for is no longer there; left in place. Re-drive it again once "
                "the topic's duplicate window (2 minutes by default) has passed",
                letter.seq,
                dlq_topic,
                topic,
            )
            skipped += 1
            continue
        try:
            await api.call(f"STREAM.MSG.DELETE.{name}", {"seq": letter.seq, "no_erase": True})
        except JetStreamError as exc:
            # gone since it was read: another re-drive took it (a console's re-drive
            # clicked twice, two at once) and counts it; or the DLQ's limits removed it
            if exc.err_code != NO_SUCH_MESSAGE:
                raise
            continue
        redriven += 1
    if letters == 0 and skipped > 0:
        raise NotADeadLetterTopicError(
            f"{dlq_topic!r} holds {skipped} messages but no dead letter (none has the "
            "Jetkit-Original-Topic header); nothing was re-driven or deleted. Pass the "
            "topic given as dlq= to subscribe()"
        )
    return RedriveResult(redriven, skipped, kept)


async def _snapshot(api: JsApi, topics: TopicRegistry, dlq_topic: str) -> tuple[str, int, str]:
    """The stream storing ``dlq_topic``, its last sequence now, and a name for this life
    of it (its name and creation time: a stream made again starts its sequences over)."""
    name, _ = await topics.stream_of(dlq_topic)
    info = await api.call(f"STREAM.INFO.{name}")
    life = f"{name}-{incarnation(info)}"
    return name, int(info.get("state", {}).get("last_seq", 0)), life


async def _stored_as(api: JsApi, ack: PubAck, msg_id: str) -> bool:
    """Whether the message a duplicate ack names is in its stream with ``msg_id``."""
    try:
        resp = await api.call(f"STREAM.MSG.GET.{ack.stream}", {"seq": ack.seq})
    except NotFoundError:
        return False
    return bool(Message.stored(resp["message"]).headers.get("Nats-Msg-Id") == msg_id)


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

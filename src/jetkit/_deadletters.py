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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ._admin import stored_message
from ._errors import InvalidHeaderError, InvalidTopicError, NotFoundError
from ._jsapi import JsApi
from ._message import Message
from ._retry import H_CONSUMER, H_DELIVERIES, H_ERROR, H_REDRIVES, H_SEQ, H_TOPIC
from ._topics import validate_topic
from ._validate import headers as check_headers

_DEAD_LETTER_HEADERS = (H_TOPIC, H_SEQ, H_DELIVERIES, H_CONSUMER, H_ERROR)
NO_MESSAGE = 10037  # STREAM.MSG.GET: no message at or after that sequence


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


async def stored(api: JsApi, stream: str, topic: str, last_seq: int) -> AsyncIterator[Message]:
    """The messages stored on ``topic`` in ``stream``, oldest first, up to ``last_seq``."""
    seq = 1
    while seq <= last_seq:
        try:
            resp = await api.call(f"STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": topic})
        except NotFoundError:
            return
        msg = stored_message(resp["message"])
        if msg.seq is None or msg.seq > last_seq:
            return
        yield msg
        seq = msg.seq + 1


Publish = Callable[[str, bytes, dict[str, str]], Awaitable[Any]]


def redrive_message(letter: DeadLetter, stream: str) -> tuple[str, dict[str, str]]:
    """Where to publish ``letter`` again and with which headers; raises if it cannot be."""
    topic = validate_topic(letter.original_topic, wildcards=False)
    headers = {**letter.headers, H_REDRIVES: str(letter.redrives + 1)}
    # a re-drive repeated after a crash (published, not yet deleted) is a duplicate
    checked = check_headers(headers, f"jk-redrive-{stream}-{letter.seq}")
    assert checked is not None
    return topic, checked


NOT_PUBLISHABLE = (InvalidTopicError, InvalidHeaderError)

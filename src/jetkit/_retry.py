"""Retry policy: backoff delays, the retry-or-give-up decision, the dead-letter headers.

Pure functions, tested without a server.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ._errors import ERROR_HEADER, ConfigError, one_line
from ._validate import header_size, number

H_TOPIC = "Jetkit-Original-Topic"
H_SEQ = "Jetkit-Original-Seq"
H_DELIVERIES = "Jetkit-Deliveries"
H_CONSUMER = "Jetkit-Consumer"
H_ERROR = ERROR_HEADER
H_REDRIVES = "Jetkit-Redrives"
H_STREAM = "Jetkit-Original-Stream"
# on a letter too large to hold a copy: the original's stored time (ns), to find it again
H_NOT_COPIED = "Jetkit-Not-Copied"
POINTER_ERROR_CHARS = 256

Delay = float | int | dt.timedelta


MAX_DELAY = 365 * 86_400.0  # a retry delay longer than a year is a mistake
MAX_STEPS = 1000


def exponential_backoff(
    initial: Delay,
    steps: int,
    factor: float = 2.0,
    max: Delay | None = None,
    *,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> list[float]:
    """``steps`` delays in seconds: initial, initial*factor, ... each capped at ``max``.

    ``jitter`` (0 to 1) shortens each delay by a random fraction of itself up to that
    much, so that many consumers failing together do not all retry at the same moment.
    A delay that would pass a year is capped there (and at ``max`` if given).
    """
    first = delay_seconds("exponential_backoff initial", initial)
    cap = delay_seconds("exponential_backoff max", max) if max is not None else MAX_DELAY
    number("exponential_backoff steps", steps, minimum=1, maximum=MAX_STEPS, integer=True)
    number("exponential_backoff factor", factor, minimum=1, maximum=1000)
    number("exponential_backoff jitter", jitter, minimum=0, maximum=1)
    out: list[float] = []
    delay = first
    for _ in range(steps):
        delay = min(delay, cap)
        out.append(delay * (1 - jitter * rand()) if jitter else delay)
        delay *= factor
    return out


def delay_seconds(name: str, value: object) -> float:
    """One delay (seconds or timedelta) as finite seconds from 0 to a year."""
    return float(number(name, value, minimum=0, maximum=MAX_DELAY, hint=" (seconds)"))


def normalize_backoff(backoff: Sequence[Delay] | Delay | None) -> list[float] | None:
    """Accept a list of seconds/timedeltas (or one value); validate; return seconds."""
    if backoff is None:
        return None
    if isinstance(backoff, float | int | dt.timedelta):
        items: list[object] = [backoff]
    elif isinstance(backoff, Sequence) and not isinstance(backoff, str | bytes):
        items = list(backoff)
    else:
        raise ConfigError(f"backoff must be a list of delays in seconds, got {backoff!r}")
    if not items:
        raise ConfigError("backoff must not be empty; leave it None for immediate retries")
    return [delay_seconds("backoff delay", v) for v in items]


class Decision(NamedTuple):
    """What to do after a failed attempt: ``retry`` after ``delay`` (None: at once), or
    give up (dead-letter the message)."""

    retry: bool
    delay: float | None


def decide(attempt: int, max_deliver: int | None, backoff: list[float] | None) -> Decision:
    """After failed attempt number ``attempt`` (1-based): retry, or give up.

    Retries go on while attempts are left (``max_deliver=None``: forever); each waits
    the backoff delay for that attempt, the last delay repeating.
    """
    if max_deliver is not None and attempt >= max_deliver:
        return Decision(False, None)
    if not backoff:
        return Decision(True, None)
    return Decision(True, backoff[min(attempt, len(backoff)) - 1])


def dead_letter_headers(
    original: dict[str, str],
    *,
    topic: str,
    seq: int | None,
    deliveries: int,
    consumer: str,
    error: str,
) -> dict[str, str]:
    """The original headers plus the Jetkit-* dead-letter headers."""
    headers = {k: v for k, v in original.items() if not k.startswith("Nats-")}
    headers[H_TOPIC] = topic
    headers[H_SEQ] = "" if seq is None else str(seq)
    headers[H_DELIVERIES] = str(deliveries)
    headers[H_CONSUMER] = consumer
    headers[H_ERROR] = one_line(error)
    return headers


def fit_dead_letter(
    data: bytes,
    headers: dict[str, str],
    *,
    stream: str,
    stored_ns: int,
    limit: int,
    pointer: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """The dead letter to store: ``data`` with ``headers`` (``dead_letter_headers`` plus
    the msg id) if they fit ``limit`` (the server's max_payload) and ``pointer`` is False;
    else a letter that points at the original: no payload, none of its headers, the
    error cut short, and where the original is (``stream``, its sequence, its stored
    time ``stored_ns``), which ``redrive`` and ``dead_letters`` read it from.
    """
    headers = {**headers, H_STREAM: stream}
    if not pointer and len(data) + header_size(headers) <= limit:
        return data, headers
    keep = (H_TOPIC, H_SEQ, H_DELIVERIES, H_CONSUMER, H_STREAM, "Nats-Msg-Id")
    small = {k: headers[k] for k in keep if k in headers}
    small[H_NOT_COPIED] = str(stored_ns)
    error = headers.get(H_ERROR, "")
    room = limit - header_size({**small, H_ERROR: ""})
    cut = error[:POINTER_ERROR_CHARS].encode()[: max(0, room)]
    small[H_ERROR] = cut.decode("utf-8", "ignore")
    return b"", small

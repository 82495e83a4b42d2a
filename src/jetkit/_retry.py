"""Retry policy (backoff) and the dead-letter headers: pure functions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from ._errors import ConfigError

H_TOPIC = "Jetkit-Original-Topic"
H_SEQ = "Jetkit-Original-Seq"
H_DELIVERIES = "Jetkit-Deliveries"
H_CONSUMER = "Jetkit-Consumer"
H_ERROR = "Jetkit-Error"

Delay = float | int | dt.timedelta


def exponential_backoff(
    initial: Delay, steps: int, factor: float = 2.0, max: Delay | None = None
) -> list[float]:
    """``steps`` delays in seconds: initial, initial*factor, ... each capped at ``max``."""
    first = _seconds(initial)
    cap = _seconds(max) if max is not None else None
    if steps < 1:
        raise ConfigError(f"exponential_backoff needs steps >= 1, got {steps}")
    if first < 0 or factor < 1:
        raise ConfigError("exponential_backoff needs initial >= 0 and factor >= 1")
    out: list[float] = []
    delay = first
    for _ in range(steps):
        out.append(min(delay, cap) if cap is not None else delay)
        delay *= factor
    return out


def _seconds(value: Delay) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def normalize_backoff(backoff: Sequence[Delay] | Delay | None) -> list[float] | None:
    """Accept a list of seconds/timedeltas (or one value); validate; return seconds."""
    if backoff is None:
        return None
    items = [backoff] if isinstance(backoff, float | int | dt.timedelta) else list(backoff)
    out = [_seconds(v) for v in items]
    if not out or any(v < 0 for v in out):
        raise ConfigError(f"backoff must be a non-empty list of delays >= 0, got {backoff!r}")
    return out


def retry_delay(backoff: list[float] | None, attempt: int) -> float | None:
    """Delay before the redelivery that follows failed attempt number ``attempt`` (1-based).

    The last delay repeats when there are more attempts than delays.
    """
    if not backoff:
        return None
    return backoff[min(attempt, len(backoff)) - 1]


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
    headers[H_ERROR] = " ".join(error.split())[:1024]
    return headers


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

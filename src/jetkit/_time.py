"""Time in the server's terms: durations in nanoseconds, RFC 3339 timestamps."""

from __future__ import annotations

import datetime as dt


def nanos(seconds: float | dt.timedelta) -> int:
    """A duration as the whole nanoseconds the JetStream API takes."""
    if isinstance(seconds, dt.timedelta):
        seconds = seconds.total_seconds()
    return int(seconds * 1_000_000_000)


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parts(text: str | None) -> tuple[str, str, str] | None:
    """An RFC 3339 timestamp of the server as (date and time, fraction digits, zone);
    None for no time (empty, or Go's zero time)."""
    if not text or text.startswith("0001-01-01"):
        return None
    main, _, frac = text.rstrip("Z").partition(".")
    tz = ""
    for sep in ("+", "-"):
        if sep in frac:
            frac, _, rest = frac.partition(sep)
            tz = sep + rest
    if not frac and len(main) > 19:
        main, tz = main[:19], main[19:]
    return main, frac, tz or "+00:00"


def parse_time(text: str | None) -> dt.datetime | None:
    """Parse the server's RFC 3339 timestamps (nanosecond precision is cut to micro)."""
    parts = _parts(text)
    if parts is None:
        return None
    main, frac, tz = parts
    fraction = f".{frac[:6]:0<6}" if frac else ""
    return dt.datetime.fromisoformat(main + fraction + tz).astimezone(dt.UTC)


def parse_time_ns(text: str | None) -> int | None:
    """The server's RFC 3339 timestamp as exact nanoseconds since the epoch."""
    parts = _parts(text)
    if parts is None:
        return None
    main, frac, tz = parts
    whole = dt.datetime.fromisoformat(main + tz)
    return int(whole.timestamp()) * 1_000_000_000 + int(f"{frac[:9]:0<9}")

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


def parse_time(text: str | None) -> dt.datetime | None:
    """Parse the server's RFC 3339 timestamps (nanosecond precision is cut to micro)."""
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
    fraction = f".{frac[:6]:0<6}" if frac else ""
    stamp = dt.datetime.fromisoformat(main + fraction + (tz or "+00:00"))
    return stamp.astimezone(dt.UTC)


def parse_time_ns(text: str | None) -> int | None:
    """The server's RFC 3339 timestamp as exact nanoseconds since the epoch."""
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
    whole = dt.datetime.fromisoformat(main + (tz or "+00:00"))
    return int(whole.timestamp()) * 1_000_000_000 + int(f"{frac[:9]:0<9}" or 0)

"""What the console shows, as plain values for the templates: payloads made readable
(pretty JSON, text, or escaped bytes, cut to a size) and the lag chart's geometry.

Nothing here writes HTML: the templates do, with Jinja2's autoescaping, so a payload,
header, topic name or error text is always shown as text.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Literal

PAYLOAD_LIMIT = 4096  # characters of a payload shown; the rest is left out, with a note
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # all but tab and line ends


@dataclasses.dataclass(frozen=True)
class Payload:
    """A payload as shown: its text, what it is, its size, and whether it was cut."""

    text: str
    kind: Literal["json", "text", "binary", "empty"]
    size: int  # bytes
    cut: bool


def payload(data: bytes, limit: int = PAYLOAD_LIMIT) -> Payload:
    """``data`` readable: JSON indented when it parses, UTF-8 text as it is, anything
    else with its non-UTF-8 bytes written ``\\xNN``; at most ``limit`` characters."""
    if not data:
        return Payload("", "empty", 0, False)
    kind: Literal["json", "text", "binary"]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text, kind = data.decode("utf-8", "backslashreplace"), "binary"
    else:
        kind = "text"
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            kind = "json"
        except ValueError:
            pass
    if kind != "json" and _CONTROL.search(text):
        # NUL and other control bytes are valid UTF-8 but show as nothing (or break the
        # page's text): written \xNN like the bytes that are not UTF-8
        text, kind = _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text), "binary"
    cut = len(text) > limit
    return Payload(text[:limit] if cut else text, kind, len(data), cut)


def topics_of(subjects: Sequence[str]) -> list[str]:
    """A stream's subjects without jetkit's own (``$JK.SCHED.<stream>.>`` holds its
    scheduled messages): the topics a user publishes to and can open a page of."""
    return [s for s in subjects if not s.startswith("$JK.")] or list(subjects)


# -- the lag chart --------------------------------------------------------------------------

WIDTH, HEIGHT = 640, 180  # the chart's drawing area in SVG units
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")


@dataclasses.dataclass(frozen=True)
class Line:
    name: str
    color: str
    points: str  # "x,y x,y ..." for an SVG polyline
    last: int


@dataclasses.dataclass(frozen=True)
class Chart:
    lines: list[Line]
    top: int  # the value at the top edge
    window: float  # seconds the x axis spans
    width: int = WIDTH
    height: int = HEIGHT


def chart(
    series: Sequence[tuple[str, Sequence[tuple[float, int]]]], now: float, window: float
) -> Chart:
    """Lines for ``(name, [(time, value), ...])`` series over the last ``window``
    seconds before ``now``: time runs left to right, values from 0 (bottom) to the
    largest one seen (top, at least 1)."""
    shown = [(name, [(t, v) for t, v in points if t >= now - window]) for name, points in series]
    top = max([1] + [v for _, points in shown for _, v in points])
    lines = []
    for i, (name, points) in enumerate(shown):
        if not points:
            continue
        xy = " ".join(
            f"{(t - (now - window)) / window * WIDTH:.1f},{HEIGHT - v / top * HEIGHT:.1f}"
            for t, v in points
        )
        lines.append(Line(name, PALETTE[i % len(PALETTE)], xy, points[-1][1]))
    return Chart(lines, top, window)

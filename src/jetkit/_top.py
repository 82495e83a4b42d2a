"""``jetkit top``: topics and consumers with their rates, sampled from the server.

A sample is ``Stream.overview()``: every stream and its consumers (one JetStream API
call per stream, after the list of streams). Rates are the change between two samples:
a topic's publish rate from its last sequence, a consumer's ack rate from its ack floor
counted in deliveries (everything below it is acknowledged: exact for consumers that
ack in order without retries; it stalls while an early message waits for a retry, and
a redelivery counts as one more delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from rich.cells import cell_len
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._info import ConsumerInfo, TopicInfo, TopicOverview
from ._tools import escape

SPARKS = "▁▂▃▄▅▆▇█"
HISTORY = 20  # rates kept per row for its sparkline
SPARK_WIDTH = 10


@dataclasses.dataclass
class Sample:
    at: float  # time.monotonic()
    topics: list[TopicInfo]
    consumers: list[ConsumerInfo]


class Overviewed(Protocol):
    """What a sample needs of a Stream."""

    async def overview(self) -> list[TopicOverview]: ...


async def sample(stream: Overviewed) -> Sample:
    """Every topic and consumer on the server, now."""
    overview = await stream.overview()
    consumers = [c for o in overview for c in o.consumers]
    return Sample(time.monotonic(), [o.topic for o in overview], consumers)


@dataclasses.dataclass
class Row:
    """One topic or consumer: its latest figures and its rate history."""

    key: tuple[str, ...]
    counter: int  # the number whose change is the rate
    rates: deque[float] = dataclasses.field(default_factory=lambda: deque(maxlen=HISTORY))


class Top:
    """The rates between successive samples."""

    def __init__(self) -> None:
        self.last: Sample | None = None
        self._rows: dict[tuple[str, ...], Row] = {}

    def add(self, new: Sample) -> None:
        elapsed = new.at - self.last.at if self.last is not None else 0.0
        seen: dict[tuple[str, ...], Row] = {}
        for key, counter in self._counters(new):
            row = self._rows.get(key) or Row(key, counter)
            if elapsed > 0 and key in self._rows:
                row.rates.append(max(0, counter - row.counter) / elapsed)
            row.counter = counter
            seen[key] = row
        self._rows = seen  # rows that vanished (deleted) are forgotten
        self.last = new

    @staticmethod
    def _counters(s: Sample) -> Iterator[tuple[tuple[str, ...], int]]:
        for t in s.topics:
            yield ("topic", t.name), t.last_seq
        for c in s.consumers:
            yield ("consumer", c.stream, c.name), c.ack_floor_consumer_seq

    def rate(self, key: tuple[str, ...]) -> float | None:
        row = self._rows.get(key)
        return row.rates[-1] if row is not None and row.rates else None

    def spark(self, key: tuple[str, ...]) -> str:
        row = self._rows.get(key)
        return sparkline(list(row.rates) if row is not None else [])

    # -- what is shown ---------------------------------------------------------------------

    def topic_rows(self, human: bool = True) -> list[list[str]]:
        """One row per topic; ``human``: figures shortened (12.3k, 4.0 MiB) and a
        sparkline, else exact figures and no sparkline (for pipes)."""
        assert self.last is not None
        count, size, rate = _formats(human)
        rows = []
        for t in sorted(self.last.topics, key=lambda t: t.subjects):
            key = ("topic", t.name)
            rows.append(
                [
                    escape(", ".join(t.subjects)),
                    count(t.messages),
                    size(t.bytes),
                    rate(self.rate(key)),
                    *([self.spark(key)] if human else []),
                ]
            )
        return rows

    def consumer_rows(self, human: bool = True) -> list[list[str]]:
        assert self.last is not None
        count, _, rate = _formats(human)
        subjects = {t.name: ", ".join(t.subjects) for t in self.last.topics}
        rows = []
        for c in sorted(self.last.consumers, key=lambda c: (subjects.get(c.stream, ""), c.name)):
            key = ("consumer", c.stream, c.name)
            rows.append(
                [
                    escape(c.filter_subject or subjects.get(c.stream, c.stream)),
                    escape(c.name),
                    count(c.pending),
                    count(c.ack_pending),
                    count(c.redelivered),
                    rate(self.rate(key)),
                    *([self.spark(key)] if human else []),
                ]
            )
        return rows


TOPIC_COLUMNS = ("topic", "messages", "bytes", "msg/s", "rate")
CONSUMER_COLUMNS = ("topic", "consumer", "lag", "ack pend", "redeliv", "ack/s", "rate")
_NAMES = {"topic", "consumer"}
_NUMERIC = {"messages", "bytes", "msg/s", "lag", "ack pend", "redeliv", "ack/s"}


def _formats(human: bool) -> tuple[Any, Any, Any]:
    if human:
        return count, size, rate
    return str, str, lambda v: "" if v is None else f"{v:.1f}"  # pipes: missing is empty


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    values = values[-width:]
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(
        SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))] for v in values
    )


def count(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale * 10:
            return f"{n / scale:.0f}{unit}"
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def rate(value: float | None) -> str:
    if value is None:
        return "-"
    return count(round(value)) if value >= 10 else f"{value:.1f}"


def wrap_name(name: str, width: int) -> str:
    """``name`` on lines of at most ``width`` terminal cells, broken only after '.',
    '-', '_' or a space (a single token wider than that is the only thing split)."""
    if cell_len(name) <= width or width < 2:
        return name
    lines: list[str] = []
    line = ""
    for token in _tokens(name):
        if line and cell_len(line) + cell_len(token) > width:
            lines.append(line.rstrip())
            line = ""
        while cell_len(token) > width:
            head = _fold(token, width)
            lines.append(head)
            token = token[len(head) :]
        line += token
    if line:
        lines.append(line.rstrip())
    return "\n".join(lines)


def _fold(token: str, width: int) -> str:
    """The longest start of ``token`` that fits ``width`` cells (at least one char)."""
    used = 0
    for i, ch in enumerate(token):
        used += cell_len(ch)
        if used > width:
            return token[: max(1, i)]
    return token


def _tokens(name: str) -> Iterator[str]:
    start = 0
    for i, ch in enumerate(name):
        if ch in ".-_ ":
            yield name[start : i + 1]
            start = i + 1
    if start < len(name):
        yield name[start:]


def table(title: str, columns: tuple[str, ...], rows: list[list[str]], width: int) -> Table:
    """A table of ``width`` columns at most: the name columns share what the figures
    leave, and names wrap at '.', '-' and '_' instead of being cut. On a terminal too
    narrow for that, the sparkline and then the redelivered count are left out."""
    for dropped in _OPTIONAL:
        names_at = [i for i, c in enumerate(columns) if c in _NAMES]
        least = sum(_least(rows, i) for i in names_at)  # no name split inside a word
        if _room(columns, rows, width) >= least:
            break
        if dropped in columns:
            keep = [i for i, c in enumerate(columns) if c != dropped]
            columns = tuple(columns[i] for i in keep)
            rows = [[r[i] for i in keep] for r in rows]
    need = [max([cell_len(c)] + [cell_len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    names = [i for i, c in enumerate(columns) if c in _NAMES]
    room = _room(columns, rows, width)
    widths = share(room, [need[i] for i in names], [_least(rows, i) for i in names])
    out = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        if i in names:
            w = widths[names.index(i)]
            out.add_column(c, overflow="fold", min_width=w, max_width=w)
        else:
            out.add_column(c, justify="right" if c in _NUMERIC else "left", no_wrap=True)
    for r in rows:
        cells = [wrap_name(v, widths[names.index(i)]) if i in names else v for i, v in enumerate(r)]
        out.add_row(*(Text(cell) for cell in cells))
    return out


_OPTIONAL = ("rate", "redeliv", "bytes")  # what a narrow terminal goes without, in order
_MIN_NAME = 8


def _room(columns: tuple[str, ...], rows: list[list[str]], width: int) -> int:
    """What the name columns can share: every column costs its width plus 3 (borders
    and padding), plus 1 for the table's edge."""
    fixed = sum(
        max([cell_len(c)] + [cell_len(r[i]) for r in rows])
        for i, c in enumerate(columns)
        if c not in _NAMES
    )
    return width - 1 - 3 * len(columns) - fixed


def _least(rows: list[list[str]], column: int) -> int:
    """The narrowest a name column can be without splitting a word: its longest token
    (at least ``_MIN_NAME``)."""
    tokens = (cell_len(t.rstrip()) for r in rows for t in _tokens(r[column]))
    return max(_MIN_NAME, max(tokens, default=0))


def share(room: int, needs: list[int], least: list[int] | None = None) -> list[int]:
    """Split ``room`` between columns: each gets what it needs if all fit; else each
    gets its least (``least``: its longest word) and the rest goes to the ones that
    need more, the shortest need first."""
    least = least or [min(n, _MIN_NAME) for n in needs]
    if sum(needs) <= room:
        return list(needs)
    widths = [min(lo, n) for lo, n in zip(least, needs, strict=True)]
    left = room - sum(widths)
    while left > 0:  # one cell at a time to the column furthest from its need
        short = max(range(len(needs)), key=lambda i: needs[i] - widths[i])
        if widths[short] >= needs[short]:
            break
        widths[short] += 1
        left -= 1
    return widths


def view(top: Top, width: int) -> Group:
    """The terminal view: a topics table and a consumers table."""
    assert top.last is not None
    return Group(
        table("topics", TOPIC_COLUMNS, top.topic_rows(), width),
        table("consumers", CONSUMER_COLUMNS, top.consumer_rows(), width),
    )


def plain(top: Top) -> Iterator[str]:
    """The view for a pipe: tab-separated lines, a header per table, nothing cut."""
    for columns, rows in (
        (TOPIC_COLUMNS, top.topic_rows(human=False)),
        (CONSUMER_COLUMNS, top.consumer_rows(human=False)),
    ):
        yield "\t".join(c.replace(" ", "_") for c in columns[:-1])  # no sparkline
        for r in rows:
            yield "\t".join(r)
        yield ""


async def run(
    stream: Overviewed,
    *,
    once: bool,
    interval: float,
    console: Console,
    write: Callable[[str], None],
    stop: asyncio.Event,
) -> None:
    """Sample every ``interval`` seconds until ``stop`` is set, and show each view.

    On a terminal the view is redrawn in place (rich Live); in a pipe each sample is
    written as tab-separated lines. ``once``: two samples ``interval`` apart (the rates
    need two), one view, done.
    """
    top = Top()
    top.add(await sample(stream))
    terminal = console.is_terminal
    if once:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        top.add(await sample(stream))
        if terminal:
            console.print(view(top, console.width))
        else:
            write("\n".join(plain(top)))
        return
    if not terminal:
        while not stop.is_set():
            write("\n".join(plain(top)))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            top.add(await sample(stream))
        return
    with Live(view(top, console.width), console=console, auto_refresh=False) as live:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                break
            top.add(await sample(stream))
            live.update(view(top, console.width), refresh=True)

"""How the command line writes: for people on a terminal, and for pipes (``jetkit.cli``).

Everything that came from a server or a user (payloads, headers, topic names, error
texts, paths) is written as text, never read as rich markup, and with control
characters escaped (``\\n``, ``\\t``, ``\\x1b``), so a payload cannot break a line or
drive the terminal.

On a terminal, tables are rich tables sized here to fit the terminal's width: names
are never shortened while free text (payload previews, errors) can be, and headers wrap
at spaces. When stdout is not a terminal, nothing is wrapped or cut: a table is one
header line and one line per row, tab-separated, and messages are one line each (or
one JSON object per line with ``--json``).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

import jetkit as jk

from .._tools import escape as escape  # (output.escape: the CLI writes through here)

Kind = Literal["name", "number", "text", "clip"]
"""How a column gives way on a narrow terminal: ``name`` keeps its width (shortened
only when nothing else can give), ``number`` wraps its header only, ``text`` wraps at
spaces, ``clip`` is one line cut with an ellipsis."""

_CLIP_MIN = 10  # a clipped column keeps at least this many cells


def payload_text(data: bytes) -> str:
    """A payload as one line of text (bytes that are not UTF-8 as ``\\xNN``)."""
    return escape(data.decode("utf-8", "backslashreplace"))


def one_line(text: str) -> str:
    """An error text on one line: line breaks become spaces, controls escapes."""
    return escape(re.sub(r"\s*[\r\n]+\s*", " ", text.strip()))


def is_terminal() -> bool:
    return sys.stdout.isatty()


def write(line: str) -> None:
    """One line to stdout, flushed (a pipe reader sees it at once)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def note(line: str) -> None:
    """A remark beside the data: stdout on a terminal, stderr in a pipe (which then
    holds only the data)."""
    stream = sys.stdout if is_terminal() else sys.stderr
    stream.write(line + "\n")
    stream.flush()


def error(text: str) -> None:
    """``error: ...`` on stderr, one line, never wrapped."""
    sys.stderr.write(f"error: {one_line(text)}\n")
    sys.stderr.flush()


def warning(text: str) -> None:
    sys.stderr.write(f"warning: {one_line(text)}\n")
    sys.stderr.flush()


# -- tables -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Column:
    header: str
    kind: Kind = "name"
    terminal: bool = True  # False: only in pipe output (too wide for a terminal table)
    optional: bool = False  # left out on a terminal too narrow to show the names whole

    @property
    def key(self) -> str:
        """The header in pipe output: one word."""
        return self.header.replace(" ", "_")


Cell = str | int | float | bool | bytes | dt.datetime | enum.Enum | Sequence[str] | None


def cell_text(value: Cell, terminal: bool) -> str:
    """A cell's text: times in local time on a terminal and ISO 8601 (UTC) in pipes;
    missing values ``-`` on a terminal and empty in pipes."""
    if value is None:
        return "-" if terminal else ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        if terminal:
            return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return escape(str(value.value))
    if isinstance(value, bytes):
        return payload_text(value)
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, int | float):
        return str(value)
    return escape(", ".join(value))


def table(columns: Sequence[Column], rows: Iterable[Sequence[Cell]]) -> None:
    """Print a table: rich on a terminal, tab-separated lines in a pipe. A pipe whose
    reader left (``| head -1``) ends the command quietly with exit code 0."""
    try:
        _table(columns, list(rows))
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # what is still printed goes nowhere
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise SystemExit(0) from None


def _table(columns: Sequence[Column], rows: list[Sequence[Cell]]) -> None:
    if not is_terminal():
        lines = ["\t".join(c.key for c in columns)]
        lines += ["\t".join(cell_text(v, False) for v in row) for row in rows]
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
        return
    shown = [i for i, c in enumerate(columns) if c.terminal]
    console = Console(highlight=False, soft_wrap=False)
    while True:
        cols = [columns[i] for i in shown]
        cells = [[cell_text(row[i], True) for i in shown] for row in rows]
        widths, excess = fit(cols, cells, console.width, names=False)
        optional = [i for i in shown if columns[i].optional]
        if excess <= 0 or not optional:
            break
        shown.remove(optional[-1])
    widths, _ = fit(cols, cells, console.width, names=True)
    rich_table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for col, width in zip(cols, widths, strict=True):
        rich_table.add_column(
            Text(col.header),
            width=width,
            justify="right" if col.kind == "number" else "left",
            overflow="ellipsis",
        )
    one_line = [col.kind != "text" for col in cols]  # headers wrap at spaces, cells not
    for row_cells in cells:
        rich_table.add_row(*(Text(c, no_wrap=n) for c, n in zip(row_cells, one_line, strict=True)))
    console.print(rich_table)


def fit(
    columns: Sequence[Column], cells: Sequence[Sequence[str]], width: int, names: bool
) -> tuple[list[int], int]:
    """Column widths for a table ``width`` cells wide (two between columns), and by how
    much it is still too wide.

    Each column starts at its widest cell; while too wide, clipped text gives way first,
    then wrapping text and number headers (down to their longest word), then, with
    ``names``, names.
    """
    natural, least = [], []
    for i, col in enumerate(columns):
        values = [row[i] for row in cells]
        widest = max((cell_len(v) for v in values), default=0)
        header_word = max(cell_len(w) for w in col.header.split() or [""])
        words = max((cell_len(w) for v in values for w in v.split() or [""]), default=0)
        natural.append(max(widest, cell_len(col.header)))
        least.append(
            {
                "clip": max(header_word, min(widest, _CLIP_MIN)),
                "text": max(header_word, min(words, _CLIP_MIN * 2)),
                "number": max(header_word, widest),
                "name": min(natural[-1], 4),
            }[col.kind]
        )
    widths = natural[:]
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    for kinds in (("clip",), ("text", "number"), ("name",) if names else ()):
        while excess > 0:
            most, i = max(
                ((widths[i] - least[i], i) for i, c in enumerate(columns) if c.kind in kinds),
                default=(0, -1),
            )
            if most <= 0:
                break
            widths[i] -= 1
            excess -= 1
    return widths, excess


# -- help -------------------------------------------------------------------------------


def _flags_take_no_value(params: Any) -> Any:
    """typer's rich help shows ``<bool>`` beside a flag as if it took a value: a flag
    (``--json``, ``--help``) gets an empty metavar, so the help shows none."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A jetkit command: its flags show no value in ``--help``."""

    def get_params(self, ctx: Any) -> Any:
        return _flags_take_no_value(super().get_params(ctx))


class Group(TyperGroup):
    """The ``jetkit`` group: its flags show no value in ``--help``."""

    def get_params(self, ctx: Any) -> Any:
        return _flags_take_no_value(super().get_params(ctx))


# -- messages -----------------------------------------------------------------------------


def message_line(msg: jk.Message, headers: bool) -> str:
    """``#seq topic [k=v, ...] payload`` on one line (core messages have no ``#seq``)."""
    parts = [f"#{msg.seq}"] if msg.seq is not None else []
    parts.append(escape(msg.topic))
    if headers:
        parts.append(
            "[" + ", ".join(f"{escape(k)}={escape(v)}" for k, v in msg.headers.items()) + "]"
        )
    parts.append(payload_text(msg.data))
    return " ".join(parts)


def message_json(msg: jk.Message) -> str:
    """One JSON object: ``topic``, ``seq`` and ``timestamp`` (null for core messages,
    which are not stored), ``headers``, and ``data`` (the payload as text), or
    ``data_b64`` (base64) when the payload is not UTF-8."""
    stored = msg.seq is not None
    record: dict[str, object] = {
        "topic": msg.topic,
        "seq": msg.seq,
        "timestamp": msg.timestamp.isoformat() if stored else None,
        "headers": msg.headers,
        **payload_fields(msg.data),
    }
    return json.dumps(record, ensure_ascii=False)


def payload_fields(data: bytes) -> dict[str, str]:
    """A payload in a JSON record: ``data`` (text), or ``data_b64`` when not UTF-8."""
    try:
        return {"data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"data_b64": base64.b64encode(data).decode("ascii")}

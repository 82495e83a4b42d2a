"""``jetkit dlq``: reading, selecting, re-driving and discarding dead letters.

Which letters: ``--limit``, ``--error-contains``, ``--original-topic`` and ``--consumer``
make one ``Selection``, used for the list and, as ``redrive(where=..., limit=...)``, for
``--redrive``, so what is shown is what is re-driven. How they are shown: in a pipe the
tab-separated table (one row per letter, nothing cut); with ``--json`` one object per
letter (the shape of ``jetkit sub --json`` plus the dead-letter fields); on a terminal
one block per letter, its error on a line of its own and wrapped whole, since the error
is what a DLQ is read for, and the payload cut to one line.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

import jetkit as jk

from .._tools import Target
from .._topics import subject_matches, validate_topic
from . import output
from .output import Column

COLUMNS = [
    Column("seq", "number"),
    Column("original topic"),
    Column("original seq", "number", optional=True),
    Column("attempts", "number", optional=True),
    Column("consumer"),
    Column("error", "clip"),
    Column("data", "clip"),
]


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which dead letters a command is about (all of them when nothing is given)."""

    limit: int | None = None
    error_contains: str | None = None
    original_topic: str | None = None
    consumer: str | None = None

    @classmethod
    def checked(
        cls,
        limit: int | None,
        error_contains: str | None,
        original_topic: str | None,
        consumer: str | None,
    ) -> Selection:
        if original_topic is not None:
            try:
                validate_topic(original_topic, wildcards=True)
            except jk.InvalidTopicError as exc:
                raise typer.BadParameter(str(exc), param_hint="--original-topic") from None
        return cls(limit, error_contains, original_topic, consumer)

    @property
    def filters(self) -> bool:
        """Whether anything but ``limit`` narrows it."""
        return any(v is not None for v in (self.error_contains, self.original_topic, self.consumer))

    @property
    def given(self) -> bool:
        return self.filters or self.limit is not None

    def matches(self, letter: jk.DeadLetter) -> bool:
        if self.error_contains is not None and (
            self.error_contains.casefold() not in (letter.error or "").casefold()
        ):
            return False
        wanted = self.original_topic
        if wanted is not None and letter.original_topic != wanted:
            if not subject_matches(wanted, letter.original_topic):
                return False
        return self.consumer is None or letter.consumer == self.consumer


@dataclasses.dataclass
class Listing:
    letters: list[jk.DeadLetter]  # the selected ones, oldest first
    total: int  # dead letters in the topic (those read: with only --limit, the shown)
    redrive: jk.RedriveResult | None = None


async def read(target: Target, topic: str, selection: Selection, redrive: bool) -> Listing:
    """The selected dead letters of ``topic``, then (``redrive``) the same re-driven."""
    async with target.open() as s:
        everything = await s.dead_letters(topic, None if selection.filters else selection.limit)
        if not everything:
            stored = (await s.topic_info(topic)).messages
            if stored:
                raise jk.NotADeadLetterTopicError(
                    f"{topic!r} holds {stored} message(s) but no dead letter: is it the "
                    "topic a subscription's dlq= names?"
                )
        chosen = [letter for letter in everything if selection.matches(letter)]
        listing = Listing(chosen[: selection.limit], len(everything))
        if redrive:
            where = selection.matches if selection.filters else None
            listing.redrive = await s.redrive(topic, limit=selection.limit, where=where)
        return listing


async def discard(target: Target, topic: str, seqs: Sequence[int]) -> int:
    """Delete each of ``seqs``; the exit code: 1 if one was not there."""
    code = 0
    async with target.open() as s:
        for seq in seqs:
            if await s.discard_dead_letter(topic, seq):
                output.write(f"discarded dead letter {seq} of {output.escape(topic)}")
            else:
                output.write(
                    f"no message at seq {seq} of {output.escape(topic)}: already re-driven "
                    "or discarded, or never there"
                )
                code = 1
    return code


def show(topic: str, listing: Listing, selection: Selection, json_lines: bool) -> None:
    """The letters (JSON lines, a table in a pipe, blocks on a terminal), then what was
    done, as remarks (stderr in a pipe or with --json)."""
    letters = listing.letters
    if json_lines:
        for letter in letters:
            output.write(letter_json(topic, letter))
    elif output.is_terminal():
        blocks(letters)
    else:
        output.table(COLUMNS, (_row(letter) for letter in letters))
    note: Callable[[str], None] = _to_stderr if json_lines else output.note
    name = output.escape(topic)
    if selection.filters:
        note(f"{len(letters)} of {listing.total} dead letter(s) in {name} selected")
    elif selection.limit is not None:
        note(f"the first {len(letters)} dead letter(s) in {name} (--limit {selection.limit})")
    else:
        note(f"{len(letters)} dead letter(s) in {name}")
    result = listing.redrive
    if result is not None:
        note(
            f"re-drove {result.redriven} to their topics and deleted them from {name}"
            + (f"; kept {result.kept} that were not selected" if result.kept else "")
            + (f"; skipped {result.skipped} that are not dead letters" if result.skipped else "")
        )


def _row(letter: jk.DeadLetter) -> tuple[output.Cell, ...]:
    return (
        letter.seq,
        letter.original_topic,
        letter.original_seq,
        letter.deliveries,
        letter.consumer,
        letter.error,
        letter.data,
    )


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def letter_json(topic: str, letter: jk.DeadLetter) -> str:
    """One dead letter as one JSON object: ``topic`` (the DLQ), ``seq`` and
    ``timestamp`` there, the dead-letter fields, ``headers`` (the original ones) and
    ``data`` as text, or ``data_b64`` when it is not UTF-8 (as ``jetkit sub --json``)."""
    record: dict[str, object] = {
        "topic": topic,
        "seq": letter.seq,
        "timestamp": letter.timestamp.isoformat(),
        "original_topic": letter.original_topic,
        "original_seq": letter.original_seq,
        "deliveries": letter.deliveries,
        "consumer": letter.consumer,
        "error": letter.error,
        "redrives": letter.redrives,
        "headers": letter.headers,
        **output.payload_fields(letter.data),
    }
    return json.dumps(record, ensure_ascii=False)


def blocks(letters: Sequence[jk.DeadLetter]) -> None:
    """On a terminal: per letter, a line of its facts (wrapped between them, names
    whole), its error on lines of its own (wrapped, never cut) and its payload (one
    line, cut with an ellipsis)."""
    console = Console(highlight=False)
    for i, letter in enumerate(letters):
        facts = [f"#{letter.seq}", _origin(letter)]
        if letter.deliveries is not None:
            facts.append(f"attempts {letter.deliveries}")
        if letter.consumer:
            facts.append(f"consumer {output.escape(letter.consumer)}")
        if letter.redrives:
            facts.append(f"re-driven {letter.redrives}x")
        facts.append(output.cell_text(letter.timestamp, True))
        head = Text("  ".join(facts))
        head.stylize("bold", 0, len(facts[0]))
        detail = Table.grid(padding=(0, 1))
        detail.add_column(no_wrap=True)
        detail.add_column(ratio=1)
        detail.add_row("  error", Text(output.one_line(letter.error or "-"), overflow="fold"))
        data = Text(output.payload_text(letter.data), no_wrap=True, overflow="ellipsis")
        detail.add_row("  data", data)
        if i:
            console.print()
        console.print(head)
        console.print(detail)


def _origin(letter: jk.DeadLetter) -> str:
    topic = output.escape(letter.original_topic)
    return topic if letter.original_seq is None else f"{topic} #{letter.original_seq}"

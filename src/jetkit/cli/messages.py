"""Commands that move messages: ``pub``, ``cancel``, ``sub`` and ``dlq`` (how ``dlq``
selects and shows letters is ``jetkit.cli.dlq``)."""

from __future__ import annotations

import asyncio
import functools
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

import jetkit as jk

from .._tools import BadInput, Target, parse_headers, published, use_if_stored
from .._topics import validate_topic
from . import dlq as letters
from . import output
from .common import (
    DEFAULT_TARGET,
    UsageError,
    connected,
    positive,
    reader_gone,
    run,
    stop_on_signals,
    watch_reader,
)


def _topic(name: str, *, wildcards: bool) -> None:
    """Refuse a topic NATS would refuse before the store is opened (and made)."""
    try:
        validate_topic(name, wildcards=wildcards)
    except jk.JetkitError as exc:
        raise typer.BadParameter(str(exc), param_hint="TOPIC") from None


def _headers(items: Sequence[str]) -> dict[str, str]:
    try:
        return parse_headers(items)
    except BadInput as exc:
        raise typer.BadParameter(str(exc), param_hint="--header") from None


def _payload(data: str | None, file: Path | None) -> bytes:
    """The payload to publish: the DATA argument, stdin for ``-``, or ``--file``."""
    if data is not None and file is not None:
        raise typer.BadParameter("give DATA or --file, not both", param_hint="--file")
    try:
        if file is not None:
            return file.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {output.escape(str(file))}: {exc.strerror or exc}", param_hint="--file"
        ) from None
    if data is None:
        raise UsageError("give the payload: DATA, - (read stdin) or --file PATH")
    if data == "-":
        return sys.stdin.buffer.read()
    return data.encode("utf-8", "surrogateescape")  # the argument's bytes as given


@connected
def pub(
    name: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic to publish to.")],
    data: Annotated[
        str | None,
        typer.Argument(metavar="DATA", help="Payload (text or JSON); - reads it from stdin."),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the payload from this file.")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="KEY=VALUE, repeatable.")
    ] = None,
    msg_id: Annotated[str | None, typer.Option(help="Dedupe id (Nats-Msg-Id).")] = None,
    stored: Annotated[
        bool,
        typer.Option(
            "--stored", help="Store the message: create the topic's stream if there is none."
        ),
    ] = False,
    deliver_after: Annotated[
        float | None,
        typer.Option(
            "--deliver-after",
            metavar="SECONDS",
            help="Deliver it this many seconds from now (implies --stored; cancel with "
            "jetkit cancel).",
        ),
    ] = None,
    ttl: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Remove it from the topic this long after it is stored (at least 1; "
            "implies --stored).",
        ),
    ] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Publish one message (stored if a stream stores the topic, or with --stored)."""
    positive(deliver_after, "--deliver-after", allow_zero=True, hint=" (seconds from now)")
    _topic(name, wildcards=False)
    positive(ttl, "--ttl", hint=" (seconds, at least 1)")
    if ttl is not None and ttl < 1:  # before the topic's stream is made for it
        raise typer.BadParameter(
            f"{ttl:g} is less than nats-server's minimum of 1 second", param_hint="--ttl"
        )
    headers = _headers(header or [])
    payload = _payload(data, file)
    scheduled = deliver_after is not None
    if scheduled and msg_id is None:
        # so that it can be cancelled from the command line: print it
        msg_id = f"cli-{secrets.token_hex(8)}"

    async def work() -> jk.PubAck | jk.ScheduledMessage | None:
        async with target.open(create=True) as s:
            if not await use_if_stored(s, name) and (stored or scheduled or ttl is not None):
                await s.declare_topic(name, mode=jk.TopicMode.JETSTREAM)
            if scheduled:
                held: jk.ScheduledMessage = await s.publish(
                    name,
                    payload,
                    headers=headers or None,
                    msg_id=msg_id,
                    deliver_after=deliver_after,
                    ttl=ttl,
                )
                return held
            ack: jk.PubAck | None = await s.publish(
                name, payload, headers=headers or None, msg_id=msg_id, ttl=ttl
            )
            return ack

    sentence = published(
        name,
        run(work),
        core_hint="; --stored stores it",
        cancel_hint=f"; cancel with: jetkit cancel {name} --msg-id {msg_id or ''}",
    )
    output.write(output.escape(sentence))


@connected
def cancel(
    name: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic it was scheduled on.")],
    msg_id: Annotated[
        str, typer.Option(help="The --msg-id it was published with (jetkit pub prints it).")
    ],
    target: Target = DEFAULT_TARGET,
) -> None:
    """Cancel a scheduled message; exit 1 if it was no longer pending."""

    async def work() -> bool:
        async with target.open(create=False) as s:
            pending: bool = await s.cancel_scheduled(name, msg_id=msg_id)
            return pending

    if run(work):
        output.write(f"cancelled: it will not be delivered to {output.escape(name)}")
        return
    output.write(
        f"nothing to cancel on {output.escape(name)} for that id: already delivered, "
        "cancelled before, or never scheduled"
    )
    raise typer.Exit(1)


@connected
def sub(
    name: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic or pattern to subscribe to.")],
    count: Annotated[
        int | None, typer.Option(help="Stop after this many messages (default: until Ctrl+C).")
    ] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Replay the stored messages first.")
    ] = False,
    durable: Annotated[
        str | None, typer.Option(help="Durable consumer name (acks what it prints).")
    ] = None,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line: topic, seq, timestamp, headers, data or data_b64.",
        ),
    ] = False,
    show_headers: Annotated[bool, typer.Option("--headers", help="Show the headers.")] = False,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Print messages as they arrive, one per line (Ctrl+C stops)."""
    _topic(name, wildcards=True)
    if count is not None and count < 1:
        raise typer.BadParameter(
            f"{count} is not 1 or more (leave it out to print until Ctrl+C)", param_hint="--count"
        )
    render: Callable[[jk.Message], str] = (
        output.message_json
        if json_lines
        else functools.partial(output.message_line, headers=show_headers)
    )

    async def work() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        seen = 0

        async def show(msg: jk.Message) -> None:
            nonlocal seen
            if stop.is_set():  # --count reached, or nobody reads: hand it back unprinted
                if durable is not None:
                    await msg.nak()
                return
            try:
                output.write(render(msg))
            except BrokenPipeError:
                reader_gone()
                stop.set()
                if durable is not None:
                    await msg.nak()
                return
            seen += 1
            if count is not None and seen >= count:
                stop.set()

        async with target.open(create=True) as s:
            if await use_if_stored(s, name):
                start = jk.StartAt.ALL if from_start else jk.StartAt.NEW
                ack = jk.AckPolicy.MANUAL if durable else jk.AckPolicy.NONE
                # with --count, fetch no more than that: the rest stays with the server
                # (a durable's lag then shows what was not printed)
                buffer = min(count, 1024) if count is not None else 1024
                await s.subscribe(
                    name, show, durable=durable, start_at=start, ack=ack, buffer_size=buffer
                )
            else:
                if from_start or durable:
                    output.warning(f"{name} is not stored: --from-start and --durable do not apply")
                await s.subscribe(name, show)
            watch = asyncio.ensure_future(watch_reader(stop))
            try:
                await stop.wait()
            finally:
                watch.cancel()

    run(work)


@connected
def dlq(
    name: Annotated[
        str, typer.Argument(metavar="TOPIC", help="Dead-letter topic, e.g. failed.orders.events")
    ],
    redrive: Annotated[
        bool,
        typer.Option(
            "--redrive",
            "--republish",
            help="Publish each selected dead letter back to its topic, then delete it from "
            "the DLQ.",
        ),
    ] = False,
    discard: Annotated[
        list[int] | None,
        typer.Option(
            "--discard",
            metavar="SEQ",
            min=1,
            help="Delete the dead letter with this seq (repeatable); exit 1 if one is not there.",
        ),
    ] = None,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per letter: topic, seq, timestamp, original_topic, "
            "original_seq, deliveries, consumer, error, redrives, headers, data or data_b64.",
        ),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="At most N letters (the oldest selected)."),
    ] = None,
    error_contains: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="Only letters whose error contains TEXT (any case)."),
    ] = None,
    original_topic: Annotated[
        str | None,
        typer.Option(metavar="TOPIC", help="Only letters from this topic (or pattern: orders.>)."),
    ] = None,
    consumer: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only letters this consumer gave up on.")
    ] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """List dead letters; --redrive sends the selected ones back to their topics,
    --discard deletes one."""
    selection = letters.Selection.checked(limit, error_contains, original_topic, consumer)
    if discard:
        if redrive or json_lines or selection.given:
            raise UsageError("--discard SEQ deletes those letters: give it no other dlq option")
        raise typer.Exit(run(lambda: letters.discard(target, name, discard)))
    listing = run(lambda: letters.read(target, name, selection, redrive))
    letters.show(name, listing, selection, json_lines)

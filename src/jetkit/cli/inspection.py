"""Commands that look at what the server holds: ``topics``, ``topic``, ``consumers`` and
``top`` (its sampling and rates are ``jetkit._top``'s, shared with the console)."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated

import typer
from rich.console import Console

import jetkit as jk

from .. import _top
from .._tools import Target
from . import output
from .common import DEFAULT_TARGET, connected, reader_gone, run, stop_on_signals
from .output import Column


@connected
def topics(
    target: Target = DEFAULT_TARGET,
) -> None:
    """List the stored (JetStream) topics."""

    async def work() -> list[jk.TopicInfo]:
        async with target.open() as s:
            result: list[jk.TopicInfo] = await s.topics()
            return result

    output.table(
        [
            Column("topic"),
            Column("stream", terminal=False),
            Column("messages", "number"),
            Column("bytes", "number"),
            Column("first seq", "number", optional=True),
            Column("last seq", "number", optional=True),
            Column("consumers", "number"),
            Column("last message", "text"),
        ],
        (
            (
                t.subjects,
                t.name,
                t.messages,
                t.bytes,
                t.first_seq,
                t.last_seq,
                t.consumers,
                t.last_time,
            )
            for t in sorted(run(work), key=lambda t: t.subjects)
        ),
    )


@connected
def topic(
    name: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic (subject) to describe.")],
    target: Target = DEFAULT_TARGET,
) -> None:
    """Describe one stored topic: size, sequences, limits, consumers."""

    async def work() -> jk.TopicInfo:
        async with target.open() as s:
            info: jk.TopicInfo = await s.topic_info(name)
            return info

    info = run(work)
    fields = dict(vars(info))
    fields["replica_states"] = [_replica(r) for r in info.replica_states]
    output.table([Column("field"), Column("value", "text")], fields.items())


def _replica(r: jk.ReplicaInfo) -> str:
    """``n2 (current)``, ``n1 (leader)``, ``n3 (offline, lag 12)``."""
    states = ["leader"] if r.leader else []
    states += ["offline"] if r.offline else ["current"] if r.current else ["catching up"]
    states = states[:1] if r.leader else states
    if r.lag:
        states.append(f"lag {r.lag}")
    return f"{r.name} ({', '.join(states)})"


@connected
def consumers(
    name: Annotated[str, typer.Argument(metavar="TOPIC", help="Stored topic.")],
    target: Target = DEFAULT_TARGET,
) -> None:
    """List a topic's consumers with their lag (messages stored, not yet delivered)."""

    async def work() -> list[jk.ConsumerInfo]:
        async with target.open() as s:
            result: list[jk.ConsumerInfo] = await s.consumers(name)
            return result

    output.table(
        [
            Column("consumer"),
            Column("durable"),
            Column("lag", "number"),
            Column("ack pending", "number"),
            Column("redelivered", "number"),
            Column("delivered seq", "number", optional=True),
            Column("ack floor", "number", optional=True),
        ],
        (
            (
                c.name,
                c.durable,
                c.pending,
                c.ack_pending,
                c.redelivered,
                c.delivered_seq,
                c.ack_floor,
            )
            for c in run(work)
        ),
    )


@connected
def top(
    once: Annotated[
        bool,
        typer.Option("--once", help="Print one snapshot (rates over --interval) and exit."),
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between samples (0.1 to 3600).")] = 1.0,
    target: Target = DEFAULT_TARGET,
) -> None:
    """A live view of topics (messages, bytes, publish rate) and consumers (lag, ack
    pending, redelivered, ack rate), with sparklines; Ctrl+C stops."""
    if not (math.isfinite(interval) and 0.1 <= interval <= 3600):
        raise typer.BadParameter(
            f"{interval:g} is not between 0.1 and 3600", param_hint="--interval"
        )

    async def work() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)

        def emit(text: str) -> None:
            try:
                output.write(text)
            except BrokenPipeError:
                reader_gone()
                stop.set()

        async with target.open() as s:
            await _top.run(
                s,
                once=once,
                interval=interval,
                console=Console(highlight=False),
                write=emit,
                stop=stop,
            )

    run(work)

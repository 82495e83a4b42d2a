"""The ``jetkit`` command line: the demo, a foreground server, and inspection tools.

Every connecting command reaches NATS through ``--store-dir`` (attach to the jetkit
server serving that store, or start one on it for the duration of the command) or
``--server URL`` (an external NATS, with ``--user/--password`` or ``--token``); see
``_cli_target``. What the commands print, and how it differs on a terminal and in a
pipe, is ``_cli_output``. Every error is one line on stderr, ``error: ...``, exit code 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import re
import secrets
import select
import signal
import stat
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

import jetkit as jk

from . import _cli_dlq, _top
from . import _cli_output as output
from ._cli_output import Column
from ._cli_target import DEFAULT_STORE, DEFAULT_TARGET, Target, connected
from ._cluster import CLUSTER_FILE, MAX_NODES, LocalCluster
from .examples import orders

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover  (older typer runs on click itself)
    from click.exceptions import (  # type: ignore[import-not-found,no-redef,assignment,unused-ignore]
        ClickException,
        UsageError,
    )

__all__ = ["DEFAULT_TARGET", "Target", "app", "connected", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="jetkit",
    help="Durable messaging with zero infrastructure: NATS JetStream, embedded.",
    no_args_is_help=True,
    add_completion=False,
    cls=output.Group,
)


def command() -> Callable[[Callable[..., T]], Callable[..., T]]:
    """``@app.command()`` for a jetkit command (flags show no value in its --help)."""
    return app.command(cls=output.Command)


DEMO = orders.Options()  # the demo's options and their defaults live with the demo

# the library's messages name Stream.open's arguments; on the command line, its options
_CLI_TERMS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\bport=None\b"), "no --port"),
    (re.compile(r"\bstore_dir\b"), "--store-dir"),
    # asyncio's "[Errno 111] Connect call failed ('127.0.0.1', 1)"
    (
        re.compile(r"\[Errno (\d+)\] Connect call failed \([^)]*\)"),
        lambda m: os.strerror(int(m.group(1))).lower(),
    ),
]


def cli_terms(text: str) -> str:
    """A library message in the command line's terms (its options, no Python reprs)."""
    for pattern, replacement in _CLI_TERMS:
        text = pattern.sub(replacement, text)
    return text


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn a JetkitError into a one-line message and exit code 2."""
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except jk.JetkitError as exc:
        output.error(cli_terms(str(exc)))
        raise typer.Exit(2) from None


async def _stored(s: jk.Stream, topic: str) -> bool:
    """Whether a JetStream stream stores ``topic``; if so, use it in JetStream mode."""
    try:
        await s.topic_info(topic)
    except jk.NotFoundError:
        return False
    await s.declare_topic(topic, mode=jk.TopicMode.JETSTREAM)
    return True


def _positive(value: float | None, option: str, allow_zero: bool = False, hint: str = "") -> None:
    """Refuse a number that is not finite, or not > 0 (>= 0 with ``allow_zero``)."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise typer.BadParameter(
            f"{value:g} is not a number {'>= 0' if allow_zero else '> 0'}{hint}",
            param_hint=option,
        )


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _watch_reader(stop: asyncio.Event) -> None:
    """Set ``stop`` when stdout is a pipe whose reader went away (``sub | head -1`` on a
    quiet topic would otherwise wait for the next message to find out)."""
    fd = sys.stdout.fileno()
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        return
    poller = select.poll()
    poller.register(fd, select.POLLERR)  # a pipe's write end reports it when unread
    while not stop.is_set():
        if any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0)):
            _reader_gone()
            stop.set()
            return
        await asyncio.sleep(0.2)


def _reader_gone() -> None:
    """stdout's reader went away (``jetkit sub ... | head -1``): send the rest nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@command()
def demo(
    store_dir: Annotated[str, typer.Option(help="Where the demo keeps its data.")] = DEMO.store_dir,
    duration: Annotated[
        float | None,
        typer.Option(help="Stop by itself after this many seconds (default: run until Ctrl+C)."),
    ] = DEMO.duration,
    order_interval: Annotated[
        float, typer.Option(help="Seconds between orders.")
    ] = DEMO.order_interval,
    user_interval: Annotated[
        float, typer.Option(help="Seconds between registrations.")
    ] = DEMO.user_interval,
    fail_rate: Annotated[
        float, typer.Option(help="Chance (0..1) that processing an order fails.")
    ] = DEMO.fail_rate,
    analytics_delay: Annotated[
        float, typer.Option(help="Seconds before the analytics service starts.")
    ] = DEMO.analytics_delay,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve Prometheus metrics on this port (0: a free one)."
        ),
    ] = None,
) -> None:
    """Run the order-processing example: five services and scheduled follow-ups."""
    if not 0.0 <= fail_rate <= 1.0:
        raise typer.BadParameter(f"{fail_rate:g} is not between 0 and 1", param_hint="--fail-rate")
    _positive(duration, "--duration", hint=" (leave it out to run until Ctrl+C)")
    _positive(order_interval, "--order-interval")
    _positive(user_interval, "--user-interval")
    _positive(analytics_delay, "--analytics-delay", allow_zero=True)
    options = orders.Options(
        store_dir=store_dir,
        duration=duration,
        order_interval=order_interval,
        user_interval=user_interval,
        fail_rate=fail_rate,
        analytics_delay=analytics_delay,
        metrics_port=metrics_port,
    )
    raise typer.Exit(_run(lambda: orders.main(options)))


@command()
def server(
    store_dir: Annotated[
        Path, typer.Option("--store-dir", help="Store to serve (created if missing).")
    ] = DEFAULT_STORE,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default or 0: a free one).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve Prometheus metrics on this port (0: a free one)."
        ),
    ] = None,
) -> None:
    """Run the embedded server in the foreground until Ctrl+C."""

    async def work() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        async with jk.Stream.open(
            store_dir=store_dir, port=port or None, metrics_port=metrics_port
        ) as s:
            if not s.embedded:
                raise jk.ConfigError(f"{s.store_dir} is already served at {s.server_url}")
            output.write(f"nats-server running at {s.server_url}")
            if s.metrics_url is not None:
                output.write(f"metrics at {s.metrics_url}")
            output.write(
                f"store: {output.escape(str(s.store_dir))}  (credentials in "
                "jetkit-credentials.json)"
            )
            output.write("other jetkit processes using this store attach to it. Ctrl+C stops it.")
            await stop.wait()
        output.write("stopped")

    _run(work)


@command()
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
            for t in sorted(_run(work), key=lambda t: t.subjects)
        ),
    )


@command()
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

    info = _run(work)
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


@command()
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
            for c in _run(work)
        ),
    )


def _headers(items: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--header")
        headers[key] = value
    return headers


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


@command()
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
    _positive(deliver_after, "--deliver-after", allow_zero=True, hint=" (seconds from now)")
    _positive(ttl, "--ttl", hint=" (seconds, at least 1)")
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
            if not await _stored(s, name) and (stored or scheduled or ttl is not None):
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

    ack = _run(work)
    if ack is None:
        output.write(
            f"published to {output.escape(name)} (core: not stored, only live subscribers get it; "
            "--stored stores it)"
        )
    elif isinstance(ack, jk.ScheduledMessage):
        dup = " (duplicate: already scheduled)" if ack.duplicate else ""
        when = ack.deliver_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        output.write(
            f"scheduled for {when} on {output.escape(name)}{dup}; cancel with: jetkit cancel "
            f"{output.escape(name)} --msg-id {output.escape(msg_id or '')}"
        )
    else:
        dup = " (duplicate: not stored again)" if ack.duplicate else ""
        output.write(f"stored in {ack.stream} at seq {ack.seq}{dup}")


@command()
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

    if _run(work):
        output.write(f"cancelled: it will not be delivered to {output.escape(name)}")
        return
    output.write(
        f"nothing to cancel on {output.escape(name)} for that id: already delivered, "
        "cancelled before, or never scheduled"
    )
    raise typer.Exit(1)


@command()
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
        _stop_on_signals(stop)
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
                _reader_gone()
                stop.set()
                if durable is not None:
                    await msg.nak()
                return
            seen += 1
            if count is not None and seen >= count:
                stop.set()

        async with target.open(create=True) as s:
            if await _stored(s, name):
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
            watch = asyncio.ensure_future(_watch_reader(stop))
            try:
                await stop.wait()
            finally:
                watch.cancel()

    _run(work)


@command()
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
    selection = _cli_dlq.Selection.checked(limit, error_contains, original_topic, consumer)
    if discard:
        if redrive or json_lines or selection.given:
            raise UsageError("--discard SEQ deletes those letters: give it no other dlq option")
        raise typer.Exit(_run(lambda: _cli_dlq.discard(target, name, discard)))
    listing = _run(lambda: _cli_dlq.read(target, name, selection, redrive))
    _cli_dlq.show(name, listing, selection, json_lines)


@command()
def cluster(
    nodes: Annotated[int, typer.Option(help="How many nats-servers (1 to 9).")] = 3,
    store_dir: Annotated[
        Path,
        typer.Option("--store-dir", help="The cluster's directory: one store per node."),
    ] = Path("./jetstream-cluster"),
) -> None:
    """Run a local NATS cluster in the foreground until Ctrl+C (loopback, routes,
    JetStream on every node); a node that dies is started again."""
    if not 1 <= nodes <= MAX_NODES:
        raise typer.BadParameter(f"{nodes} is not between 1 and {MAX_NODES}", param_hint="--nodes")

    async def work() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        local = LocalCluster(nodes, store_dir)
        await local.start()
        try:
            assert local.store_dir is not None
            info = local.store_dir / CLUSTER_FILE
            output.write(f"NATS cluster of {nodes} node(s) running, JetStream on every node")
            for node in local.nodes:
                output.write(f"  {node.name}  {node.url}  (store {output.escape(str(node.store))})")
            output.write(f"urls, user and password: {output.escape(str(info))}")
            output.write(
                "connect: jk.Stream.open(servers=[...], user=..., password=...) with "
                "the values in that file. Ctrl+C stops the cluster."
            )
            await local.run_until(stop)
        finally:
            await local.stop()
        output.write("stopped")

    _run(work)


@command()
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
        _stop_on_signals(stop)

        def emit(text: str) -> None:
            try:
                output.write(text)
            except BrokenPipeError:
                _reader_gone()
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

    _run(work)


@command()
@connected
def ui(
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: a free one).")
    ] = 0,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Do not open a browser; only print the URL.")
    ] = False,
    target: Target = DEFAULT_TARGET,
) -> None:
    """A local web console: topics, consumers with lag, dead letters (re-drive), publish.
    Prints its URL (with a token); Ctrl+C stops."""
    try:
        from . import ui as console
    except ImportError as exc:
        output.error(
            f"jetkit ui needs the ui extra ({exc.name or 'starlette'} is missing): "
            'pip install "jetkit[ui]"'
        )
        raise typer.Exit(2) from None
    _run(lambda: console.serve(target, port=port, open_browser=not no_open, write=output.write))


@command()
def examples() -> None:
    """List the runnable examples, what each shows and how to run it."""
    from .examples import EXAMPLES

    width = max(len(name) for name, _, _ in EXAMPLES)
    with _quiet_when_the_reader_goes():
        for name, what, command in EXAMPLES:
            output.write(f"{name:<{width}}  {what}")
            output.write(f"{'':<{width}}  run: {command} [--duration SECONDS]")


@contextlib.contextmanager
def _quiet_when_the_reader_goes() -> Iterator[None]:
    """``jetkit ... | head -1``: stop printing and exit 0 (click would make it 1)."""
    try:
        yield
    except BrokenPipeError:
        _reader_gone()
        raise typer.Exit(0) from None


def _usage_error(exc: ClickException) -> str:
    """A click usage error as one line, pointing at the command's --help."""
    text = exc.format_message().rstrip(".")
    text = text[:1].lower() + text[1:] if text[1:2].islower() else text
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, UsageError) and ctx is not None:
        text += f" (see {ctx.command_path} --help)"
    return text


def main(argv: Sequence[str] | None = None) -> None:
    """The ``jetkit`` script: run a command; errors are one line and exit code 2."""
    if not sys.stdout.isatty() and hasattr(sys.stdout, "reconfigure"):
        # a pipe gets UTF-8 (JSON Lines are UTF-8) whatever the locale
        sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")
    try:
        code = app(args=argv, prog_name="jetkit", standalone_mode=False)
    except ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `jetkit`: the help
            sys.stdout.write(exc.format_message() + "\n")
            code = 0
        else:
            output.error(_usage_error(exc))
            code = 2
    except BrokenPipeError:
        _reader_gone()
        code = 0
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    sys.exit(code if isinstance(code, int) else 0)

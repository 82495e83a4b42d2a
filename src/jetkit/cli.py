"""The ``jetkit`` command line: the demo, a foreground server, and inspection tools.

Every inspection command reaches NATS through ``--store-dir`` (attach to the jetkit
server serving that store, or start one on it for the duration of the command) or
``--server URL`` (an external NATS, with ``--user/--password`` or ``--token``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

import jetkit as jk

from .examples import orders

T = TypeVar("T")

app = typer.Typer(
    name="jetkit",
    help="Durable messaging with zero infrastructure: NATS JetStream, embedded.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DEFAULT_STORE = Path("./jetstream-store")
DEMO = orders.Options()  # the demo's options and their defaults live with the demo


@dataclasses.dataclass(frozen=True)
class Target:
    """Where an inspection command connects: a store, or an external server."""

    store_dir: Path = DEFAULT_STORE
    server: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None

    def open(self) -> Any:
        if self.server:
            return jk.Stream.open(
                servers=[self.server], user=self.user, password=self.password, token=self.token
            )
        return jk.Stream.open(
            store_dir=self.store_dir, user=self.user, password=self.password, token=self.token
        )


DEFAULT_TARGET = Target()

# the connection options every inspection command takes, defined once
_TARGET_OPTIONS: dict[str, Any] = {
    "store_dir": Annotated[
        Path, typer.Option("--store-dir", help="Store of the embedded server (attach or start).")
    ],
    "server": Annotated[
        str | None, typer.Option("--server", help="URL of an external NATS instead of a store.")
    ],
    "user": Annotated[str | None, typer.Option(help="User for --server.")],
    "password": Annotated[str | None, typer.Option(help="Password for --server.")],
    "token": Annotated[str | None, typer.Option(help="Token for --server.")],
}


def connected(command: Callable[..., T]) -> Callable[..., T]:
    """Give ``command(target=...)`` the shared connection options instead."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "target"]
    defaults = DEFAULT_TARGET
    added = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=getattr(defaults, name),
            annotation=annotation,
        )
        for name, annotation in _TARGET_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_target(*args: Any, **kwargs: Any) -> T:
        target = Target(**{name: kwargs.pop(name) for name in _TARGET_OPTIONS})
        return command(*args, target=target, **kwargs)

    with_target.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
    with_target.__annotations__ = {
        **{k: v for k, v in command.__annotations__.items() if k != "target"},
        **_TARGET_OPTIONS,
    }
    return with_target


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn a JetkitError into a one-line message and exit code 2."""
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except jk.JetkitError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


async def _stored(s: jk.Stream, topic: str) -> bool:
    """Whether a JetStream stream stores ``topic``; if so, use it in JetStream mode."""
    try:
        await s.topic_info(topic)
    except jk.NotFoundError:
        return False
    await s.declare_topic(topic, mode=jk.TopicMode.JETSTREAM)
    return True


def _table(*columns: str, header: bool = True) -> Table:
    """A table whose cells wrap instead of being cut short."""
    table = Table(show_header=header)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _preview(data: bytes, width: int = 60) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def demo(
    store_dir: Annotated[str, typer.Option(help="Where the demo keeps its data.")] = DEMO.store_dir,
    duration: Annotated[
        float | None, typer.Option(help="Stop by itself after this many seconds.")
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
) -> None:
    """Run the order-processing example: five services on one embedded JetStream."""
    if not 0.0 <= fail_rate <= 1.0:
        raise typer.BadParameter("must be between 0 and 1", param_hint="--fail-rate")
    for name, value in (("--order-interval", order_interval), ("--user-interval", user_interval)):
        if value <= 0:
            raise typer.BadParameter("must be > 0", param_hint=name)
    options = orders.Options(
        store_dir=store_dir,
        duration=duration,
        order_interval=order_interval,
        user_interval=user_interval,
        fail_rate=fail_rate,
        analytics_delay=analytics_delay,
    )
    raise typer.Exit(_run(lambda: orders.main(options)))


@app.command()
def server(
    store_dir: Annotated[Path, typer.Option("--store-dir", help="Store to serve.")] = DEFAULT_STORE,
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
) -> None:
    """Run the embedded server in the foreground until Ctrl+C."""

    async def work() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with jk.Stream.open(store_dir=store_dir, port=port) as s:
            if not s.embedded:
                err.print(f"[red]error:[/red] {s.store_dir} is already served at {s.server_url}")
                raise typer.Exit(1)
            out.print(f"nats-server running at [bold]{s.server_url}[/bold]")
            out.print(f"store: {s.store_dir}  (credentials in jetkit-credentials.json)")
            out.print("other jetkit processes using this store attach to it. Ctrl+C stops it.")
            await stop.wait()
        out.print("stopped")

    _run(work)


@app.command()
@connected
def topics(
    target: Target = DEFAULT_TARGET,
) -> None:
    """List the stored (JetStream) topics."""

    async def work() -> list[jk.TopicInfo]:
        async with target.open() as s:
            result: list[jk.TopicInfo] = await s.topics()
            return result

    table = _table(
        "topic", "stream", "messages", "bytes", "first", "last", "consumers", "last message"
    )
    for t in sorted(_run(work), key=lambda t: t.subjects):
        table.add_row(
            ", ".join(t.subjects),
            t.name,
            str(t.messages),
            str(t.bytes),
            str(t.first_seq),
            str(t.last_seq),
            str(t.consumers),
            t.last_time.isoformat(timespec="seconds") if t.last_time else "-",
        )
    out.print(table)


@app.command()
@connected
def topic(
    name: Annotated[str, typer.Argument(help="Topic (subject) to describe.")],
    target: Target = DEFAULT_TARGET,
) -> None:
    """Describe one stored topic: size, sequences, limits, consumers."""

    async def work() -> jk.TopicInfo:
        async with target.open() as s:
            info: jk.TopicInfo = await s.topic_info(name)
            return info

    info = _run(work)
    table = _table("field", "value", header=False)
    for key, value in vars(info).items():
        shown = value.value if hasattr(value, "value") else value
        table.add_row(key, "-" if shown is None else str(shown))
    out.print(table)


@app.command()
@connected
def consumers(
    name: Annotated[str, typer.Argument(help="Stored topic.")],
    target: Target = DEFAULT_TARGET,
) -> None:
    """List a topic's consumers with their lag."""

    async def work() -> list[jk.ConsumerInfo]:
        async with target.open() as s:
            result: list[jk.ConsumerInfo] = await s.consumers(name)
            return result

    table = _table(
        "consumer",
        "durable",
        "lag (pending)",
        "ack pending",
        "redelivered",
        "delivered seq",
        "ack floor",
    )
    for c in _run(work):
        table.add_row(
            c.name,
            "yes" if c.durable else "no",
            str(c.pending),
            str(c.ack_pending),
            str(c.redelivered),
            str(c.delivered_seq),
            str(c.ack_floor),
        )
    out.print(table)


@app.command()
@connected
def pub(
    name: Annotated[str, typer.Argument(help="Topic to publish to.")],
    data: Annotated[str, typer.Argument(help="Payload (text or JSON).")],
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="KEY=VALUE, repeatable.")
    ] = None,
    msg_id: Annotated[str | None, typer.Option(help="Dedupe id (Nats-Msg-Id).")] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Publish one message (stored if a stream stores the topic)."""
    headers: dict[str, str] = {}
    for item in header or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--header")
        headers[key] = value

    async def work() -> jk.PubAck | None:
        async with target.open() as s:
            await _stored(s, name)
            ack: jk.PubAck | None = await s.publish(
                name, data.encode(), headers=headers or None, msg_id=msg_id
            )
            return ack

    ack = _run(work)
    if ack is None:
        out.print(f"published to {name} (core: not stored, only live subscribers get it)")
    else:
        dup = " (duplicate: not stored again)" if ack.duplicate else ""
        out.print(f"stored in {ack.stream} at seq {ack.seq}{dup}")


@app.command()
@connected
def sub(
    name: Annotated[str, typer.Argument(help="Topic or pattern to subscribe to.")],
    count: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Replay the stored messages first.")
    ] = False,
    durable: Annotated[
        str | None, typer.Option(help="Durable consumer name (acks what it prints).")
    ] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Print messages as they arrive (Ctrl+C stops)."""

    async def work() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        seen = 0

        async def show(msg: jk.Message) -> None:
            nonlocal seen
            if count is not None and seen >= count:
                return  # already buffered when --count was reached
            seq = f"#{msg.seq} " if msg.seq is not None else ""
            out.print(f"{seq}[bold]{msg.topic}[/bold] {_preview(msg.data, 200)}")
            seen += 1
            if count is not None and seen >= count:
                stop.set()

        async with target.open() as s:
            if await _stored(s, name):
                start = jk.StartAt.ALL if from_start else jk.StartAt.NEW
                ack = jk.AckPolicy.AUTO if durable else jk.AckPolicy.NONE
                await s.subscribe(name, show, durable=durable, start_at=start, ack=ack)
            else:
                if from_start or durable:
                    err.print(f"{name} is not stored: --from-start/--durable do not apply")
                await s.subscribe(name, show)
            await stop.wait()

    _run(work)


@app.command()
@connected
def dlq(
    name: Annotated[str, typer.Argument(help="Dead-letter topic, e.g. failed.orders.events")],
    redrive: Annotated[
        bool,
        typer.Option(
            "--redrive",
            "--republish",
            help="Publish each dead letter back to its topic, then delete it from the DLQ.",
        ),
    ] = False,
    target: Target = DEFAULT_TARGET,
) -> None:
    """List dead letters (and with --redrive send them back to their original topics)."""

    async def work() -> tuple[list[jk.DeadLetter], jk.RedriveResult | None]:
        async with target.open() as s:
            letters = await s.dead_letters(name)
            result = await s.redrive(name) if redrive else None
            return letters, result

    letters, result = _run(work)
    table = _table("seq", "original topic", "orig seq", "attempts", "consumer", "error", "data")
    for letter in letters:
        table.add_row(
            *(
                Text(cell)
                for cell in (
                    str(letter.seq),
                    letter.original_topic,
                    str(letter.original_seq or "-"),
                    str(letter.deliveries or "-"),
                    letter.consumer or "-",
                    _preview((letter.error or "-").encode(), 50),
                    _preview(letter.data, 40),
                )
            )
        )
    out.print(table)
    out.print(f"{len(letters)} dead letter(s) in {name}", markup=False)
    if result is not None:
        out.print(
            f"re-drove {result.redriven} to their topics and deleted them from {name}"
            + (f"; skipped {result.skipped} that are not dead letters" if result.skipped else ""),
            markup=False,
        )


def main() -> None:
    app()

"""What every command uses: where it connects (``--store-dir``, ``--server``: the
options defined once and given to a command by ``connected``), running its work with
errors as one line, numbers checked, and stopping on a signal or when a pipe's reader
goes away."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import os
import re
import select
import signal
import stat
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

import jetkit as jk

from .._tools import Target
from . import output

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover  (older typer runs on click itself)
    from click.exceptions import (  # type: ignore[import-not-found,no-redef,assignment,unused-ignore]
        ClickException,
        UsageError,
    )

__all__ = [
    "DEFAULT_TARGET",
    "ClickException",
    "UsageError",
    "cli_terms",
    "connected",
    "positive",
    "quiet_when_the_reader_goes",
    "reader_gone",
    "run",
    "stop_on_signals",
    "watch_reader",
]

T = TypeVar("T")

DEFAULT_TARGET = Target()

# the connection options every connecting command takes, defined once
TARGET_OPTIONS: dict[str, Any] = {
    "store_dir": Annotated[
        Path | None,
        typer.Option(
            "--store-dir",
            help="Store of the embedded server: attach to its server, or start one on it "
            "(default: $JETKIT_STORE, else ./jetstream-store). A cluster's directory is "
            "used as --cluster.",
            show_default=False,
        ),
    ],
    "cluster": Annotated[
        Path | None,
        typer.Option(
            "--cluster",
            help="A local cluster (jetkit cluster): its directory or its jetkit-cluster.json "
            "(default: $JETKIT_CLUSTER).",
            show_default=False,
        ),
    ],
    "server": Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            help="URL of an external NATS instead of a store (repeat for a cluster's nodes).",
            show_default=False,
        ),
    ],
    "user": Annotated[str | None, typer.Option(help="User for --server.")],
    "password": Annotated[str | None, typer.Option(help="Password for --server.")],
    "token": Annotated[str | None, typer.Option(help="Token for --server.")],
}


def connected(command: Callable[..., T]) -> Callable[..., T]:
    """Give ``command(target=...)`` the shared connection options instead."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "target"]
    added = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=getattr(DEFAULT_TARGET, name),
            annotation=annotation,
        )
        for name, annotation in TARGET_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_target(*args: Any, **kwargs: Any) -> T:
        target = Target(**{name: kwargs.pop(name) for name in TARGET_OPTIONS})
        return command(*args, target=target, **kwargs)

    with_target.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
    with_target.__annotations__ = {
        **{k: v for k, v in command.__annotations__.items() if k != "target"},
        **TARGET_OPTIONS,
    }
    return with_target


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


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn a JetkitError into a one-line message and exit code 2."""
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except jk.JetkitError as exc:
        output.error(cli_terms(str(exc)))
        raise typer.Exit(2) from None


def positive(value: float | None, option: str, allow_zero: bool = False, hint: str = "") -> None:
    """Refuse a number that is not finite, or not > 0 (>= 0 with ``allow_zero``)."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise typer.BadParameter(
            f"{value:g} is not a number {'>= 0' if allow_zero else '> 0'}{hint}",
            param_hint=option,
        )


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def watch_reader(stop: asyncio.Event) -> None:
    """Set ``stop`` when stdout is a pipe whose reader went away (``sub | head -1`` on a
    quiet topic would otherwise wait for the next message to find out)."""
    fd = sys.stdout.fileno()
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        return
    poller = select.poll()
    poller.register(fd, select.POLLERR)  # a pipe's write end reports it when unread
    while not stop.is_set():
        if any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0)):
            reader_gone()
            stop.set()
            return
        await asyncio.sleep(0.2)


def reader_gone() -> None:
    """stdout's reader went away (``jetkit sub ... | head -1``): send the rest nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@contextlib.contextmanager
def quiet_when_the_reader_goes() -> Iterator[None]:
    """``jetkit ... | head -1``: stop printing and exit 0 (click would make it 1)."""
    try:
        yield
    except BrokenPipeError:
        reader_gone()
        raise typer.Exit(0) from None

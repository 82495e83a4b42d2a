"""The ``jetkit`` typer app: every command, in the order ``--help`` lists them, and
``main``, which makes every error one line on stderr with exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

import jetkit

from . import asyncapi, inspection, messages, output, servers, services
from .common import ClickException, UsageError, reader_gone

app = typer.Typer(
    name="jetkit",
    help="Durable messaging with zero infrastructure: NATS JetStream, embedded.",
    no_args_is_help=True,
    add_completion=False,
    cls=output.Group,
)


def _version(shown: bool) -> None:
    if shown:
        sys.stdout.write(f"jetkit {jetkit.__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print jetkit's version and exit.",
            callback=_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Durable messaging with zero infrastructure: NATS JetStream, embedded."""


# a new command: a function in the module of its kind, added here where --help shows it
COMMANDS: list[Callable[..., Any]] = [
    servers.demo,
    servers.server,
    services.run,
    inspection.topics,
    inspection.topic,
    inspection.consumers,
    messages.pub,
    messages.cancel,
    messages.sub,
    messages.dlq,
    servers.cluster,
    inspection.top,
    servers.ui,
    servers.examples,
    asyncapi.asyncapi,
]
for _command in COMMANDS:
    app.command(cls=output.Command)(_command)  # (flags show no value in --help)


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
        reader_gone()
        code = 0
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    sys.exit(code if isinstance(code, int) else 0)

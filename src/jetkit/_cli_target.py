"""Where a command connects: a store (``--store-dir``) or an external NATS (``--server``).

Commands that only read (``topics``, ``topic``, ``consumers``, ``dlq``, ...) never
create a store: ``Target.open()`` refuses a directory that holds none, so a typo in
``--store-dir`` (or a command run in the wrong directory) says so instead of starting a
server on a new, empty store. ``pub``, ``sub`` and ``server`` pass ``create=True``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

import jetkit as jk

from ._files import CONF_FILE, CREDS_FILE

T = TypeVar("T")

DEFAULT_STORE = Path("./jetstream-store")


def is_store(path: Path) -> bool:
    """Whether ``path`` holds a jetkit store (its credentials, server config or data)."""
    path = path.expanduser()
    return any((path / name).exists() for name in (CREDS_FILE, CONF_FILE, "jetstream"))


def shown(path: Path) -> str:
    """A path as the user would type it (``./jetstream-store``, not ``jetstream-store``)."""
    text = str(path)
    return text if path.is_absolute() or text.startswith(("./", "../", "~")) else f"./{text}"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a command connects: a store, or an external server."""

    store_dir: Path = DEFAULT_STORE
    server: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None

    def open(self, *, create: bool = False) -> Any:
        """``Stream.open`` on the target (``async with target.open() as s``).

        Without ``create``, a ``--store-dir`` that holds no jetkit store is a
        ``ConfigError`` saying how to point at one.
        """
        if self.server:
            return jk.Stream.open(
                servers=[self.server], user=self.user, password=self.password, token=self.token
            )
        if not create and not is_store(self.store_dir):
            raise jk.ConfigError(
                f"no jetkit store at {shown(self.store_dir)}: run `jetkit demo` or "
                "`jetkit server` there first, or pass --store-dir DIR or --server URL"
            )
        return jk.Stream.open(
            store_dir=self.store_dir, user=self.user, password=self.password, token=self.token
        )


DEFAULT_TARGET = Target()

# the connection options every connecting command takes, defined once
TARGET_OPTIONS: dict[str, Any] = {
    "store_dir": Annotated[
        Path,
        typer.Option(
            "--store-dir",
            help="Store of the embedded server: attach to its server, or start one on it.",
        ),
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

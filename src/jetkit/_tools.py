"""What the command line and the web console share, in neither's terms.

Where a tool connects (``Target``: a store or an external server), reading headers the
user typed, whether a topic is stored, the sentence a publish's result is told in, and
text made safe to show on one line. No typer, rich or starlette here: the CLI
(``jetkit.cli``) turns a ``BadInput`` into a usage error naming its option, the console
(``jetkit.ui``) into an error on its form.

Commands that only read (``topics``, ``topic``, ``consumers``, ``dlq``, ``ui``, ...)
never create a store: ``Target.open()`` refuses a directory that holds none, so a typo
in ``--store-dir`` (or a command run in the wrong directory) says so instead of starting
a server on a new, empty store. ``pub``, ``sub`` and ``server`` pass ``create=True``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._errors import ConfigError, NotFoundError
from ._files import CONF_FILE, CREDS_FILE
from ._publish import PubAck
from ._schedule import ScheduledMessage
from ._stream import Stream
from ._topics import TopicMode

DEFAULT_STORE = Path("./jetstream-store")


class BadInput(ValueError):
    """Something the user typed that cannot be used (the message says why)."""


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
    """Where a tool connects: a store, or an external server."""

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
            return Stream.open(
                servers=[self.server], user=self.user, password=self.password, token=self.token
            )
        if not create and not is_store(self.store_dir):
            raise ConfigError(
                f"no jetkit store at {shown(self.store_dir)}: run `jetkit demo` or "
                "`jetkit server` there first, or pass --store-dir DIR or --server URL"
            )
        return Stream.open(
            store_dir=self.store_dir, user=self.user, password=self.password, token=self.token
        )


def parse_headers(items: Iterable[str]) -> dict[str, str]:
    """Headers typed as ``KEY=VALUE`` (one per item); BadInput for an item that is not."""
    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"{item!r} is not KEY=VALUE")
        headers[key] = value
    return headers


async def use_if_stored(s: Stream, topic: str) -> bool:
    """Whether a JetStream stream stores ``topic``; if so, ``s`` uses it in JetStream
    mode from now on (a tool's Stream does not know how its topics were declared)."""
    try:
        await s.topic_info(topic)
    except NotFoundError:
        return False
    await s.declare_topic(topic, mode=TopicMode.JETSTREAM)
    return True


def published(
    topic: str,
    result: PubAck | ScheduledMessage | None,
    *,
    core_hint: str = "",
    cancel_hint: str = "",
) -> str:
    """What became of a publish, in one sentence: stored where (or a duplicate),
    scheduled for when, or, for a core topic, not stored (``core_hint`` says how to
    store it; ``cancel_hint`` how to cancel a scheduled one)."""
    if result is None:
        return (
            f"published to {topic} (core topic: not stored, only live subscribers get it"
            f"{core_hint})"
        )
    if isinstance(result, ScheduledMessage):
        dup = " (duplicate: already scheduled)" if result.duplicate else ""
        when = result.deliver_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return f"scheduled for {when} on {topic}{dup}{cancel_hint}"
    dup = " (duplicate: not stored again)" if result.duplicate else ""
    return f"stored in {result.stream} at seq {result.seq}{dup}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """``text`` on one line, its control characters written as escapes (``\\n``,
    ``\\x1b``): a payload or a name cannot break a line or drive a terminal."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)

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

Where, in order: ``--server`` URLs (several for a cluster's nodes), ``--cluster`` (a
local cluster's directory or its ``jetkit-cluster.json``), ``--store-dir``; with none of
them ``$JETKIT_CLUSTER``, then ``$JETKIT_STORE``, then ``./jetstream-store``. A
cluster's directory given as a store is used as the cluster: no server is ever started
in it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._cluster import read_cluster_file
from ._errors import ConfigError, NotFoundError
from ._files import CLUSTER_FILE, CONF_FILE, CREDS_FILE, is_cluster_dir
from ._publish import PubAck
from ._schedule import ScheduledMessage
from ._stream import Stream
from ._topics import TopicMode

DEFAULT_STORE = Path("./jetstream-store")
CLUSTER_ENV = "JETKIT_CLUSTER"  # a local cluster's directory (or its jetkit-cluster.json)
STORE_ENV = "JETKIT_STORE"  # a store's directory


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
class Where:
    """A resolved target: a store (``store_dir``), or servers with their credentials."""

    store_dir: Path | None = None
    servers: tuple[str, ...] = ()
    user: str | None = None
    password: str | None = None
    cluster: Path | None = None  # the local cluster's directory these servers came from


def resolve(
    store_dir: Path | None = None,
    servers: Sequence[str] = (),
    cluster: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Where:
    """Where a tool connects, from its options and then the environment (see the module's
    docstring). ConfigError for two choices at once, or a cluster that is not running."""
    given = [
        name
        for name, v in (("--server", servers), ("--cluster", cluster), ("--store-dir", store_dir))
        if v
    ]
    if len(given) > 1:
        if len(given) == 2:
            raise ConfigError(f"pass {given[0]} or {given[1]}, not both")
        raise ConfigError(f"pass one of {', '.join(given)}, not several")
    if not given:
        env = os.environ if env is None else env
        from_env = [name for name in (CLUSTER_ENV, STORE_ENV) if env.get(name)]
        if len(from_env) > 1:
            raise ConfigError(
                f"both ${CLUSTER_ENV} and ${STORE_ENV} are set; unset one, or pass --cluster "
                "or --store-dir"
            )
        if env.get(CLUSTER_ENV):
            cluster = Path(env[CLUSTER_ENV])
        else:
            store_dir = Path(env.get(STORE_ENV) or DEFAULT_STORE)
    if servers:
        return Where(servers=tuple(servers))
    if store_dir is not None and not is_cluster_dir(store_dir):
        return Where(store_dir=store_dir)
    place = cluster if cluster is not None else store_dir
    assert place is not None
    info = read_cluster_file(place)
    if info is None:
        home = place.parent if place.name.endswith(".json") else place
        raise ConfigError(
            f"no running cluster at {shown(place)} (no {CLUSTER_FILE} with a live node): "
            f"start it with `jetkit cluster --store-dir {shown(home)}`, or pass --server URL"
        )
    return Where(
        servers=tuple(str(u) for u in info.get("urls") or ()),
        user=info.get("user"),
        password=info.get("password"),
        cluster=place,
    )


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a tool connects: a store, a local cluster, or external servers (as typed;
    ``resolve`` says where that is)."""

    store_dir: Path | None = None
    server: Sequence[str] | None = None
    cluster: Path | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None

    def where(self) -> Where:
        return resolve(self.store_dir, tuple(self.server or ()), self.cluster)

    def open(self, *, create: bool = False) -> Any:
        """``Stream.open`` on the target (``async with target.open() as s``).

        Without ``create``, a ``--store-dir`` that holds no jetkit store is a
        ``ConfigError`` saying how to point at one.
        """
        where = self.where()
        if where.servers:
            return Stream.open(
                servers=list(where.servers),
                user=self.user if self.user is not None else where.user,
                password=self.password if self.password is not None else where.password,
                token=self.token,
            )
        assert where.store_dir is not None
        if not create and not is_store(where.store_dir):
            raise ConfigError(
                f"no jetkit store at {shown(where.store_dir)}: run `jetkit demo` or "
                "`jetkit server` there first, or pass --store-dir DIR, --cluster DIR or "
                "--server URL"
            )
        return Stream.open(
            store_dir=where.store_dir, user=self.user, password=self.password, token=self.token
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

"""The option sets of jetkit's public calls, each declared once.

``OpenOptions`` (``Stream.open``), ``SubscribeOptions`` (``Stream.subscribe``) and
``ClusterOptions`` (``testing.local_cluster``) are TypedDicts: each option's name,
type, default (``Annotated[..., Default(x)]``) and meaning (the docstring under it) are
written here and nowhere else. Every call that
takes them says ``**options: Unpack[OpenOptions]`` (the async Stream, ``jetkit.sync``,
the decorator forms, ``testing.local_cluster``), so type checkers and editors check and
complete them, and ``_options`` checks them at run time with these defaults. Adding an
option is one edit here (and the code that uses it).

``given(...)`` is the run-time side: the defaults filled in, and an option that is not
declared refused with jk.UnknownOptionError (a TypeError too, as Python's own would be),
naming the nearest declared one.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import os
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Protocol, TypedDict, get_type_hints

from ._errors import UnknownOptionError
from ._message import Message
from ._retry import Delay
from ._subscription import AckPolicy, Backpressure, StartAt
from ._topics import TopicMode


class Default:
    """An option's default, in its ``Annotated`` type."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"default {self.value!r}"


class TracerProvider(Protocol):
    """An OpenTelemetry ``TracerProvider`` (``opentelemetry.sdk.trace.TracerProvider``, or
    any object with its ``get_tracer``), for ``tracing=``."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
    ) -> Any: ...


class OpenOptions(TypedDict, total=False):
    """The options of ``Stream.open`` (all keyword-only and optional)."""

    store_dir: Annotated[str | os.PathLike[str] | None, Default(None)]
    """The embedded server's JetStream store, created 0700 if missing. None: a temporary
    store, deleted on close. A store already served by a live jetkit process is attached
    to as a client (closing leaves its server running)."""
    servers: Annotated[Sequence[str] | str | None, Default(None)]
    """URLs of an external NATS server or cluster (``nats://h1:4222``); no child process
    is started. Not with ``store_dir``."""
    default_mode: Annotated[TopicMode, Default(TopicMode.CORE)]
    """The mode of topics no ``declare_topic`` names: ``TopicMode.CORE`` (in memory,
    at-most-once) or ``TopicMode.JETSTREAM`` (stored, acked)."""
    host: Annotated[str, Default("127.0.0.1")]
    """Where the embedded server listens (loopback by default)."""
    port: Annotated[int | None, Default(None)]
    """The embedded server's port; None: a free one."""
    user: Annotated[str | None, Default(None)]
    """User name (with ``password``); an embedded store generates its own if not given."""
    password: Annotated[str | None, Default(None)]
    """Password (with ``user``)."""
    token: Annotated[str | None, Default(None)]
    """Token authentication instead of user and password."""
    tls: Annotated[ssl.SSLContext | None, Default(None)]
    """TLS for the connection."""
    max_payload: Annotated[int | None, Default(None)]
    """The embedded server's largest message in bytes (None: nats-server's 1 MiB; at most
    64 MiB)."""
    connect_timeout: Annotated[float, Default(5.0)]
    """Seconds to connect before jk.ConnectionError."""
    drain_timeout: Annotated[float, Default(30.0)]
    """Seconds ``close()`` lets subscriptions finish what they hold; unfinished JetStream
    messages are then handed back (redelivered later)."""
    server_ready_timeout: Annotated[float, Default(10.0)]
    """Seconds the embedded server may take to start."""
    sync_always: Annotated[bool, Default(False)]
    """Sync every write of the embedded server to disk before acking it (slower; survives
    power loss)."""
    logger: Annotated[logging.Logger | None, Default(None)]
    """Where jetkit logs (None: the logger named ``jetkit``)."""
    server_binary: Annotated[str | os.PathLike[str] | None, Default(None)]
    """A nats-server to run instead of the bundled one (or ``$JETKIT_NATS_SERVER``)."""
    publish_timeout: Annotated[float, Default(5.0)]
    """Seconds a JetStream publish waits for its ack before jk.TimeoutError. On a cluster
    a publish nobody answers is sent again (the same msg id) about every second until
    then: set it above the cluster's election time (20 s rides through one)."""
    api_timeout: Annotated[float, Default(5.0)]
    """Seconds an admin call (``declare_topic``, ``topic_info``, ...), the server side of
    ``subscribe``, ``cancel_scheduled``, ``dead_letters`` and ``redrive`` may take before
    jk.TimeoutError. Transient answers of a cluster (no leader yet, a node still loading)
    are retried with backoff until then: on a cluster 20 s rides through an election."""
    name: Annotated[str | None, Default(None)]
    """The connection's name, as the server shows it."""
    metrics_port: Annotated[int | None, Default(None)]
    """Serve Prometheus metrics at ``http://{metrics_host}:{metrics_port}/metrics`` (0: a
    free port; see ``Stream.metrics_url`` and ``jetkit.metrics``). None: no server."""
    metrics_host: Annotated[str, Default("127.0.0.1")]
    """Where the metrics are served."""
    tracing: Annotated[bool | TracerProvider, Default(False)]
    """OpenTelemetry spans for publishes, deliveries, dead letters and request/reply, the
    trace context carried in ``traceparent`` headers (needs ``pip install 'jetkit[otel]'``).
    True: the global TracerProvider; or a TracerProvider of your own. See docs/tracing.md."""
    ping_interval: Annotated[float | None, Default(None)]
    """Seconds between the client's PINGs to its server; after ``max_outstanding_pings``
    unanswered, the server is taken for dead and the Stream reconnects (to another server
    of the list if there is one). None: 3 s with ``servers=`` (a server that vanishes
    without closing the connection is noticed in 6 to 9 s), nats-py's 120 s for the
    embedded server (a child on loopback: its death closes the connection)."""
    max_outstanding_pings: Annotated[int, Default(2)]
    """PINGs left unanswered before the server is taken for dead (see ``ping_interval``)."""
    failover_after: Annotated[float | None, Default(5.0)]
    """With ``servers=``: seconds JetStream may stay unavailable through the connected
    server (publishes and API calls waiting, none answered) before the Stream asks the
    other servers it knows and moves to one through which the stream has a quorum (its
    leader and a majority of replicas in touch): a node cut off from the cluster's
    majority is left. None: never move for that (a dead connection still moves)."""


class SubscribeOptions(TypedDict, total=False):
    """The options of ``Stream.subscribe`` and of its decorator form ``subscriber``."""

    durable: Annotated[str | None, Default(None)]
    """The durable consumer's name: it keeps its position across restarts. None: an
    ephemeral consumer, deleted with the subscription."""
    queue_group: Annotated[str | None, Default(None)]
    """Subscriptions of one group share the messages (each handled by one of them)."""
    ack: Annotated[AckPolicy, Default(AckPolicy.AUTO)]
    """``AUTO``: acked when handed to the handler. ``MANUAL``: acked when the handler
    returns, a raise retries (``max_deliver``, ``backoff``, ``dlq``). ``NONE``: no acks."""
    max_deliver: Annotated[int | None, Default(None)]
    """Handler calls a message gets at most (jetkit counts calls, not deliveries); then
    it goes to ``dlq``. None: retried for ever."""
    backoff: Annotated[Sequence[Delay] | Delay | None, Default(None)]
    """Delays between attempts (seconds or timedeltas; the last repeats), e.g.
    ``jk.exponential_backoff(1, 5)``. Needs ``ack=MANUAL``."""
    start_at: Annotated[StartAt, Default(StartAt.NEW)]
    """Where a new durable starts: ``NEW`` (only what is published from now on), ``ALL``,
    ``BY_START_TIME``, ``LAST_PER_SUBJECT``, ``BY_SEQUENCE``. An existing durable resumes."""
    start_time: Annotated[dt.datetime | float | None, Default(None)]
    """For ``BY_START_TIME``: an aware or naive (local) datetime, or a Unix timestamp."""
    start_seq: Annotated[int | None, Default(None)]
    """For ``BY_SEQUENCE``: the first stream sequence to deliver."""
    concurrency: Annotated[int, Default(1)]
    """Handler calls in flight at once; 1 keeps stream order."""
    buffer_size: Annotated[int, Default(1024)]
    """Messages held in memory and not yet handled, at most."""
    backpressure: Annotated[Backpressure, Default(Backpressure.BLOCK)]
    """A full buffer: ``BLOCK`` (stop taking messages; the only choice for JetStream),
    ``DROP_NEWEST`` or ``DROP_OLDEST`` (core topics; drops are counted)."""
    dlq: Annotated[str | None, Default(None)]
    """The topic that receives the messages that used up ``max_deliver`` (and poison
    messages), with ``Jetkit-*`` headers saying why."""
    ack_wait: Annotated[float, Default(30.0)]
    """Seconds before the server redelivers a message nobody acknowledged (a handler
    still running is kept alive)."""
    recreate: Annotated[bool, Default(False)]
    """Delete an existing durable first and start over from ``start_at``."""
    key: Annotated[str | Callable[[Message], str | None] | None, Default(None)]
    """Ordered per key, parallel across keys (JetStream): a header's name, or a function
    of the message returning its key (None: no order)."""
    emit: Annotated[str | None, Default(None)]
    """An exactly-once pipeline (JetStream): the handler's return value (unless None) is
    published to this topic, or it returns ``jk.Emit``s (a list for several outputs).
    Each output's msg id comes from the input; all are stored before the input is acked
    (a confirmed ack), so an input run again stores no output twice (within the output
    topic's duplicate window). A raise retries the input (``max_deliver``, ``backoff``,
    ``dlq``); ``ack`` stays ``AUTO``."""
    batch: Annotated[int | None, Default(None)]
    """Hand the handler a list of up to this many messages at once (JetStream): it takes
    ``list[T]`` (decoded values) or ``list[jk.Message]``. A return acks them all, a raise
    naks them all (retries and the DLQ apply per message); with ``ack=MANUAL`` the
    handler may settle each one itself. With ``emit=`` it returns one entry per message."""
    batch_timeout: Annotated[float | None, Default(None)]
    """Seconds a batch waits to fill once its first message is there (None: 1.0); then
    it is handed over as it is."""


class ClusterOptions(TypedDict, total=False):
    """The options of ``testing.LocalCluster`` and ``testing.local_cluster`` besides the
    number of nodes and the store."""

    sync_always: Annotated[bool, Default(False)]
    """Sync every write of every node to disk before acking it."""
    ready_timeout: Annotated[float, Default(30.0)]
    """Seconds the cluster may take until JetStream answers."""
    logger: Annotated[logging.Logger | None, Default(None)]
    """Where the cluster logs (None: the logger ``jetkit.cluster``)."""
    server_binary: Annotated[str | os.PathLike[str] | None, Default(None)]
    """A nats-server to run instead of the bundled one."""


def defaults(options: type[Any]) -> dict[str, object]:
    """The declared default of every option of ``options`` (a TypedDict above)."""
    hints = get_type_hints(options, include_extras=True, localns=vars(sys.modules[__name__]))
    found: dict[str, object] = {}
    for name, hint in hints.items():
        marks = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Default)]
        if len(marks) != 1:
            raise TypeError(f"option {name!r} of {options.__name__} declares no one default")
        found[name] = marks[0].value
    return found


_DEFAULTS: dict[type[Any], dict[str, object]] = {}


def given(options: type[Any], call: str, values: Mapping[str, object]) -> dict[str, object]:
    """``values`` with the defaults of the options not given; an option ``options`` does
    not declare raises jk.UnknownOptionError (``call`` names the call in the message)."""
    known = _DEFAULTS.get(options)
    if known is None:
        known = _DEFAULTS[options] = defaults(options)
    for name in values:
        if name not in known:
            near = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise UnknownOptionError(
                f"{call}() has no option {name!r}{hint}; its options: {', '.join(known)}"
            )
    return {**known, **values}

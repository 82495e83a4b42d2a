"""Options of ``Stream.open`` and ``Stream.subscribe``: one pure check of each.

The options are declared (names, types, defaults, meaning) in ``_surface``;
``open_options(**options)`` and ``subscribe_options(topic, **options)`` turn what a call
was given into a frozen ``OpenSettings`` / ``SubscribeSettings`` (defaults filled in,
enums resolved, delays in seconds, the start position resolved) or raise a ConfigError /
InvalidTopicError naming the option and the fix. They talk to nobody, so they are
unit-tested without a server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import inspect
import logging
import os
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from . import _validate
from ._errors import ConfigError
from ._retry import normalize_backoff
from ._subscription import AckPolicy, Backpressure, StartAt
from ._surface import OpenOptions, SubscribeOptions, given
from ._topics import TopicMode, consumer_name_ok, subject_matches, validate_topic

MIN_ACK_WAIT = 0.1  # below this the server redelivers before any handler can answer
MAX_ACK_WAIT = 7 * 86_400.0  # jetkit keeps slow handlers alive; a week is plenty
MAX_CONCURRENCY = 10_000
MAX_BUFFER = 1_000_000
MAX_DELIVER = 2**31 - 1
MAX_BATCH = 100_000
BATCH_TIMEOUT = 1.0  # seconds a batch waits to fill, when batch_timeout is not given
MAX_BATCH_TIMEOUT = 3_600.0
# Unix timestamps jetkit accepts as start_time: year 1970 to 9999
_MAX_TIMESTAMP = 253_402_300_799.0


@dataclasses.dataclass(frozen=True, slots=True)
class SubscribeSettings:
    """Checked subscribe options (see ``Stream.subscribe`` for their meaning)."""

    durable: str | None = None
    queue_group: str | None = None
    ack: AckPolicy = AckPolicy.AUTO
    max_deliver: int | None = None
    backoff: list[float] | None = None
    start_at: StartAt = StartAt.NEW
    start_time: dt.datetime | None = None
    start_seq: int | None = None
    concurrency: int = 1
    buffer_size: int = 1024
    backpressure: Backpressure = Backpressure.BLOCK
    dlq: str | None = None
    ack_wait: float = 30.0
    recreate: bool = False
    key: str | Callable[[Any], Any] | None = None
    emit: str | None = None
    batch: int | None = None
    batch_timeout: float | None = None  # (BATCH_TIMEOUT when batch is given without it)

    def jetstream_only(self) -> list[str]:
        """The options given that only a JetStream topic can honour."""
        given = {
            "durable": self.durable is not None,
            "ack": self.ack is not AckPolicy.AUTO,
            "max_deliver": self.max_deliver is not None,
            "backoff": self.backoff is not None,
            "start_at": self.start_at is not StartAt.NEW,
            "start_time": self.start_time is not None,
            "start_seq": self.start_seq is not None,
            "dlq": self.dlq is not None,
            "recreate": self.recreate,
            "key": self.key is not None,
            "emit": self.emit is not None,
            "batch": self.batch is not None,
        }
        return [name for name, used in given.items() if used]


def subscribe_options(topic: str, **options: object) -> SubscribeSettings:
    """Check and normalise the options of a subscription on ``topic`` (already valid)."""
    o = given(SubscribeOptions, "subscribe", options)
    durable, queue_group, ack, dlq = o["durable"], o["queue_group"], o["ack"], o["dlq"]
    ack_policy = _validate.option(AckPolicy, ack, "ack")
    delays = normalize_backoff(o["backoff"])  # type: ignore[arg-type]
    emit = o["emit"]
    if emit is not None:
        emit = emit_topic(topic, emit, ack_policy)
    batch, batch_timeout = batch_options(o["batch"], o["batch_timeout"])
    if batch is not None and o["key"] is not None:
        raise ConfigError(
            "batch= and key= do not go together: a batch mixes keys, so their order could "
            "not be kept; use one or the other"
        )
    if emit is None and batch is None and delays and ack_policy is not AckPolicy.MANUAL:
        raise ConfigError("backoff applies to retries, which need ack=jk.AckPolicy.MANUAL")
    if dlq is not None:
        validate_topic(dlq, wildcards=False)
        assert isinstance(dlq, str)
        if dlq == topic:
            raise ConfigError(
                f"dlq {dlq!r} must not be the topic itself: its dead letters would come back "
                f"to this subscription; use another topic, e.g. 'failed.{topic}'"
            )
        if subject_matches(topic, dlq):
            raise ConfigError(
                f"dlq {dlq!r} lies inside the topic's pattern {topic!r}: its dead letters "
                "would come back to this subscription; use a topic outside that pattern"
            )
    position, when, seq = resolve_start(
        _validate.option(StartAt, o["start_at"], "start_at"), o["start_time"], o["start_seq"]
    )
    settings = SubscribeSettings(
        durable=None if durable is None else consumer_name_ok(durable, "durable"),
        queue_group=(None if queue_group is None else consumer_name_ok(queue_group, "queue_group")),
        ack=ack_policy,
        max_deliver=_validate.optional_number(
            "max_deliver", o["max_deliver"], minimum=1, maximum=MAX_DELIVER, integer=True
        ),
        backoff=delays,
        start_at=position,
        start_time=when,
        start_seq=seq,
        concurrency=_validate.number(
            "concurrency", o["concurrency"], minimum=1, maximum=MAX_CONCURRENCY, integer=True
        ),
        buffer_size=_validate.number(
            "buffer_size", o["buffer_size"], minimum=1, maximum=MAX_BUFFER, integer=True
        ),
        backpressure=_validate.option(Backpressure, o["backpressure"], "backpressure"),
        dlq=dlq,
        ack_wait=float(
            _validate.number(
                "ack_wait",
                o["ack_wait"],
                minimum=MIN_ACK_WAIT,
                maximum=MAX_ACK_WAIT,
                hint=" (seconds before an unacknowledged delivery is redelivered)",
            )
        ),
        recreate=_validate.flag("recreate", o["recreate"]),
        key=order_key(o["key"]),
        emit=emit,
        batch=batch,
        batch_timeout=batch_timeout,
    )
    if batch is not None and batch > settings.buffer_size:
        raise ConfigError(
            f"batch={batch} is larger than buffer_size={settings.buffer_size}: at most "
            f"buffer_size messages are held, so the batch could never fill; give "
            f"buffer_size={batch} or more"
        )
    return settings


def batch_options(batch: object, timeout: object) -> tuple[int | None, float | None]:
    """``subscribe``'s ``batch`` and ``batch_timeout`` (seconds; its default if None)."""
    if batch is None:
        if timeout is not None:
            raise ConfigError("batch_timeout applies to batches: give batch=N as well")
        return None, None
    size = _validate.number(
        "batch",
        batch,
        minimum=1,
        maximum=MAX_BATCH,
        integer=True,
        hint=" (the most messages handed to the handler at once)",
    )
    if timeout is None:
        return size, BATCH_TIMEOUT
    seconds = _validate.number(
        "batch_timeout",
        timeout,
        above=0,
        maximum=MAX_BATCH_TIMEOUT,
        hint=" (seconds a batch waits to fill)",
    )
    return size, float(seconds)


def emit_topic(topic: str, emit: object, ack: AckPolicy) -> str:
    """``subscribe``'s ``emit``: a concrete topic outside ``topic``, with ``ack=AUTO``."""
    validate_topic(emit, wildcards=False)
    assert isinstance(emit, str)
    if emit == topic or subject_matches(topic, emit):
        raise ConfigError(
            f"emit {emit!r} lies inside the subscribed topic {topic!r}: every output would "
            "come back to this subscription as an input; emit to another topic"
        )
    if ack is not AckPolicy.AUTO:
        raise ConfigError(
            f"emit= settles the input itself (acked once its outputs are stored, nak'ed and "
            f"retried when the handler raises), so ack={ack} does not apply; leave ack at its "
            "default (AckPolicy.AUTO). max_deliver, backoff and dlq apply as with MANUAL"
        )
    return emit


def order_key(key: object) -> str | Callable[[Any], Any] | None:
    """``subscribe``'s ``key``: None, a header name, or a plain function of the message."""
    if key is None:
        return None
    if isinstance(key, str):
        if not _validate.header_name_ok(key):
            raise ConfigError(
                f"key {key!r} is not a header name: give the name of the header that holds "
                'the key (letters, digits and !#$%&\'*+-.^_`|~, e.g. key="Order-Id"), or a '
                "function of the message that returns the key"
            )
        return key
    if callable(key) and not isinstance(key, type):
        if inspect.iscoroutinefunction(key) or inspect.iscoroutinefunction(
            getattr(key, "__call__", None)  # noqa: B004
        ):
            raise ConfigError(
                "key must be a plain function (msg) -> str | None, not an async one: it "
                "runs for every message as it arrives; compute the key without awaiting"
            )
        return key
    raise ConfigError(
        f"key must be a header name (str) or a function (msg) -> str | None, got "
        f'{type(key).__name__} {key!r}; e.g. key="Order-Id" or '
        'key=lambda m: m.headers.get("Order-Id")'
    )


def to_datetime(value: object) -> dt.datetime:
    """Aware datetime as is; naive as local time; a number as a Unix timestamp."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            try:
                return dt.datetime.fromtimestamp(value.timestamp(), dt.UTC)
            except (OverflowError, OSError, ValueError) as exc:
                raise ConfigError(f"start_time {value!r} cannot be read as local time") from exc
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = _validate.number(
            "start_time", value, minimum=0, maximum=_MAX_TIMESTAMP, hint=" (a Unix timestamp)"
        )
        return dt.datetime.fromtimestamp(float(seconds), dt.UTC)
    raise ConfigError(f"start_time must be a datetime or a Unix timestamp, got {value!r}")


def resolve_start(
    start_at: StartAt, start_time: object, start_seq: object
) -> tuple[StartAt, dt.datetime | None, int | None]:
    """Check start options; a start_time/start_seq alone implies its StartAt."""
    seq: int | None = _validate.optional_number(
        "start_seq", start_seq, minimum=1, maximum=_validate.INT64_MAX, integer=True
    )
    if start_time is not None and start_at is StartAt.NEW:
        start_at = StartAt.BY_START_TIME
    if seq is not None and start_at is StartAt.NEW:
        start_at = StartAt.BY_SEQUENCE
    when = to_datetime(start_time) if start_time is not None else None
    if start_at is StartAt.BY_START_TIME and when is None:
        raise ConfigError("start_at=StartAt.BY_START_TIME needs start_time=")
    if start_at is StartAt.BY_SEQUENCE and seq is None:
        raise ConfigError("start_at=StartAt.BY_SEQUENCE needs start_seq= (>= 1)")
    if when is not None and start_at is not StartAt.BY_START_TIME:
        raise ConfigError(f"start_time= only applies to StartAt.BY_START_TIME, not {start_at}")
    if seq is not None and start_at is not StartAt.BY_SEQUENCE:
        raise ConfigError(f"start_seq= only applies to StartAt.BY_SEQUENCE, not {start_at}")
    return start_at, when, seq


_RESETTABLE = (StartAt.ALL, StartAt.NEW, StartAt.BY_START_TIME, StartAt.BY_SEQUENCE)


def reset_position(
    start_at: object, start_time: object, start_seq: object
) -> tuple[StartAt, dt.datetime | None, int | None]:
    """Check ``reset_consumer``'s position: where the consumer is moved to."""
    if start_at is None:
        if start_time is None and start_seq is None:
            raise ConfigError(
                "say where to move the consumer: start_at=jk.StartAt.ALL or .NEW, "
                "start_time=datetime, or start_seq=n"
            )
        start_at = StartAt.NEW  # start_time / start_seq imply their StartAt
    position = _validate.option(StartAt, start_at, "start_at")
    if position not in _RESETTABLE:
        raise ConfigError(
            f"a consumer cannot be reset to {position}: use StartAt.ALL, NEW, "
            "BY_START_TIME or BY_SEQUENCE"
        )
    return resolve_start(position, start_time, start_seq)


MAX_PAYLOAD_LIMIT = 64 * 1024 * 1024  # nats-server refuses a larger max_payload
MAX_TIMEOUT = 86_400.0  # a day: longer waits are mistakes (or units confusion)
# PINGs: an external server that stops answering (gone without closing the connection) is
# noticed after 2 to 3 intervals; the embedded one is a child on loopback whose death
# closes the connection, so it keeps nats-py's own interval
SERVERS_PING_INTERVAL = 3.0
EMBEDDED_PING_INTERVAL = 120.0
MAX_PING_INTERVAL = 3_600.0
MAX_OUTSTANDING_PINGS = 100


@dataclasses.dataclass(frozen=True)
class OpenSettings:
    """Checked ``Stream.open`` options (see there for their meaning)."""

    store_dir: str | os.PathLike[str] | None
    servers: list[str] | None
    default_mode: TopicMode
    host: str
    port: int | None
    user: str | None
    password: str | None
    token: str | None
    tls: ssl.SSLContext | None
    max_payload: int | None
    connect_timeout: float
    drain_timeout: float
    server_ready_timeout: float
    sync_always: bool
    logger: logging.Logger
    server_binary: str | os.PathLike[str] | None
    publish_timeout: float
    api_timeout: float
    name: str | None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    tracing: object = False  # False, True or a TracerProvider (see _surface)
    ping_interval: float = EMBEDDED_PING_INTERVAL
    max_outstanding_pings: int = 2
    failover_after: float | None = None  # (never with the embedded server)


def open_options(**options: object) -> OpenSettings:
    """Check ``Stream.open``'s options before anything starts."""
    o = given(OpenOptions, "Stream.open", options)
    store_dir, servers, user, password, token = (
        o["store_dir"],
        o["servers"],
        o["user"],
        o["password"],
        o["token"],
    )
    connect_timeout, server_ready_timeout, publish_timeout = (
        o["connect_timeout"],
        o["server_ready_timeout"],
        o["publish_timeout"],
    )
    tls, logger = o["tls"], o["logger"]
    if servers is not None and store_dir is not None:
        raise ConfigError("pass store_dir (embedded server) or servers (external), not both")
    if store_dir is not None:
        if not isinstance(store_dir, str | os.PathLike):
            raise ConfigError(f"store_dir must be a path, got {type(store_dir).__name__}")
        if not os.fspath(store_dir).strip():
            raise ConfigError(
                "store_dir is empty; name a directory (e.g. './jetstream-store'), or pass "
                "None for a temporary store"
            )
    for label, secret in (("user", user), ("password", password), ("token", token)):
        # an empty credential would start (or reach) a server without authentication
        _validate.text(label, secret)
    if token is not None and (user is not None or password is not None):
        raise ConfigError("pass user/password or token, not both")
    if (user is None) != (password is None):
        raise ConfigError("user and password go together")
    for label, seconds in (
        ("connect_timeout", connect_timeout),
        ("server_ready_timeout", server_ready_timeout),
        ("publish_timeout", publish_timeout),
        ("api_timeout", o["api_timeout"]),
    ):
        _validate.number(label, seconds, above=0, maximum=MAX_TIMEOUT)
    if tls is not None and not isinstance(tls, ssl.SSLContext):
        raise ConfigError(f"tls must be an ssl.SSLContext, got {tls!r}")
    if logger is not None and not isinstance(logger, logging.Logger):
        raise ConfigError(f"logger must be a logging.Logger, got {logger!r}")
    urls: list[str] | None = None
    if servers is not None:
        urls = (
            [servers]
            if isinstance(servers, str)
            else list(servers)
            if isinstance(servers, Sequence)
            else []
        )
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise ConfigError(f"servers must be a list of NATS URLs, got {servers!r}")
    return OpenSettings(
        store_dir=store_dir,
        servers=urls,
        default_mode=_validate.option(TopicMode, o["default_mode"], "default_mode"),
        host=str(_validate.text("host", o["host"], optional=False)),
        port=_validate.optional_number("port", o["port"], minimum=1, maximum=65535, integer=True),
        user=user,  # type: ignore[arg-type]
        password=password,  # type: ignore[arg-type]
        token=token,  # type: ignore[arg-type]
        tls=tls,
        max_payload=_validate.optional_number(
            "max_payload", o["max_payload"], minimum=1, maximum=MAX_PAYLOAD_LIMIT, integer=True
        ),
        connect_timeout=float(connect_timeout),  # type: ignore[arg-type]
        drain_timeout=float(
            _validate.number("drain_timeout", o["drain_timeout"], minimum=0, maximum=MAX_TIMEOUT)
        ),
        server_ready_timeout=float(server_ready_timeout),  # type: ignore[arg-type]
        sync_always=_validate.flag("sync_always", o["sync_always"]),
        logger=logger or logging.getLogger("jetkit"),
        server_binary=o["server_binary"],  # type: ignore[arg-type]
        publish_timeout=float(publish_timeout),  # type: ignore[arg-type]
        api_timeout=float(o["api_timeout"]),  # type: ignore[arg-type]
        name=_validate.text("name", o["name"]),
        metrics_port=_validate.optional_number(
            "metrics_port",
            o["metrics_port"],
            minimum=0,
            maximum=65535,
            integer=True,
            hint=" (0: a free port)",
        ),
        metrics_host=_metrics_host(o["metrics_host"]),
        tracing=_tracing(o["tracing"]),
        **_liveness(o, external=urls is not None),
    )


def _liveness(o: dict[str, object], external: bool) -> dict[str, Any]:
    """``ping_interval``, ``max_outstanding_pings`` and ``failover_after``, checked, with
    the defaults that depend on the server (external or embedded)."""
    ping = _validate.optional_number(
        "ping_interval",
        o["ping_interval"],
        above=0,
        maximum=MAX_PING_INTERVAL,
        hint=" (seconds between PINGs, e.g. 3; None: the default)",
    )
    after = _validate.optional_number(
        "failover_after",
        o["failover_after"],
        above=0,
        maximum=MAX_TIMEOUT,
        hint=" (seconds, e.g. 5; None: never move to another server for that)",
    )
    default_ping = SERVERS_PING_INTERVAL if external else EMBEDDED_PING_INTERVAL
    return {
        "ping_interval": float(ping) if ping is not None else default_ping,
        "max_outstanding_pings": _validate.number(
            "max_outstanding_pings",
            o["max_outstanding_pings"],
            minimum=1,
            maximum=MAX_OUTSTANDING_PINGS,
            integer=True,
            hint=" (unanswered PINGs before the server is taken for dead, e.g. 2)",
        ),
        "failover_after": float(after) if after is not None and external else None,
    }


def _tracing(value: object) -> object:
    """``tracing``: False, True, or a TracerProvider; not off needs opentelemetry-api."""
    if value is False:
        return value
    if value is not True and not callable(getattr(value, "get_tracer", None)):
        raise ConfigError(
            f"tracing must be True, False or an OpenTelemetry TracerProvider, got {value!r}"
        )
    try:
        found = importlib.util.find_spec("opentelemetry.trace") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise ConfigError(
            "tracing needs the OpenTelemetry API: pip install 'jetkit[otel]' (and an SDK, "
            "e.g. opentelemetry-sdk, to export the spans)"
        )
    return value


def _metrics_host(value: object) -> str:
    host = str(_validate.text("metrics_host", value, optional=False))
    if not host.strip() or host != host.strip():
        raise ConfigError(f"metrics_host {host!r} is blank or padded; e.g. '127.0.0.1'")
    return host

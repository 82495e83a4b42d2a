"""``jk.Stream``: the facade. It opens and closes; every behaviour lives in a module.

open:      _options (checks) -> _store (serve or attach) -> _connection (connect)
publish:   _publish (checks, core path, acked JetStream path) -> _topics (streams)
subscribe: _subscribe -> _subscription (buffer, workers) / _consumer (pull engine)
admin:     _admin (part of Stream), _deadletters; request/reply: _reqrep; health: _health
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import inspect
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import _damage, _health, _reqrep
from ._admin import AdminAPI
from ._codec import encode_json
from ._connection import Connection
from ._consumer import JetStreamSubscription
from ._errors import ConfigError, PortInUseError
from ._jsapi import JsApi
from ._lifecycle import Lifecycle, Registrations
from ._message import Message
from ._options import OpenOptions, open_options
from ._publish import PubAck, Publisher
from ._retry import Delay
from ._schedule import ScheduledMessage, Scheduler
from ._store import EmbeddedStore, ServerSettings
from ._stored import StoredPublishing
from ._subscribe import Subscriber
from ._subscription import AckPolicy, Backpressure, StartAt, Subscription
from ._topics import TopicMode, TopicRegistry

if TYPE_CHECKING:
    from .metrics import Collector, MetricsServer

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class _Opener:
    """What ``Stream.open`` returns: ``await`` it, or use it with ``async with``."""

    def __init__(self, factory: Callable[[], Awaitable[Stream]]) -> None:
        self._factory = factory
        self._stream: Stream | None = None

    def __await__(self) -> Generator[Any, None, Stream]:
        return self._factory().__await__()

    async def __aenter__(self) -> Stream:
        self._stream = await self._factory()
        return self._stream

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            await self._stream.close()


class Stream(Lifecycle, AdminAPI, StoredPublishing):
    """A connection to NATS (embedded or external) with jetkit's messaging API.

    Open it with ``Stream.open(...)``; see that method for the options. The admin
    calls (declare_topic, topic_info, consumers, dead_letters, redrive, ...) are
    ``_admin.AdminAPI``'s; ``publish_stored``/``publish_json_stored`` are
    ``_stored.StoredPublishing``'s; ``close()`` and what a fork changes are
    ``_lifecycle``'s.

    After ``os.fork()`` the Stream stays the parent's: in the child every call raises
    jk.ForkedStreamError and ``close()`` returns at once, leaving the parent's server,
    store and connection alone. Open a new Stream in the child.
    """

    def __init__(self, opts: OpenOptions) -> None:
        self.drain_timeout = opts.drain_timeout
        self._opts = opts
        self._log = opts.logger
        self._conn = Connection(self._log)
        self._store: EmbeddedStore | None = None
        store_dir = None
        if opts.servers is None:
            settings = ServerSettings(
                opts.server_binary,
                opts.host,
                opts.port,
                opts.max_payload,
                opts.sync_always,
                opts.server_ready_timeout,
            )
            self._store = EmbeddedStore(opts.store_dir, settings, self._log)
            self._store.on_storage_error = self._on_storage_error
            store_dir = self._store.path
        self._api = JsApi(self._conn, timeout=max(opts.connect_timeout, 5.0), store_dir=store_dir)
        self._topics = TopicRegistry(self._api, opts.default_mode, self._log)
        self._publisher = Publisher(
            self._conn, self._topics, opts.publish_timeout, store_dir, self._disk_error
        )
        self._subscriber = Subscriber(
            self._conn, self._api, self._topics, self._publisher, store_dir, self._log
        )
        self._scheduler = Scheduler(self._conn, self._api, self._topics, self._publisher)
        self._subs: set[Subscription] = set()
        self._regs = Registrations(self._log)
        self._registrations = self._regs.tasks  # the same set: publish's hot path tests it
        self._tasks: set[asyncio.Future[Any]] = set()
        self._init_lifecycle()
        self._identity = ("", "")  # the server's (name, id): a new id is a restart
        self._metrics: Collector | None = None
        self._metrics_server: MetricsServer | None = None

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        servers: Sequence[str] | str | None = None,
        default_mode: TopicMode = TopicMode.CORE,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
        max_payload: int | None = None,
        connect_timeout: float = 5.0,
        drain_timeout: float = 30.0,
        server_ready_timeout: float = 10.0,
        sync_always: bool = False,
        logger: logging.Logger | None = None,
        server_binary: str | os.PathLike[str] | None = None,
        publish_timeout: float = 5.0,
        name: str | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> _Opener:
        """Start (or attach to) the embedded server, or connect to ``servers``.

        ``store_dir``: the JetStream store of the embedded server; None means a
        temporary store removed on close. If a live jetkit server already serves
        the store, this Stream attaches to it as a client (closing leaves it running).
        ``servers``: URLs of an external NATS (cluster); no child process is started.
        ``server_binary`` (or ``$JETKIT_NATS_SERVER``): use that nats-server instead of
        the bundled one. ``publish_timeout``: how long a JetStream publish waits for
        its ack before raising jk.TimeoutError. ``metrics_port``: serve Prometheus
        metrics at ``http://{metrics_host}:{metrics_port}/metrics`` (0: a free port; see
        ``metrics_url`` and ``jetkit.metrics``). Every option is checked here, before
        anything starts (jk.ConfigError).
        """
        opts = open_options(**{k: v for k, v in locals().items() if k != "cls"})

        async def factory() -> Stream:
            stream = cls(opts)
            try:
                await stream._start()
            except BaseException:
                await stream._teardown()
                raise
            return stream

        return _Opener(factory)

    async def _start(self) -> None:
        opts = self._opts
        if opts.metrics_port is not None:  # first: a port in use stops nothing started
            self._serve_metrics(opts.metrics_host, opts.metrics_port)
        if self._store is None:
            assert opts.servers is not None
            await self._connect(opts.servers, opts.user, opts.password)
        else:
            await self._store.open(opts.user, opts.password, opts.token, self._connect_one)
        self._identity = self._conn.identity()
        await self._publisher.acked.start()
        await self._report_damage()

    def _serve_metrics(self, host: str, port: int) -> None:
        from .metrics import MetricsServer

        collector = self._enable_metrics()
        try:
            self._metrics_server = MetricsServer(host, port, collector)
        except socket.gaierror as exc:
            raise ConfigError(
                f"metrics_host {host!r} is not a host name or address ({exc.strerror}): use "
                "'127.0.0.1' (this machine only), or an address of this machine"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"cannot serve metrics on {host}:{port}: the port is in use; pick another "
                    "metrics_port, or 0 for a free one"
                ) from None
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): check "
                "metrics_host (an address of this machine) and metrics_port"
            ) from None

    def _enable_metrics(self) -> Collector:
        """The Stream's metrics collector; counting starts with the first call."""
        if self._metrics is None:
            from .metrics import Collector

            self._metrics = Collector(self)
            self._publisher.count(self._metrics.publishes)
            for sub in self._subs:
                sub.time_handler(self._metrics.timer(sub))
        return self._metrics

    @property
    def metrics_url(self) -> str | None:
        """Where this Stream serves its Prometheus metrics (None: metrics_port not set)."""
        return self._metrics_server.url if self._metrics_server is not None else None

    async def _connect_one(self, url: str, user: str | None, password: str | None) -> None:
        await self._connect([url], user, password)

    async def _connect(self, urls: list[str], user: str | None, password: str | None) -> None:
        opts = self._opts
        await self._conn.connect(
            urls,
            user=user,
            password=password,
            token=opts.token,
            tls=opts.tls,
            timeout=opts.connect_timeout,
            name=opts.name,
            on_error=self._on_error,
            on_disconnect=self._on_disconnect,
            on_reconnect=self._on_reconnect,
        )

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connection events -----------------------------------------------------------------

    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_error(self, exc: Exception) -> None:
        # (drops are counted by the subscriptions themselves: their messages never
        # reach nats-py's queues, so its slow-consumer errors are not about them)
        self._log.debug("connection error: %r", exc)

    async def _on_disconnect(self) -> None:
        self._publisher.acked.connection_lost()
        for sub in list(self._subs):
            if isinstance(sub, JetStreamSubscription):
                sub.connection_lost()
        if self._closed:
            return
        self._log.warning("disconnected from NATS; reconnecting")
        if self._store is not None:
            self._store.connection_lost(lambda: self._closed or self._conn.is_connected)

    async def _on_reconnect(self) -> None:
        self._log.warning("reconnected to NATS at %s", self._conn.url)
        self._background(self._report_damage())
        before, self._identity = self._identity, self._conn.identity()
        restarted = before[0] == self._identity[0] and before[1] != self._identity[1]
        for sub in list(self._subs):
            if isinstance(sub, JetStreamSubscription):
                sub.on_reconnect(restarted)

    def _disk_error(self) -> str | None:
        server = self._store.server if self._store is not None else None
        return server.storage_error if server is not None else None

    def _on_storage_error(self, detail: str) -> None:
        self._publisher.disk_full_now()

    async def _report_damage(self) -> None:
        """Log what the embedded server's last start found damaged in the store."""
        server = self._store.server if self._store is not None else None
        if server is None or not server.damage:
            return
        damage, server.damage = server.damage, _damage.Damage()
        self._topics.damaged.update(damage.streams)
        await _damage.report(damage, server.store_dir, self._api, self._log)

    # -- properties ------------------------------------------------------------------------

    @property
    def default_mode(self) -> TopicMode:
        return self._topics.default_mode

    @property
    def store_dir(self) -> Path | None:
        """The embedded server's store (None for an external server)."""
        return self._store.path if self._store is not None else None

    @property
    def server_url(self) -> str | None:
        """The URL this Stream is connected to."""
        return self._conn.url

    @property
    def embedded(self) -> bool:
        """True when this Stream started and owns its nats-server."""
        return self._store is not None and self._store.server is not None

    def connect_info(self) -> dict[str, Any]:
        """How another client reaches this Stream's server: ``nats.connect(**info)``.

        ``servers`` plus ``user``/``password`` or ``token`` (for an embedded store,
        the generated credentials; keep them secret) and ``tls`` if one was given.
        """
        self._check_open()
        return dict(self._conn.options)

    @property
    def max_payload(self) -> int:
        return self._conn.max_payload

    @property
    def connected(self) -> bool:
        """Whether the connection to NATS is up now (False while it reconnects)."""
        return self._conn.is_connected

    @property
    def closed(self) -> bool:
        """Whether close() was called (or opening failed)."""
        return self._closed

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs)

    def mode_for(self, topic: str) -> TopicMode:
        """The mode a topic uses: its declare_topic mode, else the Stream's default."""
        return self._topics.mode_for(topic)

    # -- publishing ------------------------------------------------------------------------

    async def _settle_registrations(self) -> None:
        if self._forked_from is None:  # (a forked child: the caller's check raises)
            await self._regs.settle()

    @overload
    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> Coroutine[Any, Any, PubAck | None]: ...

    @overload
    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> Coroutine[Any, Any, ScheduledMessage]: ...

    @overload
    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: float | dt.timedelta,
        ttl: float | dt.timedelta | None = None,
    ) -> Coroutine[Any, Any, ScheduledMessage]: ...

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime | None = None,
        deliver_after: float | dt.timedelta | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> Coroutine[Any, Any, PubAck | ScheduledMessage | None]:
        """Publish ``data`` to ``topic`` (``await`` it).

        JetStream topics: returns the PubAck once the server stored the message (raises
        jk.TimeoutError if no ack arrives within ``publish_timeout``; it is never dropped
        silently). ``msg_id`` sets ``Nats-Msg-Id``: a second publish with the same id within
        the duplicate window is not stored again and returns ``duplicate=True``.
        Core topics: returns None once the message is handed to the connection.

        ``deliver_at`` (an aware datetime) or ``deliver_after`` (seconds): the server
        holds the message and delivers it then; returns a jk.ScheduledMessage for
        ``cancel_scheduled``. ``ttl`` (seconds, at least 1): the message expires from
        the topic that long after it is stored (after it is delivered, when scheduled).
        Both need a JetStream topic; see docs/concepts/scheduling-and-ttl.md.
        """
        # the hot path: a plain function handing over the publisher's coroutine (one
        # coroutine per publish, not two); registrations, close, schedules and TTLs take
        # the long way
        if (
            self._registrations
            or self._closed
            or deliver_at is not None
            or deliver_after is not None
            or ttl is not None
        ):
            return self._publish_after_checks(
                topic, data, headers, msg_id, deliver_at, deliver_after, ttl
            )
        return self._publisher.publish(topic, data, headers, msg_id)

    async def _publish_after_checks(
        self,
        topic: str,
        data: bytes,
        headers: dict[str, str] | None,
        msg_id: str | None,
        deliver_at: object,
        deliver_after: object,
        ttl: object,
    ) -> PubAck | ScheduledMessage | None:
        if self._registrations:
            await self._settle_registrations()
        self._check_open()
        if deliver_at is None and deliver_after is None and ttl is None:
            return await self._publisher.publish(topic, data, headers, msg_id)
        return await self._scheduler.publish(
            topic, data, headers, msg_id, deliver_at, deliver_after, ttl
        )

    @overload
    async def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck | None: ...

    @overload
    async def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> ScheduledMessage: ...

    @overload
    async def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: float | dt.timedelta,
        ttl: float | dt.timedelta | None = None,
    ) -> ScheduledMessage: ...

    async def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime | None = None,
        deliver_after: float | dt.timedelta | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck | ScheduledMessage | None:
        """Encode ``value`` (dataclass, Struct, pydantic model, dict, list) as JSON and
        publish it (the same options as ``publish``)."""
        data = encode_json(value)
        if deliver_at is None and deliver_after is None and ttl is None:
            return await self.publish(topic, data, headers=headers, msg_id=msg_id)
        return await self._publish_after_checks(
            topic, data, headers, msg_id, deliver_at, deliver_after, ttl
        )

    async def publish_many(
        self,
        topic: str,
        payloads: Iterable[bytes],
        *,
        headers: dict[str, str] | None = None,
        window: int = 256,
        ttl: float | dt.timedelta | None = None,
    ) -> list[PubAck | None]:
        """Publish many payloads to one topic with up to ``window`` acks outstanding.

        JetStream: returns every PubAck in order; if any publish failed, raises
        PublishBatchError whose ``results`` hold a PubAck or the exception per payload.
        Core: publishes them all and returns a list of None. ``ttl`` as for ``publish``
        (the same for every message); scheduled delivery is one ``publish`` per message.
        """
        if self._registrations:
            await self._settle_registrations()
        self._check_open()
        if ttl is not None:
            headers = await self._scheduler.expiring_many(topic, headers, ttl)
        return await self._publisher.publish_many(topic, payloads, headers, window)

    async def cancel_scheduled(
        self, scheduled: ScheduledMessage | str, *, msg_id: str | None = None
    ) -> bool:
        """Cancel a scheduled message: the jk.ScheduledMessage ``publish`` returned, or
        the topic and the ``msg_id`` it was published with.

        Returns True if it was still pending and will now never be delivered; False if
        it was already delivered, cancelled before, or is unknown.
        """
        if self._registrations:
            await self._settle_registrations()
        self._check_open()
        return await self._scheduler.cancel(scheduled, msg_id)

    # -- subscribing -----------------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        handler: Callable[..., Any],
        *,
        durable: str | None = None,
        queue_group: str | None = None,
        ack: AckPolicy = AckPolicy.AUTO,
        max_deliver: int | None = None,
        backoff: Sequence[Delay] | Delay | None = None,
        start_at: StartAt = StartAt.NEW,
        start_time: dt.datetime | float | None = None,
        start_seq: int | None = None,
        concurrency: int = 1,
        buffer_size: int = 1024,
        backpressure: Backpressure = Backpressure.BLOCK,
        dlq: str | None = None,
        ack_wait: float = 30.0,
        recreate: bool = False,
        key: str | Callable[[Message], str | None] | None = None,
    ) -> Subscription:
        """Call ``handler`` for every message on ``topic`` (see the README for semantics)."""
        self._check_open()
        options = {k: v for k, v in locals().items() if k not in ("self", "topic", "handler")}
        return self._track(await self._subscriber.subscribe(topic, handler, options))

    def _track(self, sub: Subscription) -> Subscription:
        """Keep ``sub`` among the Stream's subscriptions until it closes."""
        self._subs.add(sub)
        sub.on_closed = self._untrack
        if self._metrics is not None:
            sub.time_handler(self._metrics.timer(sub))
        return sub

    def _local_consumers(self, stream: str, consumer: str) -> list[JetStreamSubscription]:
        return [
            sub
            for sub in self._subs
            if isinstance(sub, JetStreamSubscription)
            and sub.stream == stream
            and sub.consumer == consumer
        ]

    def _untrack(self, sub: Subscription) -> None:
        if self._metrics is None:
            self._subs.discard(sub)
            return
        with self._metrics.lock:  # a scrape sees it live or retired, never neither
            self._subs.discard(sub)
            self._metrics.retire(sub)

    subscribe_json = subscribe

    def subscriber(self, topic: str, **options: Any) -> Callable[[F], F]:
        """Decorator form of ``subscribe``: ``@s.subscriber("orders.events", durable="x")``.

        The topic, the handler and the options are checked when it decorates (the errors
        ``subscribe`` would raise, raised there); the subscription is then registered in
        the background. The next publish or request on this Stream waits for it, so
        "decorate, then publish" never loses a message. A registration that fails (the
        server refuses it: a durable's config conflicts, say) is logged at ERROR at once,
        raised by the next publish or request, and, if none comes, by ``close()``.
        """
        self._check_open()

        def decorate(handler: F) -> F:
            given = inspect.signature(self.subscribe).bind(topic, handler, **options)
            given.apply_defaults()  # (an unknown option: TypeError, as from subscribe)
            checked = {k: v for k, v in given.arguments.items() if k not in ("topic", "handler")}
            self._subscriber.check(topic, handler, checked)
            self._regs.start(self._register(topic, handler, checked), topic, handler)
            return handler

        return decorate

    async def _register(self, topic: str, handler: Callable[..., Any], options: Any) -> None:
        # not subscribe(): a close that began since the decorator ran waits for this
        # registration (or cancels it) and then drains it, rather than failing it
        self._track(await self._subscriber.subscribe(topic, handler, options))

    # -- request / reply -------------------------------------------------------------------

    async def request(
        self,
        topic: str,
        data: bytes,
        timeout: float = 5.0,
        *,
        headers: dict[str, str] | None = None,
    ) -> Message:
        """Send a request (always core) and return the reply.

        Raises jk.NoRespondersError when nobody responds on ``topic``, jk.TimeoutError
        when no reply arrives within ``timeout``, and jk.RemoteError when the responder
        raised.
        """
        if self._registrations:
            await self._settle_registrations()
        self._check_open()
        return await _reqrep.request(
            self._conn, self._publisher, self._topics, topic, data, timeout, headers
        )

    async def request_json(
        self,
        topic: str,
        value: Any,
        response_type: type[T] | Any = Any,
        timeout: float = 5.0,
    ) -> T:
        """``request`` with ``value`` as JSON; the reply decoded as ``response_type``."""
        reply = await self.request(topic, encode_json(value), timeout)
        result: T = _reqrep.decode_reply(reply, response_type)
        return result

    async def respond(
        self,
        topic: str,
        handler: Callable[..., Any],
        queue_group: str | None = None,
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Answer requests on ``topic`` with ``handler``'s return value.

        The return value is the reply (bytes as-is, str as UTF-8, anything else as JSON);
        an exception becomes an error reply that ``request`` raises as jk.RemoteError.
        """
        self._check_open()
        return self._track(
            await _reqrep.respond(
                self._conn, self._topics, topic, handler, queue_group, concurrency, self._log
            )
        )

    # -- health ----------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """Server, connection and JetStream state as a dict (never raises for bad state)."""
        return await _health.report(
            self._conn, self._store, self._api, self._closed, len(self._subs)
        )

    async def healthy(self) -> None:
        """Return if server, connection and JetStream work; else raise StreamUnhealthyError."""
        await _health.check(self._conn, self._store, self._api, self._publisher, self._closed)

"""What a ``jk.Stream`` is made of, and its life: the composition root.

``Runtime`` builds the parts from the checked ``OpenSettings`` and wires them together:
the connection (``_connection``), the embedded store and its server (``_store``), the
JetStream API (``_jsapi``), the topic registry (``_topics``), publishing (``_publish``),
scheduled messages (``_schedule``), subscribing (``_subscribe``), the subscriptions that
are open, the decorator's registrations, metrics while they are on. It starts them
(``start``), hears the connection's events (disconnect, reconnect, a restarted server,
a full disk), and closes them (``_lifecycle.Shutdown``). The public calls are the facades'
(``_stream.Stream``, ``_admin.Admin``), which only check, then call a part.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from . import _damage, _fork
from ._connection import Connection
from ._consumer import JetStreamSubscription
from ._errors import ConfigError, PortInUseError, StreamClosedError
from ._failover import Failover
from ._jsapi import JsApi
from ._lifecycle import Registrations, Shutdown
from ._options import OpenSettings
from ._publish import Publisher
from ._schedule import Scheduler
from ._store import EmbeddedStore, ServerSettings
from ._subscribe import Subscriber
from ._subscription import Subscription
from ._topics import TopicRegistry

if TYPE_CHECKING:
    from ._tracing import Tracing
    from .metrics import Collector, MeteredStream, MetricsServer


class Runtime:
    """The parts of one Stream, started, watched and closed together."""

    def __init__(self, opts: OpenSettings) -> None:
        self.opts = opts
        self.drain_timeout = opts.drain_timeout
        self.log = opts.logger
        self.conn = Connection(self.log)
        self.store: EmbeddedStore | None = None
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
            self.store = EmbeddedStore(opts.store_dir, settings, self.log)
            self.store.on_storage_error = self._on_storage_error
            store_dir = self.store.path
        self.store_dir = store_dir
        self.api = JsApi(self.conn, timeout=opts.api_timeout, store_dir=store_dir)
        self.topics = TopicRegistry(self.api, opts.default_mode, self.log)
        # tracing on: OpenTelemetry is loaded, and the publisher is one that traces (off,
        # nothing of it runs: the hot paths are the same code as without it)
        self.tracing: Tracing | None = None
        if opts.tracing is False:
            self.publisher = Publisher(
                self.conn, self.topics, opts.publish_timeout, store_dir, self._disk_error
            )
        else:
            from ._tracing import TracedPublisher, Tracing

            self.tracing = Tracing(opts.tracing)
            self.publisher = TracedPublisher(
                self.conn,
                self.topics,
                opts.publish_timeout,
                store_dir,
                self._disk_error,
                self.tracing,
            )
        self.subscriber = Subscriber(
            self.conn, self.api, self.topics, self.publisher, store_dir, self.log, self.tracing
        )
        self.scheduler = Scheduler(self.conn, self.api, self.topics, self.publisher)
        self.scheduler.tracing = self.tracing
        self.subs: set[Subscription] = set()
        self.regs = Registrations(self.log)
        self.tasks: set[asyncio.Future[Any]] = set()
        self.identity = ("", "")  # the server's (name, id): a new id is a restart
        self.metrics: Collector | None = None
        self.metrics_server: MetricsServer | None = None
        self.failover: Failover | None = None  # (servers= only)
        self.closed = False
        self.owner_pid = os.getpid()
        self.forked_from: int | None = None  # set in a forked child: the parent's pid
        self.shutdown = Shutdown(self)
        _fork.track(self)

    # -- the guards every call passes ------------------------------------------------------

    def check_open(self) -> None:
        """Raise if the Stream cannot be used: closed, or this is a forked child."""
        if self.forked_from is not None:
            raise _fork.forked_error("jk.Stream", self.forked_from)
        if self.closed:
            raise StreamClosedError("this Stream is closed; open a new one with Stream.open()")

    async def ready(self) -> None:
        """Before a publish or request: the decorator's registrations are complete (one
        that failed raises here), then the Stream must be open."""
        if self.regs.tasks and self.forked_from is None:
            await self.regs.settle()
        self.check_open()

    def _after_fork_in_child(self) -> None:
        self.forked_from = self.owner_pid
        self.closed = True

    # -- starting --------------------------------------------------------------------------

    async def start(self, metrics_source: MeteredStream) -> None:
        """Serve metrics (if asked), then serve or attach to the store, or connect."""
        opts = self.opts
        if opts.metrics_port is not None:  # first: a port in use stops nothing started
            self._serve_metrics(metrics_source, opts.metrics_host, opts.metrics_port)
        if self.store is None:
            assert opts.servers is not None
            await self._connect(opts.servers, opts.user, opts.password)
        else:
            await self.store.open(opts.user, opts.password, opts.token, self._connect_one)
        self.identity = self.conn.identity()
        await self.publisher.acked.start()
        await self._report_damage()
        if opts.failover_after is not None:
            self.failover = self._failover(opts.failover_after)
            self.background(self.failover.watch())

    def _failover(self, after: float) -> Failover:
        acked, api = self.publisher.acked, self.api

        def streams() -> set[str]:
            known = self.topics.streams
            return {known[s][0] for s in acked.waiting_subjects() if s in known}

        return Failover(self.conn, after, self.log, acked=acked, api=api, streams=streams)

    def _serve_metrics(self, source: MeteredStream, host: str, port: int) -> None:
        from .metrics import MetricsServer  # (prometheus-client: loaded only when used)

        collector = self.enable_metrics(source)
        try:
            self.metrics_server = MetricsServer(host, port, collector)
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

    def enable_metrics(self, source: MeteredStream) -> Collector:
        """The metrics collector of ``source`` (this runtime's Stream); counting starts
        with the first call."""
        if self.metrics is None:
            from .metrics import Collector

            self.metrics = Collector(source)
            self.publisher.count(self.metrics.publishes)
            for sub in self.subs:
                sub.time_handler(self.metrics.timer(sub))
        return self.metrics

    async def _connect_one(self, url: str, user: str | None, password: str | None) -> None:
        await self._connect([url], user, password)

    async def _connect(self, urls: list[str], user: str | None, password: str | None) -> None:
        opts = self.opts
        await self.conn.connect(
            urls,
            user=user,
            password=password,
            token=opts.token,
            tls=opts.tls,
            timeout=opts.connect_timeout,
            name=opts.name,
            ping_interval=opts.ping_interval,
            max_outstanding_pings=opts.max_outstanding_pings,
            on_error=self._on_error,
            on_disconnect=self._on_disconnect,
            on_reconnect=self._on_reconnect,
        )

    # -- the subscriptions that are open ---------------------------------------------------

    def track(self, sub: Subscription) -> Subscription:
        """Keep ``sub`` among the Stream's subscriptions until it closes."""
        self.subs.add(sub)
        sub.on_closed = self._untrack
        if self.metrics is not None:
            sub.time_handler(self.metrics.timer(sub))
        return sub

    def _untrack(self, sub: Subscription) -> None:
        if self.metrics is None:
            self.subs.discard(sub)
            return
        with self.metrics.lock:  # a scrape sees it live or retired, never neither
            self.subs.discard(sub)
            self.metrics.retire(sub)

    def local_consumers(self, stream: str, consumer: str) -> list[JetStreamSubscription]:
        """This Stream's subscriptions on that consumer."""
        return [
            sub
            for sub in self.subs
            if isinstance(sub, JetStreamSubscription)
            and sub.stream == stream
            and sub.consumer == consumer
        ]

    # -- connection events -----------------------------------------------------------------

    def background(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in a task the close cancels."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _on_error(self, exc: Exception) -> None:
        # (drops are counted by the subscriptions themselves: their messages never
        # reach nats-py's queues, so its slow-consumer errors are not about them)
        self.log.debug("connection error: %r", exc)

    async def _on_disconnect(self) -> None:
        self.publisher.acked.connection_lost()
        self.api.connection_lost()
        for sub in list(self.subs):
            if isinstance(sub, JetStreamSubscription):
                sub.connection_lost()
        if self.closed:
            return
        self.log.warning("disconnected from NATS; reconnecting")
        if self.store is not None:
            self.store.connection_lost(lambda: self.closed or self.conn.is_connected)

    async def _on_reconnect(self) -> None:
        self.log.warning("reconnected to NATS at %s", self.conn.url)
        self.background(self._report_damage())
        before, self.identity = self.identity, self.conn.identity()
        restarted = before[0] == self.identity[0] and before[1] != self.identity[1]
        for sub in list(self.subs):
            if isinstance(sub, JetStreamSubscription):
                sub.on_reconnect(restarted)

    def _disk_error(self) -> str | None:
        server = self.store.server if self.store is not None else None
        return server.storage_error if server is not None else None

    def _on_storage_error(self, detail: str) -> None:
        self.publisher.disk_full_now()

    async def _report_damage(self) -> None:
        """Log what the embedded server's last start found damaged in the store."""
        server = self.store.server if self.store is not None else None
        if server is None or not server.damage:
            return
        damage, server.damage = server.damage, _damage.Damage()
        self.topics.damaged.update(damage.streams)
        await _damage.report(damage, server.store_dir, self.api, self.log)

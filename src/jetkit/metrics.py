"""Prometheus metrics of a Stream: counters kept by jetkit, gauges read from the server.

``Stream.open(metrics_port=9100)`` serves them at ``http://127.0.0.1:9100/metrics``.
For a registry of your own, register the Stream's collector::

    registry.register(jetkit.metrics.collector(stream))

What is counted where (nothing is counted per message while metrics are off):

- ``jetkit_received_total``, ``_acked_total``, ``_naked_total``,
  ``_dead_lettered_total``, ``_dropped_total``, ``_handler_errors_total``: the
  subscriptions' own ``stats`` (kept anyway), summed per ``{topic, consumer}`` label
  pair; a subscription that closes is added to a running total, so counters never go
  down. ``consumer`` is the durable name, else the queue group, else empty.
- ``jetkit_published_total{topic}`` / ``_publish_errors_total``: counted from the
  moment a collector exists (a publish is counted when its PubAck arrives; a core
  publish when it is handed to the connection). After 1000 distinct topics, further
  ones are counted under ``topic="_other"``.
- ``jetkit_handler_seconds``: a histogram of how long each message took to handle
  (decode, handler, settle), for the time a collector exists.
- ``jetkit_consumer_pending`` (lag), ``_consumer_ack_pending``, ``_topic_messages``,
  ``_topic_bytes``: asked from the server when scraped (cached for ``max_age``
  seconds), for every stream and consumer on it. ``jetkit_server_up`` is 1 when
  that succeeded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ._counting import Histogram, PublishCounts
from ._errors import ConfigError, ConnectionLostError

if TYPE_CHECKING:
    from ._stream import Stream
    from ._subscription import Subscription

__all__ = ["Collector", "collector"]

_STATS = (
    ("received", "received", "Messages taken from NATS by a subscription."),
    ("acked", "acked", "Messages acknowledged."),
    ("naked", "naked", "Negative acknowledgements sent (a retry)."),
    ("dead_lettered", "dead_lettered", "Messages sent to a dead-letter topic."),
    ("dropped", "dropped", "Messages dropped by a full buffer (core mode)."),
    ("handler_errors", "failed", "Handler exceptions and undecodable payloads."),
)
Labels = tuple[str, str]


def labels_of(sub: Subscription) -> Labels:
    return sub.topic, sub.metric_consumer


class Collector:
    """A prometheus-client collector for one Stream (see the module docstring)."""

    def __init__(self, stream: Stream, max_age: float = 1.0, timeout: float = 5.0) -> None:
        self._stream = stream
        self._max_age = max_age
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # held while a closing subscription moves from the live ones to the retired
        # totals, and while a scrape reads both: a counter never dips
        self.lock = threading.Lock()
        self.publishes = PublishCounts()
        self._retired: dict[Labels, dict[str, int]] = {}
        self._timers: dict[Labels, Histogram] = {}
        self._snapshot: tuple[float, list[Metric]] | None = None
        self._refreshing: asyncio.Future[list[Metric]] | None = None
        self._closed = False
        self._loop.create_task(self._refresh_quietly())  # figures for the first scrape

    # -- what the Stream tells it ----------------------------------------------------------

    def timer(self, sub: Subscription) -> Histogram:
        """The histogram ``sub``'s handler times go into (shared per label pair)."""
        return self._timers.setdefault(labels_of(sub), Histogram())

    def retire(self, sub: Subscription) -> None:
        """``sub`` closed: keep its counts in the running totals (call with ``lock``
        held, together with removing it from the Stream's subscriptions)."""
        totals = self._retired.setdefault(labels_of(sub), {})
        for name, value in sub.stats.as_dict().items():
            totals[name] = totals.get(name, 0) + value

    def close(self) -> None:
        self._closed = True

    # -- prometheus-client's side ----------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """The families' names, without samples (so a registry refuses a second
        jetkit collector instead of exposing every name twice)."""
        names = ["jetkit_published", "jetkit_publish_errors"]
        names += [f"jetkit_{metric}" for metric, _, _ in _STATS]
        return [
            *(CounterMetricFamily(name, "") for name in names),
            HistogramMetricFamily("jetkit_handler_seconds", ""),
            GaugeMetricFamily("jetkit_server_up", ""),
            *gauges([], []),
        ]

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._histograms()
        up, server = self._server_gauges()
        family = GaugeMetricFamily(
            "jetkit_server_up", "1 when the NATS server answered the scrape."
        )
        family.add_metric([], 1.0 if up else 0.0)
        yield family
        yield from server

    def _counters(self) -> Iterator[Metric]:
        published = CounterMetricFamily(
            "jetkit_published", "Messages published (JetStream: acknowledged).", labels=["topic"]
        )
        errors = CounterMetricFamily(
            "jetkit_publish_errors", "Publishes that raised.", labels=["topic"]
        )
        for family, table in (
            (published, self.publishes.published),
            (errors, self.publishes.errors),
        ):
            for topic, n in list(table.items()):
                family.add_metric([topic], n)
        yield published
        yield errors
        with self.lock:  # no subscription is between the live ones and the retired
            totals = {k: dict(v) for k, v in self._retired.items()}
            live = [(labels_of(sub), sub.stats.as_dict()) for sub in self._stream.subscriptions]
        for labels, stats in live:
            into = totals.setdefault(labels, {})
            for name, value in stats.items():
                into[name] = into.get(name, 0) + value
        for metric, field, text in _STATS:
            family = CounterMetricFamily(f"jetkit_{metric}", text, labels=["topic", "consumer"])
            for labels, counts in sorted(totals.items()):
                family.add_metric(list(labels), counts.get(field, 0))
            yield family

    def _histograms(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "jetkit_handler_seconds", "Handler run time.", labels=["topic", "consumer"]
        )
        for labels, histogram in sorted(list(self._timers.items())):
            buckets, total = histogram.buckets()
            family.add_metric(list(labels), buckets, total)
        yield family

    # -- gauges read from the server -------------------------------------------------------

    def _server_gauges(self) -> tuple[bool, list[Metric]]:
        """Whether the server is up, and its gauges (cached for max_age; none when it
        cannot be asked)."""
        if self._closed or self._stream.closed or self._loop.is_closed():
            return False, []
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - snapshot[0] < self._max_age:
            return True, snapshot[1]
        if threading.get_ident() == self._loop_thread:
            # on the event loop itself it cannot wait for the server: the last figures
            # (or none yet), the connection's state, and a refresh for the next scrape
            self._loop.create_task(self._refresh_quietly())
            if snapshot is not None:
                return True, snapshot[1]
            return self._stream.connected, []
        ask = self._shared_refresh()
        try:
            future = asyncio.run_coroutine_threadsafe(ask, self._loop)
        except RuntimeError:  # the loop closed meanwhile
            ask.close()
            return False, []
        try:
            return True, future.result(self._timeout)
        except (concurrent.futures.TimeoutError, Exception):
            future.cancel()
            return False, []

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self._shared_refresh()

    async def refresh(self) -> list[Metric]:
        """Ask the server now, for figures as of this call (a refresh already under
        way, which may have asked before, is waited for first)."""
        if self._refreshing is not None and not self._refreshing.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._refreshing)
        return await self._shared_refresh()

    async def _shared_refresh(self) -> list[Metric]:
        """Ask the server, or join the request under way (scrapes share one)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._ask())
            # a scrape that gave up waiting leaves the error to nobody: take it here
            self._refreshing.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._refreshing)

    async def _ask(self) -> list[Metric]:
        try:
            if not self._stream.connected:
                raise ConnectionLostError("not connected to NATS")
            topics = await self._stream.topics()
            consumers = [c for t in topics for c in await self._stream._stream_consumers(t.name)]
        except Exception:
            self._snapshot = None
            raise
        metrics = gauges(topics, consumers)
        self._snapshot = (time.monotonic(), metrics)
        return metrics


def gauges(topics: list[Any], consumers: list[Any]) -> list[Metric]:
    """The lag, ack-pending and size gauges of these topics and consumers."""
    families = {
        "messages": GaugeMetricFamily(
            "jetkit_topic_messages", "Messages stored.", labels=["topic"]
        ),
        "bytes": GaugeMetricFamily("jetkit_topic_bytes", "Bytes stored.", labels=["topic"]),
        "pending": GaugeMetricFamily(
            "jetkit_consumer_pending",
            "Lag: stored messages the consumer has not been delivered yet.",
            labels=["topic", "consumer"],
        ),
        "ack_pending": GaugeMetricFamily(
            "jetkit_consumer_ack_pending",
            "Messages delivered and not yet acknowledged.",
            labels=["topic", "consumer"],
        ),
    }
    subjects_of = {}
    for t in topics:
        subjects_of[t.name] = ",".join(t.subjects)
        families["messages"].add_metric([subjects_of[t.name]], t.messages)
        families["bytes"].add_metric([subjects_of[t.name]], t.bytes)
    for c in consumers:
        topic = c.filter_subject or subjects_of.get(c.stream, c.stream)
        families["pending"].add_metric([topic, c.name], c.pending)
        families["ack_pending"].add_metric([topic, c.name], c.ack_pending)
    return list(families.values())


def collector(stream: Stream) -> Collector:
    """The Stream's collector, made and switched on at the first call, which must be
    on the Stream's event loop. Register it in one registry per Stream (a registry
    refuses a second one: the names would repeat)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError(
            "call jetkit.metrics.collector(stream) from the Stream's event loop (in async "
            "code), e.g. right after Stream.open()"
        ) from None
    return stream._enable_metrics()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape is not worth a line on stderr


class MetricsServer:
    """``/metrics`` over HTTP (prometheus-client's WSGI app) in its own thread."""

    def __init__(self, host: str, port: int, source: Collector) -> None:
        from prometheus_client import CollectorRegistry, make_wsgi_app
        from prometheus_client.gc_collector import GCCollector
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        self.registry = CollectorRegistry(auto_describe=True)
        for extra in (ProcessCollector, PlatformCollector, GCCollector):
            extra(registry=self.registry)
        self.registry.register(source)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("_Server", (_ThreadedServer,), {"address_family": family})
        self._server: WSGIServer = make_server(
            host, port, make_wsgi_app(self.registry), server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="jetkit-metrics",
            daemon=True,
        )
        self._thread.start()
        self.host = host
        self.port = int(self._server.server_port)

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        try:
            self._server.shutdown()
        finally:
            self._server.server_close()
            self._thread.join(timeout=5)


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold up the process's exit

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
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ._counting import Histogram, PublishCounts
from ._errors import ConnectionLostError

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
        self.publishes = PublishCounts()
        self._retired: dict[Labels, dict[str, int]] = {}
        self._timers: dict[Labels, Histogram] = {}
        self._snapshot: tuple[float, list[Metric]] | None = None
        self._refreshing: asyncio.Future[list[Metric]] | None = None
        self._closed = False

    # -- what the Stream tells it ----------------------------------------------------------

    def timer(self, sub: Subscription) -> Histogram:
        """The histogram ``sub``'s handler times go into (shared per label pair)."""
        return self._timers.setdefault(labels_of(sub), Histogram())

    def retire(self, sub: Subscription) -> None:
        """``sub`` closed: keep its counts in the running totals."""
        totals = self._retired.setdefault(labels_of(sub), {})
        for name, value in sub.stats.as_dict().items():
            totals[name] = totals.get(name, 0) + value

    def close(self) -> None:
        self._closed = True

    # -- prometheus-client's side ----------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return []  # no samples at registration: collect() needs the event loop

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._histograms()
        gauges = self._server_gauges()
        up = GaugeMetricFamily("jetkit_server_up", "1 when the NATS server answered the scrape.")
        up.add_metric([], 0.0 if gauges is None else 1.0)
        yield up
        yield from gauges or []

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
        # list(...) copies in one step: the event loop thread may add entries meanwhile
        totals: dict[Labels, dict[str, int]] = {k: dict(v) for k, v in list(self._retired.items())}
        for sub in list(self._stream.subscriptions):
            into = totals.setdefault(labels_of(sub), {})
            for name, value in sub.stats.as_dict().items():
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

    def _server_gauges(self) -> list[Metric] | None:
        """The server's gauges (cached for max_age), or None if it cannot be asked."""
        if self._closed or self._stream.closed:
            return None
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - snapshot[0] < self._max_age:
            return snapshot[1]
        if threading.get_ident() == self._loop_thread:
            # called on the event loop itself: it cannot wait; serve the last snapshot
            self._loop.create_task(self._refresh_quietly())
            return snapshot[1] if snapshot is not None else None
        future = asyncio.run_coroutine_threadsafe(self.refresh(), self._loop)
        try:
            return future.result(self._timeout)
        except (concurrent.futures.TimeoutError, Exception):
            future.cancel()
            return None

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self.refresh()

    async def refresh(self) -> list[Metric]:
        """Ask the server now (one request in flight at a time)."""
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
    """The Stream's collector (made and switched on at the first call)."""
    return stream._enable_metrics()


class MetricsServer:
    """``/metrics`` over HTTP, served by prometheus-client in its own thread."""

    def __init__(self, host: str, port: int, source: Collector) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.gc_collector import GCCollector
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        self.registry = CollectorRegistry(auto_describe=False)
        for extra in (ProcessCollector, PlatformCollector, GCCollector):
            extra(registry=self.registry)
        self.registry.register(source)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.host = host
        self.port = int(self._server.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
            self._server.server_close()
        self._thread.join(timeout=5)

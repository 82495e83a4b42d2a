"""Prometheus metrics of a Stream: counters kept by jetkit, gauges read from the server.

``Stream.open(metrics_port=9100)`` serves them at ``http://127.0.0.1:9100/metrics``.
For a registry of your own, register the Stream's collector::

    registry.register(jetkit.metrics.collector(stream))

What is counted where (nothing is counted per message while metrics are off):

- ``jetkit_received_total``, ``_acked_total``, ``_naked_total``,
  ``_dead_lettered_total``, ``_dropped_total``, ``_handler_errors_total``: the
  subscriptions' own ``stats`` (kept anyway), summed per ``{topic, consumer}`` label
  pair; a subscription that closes is added to its pair's running total, so counters
  never go down. ``consumer`` is the durable name, else the queue group, else empty.
- ``jetkit_published_total{topic}`` / ``_publish_errors_total``: counted from the
  moment a collector exists (a publish is counted when its PubAck arrives; a core
  publish when it is handed to the connection). After 1000 distinct topics, further
  ones are counted under ``topic="_other"``.
- ``jetkit_handler_seconds``: a histogram of how long each message took to handle
  (decode, handler, settle), for the time a collector exists.
- Bounded however many subscriptions come and go: a label pair with a live
  subscription is always shown. A pair whose last subscription closed is *retired*;
  the ``MAX_RETIRED_LABELS`` most recently retired pairs are kept as they are (a
  durable that subscribes again continues from its total), and beyond that the oldest
  retired pair's counters and histogram are added to ``{topic="_other",
  consumer="_other"}`` and its own series dropped. The sum over all series never
  decreases. A pair that subscribes again after it was folded starts from zero (a
  counter reset, which Prometheus's ``rate()`` and ``increase()`` handle).
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
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ._counting import Histogram, PublishCounts
from ._errors import ConnectionLostError

if TYPE_CHECKING:
    from ._info import TopicOverview
    from ._subscription import Subscription

__all__ = ["Collector", "MeteredStream", "collector"]


class MeteredStream(Protocol):
    """What the metrics need of a Stream (``jk.Stream`` offers it): its live
    subscriptions (their counters), whether it is closed or connected, the server's
    topics and consumers (the gauges), and its one collector."""

    @property
    def subscriptions(self) -> list[Subscription]: ...

    @property
    def closed(self) -> bool: ...

    @property
    def connected(self) -> bool: ...

    async def overview(self) -> list[TopicOverview]: ...

    def metrics_collector(self) -> Collector: ...


_STATS = (
    ("received", "received", "Messages taken from NATS by a subscription."),
    ("acked", "acked", "Messages acknowledged."),
    ("naked", "naked", "Negative acknowledgements sent (a retry)."),
    ("dead_lettered", "dead_lettered", "Messages sent to a dead-letter topic."),
    ("dropped", "dropped", "Messages dropped by a full buffer (core mode)."),
    ("handler_errors", "failed", "Handler exceptions and undecodable payloads."),
)
Labels = tuple[str, str]
MAX_RETIRED_LABELS = 100  # label pairs kept without a live subscription (then: _other)
OTHER: Labels = ("_other", "_other")


def labels_of(sub: Subscription) -> Labels:
    return sub.topic, sub.metric_consumer


class _Pair:
    """What one ``{topic, consumer}`` label pair has counted: the totals of its closed
    subscriptions, the handler times of all of them, how many are live."""

    __slots__ = ("histogram", "live", "totals")

    def __init__(self) -> None:
        self.live = 0
        self.totals: dict[str, int] = {}
        self.histogram = Histogram()

    def add(self, counts: dict[str, int]) -> None:
        for name, value in counts.items():
            self.totals[name] = self.totals.get(name, 0) + value

    def absorb(self, other: _Pair) -> None:
        """Take ``other``'s counts and handler times (it is dropped: none is live)."""
        self.add(other.totals)
        for i, n in enumerate(other.histogram.counts):
            self.histogram.counts[i] += n
        self.histogram.sum += other.histogram.sum


class Collector:
    """A prometheus-client collector for one Stream (see the module docstring)."""

    def __init__(self, stream: MeteredStream, max_age: float = 1.0, timeout: float = 5.0) -> None:
        self._stream = stream
        self._max_age = max_age
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # held while a closing subscription moves from the live ones to the retired
        # totals (and a retired pair into _other), and while a scrape reads them: a
        # counter never dips
        self.lock = threading.Lock()
        self.publishes = PublishCounts()
        self._pairs: dict[Labels, _Pair] = {}  # every pair shown, _other included
        self._retired: dict[Labels, None] = {}  # pairs with no live subscription, oldest first
        self._live: set[Subscription] = set()
        self._snapshot: tuple[float, list[Metric]] | None = None
        self._refreshing: asyncio.Future[list[Metric]] | None = None
        self._closed = False
        self._loop.create_task(self._refresh_quietly())  # figures for the first scrape

    # -- what the Stream tells it ----------------------------------------------------------

    def timer(self, sub: Subscription) -> Histogram:
        """``sub`` is live: the histogram its handler times go into (shared per label
        pair). A retired pair is live again, with its totals."""
        labels = labels_of(sub)
        with self.lock:
            pair = self._pairs.get(labels)
            if pair is None:
                pair = self._pairs[labels] = _Pair()
            if sub not in self._live:
                self._live.add(sub)
                pair.live += 1
                self._retired.pop(labels, None)
            return pair.histogram

    def retire(self, sub: Subscription) -> None:
        """``sub`` closed: keep its counts in its pair's running totals (call with
        ``lock`` held, together with removing it from the Stream's subscriptions). A pair
        left without a live subscription is retired; past ``MAX_RETIRED_LABELS`` of them,
        the oldest is folded into ``_other``."""
        labels = labels_of(sub)
        pair = self._pairs.get(labels)
        if pair is None:
            pair = self._pairs[labels] = _Pair()
        pair.add(sub.stats.as_dict())
        if sub in self._live:
            self._live.discard(sub)
            pair.live -= 1
        if pair.live > 0 or labels == OTHER:
            return
        self._retired.pop(labels, None)  # the newest retired goes last
        self._retired[labels] = None
        while len(self._retired) > max(0, MAX_RETIRED_LABELS):
            oldest = next(iter(self._retired))
            del self._retired[oldest]
            folded = self._pairs.pop(oldest)
            other = self._pairs.get(OTHER)
            if other is None:
                other = self._pairs[OTHER] = _Pair()
            other.absorb(folded)

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
            totals = {k: dict(v.totals) for k, v in self._pairs.items()}
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
        with self.lock:  # a fold into _other is seen whole or not at all
            shown = [(k, v.histogram.buckets()) for k, v in self._pairs.items()]
        for labels, (buckets, total) in sorted(shown):
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
            overview = await self._stream.overview()
        except Exception:
            self._snapshot = None
            raise
        metrics = gauges([o.topic for o in overview], [c for o in overview for c in o.consumers])
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


def collector(stream: MeteredStream) -> Collector:
    """The Stream's collector (``stream.metrics_collector()``), made and switched on at
    the first call, which must be on the Stream's event loop. Register it in one
    registry per Stream (a registry refuses a second one: the names would repeat)."""
    return stream.metrics_collector()


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

"""What ``jetkit run``'s supervisor serves over HTTP: the health probes (``/healthz``,
``/readyz``) and the app's one metrics endpoint (``/metrics``, its workers' metrics
merged), on asyncio's streams: GET only, one request per connection, no dependency.

Metrics: each worker serves its own on a free loopback port (its ``metrics_port=0``)
and reports the URL; on a scrape the supervisor reads every live worker's, adds a
``worker="<slot>"`` label to each sample and serves them as one exposition, with its own
``jetkit_run_worker_ready`` and ``jetkit_run_worker_restarts_total`` per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from ._errors import ConfigError

Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Awaitable[Response]]

TEXT = "text/plain; charset=utf-8"
READ_TIMEOUT = 5.0  # a client that sends no request line within it is dropped
SCRAPE_TIMEOUT = 5.0  # a worker whose metrics take longer is left out of that scrape
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def start_http(
    host: str, port: int, routes: Mapping[str, Route], option: str
) -> asyncio.Server:
    """Serve ``routes`` (path -> handler) on ``host:port``; jk.ConfigError if it cannot."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body = await _answer(reader, routes)
            head = (
                f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        return await asyncio.start_server(handle, host, port, reuse_address=True)
    except OSError as exc:
        taken = exc.errno == errno.EADDRINUSE
        raise ConfigError(
            f"cannot serve {option} on {host}:{port}: "
            + ("the port is in use; choose another port" if taken else f"{exc.strerror or exc}")
        ) from None


async def _answer(reader: asyncio.StreamReader, routes: Mapping[str, Route]) -> Response:
    line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
    while (await asyncio.wait_for(reader.readline(), READ_TIMEOUT)).strip():
        pass  # the headers: not needed
    method, target, *_ = [*line.decode("latin-1").split(), "", ""]
    route = routes.get(urllib.parse.urlsplit(target).path)
    if route is None:
        return 404, TEXT, b"not found\n"
    if method not in ("GET", "HEAD"):
        return 405, TEXT, b"GET only\n"
    return await route()


def url_of(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


async def fetch(url: str) -> str | None:
    """GET ``url`` (http, loopback: a worker's metrics); None if it did not answer 200."""
    parts = urllib.parse.urlsplit(url)
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            try:
                path = parts.path or "/"
                writer.write(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
                await writer.drain()
                raw = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    if head.split(b" ", 2)[1:2] != [b"200"]:
        return None
    return body.decode("utf-8", "replace")


class Merged(Collector):
    """The workers' metric families as one: each sample labelled with its worker."""

    def __init__(self, texts: dict[int, str], own: Iterable[Metric]) -> None:
        self._texts = texts
        self._own = list(own)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for index, text in sorted(self._texts.items()):
            try:
                parsed = list(text_string_to_metric_families(text))
            except ValueError:
                continue  # a worker's exposition that cannot be read: left out
            for family in parsed:
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type, family.unit)
                    families[family.name] = merged
                for sample in family.samples:
                    labels = {"worker": str(index), **sample.labels}
                    merged.samples.append(sample._replace(labels=labels))
        yield from families.values()
        yield from self._own


def exposition(texts: dict[int, str], ready: dict[int, bool], restarts: dict[int, int]) -> bytes:
    """One Prometheus exposition: the workers' metrics (``texts``) and the supervisor's."""
    up = GaugeMetricFamily(
        "jetkit_run_worker_ready",
        "1 when the worker is connected with its subscriptions registered",
        labels=["worker"],
    )
    again = CounterMetricFamily(
        "jetkit_run_worker_restarts",
        "Times the worker was started again after it exited",
        labels=["worker"],
    )
    for index in sorted(ready):
        up.add_metric([str(index)], 1.0 if ready[index] else 0.0)
        again.add_metric([str(index)], restarts.get(index, 0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged(texts, [up, again]))
    return generate_latest(registry)


METRICS_TYPE = CONTENT_TYPE_LATEST

"""Prometheus metrics: scraped over HTTP or collected into a user's own registry, their
label pairs bounded, their counters never going down, server figures read at scrape
time. (The admin calls are in test_admin.py, jetkit top in tests/tools/test_top.py.)"""

from __future__ import annotations

import asyncio
import itertools
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import jetkit as jk
import jetkit.metrics
from conftest import ExternalServer, wait_until, wait_until_async

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(url: str) -> Samples:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            return str(resp.read().decode())

    return parse(await asyncio.to_thread(get))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
async def ms(store: Path) -> AsyncIterator[jk.Stream]:
    """A Stream on the session's server serving metrics on a free port."""
    s = await jk.Stream.open(
        store_dir=store, default_mode=jk.TopicMode.JETSTREAM, metrics_port=0, drain_timeout=5
    )
    yield s
    await s.close()


async def test_metrics_over_http_count_publishes_acks_naks_and_dead_letters(
    ms: jk.Stream, topic: str
) -> None:
    assert ms.metrics_url is not None and ms.metrics_url.startswith("http://127.0.0.1:")
    dlq = f"{topic}.dead"
    handled: list[int] = []

    async def handler(msg: jk.Message) -> None:
        handled.append(msg.seq or 0)
        if msg.data == b"bad":
            raise RuntimeError("refused")

    await ms.subscribe(
        topic,
        handler,
        durable="ops",
        ack=jk.AckPolicy.MANUAL,
        max_deliver=2,
        backoff=0.01,
        dlq=dlq,
        start_at=jk.StartAt.ALL,
    )
    for i in range(5):
        await ms.publish(topic, str(i).encode())
    await ms.publish(topic, b"bad")
    await ms.publish(topic, b"last")
    await wait_until(lambda: len(handled) == 8)  # 7 messages, "bad" twice
    await wait_until_async(lambda: _dead(ms, dlq))

    samples = await scrape(ms.metrics_url)
    labels = {"topic": topic, "consumer": "ops"}
    assert value(samples, "jetkit_published_total", topic=topic) == 7
    # a dead letter counts as dead-lettered, not as a publish of the application's
    assert ("jetkit_published_total", (("topic", dlq),)) not in samples
    assert value(samples, "jetkit_received_total", **labels) == 8
    assert value(samples, "jetkit_acked_total", **labels) == 6
    assert value(samples, "jetkit_naked_total", **labels) == 1
    assert value(samples, "jetkit_dead_lettered_total", **labels) == 1
    assert value(samples, "jetkit_handler_errors_total", **labels) == 2
    assert value(samples, "jetkit_dropped_total", **labels) == 0
    assert value(samples, "jetkit_handler_seconds_count", **labels) == 8
    assert value(samples, "jetkit_handler_seconds_bucket", le="+Inf", **labels) == 8
    assert value(samples, "jetkit_server_up") == 1
    assert value(samples, "jetkit_topic_messages", topic=topic) == 7
    assert value(samples, "jetkit_topic_bytes", topic=topic) > 0
    assert value(samples, "jetkit_consumer_pending", **labels) == 0
    assert value(samples, "jetkit_consumer_ack_pending", **labels) == 0
    assert ("process_cpu_seconds_total", ()) in samples  # prometheus-client's own


async def _dead(s: jk.Stream, dlq: str) -> bool:
    try:
        return (await s.topic_info(dlq)).messages == 1
    except jk.NotFoundError:
        return False


async def test_lag_is_read_from_the_server_at_scrape_time(ms: jk.Stream, topic: str) -> None:
    await ms.declare_topic(topic)
    gate = asyncio.Event()
    seen: list[bytes] = []

    async def slow(data: bytes) -> None:
        seen.append(data)
        await gate.wait()

    sub = await ms.subscribe(topic, slow, durable="laggard", ack=jk.AckPolicy.MANUAL, buffer_size=1)
    await ms.publish_many(topic, [b"m"] * 50)
    await wait_until(lambda: len(seen) == 1)
    labels = {"topic": topic, "consumer": "laggard"}

    collector = jetkit.metrics.collector(ms)
    for _ in range(100):  # until the consumer stands still between the two reads
        before = await ms.consumer_info(topic, "laggard")
        await collector.refresh()  # past the 1 s cache: ask the server now
        samples = await scrape(ms.metrics_url or "")
        after = await ms.consumer_info(topic, "laggard")
        if (before.pending, before.ack_pending) == (after.pending, after.ack_pending):
            break
    else:
        raise AssertionError("the consumer never stood still")
    assert value(samples, "jetkit_consumer_pending", **labels) == after.pending
    assert value(samples, "jetkit_consumer_ack_pending", **labels) == after.ack_pending
    assert after.pending > 0 and after.pending + after.ack_pending == 50
    gate.set()
    await sub.drain(timeout=10)


async def test_counters_of_a_closed_subscription_are_kept(ms: jk.Stream, topic: str) -> None:
    await ms.declare_topic(topic, mode=jk.TopicMode.CORE)
    got: list[bytes] = []

    async def keep(data: bytes) -> None:
        got.append(data)

    async def ignore(data: bytes) -> None:
        pass

    sub = await ms.subscribe(topic, keep)
    sub2 = await ms.subscribe(topic, ignore)
    for _ in range(3):
        await ms.publish(topic, b"x")
    await wait_until(lambda: len(got) == 3 and sub2.stats.received == 3)
    await sub.drain()
    samples = await scrape(ms.metrics_url or "")
    # both core subscriptions share the label pair; the closed one still counts
    assert value(samples, "jetkit_received_total", topic=topic, consumer="") == 6
    await sub2.drain()
    samples = await scrape(ms.metrics_url or "")
    assert value(samples, "jetkit_received_total", topic=topic, consumer="") == 6


def total(samples: Samples, name: str) -> float:
    """The sum of a family's samples over every label pair."""
    return sum(v for (n, _), v in samples.items() if n == name)


def pairs(samples: Samples, name: str) -> set[tuple[tuple[str, str], ...]]:
    return {labels for n, labels in samples if n == name}


async def _receive_once_and_close(s: jk.Stream, topic: str) -> None:
    """One core subscription on ``topic`` that takes one message, then closes."""
    got = asyncio.Event()

    async def handle(data: bytes) -> None:
        got.set()

    sub = await s.subscribe(topic, handle)
    await s.publish(topic, b"x")
    await asyncio.wait_for(got.wait(), 10)
    await sub.drain()


async def test_closed_subscriptions_leave_a_bounded_exposition(store: Path, topic: str) -> None:
    """Subscriptions coming and going on ever new topics: the label pairs of retired
    ones are kept up to a bound, then folded into ``_other``; the totals stay exact."""
    n = 300
    async with jk.Stream.open(store_dir=store, drain_timeout=5) as s:
        registry = CollectorRegistry()
        registry.register(jetkit.metrics.collector(s))
        for i in range(n):
            await _receive_once_and_close(s, f"{topic}.{i}")
        samples = parse((await asyncio.to_thread(generate_latest, registry)).decode())
    bound = jetkit.metrics.MAX_RETIRED_LABELS + 1  # the newest retired ones and _other
    assert bound < n
    for name in ("jetkit_received_total", "jetkit_acked_total", "jetkit_handler_seconds_count"):
        assert len(pairs(samples, name)) == bound, name
    assert total(samples, "jetkit_received_total") == n
    assert total(samples, "jetkit_handler_seconds_count") == n
    other = {"topic": "_other", "consumer": "_other"}
    assert value(samples, "jetkit_received_total", **other) == n - bound + 1
    assert value(samples, "jetkit_handler_seconds_bucket", le="+Inf", **other) == n - bound + 1
    newest = {"topic": f"{topic}.{n - 1}", "consumer": ""}
    assert value(samples, "jetkit_received_total", **newest) == 1


async def test_a_durable_that_comes_back_continues_its_counters(
    ms: jk.Stream, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ms.declare_topic(topic)
    handled: list[bytes] = []

    async def handle(data: bytes) -> None:
        handled.append(data)

    async def received() -> tuple[float | None, float]:
        samples = await scrape(ms.metrics_url or "")
        key = ("jetkit_received_total", (("consumer", "again"), ("topic", topic)))
        return samples.get(key), total(samples, "jetkit_received_total")

    seen: list[float] = []  # the sum over all series, scrape after scrape
    expected = 0
    for batch in (3, 2):
        sub = await ms.subscribe(topic, handle, durable="again", start_at=jk.StartAt.ALL)
        await ms.publish_many(topic, [b"m"] * batch)
        expected += batch
        await wait_until(lambda n=expected: len(handled) == n)  # type: ignore[misc]
        mine, everything = await received()
        seen.append(everything)
        await sub.drain()
        after, everything = await received()
        seen.append(everything)
        assert mine == after == len(handled)  # closing keeps it; coming back continues
    # retire more label pairs than the bound keeps: the durable's pair is the oldest,
    # folded into _other first; coming back then starts its series over
    monkeypatch.setattr(jetkit.metrics, "MAX_RETIRED_LABELS", 3)
    await ms.declare_topic(f"{topic}.core.>", mode=jk.TopicMode.CORE)
    for i in range(4):
        await _receive_once_and_close(ms, f"{topic}.core.{i}")
        seen.append((await received())[1])
    samples = await scrape(ms.metrics_url or "")
    assert (("consumer", "again"), ("topic", topic)) not in pairs(samples, "jetkit_received_total")
    assert value(samples, "jetkit_received_total", topic="_other", consumer="_other") == 5 + 1
    assert len(pairs(samples, "jetkit_received_total")) == 3 + 1
    sub = await ms.subscribe(topic, handle, durable="again")
    await ms.publish(topic, b"one more")
    await wait_until(lambda: len(handled) == 6)
    mine, everything = await received()
    seen.append(everything)
    assert mine == 1  # a counter reset for this series; the total goes on
    await sub.drain()
    seen.append((await received())[1])
    assert seen == sorted(seen) and seen[-1] == 5 + 4 + 1


async def test_publish_errors_are_counted(ms: jk.Stream, topic: str) -> None:
    await ms.declare_topic(topic, max_msgs=1, discard=jk.Discard.NEW)
    await ms.publish(topic, b"fits")
    with pytest.raises(jk.JetkitError):
        await ms.publish(topic, b"refused: the topic is full")
    samples = await scrape(ms.metrics_url or "")
    assert value(samples, "jetkit_published_total", topic=topic) == 1
    assert value(samples, "jetkit_publish_errors_total", topic=topic) == 1


async def test_the_collector_works_in_a_users_own_registry_once_per_stream(
    store: Path, topic: str
) -> None:
    async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as js:
        await _collect_in_own_registry(js, topic)


async def _collect_in_own_registry(js: jk.Stream, topic: str) -> None:
    registry = CollectorRegistry()
    collector = jetkit.metrics.collector(js)
    assert jetkit.metrics.collector(js) is collector  # one per Stream
    registry.register(collector)
    with pytest.raises(ValueError, match="Duplicated"):  # the names would repeat
        registry.register(jetkit.metrics.collector(js))
    await js.publish(topic, b"counted")
    await collector.refresh()  # the figures are cached for a second: not the old ones
    # generate_latest blocks: run it off the event loop, as an HTTP server thread would
    samples = parse((await asyncio.to_thread(generate_latest, registry)).decode())
    assert value(samples, "jetkit_published_total", topic=topic) == 1
    assert value(samples, "jetkit_server_up") == 1
    assert value(samples, "jetkit_topic_messages", topic=topic) == 1
    # on the event loop itself it cannot wait for the server: counters still come,
    # with the last figures the server gave
    samples = parse(generate_latest(registry).decode())
    assert value(samples, "jetkit_published_total", topic=topic) == 1
    assert value(samples, "jetkit_server_up") == 1

    def off_the_loop() -> None:
        jetkit.metrics.collector(js)

    with pytest.raises(jk.ConfigError, match="event loop"):
        await asyncio.to_thread(off_the_loop)


async def test_metrics_are_off_by_default(core: jk.Stream) -> None:
    assert core.metrics_url is None
    assert core._publisher.counts is None  # nothing counted per publish


async def test_metrics_server_stops_with_the_stream(store: Path) -> None:
    s = await jk.Stream.open(store_dir=store, metrics_port=0)
    url = s.metrics_url
    assert url is not None
    assert value(await scrape(url), "jetkit_server_up") == 1
    await s.close()
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(urllib.request.urlopen, url, None, 5)


@pytest.mark.slow
async def test_server_up_is_0_while_the_server_is_gone(tmp_path: Path) -> None:
    server = ExternalServer(tmp_path / "ext")
    await server.start()
    try:
        s = await jk.Stream.open(servers=[server.url], metrics_port=0, connect_timeout=2)
        try:
            url = s.metrics_url or ""
            await s.declare_topic("ops.up", mode=jk.TopicMode.JETSTREAM)
            samples = await scrape(url)
            assert value(samples, "jetkit_server_up") == 1
            assert value(samples, "jetkit_topic_messages", topic="ops.up") == 0
            await server.stop()
            await wait_until(lambda: not s.connected)
            with pytest.raises(jk.ConnectionLostError):
                await jetkit.metrics.collector(s).refresh()  # fails at once: cache dropped
            samples = await scrape(url)
            assert value(samples, "jetkit_server_up") == 0
            # no stale server figures while it cannot be asked
            assert not any(name == "jetkit_topic_messages" for name, _ in samples)
        finally:
            await s.close()
    finally:
        await server.stop()


async def test_metrics_port_in_use_is_a_clear_error(store: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(jk.PortInUseError, match=f"metrics on 127.0.0.1:{port}.*metrics_port"):
            await jk.Stream.open(store_dir=store, metrics_port=port)


async def test_metrics_collector_is_the_collector_of_jetkit_metrics(
    store: Path, topic: str
) -> None:
    async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
        collector = s.metrics_collector()
        assert jetkit.metrics.collector(s) is collector is s.metrics_collector()
        await s.publish(topic, b"x")
        assert collector.publishes.published[topic] == 1  # counting since the first call

        def off_the_loop() -> None:
            s.metrics_collector()

        with pytest.raises(jk.ConfigError, match="event loop"):
            await asyncio.to_thread(off_the_loop)


async def test_a_publish_that_fails_its_checks_is_counted_as_invalid(ms: jk.Stream) -> None:
    for bad in (123, None, b"bytes.topic", "has space", ""):
        with pytest.raises(jk.InvalidTopicError):
            await ms.publish(bad, b"x")  # type: ignore[arg-type]
    with pytest.raises(jk.InvalidTopicError):
        await ms.publish_many(456, [b"x"])  # type: ignore[arg-type]
    samples = await scrape(ms.metrics_url or "")  # still answers (a bad label broke it)
    assert value(samples, "jetkit_publish_errors_total", topic="_invalid") == 6


async def test_counters_never_dip_while_subscriptions_close(ms: jk.Stream, topic: str) -> None:
    await ms.declare_topic(topic, mode=jk.TopicMode.CORE)
    url = ms.metrics_url or ""
    stop = threading.Event()
    seen: list[float] = []

    def scrape_loop() -> None:
        while not stop.is_set():
            with urllib.request.urlopen(url, timeout=10) as resp:
                samples = parse(resp.read().decode())
            key = ("jetkit_received_total", (("consumer", ""), ("topic", topic)))
            seen.append(samples.get(key, 0.0))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: the window is a few bytecodes
    scraper = asyncio.ensure_future(asyncio.to_thread(scrape_loop))
    try:

        async def ignore(data: bytes) -> None:
            pass

        for _ in range(30):
            subs = [await ms.subscribe(topic, ignore) for _ in range(5)]
            await ms.publish_many(topic, [b"x"] * 4)
            await wait_until(lambda subs=subs: all(s.stats.received == 4 for s in subs))
            for sub in subs:
                await sub.stop()
    finally:
        stop.set()
        sys.setswitchinterval(old)
        await scraper
    dips = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
    assert not dips, f"a counter went down: {dips[:5]}"
    assert seen[-1] <= 600

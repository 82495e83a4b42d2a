"""Operations: Prometheus metrics scraped over HTTP, and the admin calls (reset a
consumer, purge part of a topic, what topic_info and consumer_info report)."""

from __future__ import annotations

import asyncio
import datetime as dt
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
from rich.console import Console

import jetkit as jk
import jetkit.metrics
from conftest import ExternalServer, wait_until, wait_until_async
from jetkit import _top

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


async def test_collector_in_a_users_own_registry(store: Path, topic: str) -> None:
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


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"metrics_port": -1}, "metrics_port"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"metrics_port": "9100"}, "metrics_port"),
        ({"metrics_port": True}, "metrics_port"),
        ({"metrics_port": 0, "metrics_host": ""}, "metrics_host"),
        ({"metrics_port": 0, "metrics_host": "  "}, "metrics_host"),
        ({"metrics_port": 0, "metrics_host": "not a host"}, "metrics_host 'not a host'"),
    ],
)
async def test_bad_metrics_options(options: dict[str, object], match: str) -> None:
    with pytest.raises(jk.ConfigError, match=match):
        await jk.Stream.open(**options)  # type: ignore[arg-type]


# -- admin -------------------------------------------------------------------------------


async def _consume_all(s: jk.Stream, topic: str, durable: str, n: int) -> list[int]:
    seen: list[int] = []

    async def handler(msg: jk.Message) -> None:
        seen.append(msg.seq or 0)

    await s.subscribe(topic, handler, durable=durable, start_at=jk.StartAt.ALL)
    await wait_until(lambda: len(seen) >= n)
    return seen


async def test_reset_consumer_moves_a_live_durable(js: jk.Stream, topic: str) -> None:
    await js.publish_many(topic, [str(i).encode() for i in range(1, 11)])
    seen = await _consume_all(js, topic, "resettable", 10)
    assert seen == list(range(1, 11))

    info = await js.reset_consumer(topic, "resettable", start_seq=8)
    assert info.delivered_seq == 7 and info.pending == 3
    await wait_until(lambda: len(seen) == 13)
    assert seen[10:] == [8, 9, 10]

    await js.reset_consumer(topic, "resettable", start_at=jk.StartAt.ALL)
    await wait_until(lambda: len(seen) == 23)
    assert seen[13:] == list(range(1, 11))

    info = await js.reset_consumer(topic, "resettable", start_at=jk.StartAt.NEW)
    assert info.pending == 0
    await js.publish(topic, b"after")  # the sentinel: the only message delivered now
    await wait_until(lambda: len(seen) == 24)
    assert seen[23:] == [11]


async def test_reset_consumer_to_a_time(js: jk.Stream, topic: str) -> None:
    await js.publish_many(topic, [b"old"] * 3)
    last = await js.last_message(topic)
    assert last is not None and last.timestamp is not None
    middle = last.timestamp + dt.timedelta(microseconds=1)  # just after seq 3
    await js.publish_many(topic, [b"new"] * 2)
    await _consume_all(js, topic, "timed", 5)
    info = await js.reset_consumer(topic, "timed", start_time=middle)
    assert info.pending == 2 and info.delivered_seq == 3
    info = await js.reset_consumer(topic, "timed", start_time=middle + dt.timedelta(days=1))
    assert info.pending == 0


async def test_reset_consumer_bad_input(js: jk.Stream, topic: str) -> None:
    await js.publish(topic, b"x")
    with pytest.raises(jk.ConfigError, match="say where"):
        await js.reset_consumer(topic, "d")
    with pytest.raises(jk.ConfigError, match="cannot be reset to"):
        await js.reset_consumer(topic, "d", start_at=jk.StartAt.LAST_PER_SUBJECT)
    with pytest.raises(jk.ConfigError, match="start_seq"):
        await js.reset_consumer(topic, "d", start_seq=0)
    with pytest.raises(jk.ConfigError, match="needs start_time"):
        await js.reset_consumer(topic, "d", start_at=jk.StartAt.BY_START_TIME)
    with pytest.raises(jk.InvalidTopicError, match="durable"):
        await js.reset_consumer(topic, "a.b", start_at=jk.StartAt.ALL)
    with pytest.raises(jk.NotFoundError):
        await js.reset_consumer(topic, "nobody", start_at=jk.StartAt.ALL)
    with pytest.raises(jk.NotFoundError):
        await js.reset_consumer(f"{topic}.unstored", "d", start_at=jk.StartAt.ALL)


async def test_purge_topic_keep_up_to_seq_and_subject(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(f"{topic}.>")
    for i in range(1, 7):
        await js.publish(f"{topic}.{'a' if i % 2 else 'b'}", str(i).encode())
    # seqs 1..6: a = 1, 3, 5; b = 2, 4, 6
    assert await js.purge_topic(f"{topic}.>", up_to_seq=2) == 2
    assert await js.purge_topic(f"{topic}.>", subject=f"{topic}.a", keep=1) == 1  # seq 3
    info = await js.topic_info(f"{topic}.>")
    assert (info.messages, info.first_seq) == (3, 4)
    assert await js.purge_topic(f"{topic}.>", subject=f"{topic}.b") == 2
    last = await js.last_message(f"{topic}.a")
    assert last is not None and last.data == b"5"
    assert await js.purge_topic(f"{topic}.>") == 1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"keep": -1}, "keep"),
        ({"up_to_seq": 0}, "up_to_seq"),
        ({"keep": 1, "up_to_seq": 3}, "not both"),
        ({"subject": "other.topic"}, "not inside"),
        ({"subject": "bad subject"}, "whitespace|invalid|not a valid"),
    ],
)
async def test_purge_topic_bad_input(
    js: jk.Stream, topic: str, options: dict[str, object], match: str
) -> None:
    await js.publish(topic, b"kept")
    with pytest.raises((jk.ConfigError, jk.InvalidTopicError), match=match):
        await js.purge_topic(topic, **options)  # type: ignore[arg-type]
    assert (await js.topic_info(topic)).messages == 1


async def test_topic_info_reports_disk_size_and_leader(js: jk.Stream, topic: str) -> None:
    await js.publish(topic, b"x" * 10_000)
    info = await js.topic_info(topic)
    assert info.disk_bytes is not None and info.disk_bytes >= 10_000
    assert info.leader and info.replica_nodes == [info.leader]
    listed = {t.name: t for t in await js.topics()}
    assert listed[info.name].disk_bytes is not None


async def test_consumer_info_reports_last_active(js: jk.Stream, topic: str) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    await js.publish(topic, b"x")
    await _consume_all(js, topic, "active", 1)

    async def acked() -> bool:
        return (await js.consumer_info(topic, "active")).ack_floor == 1

    await wait_until_async(acked)
    info = await js.consumer_info(topic, "active")
    assert info.last_active is not None and info.last_active >= before


# -- the seam for tools: overview, read_stored, metrics_collector ------------------------


async def test_overview_lists_every_topic_with_its_consumers(js: jk.Stream, topic: str) -> None:
    other = f"{topic}.other"
    await js.publish(topic, b"x")
    await js.publish(other, b"y")
    await js.subscribe(topic, _ignore, durable="reader")

    overview = {o.topic.name: o for o in await js.overview()}
    assert all(isinstance(o, jk.TopicOverview) for o in overview.values())
    # the topics topics() lists, each with the consumers consumers() lists for it
    assert set(overview) == {t.name for t in await js.topics()}
    mine = overview[(await js.topic_info(topic)).name]
    assert (mine.topic.subjects, mine.topic.last_seq) == ([topic], 1)
    assert [c.name for c in mine.consumers] == [c.name for c in await js.consumers(topic)]
    assert [c.name for c in mine.consumers] == ["reader"]
    assert overview[(await js.topic_info(other)).name].consumers == []


async def test_overview_of_a_closed_stream_raises(store: Path) -> None:
    s = await jk.Stream.open(store_dir=store)
    await s.close()
    with pytest.raises(jk.StreamClosedError):
        await s.overview()
    with pytest.raises(jk.StreamClosedError):
        s.read_stored("anything")


async def test_read_stored_reads_at_most_limit_from_first_seq_and_consumes_nothing(
    js: jk.Stream, topic: str
) -> None:
    await js.declare_topic(f"{topic}.>")
    for i in range(1, 7):  # a.1 b.2 a.3 b.4 a.5 b.6 in one stream
        await js.publish(f"{topic}.{'ab'[(i - 1) % 2]}", f"m{i}".encode(), headers={"n": str(i)})

    async def read(subject: str, **bounds: int) -> list[tuple[int | None, bytes]]:
        return [(m.seq, m.data) async for m in js.read_stored(subject, **bounds)]

    assert await read(f"{topic}.a") == [(1, b"m1"), (3, b"m3"), (5, b"m5")]
    assert await read(f"{topic}.a", limit=2) == [(1, b"m1"), (3, b"m3")]
    assert await read(f"{topic}.a", first_seq=2, limit=1) == [(3, b"m3")]
    assert await read(f"{topic}.a", first_seq=6) == []
    assert await read(f"{topic}.>", first_seq=5) == [(5, b"m5"), (6, b"m6")]  # a pattern
    assert len(await read(f"{topic}.>", limit=100)) == 6
    [first] = [m async for m in js.read_stored(f"{topic}.b", limit=1)]
    assert (first.topic, first.seq, first.headers["n"]) == (f"{topic}.b", 2, "2")
    assert await js.consumers(f"{topic}.>") == []  # read without a consumer


@pytest.mark.parametrize(
    ("topic_", "bounds", "error"),
    [
        ("a b", {}, jk.InvalidTopicError),
        ("", {}, jk.InvalidTopicError),
        (b"bytes", {}, jk.InvalidTopicError),
        ("orders.events", {"limit": 0}, jk.ConfigError),
        ("orders.events", {"limit": 2.5}, jk.ConfigError),
        ("orders.events", {"limit": True}, jk.ConfigError),
        ("orders.events", {"limit": None}, jk.ConfigError),
        ("orders.events", {"first_seq": 0}, jk.ConfigError),
        ("orders.events", {"first_seq": "1"}, jk.ConfigError),
    ],
)
async def test_read_stored_refuses_bad_input_at_the_call(
    js: jk.Stream, topic_: object, bounds: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):  # at the call: it is not iterated
        js.read_stored(topic_, **bounds)  # type: ignore[arg-type]


async def test_read_stored_of_a_topic_no_stream_stores_is_not_found(
    js: jk.Stream, topic: str
) -> None:
    messages = js.read_stored(f"{topic}.nowhere")
    with pytest.raises(jk.NotFoundError):
        [m async for m in messages]


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


async def _ignore(data: bytes) -> None:
    pass


# -- jetkit top's view -------------------------------------------------------------------


async def test_top_view_fits_80_columns_and_keeps_names_whole(js: jk.Stream, topic: str) -> None:
    long_topic = f"{topic}.with.a.rather.long.name.that.cannot.fit.in.its.column"
    durable = "a-durable-name-long-enough-to-wrap-inside-eighty-columns"
    await js.publish_many(long_topic, [b"x" * 100] * 20)

    async def ignore(data: bytes) -> None:
        pass

    await js.subscribe(long_topic, ignore, durable=durable, start_at=jk.StartAt.ALL)
    top = _top.Top()
    top.add(await _top.sample(js))
    await js.publish_many(long_topic, [b"y"] * 30)  # the rate between the two samples

    async def acked() -> bool:
        return (await js.consumer_info(long_topic, durable)).ack_floor == 50

    await wait_until_async(acked)
    top.add(await _top.sample(js))

    console = Console(width=80, record=True, force_terminal=True, color_system=None)
    console.print(_top.view(top, 80))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    cells = "".join(line.split("│")[1].strip() for line in lines if line.startswith("│"))
    assert long_topic in cells  # pieces joined again: broken only at token ends
    consumer_cells = "".join(line.split("│")[2].strip() for line in lines if line.count("│") == 8)
    assert durable in consumer_cells
    # every piece of the wrapped name ends at a separator (or is the name's end); the
    # pieces are found as the run of rows that spells it (other tests' topics are listed
    # too, and a piece of theirs may occur inside this name)
    cells_1 = [line.split("│")[1].strip() for line in lines if line.count("│") >= 6]
    pieces = [piece for piece in cells_1 if piece]
    runs = []
    for start in range(len(pieces)):
        joined, run = "", []
        for piece in pieces[start:]:
            if not long_topic.startswith(joined + piece):
                break
            joined, run = joined + piece, [*run, piece]
            if joined == long_topic:
                runs.append(run)
                break
    assert runs, "the long topic's wrapped pieces were not found"
    for piece in runs[0][:-1]:
        assert piece.endswith((".", "-", "_")), piece

    rows = {r[0]: r for r in top.topic_rows(human=False)}
    assert rows[long_topic][1:3] == ["50", str((await js.topic_info(long_topic)).bytes)]
    assert float(rows[long_topic][3]) > 0  # published between the samples
    consumers = {(r[0], r[1]): r for r in top.consumer_rows(human=False)}
    assert consumers[(long_topic, durable)][2:5] == ["0", "0", "0"]
    assert float(consumers[(long_topic, durable)][5]) > 0
    plain = list(_top.plain(top))
    assert plain[0].split("\t") == ["topic", "messages", "bytes", "msg/s"]
    assert any(line.startswith(f"{long_topic}\t50\t") for line in plain)


def test_top_helpers() -> None:
    assert _top.sparkline([]) == ""
    assert _top.sparkline([0, 0]) == "▁▁"
    assert _top.sparkline([1, 2, 4, 8]) == "▂▃▅█"
    assert _top.wrap_name("orders.events.eu", 8) == "orders.\nevents.\neu"
    assert _top.wrap_name("abcdefghijkl", 5) == "abcde\nfghij\nkl"  # one token: folded
    assert _top.count(999) == "999" and _top.count(12_345) == "12k"
    assert _top.size(3 * 2**20) == "3.0 MiB"
    assert _top.share(20, [5, 30]) == [5, 15]


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


async def test_purge_up_to_past_the_end_keeps_the_sequence(js: jk.Stream, topic: str) -> None:
    await js.publish_many(topic, [b"x"] * 3)
    assert await js.purge_topic(topic, up_to_seq=2**62) == 3
    ack = await js.publish(topic, b"next")
    assert ack is not None and ack.seq == 4  # not 2**62 + 1: the stream did not jump
    seen = await _consume_all(js, topic, "after-purge", 1)
    assert seen == [4]


async def test_reset_consumer_refuses_a_position_past_the_end(js: jk.Stream, topic: str) -> None:
    await js.publish_many(topic, [b"x"] * 3)
    await _consume_all(js, topic, "ahead", 3)
    with pytest.raises(jk.ConfigError, match=r"past the end.*last sequence is 3.*NEW"):
        await js.reset_consumer(topic, "ahead", start_seq=5)
    info = await js.reset_consumer(topic, "ahead", start_seq=4)  # the next one: allowed
    assert info.pending == 0 and info.delivered_seq == 3


async def test_reset_consumer_refuses_another_topics_or_an_ephemeral_consumer(
    js: jk.Stream, topic: str
) -> None:
    await js.declare_topic(f"{topic}.>")
    await js.publish(f"{topic}.a", b"a")
    await _consume_all(js, f"{topic}.a", "only-a", 1)
    for other in (f"{topic}.b", f"{topic}.*", f"{topic}.>"):
        with pytest.raises(jk.ConfigError, match=r"consumes .*\.a, not"):
            await js.reset_consumer(other, "only-a", start_at=jk.StartAt.ALL)

    async def ignore(data: bytes) -> None:
        pass

    sub = await js.subscribe(f"{topic}.a", ignore, start_at=jk.StartAt.ALL)
    ephemeral = [c.name for c in await js.consumers(f"{topic}.>") if not c.durable]
    assert ephemeral
    with pytest.raises(jk.ConfigError, match="not durable"):
        await js.reset_consumer(f"{topic}.a", ephemeral[0], start_at=jk.StartAt.ALL)
    await sub.stop()


async def test_purge_topic_checks_the_topic_before_the_subject(js: jk.Stream) -> None:
    with pytest.raises(jk.InvalidTopicError, match="topic must be a str"):
        await js.purge_topic(5, subject="a.b")  # type: ignore[arg-type]
    with pytest.raises(jk.InvalidTopicError, match=r"^subject: "):
        await js.purge_topic("a.b", subject="")


async def test_ack_floor_in_deliveries_for_a_consumer_of_part_of_a_stream(
    js: jk.Stream, topic: str
) -> None:
    await js.declare_topic(f"{topic}.>")
    for _ in range(10):
        await js.publish(f"{topic}.a", b"a")
        await js.publish(f"{topic}.b", b"b")
    await _consume_all(js, f"{topic}.a", "part", 10)

    async def acked() -> bool:
        return (await js.consumer_info(f"{topic}.a", "part")).ack_pending == 0

    await wait_until_async(acked)
    info = await js.consumer_info(f"{topic}.a", "part")
    # top's ack rate counts deliveries: 10 acks, though the stream moved by 19
    assert (info.ack_floor, info.ack_floor_consumer_seq) == (19, 10)


@pytest.mark.parametrize(
    "created",
    [
        {"start_at": jk.StartAt.NEW},
        {"start_at": jk.StartAt.LAST_PER_SUBJECT},
        {"start_seq": 3},
    ],
    ids=["new", "last-per-subject", "seq-3"],
)
async def test_reset_a_durable_the_server_cannot_reset_in_place(
    js: jk.Stream, topic: str, created: dict[str, object]
) -> None:
    """The server's reset refuses durables that started at NEW or LAST_PER_SUBJECT, or
    a position below their start sequence: jetkit makes them again at the position,
    and the live subscriber follows."""
    await js.publish_many(topic, [str(i).encode() for i in range(1, 6)])
    seen: list[int] = []

    async def handler(msg: jk.Message) -> None:
        seen.append(msg.seq or 0)

    await js.subscribe(topic, handler, durable="moved", ack=jk.AckPolicy.MANUAL, **created)  # type: ignore[arg-type]
    await js.publish(topic, b"6")
    await wait_until(lambda: 6 in seen)
    before = len(seen)

    info = await js.reset_consumer(topic, "moved", start_at=jk.StartAt.ALL)
    assert info.pending + info.ack_pending + len(seen) - before >= 6
    await wait_until(lambda: seen[before:][:6] == [1, 2, 3, 4, 5, 6])

    info = await js.reset_consumer(topic, "moved", start_seq=2)
    await wait_until(lambda: seen[before + 6 :][:5] == [2, 3, 4, 5, 6])

    await js.reset_consumer(topic, "moved", start_at=jk.StartAt.NEW)
    mark = len(seen)
    await js.publish(topic, b"7")  # the sentinel: the only one delivered from now on
    await wait_until(lambda: seen[mark:] == [7])
    listed = await js.consumers(topic)
    assert [c.name for c in listed if c.durable] == ["moved"]  # still one, same name


async def test_a_store_dir_inside_a_store_or_empty_or_a_file_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
        await s.publish("inside.t", b"kept")
    data = store / "jetstream"
    assert (data / "$G").is_dir()
    for wrong in (data, data / "$G" / "streams", store / "sub"):
        with pytest.raises(jk.ConfigError, match=r"inside the jetkit store|data itself"):
            await jk.Stream.open(store_dir=wrong)
    assert not (data / "jetstream").exists()  # nothing was moved
    with pytest.raises(jk.ConfigError, match="store_dir is empty"):
        await jk.Stream.open(store_dir="")
    a_file = tmp_path / "file.json"
    a_file.write_text("{}")
    with pytest.raises(jk.StoreNotWritableError, match="is a file, not a directory"):
        await jk.Stream.open(store_dir=a_file)
    async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
        assert (await s.topic_info("inside.t")).messages == 1  # the real store is intact

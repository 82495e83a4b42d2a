"""Tracing (``Stream.open(tracing=...)``): one trace from a caller's span through the
publish, every delivery attempt and the dead letter; request/reply; keyed and scheduled
messages; a batch; log fields; tracing off; ``jk.App(tracing=True)``; a message
published by FastStream's OpenTelemetry middleware, and one FastStream consumes.

The spans are the SDK's, kept by its InMemorySpanExporter; every test finds its own by
the trace id of a span it started itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import jetkit as jk
import jetkit.sync as jsync
from conftest import Recorder, wait_until

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
TRACER = PROVIDER.get_tracer("tests")


@pytest.fixture(scope="module", autouse=True)
def global_provider() -> None:
    # tracing=True uses the global provider, which can be set once per process: ours
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(PROVIDER)


@pytest.fixture(scope="module")
async def traced(core: jk.Stream, store: Path) -> AsyncIterator[jk.Stream]:
    # (core first: the session's Stream owns the store's server, this one attaches)
    s = await jk.Stream.open(
        store_dir=store, default_mode=jk.TopicMode.JETSTREAM, drain_timeout=5, tracing=PROVIDER
    )
    yield s
    await s.close()


def spans(trace_id: int) -> list[ReadableSpan]:
    return [s for s in EXPORTER.get_finished_spans() if s.context.trace_id == trace_id]


def named(trace_id: int, name: str) -> list[ReadableSpan]:
    return [s for s in spans(trace_id) if s.name == name]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, dict(e.attributes or {})) for e in span.events if e.name != "exception"]


def traceparent(span: ReadableSpan) -> str:
    """The ``traceparent`` header that carries ``span``'s context."""
    ctx = span.context
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def test_one_trace_from_the_caller_through_every_attempt_and_the_dead_letter(
    traced: jk.Stream, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    rec, dead = Recorder(fail={b"order-1"}), Recorder()
    await traced.subscribe(dlq, dead, durable="dlq-reader", start_at=jk.StartAt.ALL)
    await traced.subscribe(
        topic,
        rec,
        durable="billing",
        ack=jk.AckPolicy.MANUAL,
        max_deliver=3,
        backoff=[0.05],
        dlq=dlq,
    )
    with TRACER.start_as_current_span("caller") as caller:
        ack = await traced.publish(topic, b"order-1", msg_id="order-1")
    tid = caller.get_span_context().trace_id
    assert ack is not None
    await wait_until(lambda: len(named(tid, f"process {dlq}")) == 1)

    (publish,) = named(tid, f"publish {topic}")
    assert publish.kind is SpanKind.PRODUCER
    assert parent_of(publish) == caller.get_span_context().span_id
    assert attrs(publish) == {
        "messaging.system": "nats",
        "messaging.destination.name": topic,
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.message.id": "order-1",
        "messaging.nats.message.stream_sequence": ack.seq,
    }
    attempts = sorted(
        named(tid, f"process {topic}"),
        key=lambda s: attrs(s)["messaging.nats.message.delivery_count"],
    )
    assert [attrs(a)["messaging.nats.message.delivery_count"] for a in attempts] == [1, 2, 3]
    for attempt in attempts:
        assert attempt.kind is SpanKind.CONSUMER
        assert parent_of(attempt) == publish.context.span_id  # the producer's context
        assert [link.context.span_id for link in attempt.links] == [publish.context.span_id]
        assert attempt.status.status_code is StatusCode.ERROR
        assert [e.name for e in attempt.events].count("exception") == 1
        assert attrs(attempt)["error.type"] == "RuntimeError"
        assert attrs(attempt)["messaging.consumer.group.name"] == "billing"
        assert attrs(attempt)["messaging.operation.type"] == "process"
        assert attrs(attempt)["messaging.message.id"] == "order-1"
    # the retries and their delays, then the last attempt's term
    assert [events(a) for a in attempts[:2]] == [[("nak", {"jetkit.nak.delay": 0.05})]] * 2
    assert [name for name, _ in events(attempts[2])] == ["term"]

    (letter,) = named(tid, f"publish {dlq}")
    assert letter.kind is SpanKind.PRODUCER
    assert parent_of(letter) == attempts[2].context.span_id  # sent by the last attempt
    assert attrs(letter)["jetkit.dead_letter"] is True
    (handled,) = named(tid, f"process {dlq}")
    assert parent_of(handled) == letter.context.span_id
    assert handled.status.status_code is StatusCode.UNSET
    assert dead.msgs[0].headers["traceparent"] == traceparent(letter)
    assert rec.msgs[0].headers["traceparent"] == traceparent(publish)


async def test_request_and_reply_are_client_and_server_spans_of_one_trace(
    traced: jk.Stream, topic: str
) -> None:
    async def answer(data: bytes) -> bytes:
        if data == b"bad":
            raise ValueError("no such order")
        return b"ok"

    await traced.respond(topic, answer)
    with TRACER.start_as_current_span("caller") as caller:
        assert (await traced.request(topic, b"order-1")).data == b"ok"
        with pytest.raises(jk.RemoteError):
            await traced.request(topic, b"bad")
    tid = caller.get_span_context().trace_id
    await wait_until(lambda: len(named(tid, f"respond {topic}")) == 2)
    clients = sorted(named(tid, f"request {topic}"), key=lambda s: s.start_time or 0)
    servers = sorted(named(tid, f"respond {topic}"), key=lambda s: s.start_time or 0)
    assert [s.kind for s in clients] == [SpanKind.CLIENT] * 2
    assert [s.kind for s in servers] == [SpanKind.SERVER] * 2
    for client, server in zip(clients, servers, strict=True):
        assert parent_of(client) == caller.get_span_context().span_id
        assert parent_of(server) == client.context.span_id
    assert [s.status.status_code for s in clients] == [StatusCode.UNSET, StatusCode.ERROR]
    assert [s.status.status_code for s in servers] == [StatusCode.UNSET, StatusCode.ERROR]
    assert attrs(servers[1])["error.type"] == "ValueError"


async def test_a_keyed_message_keeps_the_trace_through_its_retries_in_place(
    traced: jk.Stream, topic: str
) -> None:
    failed: list[int] = []

    async def handle(msg: jk.Message) -> None:
        if not failed:
            failed.append(msg.num_delivered)
            raise RuntimeError("once")

    await traced.subscribe(
        topic, handle, durable="keyed", ack=jk.AckPolicy.MANUAL, key="Order-Id", concurrency=4
    )
    with TRACER.start_as_current_span("caller") as caller:
        await traced.publish(topic, b"x", headers={"Order-Id": "o-7"})
    tid = caller.get_span_context().trace_id
    await wait_until(lambda: len(named(tid, f"process {topic}")) == 2)
    (publish,) = named(tid, f"publish {topic}")
    first, second = sorted(
        named(tid, f"process {topic}"),
        key=lambda s: attrs(s)["messaging.nats.message.delivery_count"],
    )
    assert parent_of(first) == parent_of(second) == publish.context.span_id
    assert first.status.status_code is StatusCode.ERROR
    assert events(first) == [("retry in place", {"jetkit.retry.delay": 0.0})]
    assert second.status.status_code is StatusCode.UNSET


async def test_a_scheduled_message_keeps_the_publishers_trace(
    traced: jk.Stream, topic: str
) -> None:
    rec = Recorder()
    await traced.subscribe(topic, rec, durable="later")
    with TRACER.start_as_current_span("caller") as caller:
        scheduled = await traced.publish(topic, b"follow-up", deliver_after=1)
    tid = caller.get_span_context().trace_id
    await wait_until(lambda: len(named(tid, f"process {topic}")) == 1)
    (publish,) = named(tid, f"publish {topic}")
    assert attrs(publish)["jetkit.deliver_at"] == scheduled.deliver_at.isoformat()
    (handled,) = named(tid, f"process {topic}")
    assert parent_of(handled) == publish.context.span_id
    # the server's scheduler delivered the held message with the headers it was given
    assert rec.msgs[0].headers["traceparent"] == traceparent(publish)


async def test_publish_many_is_one_span_whose_context_every_message_carries(
    traced: jk.Stream, topic: str
) -> None:
    rec = Recorder()
    await traced.subscribe(topic, rec, durable="batch", concurrency=4)
    with TRACER.start_as_current_span("caller") as caller:
        await traced.publish_many(topic, [b"a", b"b", b"c"])
    tid = caller.get_span_context().trace_id
    await wait_until(lambda: len(named(tid, f"process {topic}")) == 3)
    (batch,) = named(tid, f"publish {topic}")
    assert attrs(batch)["messaging.batch.message_count"] == 3
    assert {parent_of(s) for s in named(tid, f"process {topic}")} == {batch.context.span_id}
    assert {m.headers["traceparent"] for m in rec.msgs} == {traceparent(batch)}


async def test_core_messages_and_queue_groups_are_traced_too(traced: jk.Stream, topic: str) -> None:
    await traced.declare_topic(topic, mode=jk.TopicMode.CORE)
    rec = Recorder(fail={b"bad"})
    await traced.subscribe(topic, rec, queue_group="workers")
    with TRACER.start_as_current_span("caller") as caller:
        await traced.publish(topic, b"fine")
        await traced.publish(topic, b"bad")
    tid = caller.get_span_context().trace_id
    await wait_until(lambda: len(named(tid, f"process {topic}")) == 2)
    publishes = {s.context.span_id for s in named(tid, f"publish {topic}")}
    handled = named(tid, f"process {topic}")
    assert {parent_of(s) for s in handled} == publishes
    assert {attrs(s)["messaging.consumer.group.name"] for s in handled} == {"workers"}
    assert sorted(s.status.status_code.name for s in handled) == ["ERROR", "UNSET"]


async def test_a_handler_runs_in_the_messages_context_with_its_baggage(
    traced: jk.Stream, topic: str
) -> None:
    seen: list[tuple[object, int]] = []

    async def handle(data: bytes) -> None:
        current = trace.get_current_span().get_span_context().span_id
        seen.append((baggage.get_baggage("tenant"), current))

    await traced.subscribe(topic, handle, durable="baggage")
    with TRACER.start_as_current_span("caller") as caller:
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            await traced.publish(topic, b"x")
        finally:
            context.detach(token)
    tid = caller.get_span_context().trace_id
    await wait_until(lambda: len(named(tid, f"process {topic}")) == 1)
    (handled,) = named(tid, f"process {topic}")
    assert seen == [("acme", handled.context.span_id)]


async def test_log_records_about_a_message_carry_its_fields_and_the_trace_ids(
    traced: jk.Stream, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jetkit")
    rec = Recorder(fail={b"order-1"})
    await traced.subscribe(topic, rec, durable="logged", ack=jk.AckPolicy.MANUAL, max_deliver=2)
    with TRACER.start_as_current_span("caller") as caller:
        ack = await traced.publish(topic, b"order-1")
    tid = caller.get_span_context().trace_id
    assert ack is not None
    await wait_until(lambda: len(named(tid, f"process {topic}")) == 2)
    records = [r for r in caplog.records if getattr(r, "topic", None) == topic]
    assert [r.levelname for r in records] == ["WARNING", "ERROR"]  # retrying, then given up
    attempts = {
        attrs(s)["messaging.nats.message.delivery_count"]: s for s in named(tid, f"process {topic}")
    }
    for record, attempt in zip(records, (attempts[1], attempts[2]), strict=True):
        assert not record.getMessage().startswith("jetkit")  # the logger's name says it
        fields = {k: getattr(record, k) for k in ("topic", "seq", "consumer")}
        assert fields == {"topic": topic, "seq": ack.seq, "consumer": "logged"}
        assert getattr(record, "trace_id") == f"{tid:032x}"  # noqa: B009
        assert getattr(record, "span_id") == f"{attempt.context.span_id:016x}"  # noqa: B009


async def test_without_tracing_there_is_no_span_and_no_traceparent(
    js: jk.Stream, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # the global provider is set (as an instrumented application's would be), and the
    # caller is in a span: a Stream without tracing= still makes no span and sends none
    caplog.set_level(logging.WARNING, logger="jetkit")
    rec = Recorder(fail={b"bad"})
    await js.subscribe(topic, rec, durable="plain", ack=jk.AckPolicy.MANUAL, max_deliver=1)
    with TRACER.start_as_current_span("caller") as caller:
        await js.publish(topic, b"fine")
        await js.publish(topic, b"bad", headers={"Order-Id": "1"})
    await wait_until(lambda: len(rec.msgs) == 2)
    assert [m.headers for m in rec.msgs] == [{}, {"Order-Id": "1"}]
    await wait_until(lambda: any(getattr(r, "topic", None) == topic for r in caplog.records))
    assert [s.name for s in spans(caller.get_span_context().trace_id)] == ["caller"]
    (record,) = [r for r in caplog.records if getattr(r, "topic", None) == topic]
    assert (record.seq, record.consumer) == (rec.msgs[1].seq, "plain")  # type: ignore[attr-defined]
    assert not hasattr(record, "trace_id")


async def test_an_app_with_tracing_true_traces_through_the_global_provider(
    core: jk.Stream, store: Path, topic: str
) -> None:
    app = jk.App(store_dir=store, default_mode=jk.TopicMode.JETSTREAM, tracing=True)
    seen: list[bytes] = []

    @app.subscriber(topic, durable="app")
    async def handle(data: bytes) -> None:
        seen.append(data)

    async with app.serve() as s:
        with TRACER.start_as_current_span("caller") as caller:
            await s.publish(topic, b"hello")
        tid = caller.get_span_context().trace_id
        await wait_until(lambda: len(named(tid, f"process {topic}")) == 1)
    (publish,) = named(tid, f"publish {topic}")
    (handled,) = named(tid, f"process {topic}")
    assert parent_of(handled) == publish.context.span_id
    assert seen == [b"hello"]


def test_jetkit_sync_traces_with_the_calling_threads_span_as_parent(tmp_path: Path) -> None:
    got: list[jk.Message] = []
    with jsync.Stream.open(
        store_dir=tmp_path / "store", default_mode=jk.TopicMode.JETSTREAM, tracing=PROVIDER
    ) as s:
        s.subscribe("sync.orders", got.append, durable="sync")
        with TRACER.start_as_current_span("caller") as caller:
            s.publish("sync.orders", b"1")
        tid = caller.get_span_context().trace_id
        deadline = time.monotonic() + 10
        while not named(tid, "process sync.orders"):
            assert time.monotonic() < deadline, "no process span within 10 s"
            time.sleep(0.01)
    (publish,) = named(tid, "publish sync.orders")
    (handled,) = named(tid, "process sync.orders")
    assert parent_of(publish) == caller.get_span_context().span_id
    assert parent_of(handled) == publish.context.span_id
    assert len(got) == 1


def broker(s: jk.Stream, **options: Any) -> Any:
    """A FastStream NATS broker with its OpenTelemetry middleware, on ``s``'s server."""
    from faststream.nats import NatsBroker
    from faststream.nats.opentelemetry import NatsTelemetryMiddleware
    from faststream.security import SASLPlaintext

    info = s.connect_info()
    return NatsBroker(
        info["servers"],
        security=SASLPlaintext(username=info["user"], password=info["password"]),
        logger=None,
        middlewares=[NatsTelemetryMiddleware(tracer_provider=PROVIDER)],
        **options,
    )


async def test_a_message_faststream_publishes_is_processed_in_its_trace(
    traced: jk.Stream, topic: str
) -> None:
    rec = Recorder()
    await traced.subscribe(topic, rec, durable="from-faststream")
    fs = broker(traced)
    await fs.connect()
    try:
        with TRACER.start_as_current_span("caller") as caller:
            await fs.publish(b"hello", subject=topic)
        tid = caller.get_span_context().trace_id
        await wait_until(lambda: len(named(tid, f"process {topic}")) == 1)
    finally:
        await fs.stop()
    # FastStream injects its "create" span's context (its "publish" span is a sibling)
    (created,) = named(tid, f"{topic} create")
    (handled,) = named(tid, f"process {topic}")
    assert parent_of(created) == caller.get_span_context().span_id
    assert parent_of(handled) == created.context.span_id
    assert (
        attrs(handled)["messaging.message.conversation_id"] == rec.msgs[0].headers["correlation_id"]
    )


async def test_a_message_jetkit_publishes_is_processed_by_faststream_in_its_trace(
    traced: jk.Stream, topic: str
) -> None:
    await traced.declare_topic(topic, mode=jk.TopicMode.CORE)
    fs = broker(traced)
    got: list[bytes] = []

    @fs.subscriber(topic)  # type: ignore[misc]
    async def handle(body: str) -> None:
        got.append(body.encode())

    await fs.start()
    try:
        with TRACER.start_as_current_span("caller") as caller:
            await traced.publish(topic, b"hello")
        tid = caller.get_span_context().trace_id
        await wait_until(lambda: len(named(tid, f"{topic} process")) == 1)
    finally:
        await fs.stop()
    (publish,) = named(tid, f"publish {topic}")
    (handled,) = named(tid, f"{topic} process")
    assert parent_of(handled) == publish.context.span_id
    assert got == [b"hello"]

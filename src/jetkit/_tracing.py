"""OpenTelemetry tracing (``Stream.open(tracing=...)``): the spans and the trace context.

Loaded only when tracing is on: ``import jetkit`` never imports OpenTelemetry, and a
Stream without tracing runs none of this. Where the spans start and end:

* ``TracedPublisher`` (the Stream's publisher when tracing is on) overrides ``publish``,
  ``publish_many`` and ``dead_letter``: a PRODUCER span ``publish <topic>`` around each,
  ended when the message is handed over (core) or its PubAck arrived (JetStream); its
  context goes into the message's headers (``traceparent``/``tracestate``, through the
  global propagator). ``publish_many`` is one span for the batch, its context in every
  message. A dead letter's span is a child of the attempt that gave up (or, where no
  attempt runs, of the original message's context).
* ``watch(sub)`` wraps a subscription's ``_process`` (one delivery attempt: decoding,
  the handler, its ack, nak or dead letter) in a CONSUMER ``process <topic>`` span whose
  parent is the context in the message's headers; a responder's is a SERVER span.
  Failures, naks, terms and retries in place reach that span through ``failed`` and
  ``event``, which act on the current span.
* ``request`` is a CLIENT span ``request <topic>`` around a request and its reply.

The attribute names follow OpenTelemetry's messaging semantic conventions v1.44.0
(``SEMCONV``); NATS has no system-specific conventions there, so the delivery count and
stream sequence are named after other systems' (``messaging.nats.message.*``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from ._errors import PublishBatchError
from ._message import Message
from ._publish import PubAck, Publisher

if TYPE_CHECKING:
    from pathlib import Path

    from ._connection import Connection
    from ._topics import TopicRegistry

SEMCONV = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV}"
SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
TEMPLATE = "messaging.destination.template"
OPERATION = "messaging.operation.name"
OPERATION_TYPE = "messaging.operation.type"
MESSAGE_ID = "messaging.message.id"
CONVERSATION = "messaging.message.conversation_id"
GROUP = "messaging.consumer.group.name"
BATCH_COUNT = "messaging.batch.message_count"
DELIVERY_COUNT = "messaging.nats.message.delivery_count"
SEQUENCE = "messaging.nats.message.stream_sequence"
ERROR_TYPE = "error.type"
MSG_ID_HEADER = "Nats-Msg-Id"


class _AnyCase(Getter[Mapping[str, str]]):
    """Reads a header in any case: NATS headers are case-sensitive, and a Go service that
    injects through ``propagation.HeaderCarrier`` sends ``Traceparent``."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            lower = key.lower()
            value = next((v for k, v in carrier.items() if k.lower() == lower), None)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _AnyCase()


def _error(exc: BaseException) -> str:
    """``error.type``: the exception's class, with its module unless a builtin."""
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


class Tracing:
    """One Stream's tracer and what its parts call to make spans."""

    def __init__(self, provider: object) -> None:
        try:
            version: str | None = metadata.version("jetkit")
        except metadata.PackageNotFoundError:  # pragma: no cover (a source tree)
            version = None
        get_tracer: Callable[..., trace.Tracer] = (
            trace.get_tracer if provider is True else provider.get_tracer  # type: ignore[attr-defined]
        )
        self.tracer = get_tracer("jetkit", version, schema_url=SCHEMA_URL)

    # -- the trace context in headers ------------------------------------------------------

    @staticmethod
    def parent(headers: Mapping[str, str]) -> context.Context:
        """The context a message's headers carry (empty: none)."""
        return propagate.extract(headers, getter=_GETTER)

    @contextlib.contextmanager
    def sending(
        self,
        topic: object,
        headers: object,
        msg_id: object = None,
        *,
        kind: SpanKind = SpanKind.PRODUCER,
        operation: str = "publish",
        parent: context.Context | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[trace.Span, Any]]:
        """A span around sending one message (or a batch) to ``topic``; yields it and the
        headers to send: a copy of ``headers`` with its context injected. Headers that
        are not a dict are given back as they are (the publish's checks refuse them); a
        ``traceparent`` the caller set is kept (it is the message's creation context)."""
        name = topic if isinstance(topic, str) else repr(topic)
        attributes: dict[str, Any] = {
            SYSTEM: "nats",
            DESTINATION: name,
            OPERATION: operation,
            OPERATION_TYPE: "send",
        }
        if isinstance(msg_id, str):
            attributes[MESSAGE_ID] = msg_id
        if extra:
            attributes.update(extra)
        links = None
        own = headers is not None and (
            isinstance(headers, Mapping) and _GETTER.get(headers, "traceparent") is not None
        )
        if own:
            assert isinstance(headers, Mapping)
            given = trace.get_current_span(self.parent(headers)).get_span_context()
            if given.is_valid:
                links = [Link(given)]
        # not made the current span: nothing runs under it, and its context is injected
        # explicitly (attaching it would cost a context switch in and out per publish)
        span = self.tracer.start_span(
            f"{operation} {name}", context=parent, kind=kind, attributes=attributes, links=links
        )
        try:
            sent: Any = headers
            if headers is None or (isinstance(headers, Mapping) and not own):
                sent = dict(headers) if headers is not None else {}
                propagate.inject(sent, context=trace.set_span_in_context(span))
            yield span, sent
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.set_attribute(ERROR_TYPE, _error(exc))
            raise
        finally:
            span.end()

    # -- consuming -------------------------------------------------------------------------

    def watch(self, sub: Any, *, server: bool = False) -> None:
        """Trace every delivery attempt of ``sub`` (a Subscription, not started yet;
        ``server``: a responder, whose spans are SERVER spans)."""
        kind = SpanKind.SERVER if server else SpanKind.CONSUMER
        process: Callable[[Message], Awaitable[None]] = sub._process
        tracer = self.tracer
        pattern: str = sub.topic
        exact = "*" not in pattern and ">" not in pattern
        name = f"respond {pattern}" if kind is SpanKind.SERVER else f"process {pattern}"
        operation = "respond" if kind is SpanKind.SERVER else "process"
        group = sub.metric_consumer
        jetstream = hasattr(sub, "stream")
        parent = self.parent

        async def traced(msg: Message) -> None:
            headers = msg.headers
            origin = parent(headers) if headers else None
            attributes: dict[str, Any] = {
                SYSTEM: "nats",
                DESTINATION: msg.topic,
                OPERATION: operation,
                OPERATION_TYPE: "process",
            }
            if not exact:
                attributes[TEMPLATE] = pattern
            if group:
                attributes[GROUP] = group
            msg_id = headers.get(MSG_ID_HEADER)
            if msg_id is not None:
                attributes[MESSAGE_ID] = msg_id
            conversation = headers.get("correlation_id")  # (FastStream sets it)
            if conversation is not None:
                attributes[CONVERSATION] = conversation
            if jetstream:
                attributes[SEQUENCE] = msg.seq or 0
            links = None
            if origin is not None:
                created = trace.get_current_span(origin).get_span_context()
                if created.is_valid:
                    links = [Link(created)]
            # the message's creation context is the parent (one trace from publisher to
            # handler), whatever context the worker task was started in; a message
            # without one starts a trace of its own
            base = origin if origin is not None else context.Context()
            span = tracer.start_span(
                name, context=base, kind=kind, attributes=attributes, links=links
            )
            # the handler runs in the message's context (its baggage too) under this span
            token = context.attach(trace.set_span_in_context(span, base))
            try:
                await process(msg)
            except Exception as exc:  # jetkit's own failure (the handler's are caught)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            finally:
                if jetstream:
                    span.set_attribute(DELIVERY_COUNT, msg.num_delivered)
                context.detach(token)
                span.end()

        sub._process = traced
        sub._tracer = self

    @staticmethod
    def failed(exc: BaseException) -> None:
        """The current attempt failed with ``exc``: status ERROR, the exception recorded."""
        span = trace.get_current_span()
        span.record_exception(exc)
        span.set_attribute(ERROR_TYPE, _error(exc))
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))

    @staticmethod
    def event(name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """An event on the current span (a nak and its delay, a term, a retry in place)."""
        trace.get_current_span().add_event(name, attributes)

    @staticmethod
    def settled(token: bytes) -> None:
        """A nak or term was sent for the message of the current span."""
        verb, _, rest = token.partition(b" ")
        name = verb.lstrip(b"+-").decode().lower()
        attributes: dict[str, Any] = {}
        if name == "nak" and rest.startswith(b'{"delay": '):
            attributes["jetkit.nak.delay"] = int(rest[10:].rstrip(b"}")) / 1e9
        elif name == "term" and rest:
            attributes["jetkit.term.reason"] = rest.decode("utf-8", "replace")
        trace.get_current_span().add_event(name, attributes)

    @staticmethod
    def log_ids() -> dict[str, str]:
        """The current trace and span ids, as log records' ``extra`` fields."""
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return {}
        return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}

    # -- request/reply ---------------------------------------------------------------------

    async def request(
        self, topic: str, headers: object, send: Callable[[Any], Awaitable[Message]]
    ) -> Message:
        """A CLIENT span around ``send(headers)`` (a request and its reply)."""
        with self.sending(topic, headers, kind=SpanKind.CLIENT, operation="request") as (_, sent):
            return await send(sent)


class TracedPublisher(Publisher):
    """The Stream's publisher when tracing is on: a PRODUCER span per publish."""

    def __init__(
        self,
        conn: Connection,
        topics: TopicRegistry,
        timeout: float,
        store_dir: Path | None,
        disk_error: Callable[[], str | None],
        tracing: Tracing,
    ) -> None:
        super().__init__(conn, topics, timeout, store_dir, disk_error)
        self.tracing = tracing

    async def publish(
        self, topic: str, data: bytes, headers: dict[str, str] | None, msg_id: str | None
    ) -> PubAck | None:
        with self.tracing.sending(topic, headers, msg_id) as (span, sent):
            ack = await super().publish(topic, data, sent, msg_id)
            if ack is not None:
                span.set_attribute(SEQUENCE, ack.seq)
            return ack

    async def publish_many(
        self, topic: str, payloads: Iterable[bytes], headers: dict[str, str] | None, window: int
    ) -> list[PubAck | None]:
        # one span for the batch, its context in every message: what a batch costs stays
        # one span and one header block, however many messages it holds
        with self.tracing.sending(topic, headers) as (span, sent):
            try:
                results = await super().publish_many(topic, payloads, sent, window)
            except PublishBatchError as exc:
                span.set_attribute(BATCH_COUNT, len(exc.results))
                raise
            span.set_attribute(BATCH_COUNT, len(results))
            return results

    async def dead_letter(self, topic: str, data: bytes, headers: dict[str, str]) -> None:
        # a child of the attempt that gave up; where none runs (a poison message of a
        # keyed subscription), of the original message's context (its headers' copy)
        current = trace.get_current_span().get_span_context().is_valid
        parent = None if current else self.tracing.parent(headers)
        with self.tracing.sending(
            topic,
            {k: v for k, v in headers.items() if k.lower() not in ("traceparent", "tracestate")},
            headers.get(MSG_ID_HEADER),
            parent=parent,
            extra={"jetkit.dead_letter": True},
        ) as (_, sent):
            await super().dead_letter(topic, data, sent)

"""The AsyncAPI 3.0 document of a ``jk.App`` (``jetkit asyncapi MODULE:APP``).

``asyncapi_document(app)`` reads what the App declared and starts nothing:

- ``servers``: the embedded server (``host:port``; a ``{port}`` variable when the App lets
  the server pick a free one) or each of the App's ``servers=`` URLs (credentials left
  out), protocol ``nats``, with the security scheme they use;
- a channel per topic, its address the subject (wildcards kept: ``orders.>``), saying
  whether it is stored (JetStream) or core as far as the App tells;
- a ``receive`` operation per subscriber, its options in its description and in
  ``x-jetkit``; a queue group is also the NATS binding's ``queue``; a subscriber with a
  ``dlq`` also ``send``s its dead letters to the DLQ topic's channel;
- a ``receive`` operation per responder with a ``reply``: a channel without address (the
  requester's inbox, the request's NATS reply subject), whose messages are the return
  annotation's payload and jetkit's error reply;
- the messages (``components.messages``) and their payloads' JSON Schemas
  (``components.schemas``, see ``_jsonschema``) from the handlers' annotations, decided
  as ``_codec.plan_handler`` decides decoding: a dataclass, Struct, TypedDict, dict or
  pydantic model is JSON; ``bytes`` and ``jk.Message`` are raw bytes; ``str`` is text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import inspect
import re
import types
import typing
from typing import Any, NamedTuple

import msgspec

from ._app import App, ResponderSpec, SubscriberSpec
from ._asyncapi_servers import server_entries
from ._codec import plan_batch_handler, plan_handler
from ._errors import ERROR_HEADER
from ._jsonschema import COMPONENTS, Schema, describe
from ._message import Message
from ._options import SubscribeSettings, open_options, subscribe_options
from ._retry import H_CONSUMER, H_DELIVERIES, H_NOT_COPIED, H_SEQ, H_STREAM, H_TOPIC
from ._topics import TopicMode

ASYNCAPI = "3.0.0"
NATS_BINDING = "0.1.0"

JSON, BYTES, TEXT, EMPTY, ANY = "json", "bytes", "text", "empty", "any"


class Payload(NamedTuple):
    """What a message carries: ``kind`` (one of JSON, BYTES, TEXT, EMPTY, ANY) and, for
    JSON, the type and whether jetkit writes it (a reply) or reads it (a handler's)."""

    kind: str
    tp: Any = None
    writes: bool = False
    note: str = ""


def takes(handler: Any, batch: bool = False) -> Payload:
    """The payload a handler is given, as its first parameter's annotation decides (a
    batch handler's: one element of its list)."""
    tp = (plan_batch_handler(handler) if batch else plan_handler(handler)).takes
    if tp is bytes:
        return Payload(BYTES, note="The handler gets the payload as it is, not decoded.")
    if tp is str:
        return Payload(TEXT, note="The handler gets the payload as UTF-8 text.")
    if tp is Message:
        return Payload(BYTES, note="The handler gets the jk.Message: the payload is not decoded.")
    return Payload(JSON, tp)


def returns(handler: Any) -> Payload:
    """The payload of a responder's reply, as its return annotation tells: bytes as they
    are, str as UTF-8, None as an empty payload, anything else as JSON."""
    tp = plan_handler(handler).returns
    if tp is inspect.Signature.empty or tp is typing.Any:
        return Payload(
            ANY,
            note="Its return is not annotated: the reply is bytes as they are, str as UTF-8 "
            "text, anything else as JSON.",
        )
    note = ""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        kept = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(kept) < len(typing.get_args(tp)):
            note = "The reply is empty when it returns None."
            tp = kept[0] if len(kept) == 1 else typing.Union[tuple(kept)]  # noqa: UP007
    if tp is type(None):
        return Payload(EMPTY, note="It returns None: the reply is an empty payload.")
    if tp in (bytes, bytearray, memoryview):
        return Payload(BYTES, note=note)
    if tp is str:
        return Payload(TEXT, note=note)
    return Payload(JSON, tp, writes=True, note=note)


def asyncapi_document(
    app: App, *, title: str = "jetkit app", version: str = "0.0.0", description: str | None = None
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``app`` as a dict (JSON-ready): servers, a channel
    per topic, an operation per subscriber and responder, their messages and schemas."""
    document = _Builder(app).document(title, version, description)
    # JSON values only: a schema's default may be a tuple, a datetime, an enum member
    built: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(document, enc_hook=repr))
    return built


class _Builder:
    def __init__(self, app: App) -> None:
        self.app = app
        self.settings = open_options(**app.options)
        self.channels: dict[str, Schema] = {}
        self.channel_of: dict[str, str] = {}  # topic -> channel id
        self.topic_notes: dict[str, list[str]] = {}
        self.operations: dict[str, Schema] = {}
        self.messages: dict[str, Schema] = {}
        wanted: list[tuple[Any, bool]] = []  # (type, writes), compared by == (not hashed)
        for p in self._payloads():
            if p.kind == JSON and (p.tp, p.writes) not in wanted:
                wanted.append((p.tp, p.writes))
        found, self.schemas = describe(wanted)
        self.described = list(zip(wanted, found, strict=True))

    def _payloads(self) -> list[Payload]:
        found = [takes(s.handler, s.options.get("batch") is not None) for s in self.app.subscribers]
        for r in self.app.responders:
            found += [takes(r.handler), returns(r.handler)]
        return found

    # -- the document ----------------------------------------------------------------

    def document(self, title: str, version: str, description: str | None) -> dict[str, Any]:
        for sub in self.app.subscribers:
            self.subscriber(sub)
        for resp in self.app.responders:
            self.responder(resp)
        for topic, notes in self.topic_notes.items():
            channel = self.channels[self.channel_of[topic]]
            said = {"description": " ".join(dict.fromkeys(notes))}
            channel.update({**said, "messages": channel.pop("messages")})
        servers, security = server_entries(self.settings)
        info: Schema = {"title": title, "version": version}
        if description:
            info["description"] = description
        components: Schema = {"messages": self.messages, "schemas": self.schemas}
        if security:
            components["securitySchemes"] = security
        return {
            "asyncapi": ASYNCAPI,
            "info": info,
            "defaultContentType": "application/json",
            "servers": servers,
            "channels": self.channels,
            "operations": self.operations,
            "components": {k: v for k, v in components.items() if v},
        }

    def subscriber(self, spec: SubscriberSpec) -> None:
        opts = subscribe_options(spec.topic, **spec.options)
        payload = takes(spec.handler, opts.batch is not None)
        message = self.message(payload)
        channel = self.channel(spec.topic, self.mode_note(spec.topic, opts), message)
        op_id = _unique(_identifier(spec.handler), self.operations)
        operation = self.operation(spec.handler, channel, message)
        operation["description"] = _join(
            _doc_rest(spec.handler), _subscriber_text(opts), payload.note
        )
        if opts.queue_group is not None and opts.durable is None:
            operation["bindings"] = {
                "nats": {"queue": opts.queue_group, "bindingVersion": NATS_BINDING}
            }
        operation["x-jetkit"] = _given(opts)
        self.operations[op_id] = operation
        if opts.dlq is not None:
            letter = self.dead_letter(message)
            where = self.channel(
                opts.dlq,
                f"Dead letters of {spec.topic}: always stored (JetStream).",
                letter,
            )
            self.operations[_unique(f"{op_id}_dead_letters", self.operations)] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{where}"},
                "messages": [{"$ref": f"#/channels/{where}/messages/{letter}"}],
                "title": f"{_name(spec.handler)}: dead letters",
                "description": (
                    f"What {_name(spec.handler)} could not handle (max_deliver used up, or a "
                    "payload that does not decode) is stored here with Jetkit-* headers "
                    "saying why; `jetkit dlq` lists and re-drives it."
                ),
            }

    def responder(self, spec: ResponderSpec) -> None:
        asked, answer = takes(spec.handler), returns(spec.handler)
        request = self.message(asked)
        channel = self.channel(
            spec.topic,
            "Requests and replies go over core NATS (never stored).",
            request,
        )
        op_id = _unique(_identifier(spec.handler), self.operations)
        reply_id = _unique(f"{op_id}_reply", self.channels)
        answers = [self.message(answer), self.error_reply()]
        self.channels[reply_id] = {
            "address": None,
            "title": f"Replies of {_name(spec.handler)}",
            "description": (
                "The requester's inbox: the reply goes to the request's NATS reply subject, "
                "which each request sets (request/reply)."
            ),
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in answers},
        }
        operation = self.operation(spec.handler, channel, request)
        operation["description"] = _join(
            _doc_rest(spec.handler),
            f"A responder in queue group {spec.queue_group!r} (each request is answered by "
            f"one member), {_count(spec.concurrency, 'request')} at once. Its return value is the "
            "reply; an exception is replied as an empty payload with a Jetkit-Error header "
            "(raised as jk.RemoteError by Stream.request).",
            asked.note,
            answer.note,
        )
        operation["reply"] = {
            "channel": {"$ref": f"#/channels/{reply_id}"},
            "messages": [{"$ref": f"#/channels/{reply_id}/messages/{m}"} for m in answers],
        }
        operation["bindings"] = {
            "nats": {"queue": spec.queue_group, "bindingVersion": NATS_BINDING}
        }
        operation["x-jetkit"] = {"queue_group": spec.queue_group, "concurrency": spec.concurrency}
        self.operations[op_id] = operation

    def operation(self, handler: Any, channel: str, message: str) -> Schema:
        operation: Schema = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
            "title": _name(handler),
        }
        summary = _doc_first(handler)
        if summary:
            operation["summary"] = summary
        return operation

    # -- channels ----------------------------------------------------------------------

    def channel(self, topic: str, note: str, message: str) -> str:
        """The channel of ``topic`` (made on first use), now also carrying ``message``."""
        channel_id = self.channel_of.get(topic)
        if channel_id is None:
            channel_id = self.channel_of[topic] = _unique(_channel_id(topic), self.channels)
            self.channels[channel_id] = {"address": topic, "messages": {}}
            notes = self.topic_notes[topic] = []
            if re.search(r"[{}?#]", topic):
                # AsyncAPI reads {x} as a parameter and ? and # as URL parts: no address
                self.channels[channel_id]["address"] = None
                notes.append(f"The topic {topic!r}.")
            if "*" in topic.split(".") or topic.split(".")[-1] == ">":
                notes.append("A wildcard: '*' matches one token, '>' the tokens that follow.")
        self.topic_notes[topic].append(note)
        self.channels[channel_id]["messages"][message] = {
            "$ref": f"#/components/messages/{message}"
        }
        return channel_id

    def mode_note(self, topic: str, opts: SubscribeSettings) -> str:
        """Whether ``topic`` is stored, as far as the App tells (a topic an ``on_startup``
        hook declares is not known here)."""
        needs = opts.jetstream_only()
        if self.settings.default_mode is TopicMode.JETSTREAM:
            return "Stored (JetStream): the App's default mode, unless declared otherwise."
        if needs:
            return (
                f"Stored (JetStream): its subscriber's options ({', '.join(needs)}) need a "
                "JetStream topic, declared with declare_topic (the App's default mode is "
                "core)."
            )
        return (
            "Core NATS (not stored, at most once): the App's default mode, unless declared "
            "a JetStream topic with declare_topic."
        )

    # -- messages ----------------------------------------------------------------------

    def message(self, payload: Payload) -> str:
        """The name of ``payload``'s message in ``components.messages`` (added once)."""
        if payload.kind == BYTES:
            return self._add(
                "Bytes",
                {
                    "contentType": "application/octet-stream",
                    "payload": {"type": "string", "format": "binary"},
                    "description": "Raw bytes, not decoded.",
                },
            )
        if payload.kind == TEXT:
            return self._add(
                "Text",
                {
                    "contentType": "text/plain",
                    "payload": {"type": "string"},
                    "description": "UTF-8 text.",
                },
            )
        if payload.kind == EMPTY:
            return self._add(
                "Empty",
                {
                    "contentType": "application/octet-stream",
                    "payload": {"type": "string", "maxLength": 0},
                    "description": "An empty payload.",
                },
            )
        if payload.kind == ANY:
            return self._add(
                "Any",
                {"description": "Any payload: bytes, UTF-8 text or JSON (not annotated)."},
            )
        schema = next(s for w, s in self.described if w == (payload.tp, payload.writes))
        message: Schema = {"contentType": "application/json"}
        ref = (schema or {}).get("$ref", "")
        name = ref[len(COMPONENTS) :] if len(schema or {}) == 1 and ref else _label(payload.tp)
        if schema is None:
            message["description"] = (
                f"JSON; msgspec and pydantic cannot describe {_label(payload.tp)} as a JSON Schema."
            )
        else:
            message["payload"] = schema
        return self._add(name, message)

    def dead_letter(self, message: str) -> str:
        """The message of a dead letter of ``message``: its payload, Jetkit-* headers."""
        body = {k: v for k, v in self.messages[message].items() if k in ("contentType", "payload")}
        body["headers"] = _DEAD_LETTER_HEADERS
        body["description"] = (
            "A copy of the message that failed, with the Jetkit-* headers saying why (a "
            f"letter too large to copy has no payload and a {H_NOT_COPIED} header pointing "
            "at the original)."
        )
        return self._add(f"{message}DeadLetter", body)

    def error_reply(self) -> str:
        return self._add(
            "JetkitErrorReply",
            {
                "headers": {
                    "type": "object",
                    "properties": {
                        ERROR_HEADER: {
                            "type": "string",
                            "description": "The exception's type and message: 'Type: text'.",
                        }
                    },
                    "required": [ERROR_HEADER],
                },
                "payload": {"type": "string", "maxLength": 0},
                "description": "The responder raised: an empty payload, a Jetkit-Error header.",
            },
        )

    def _add(self, name: str, body: Schema) -> str:
        """Put a message into the components under ``name`` (or a free variant of it
        when another message has that name); an identical one is shared."""
        candidate, n = name, 1
        while True:
            made = {"name": candidate, "title": name, **body}
            have = self.messages.get(candidate)
            if have is None or have == made:
                self.messages[candidate] = made
                return candidate
            n += 1
            candidate = f"{name}_{n}"


_DEAD_LETTER_HEADERS: Schema = {
    "type": "object",
    "properties": {
        H_TOPIC: {"type": "string", "description": "The topic the message was published to."},
        H_SEQ: {"type": "string", "description": "Its sequence in its topic's stream."},
        H_STREAM: {"type": "string", "description": "The stream that holds the original."},
        H_DELIVERIES: {"type": "string", "description": "The handler calls it got."},
        H_CONSUMER: {"type": "string", "description": "The consumer that gave up on it."},
        ERROR_HEADER: {"type": "string", "description": "The last error: 'Type: text'."},
        H_NOT_COPIED: {
            "type": "string",
            "description": "Only on a letter too large to copy: the original's stored time (ns).",
        },
    },
    "required": [H_TOPIC, H_DELIVERIES, H_CONSUMER, ERROR_HEADER],
}


def _subscriber_text(opts: SubscribeSettings) -> str:
    """A subscriber's options in sentences."""
    said = []
    if opts.durable is not None:
        said.append(
            f"Durable consumer {opts.durable!r}: it keeps its position across restarts; the "
            "app's processes share its messages."
        )
    elif opts.queue_group is not None:
        said.append(
            f"In queue group {opts.queue_group!r}: each message goes to one member (once per "
            "app, however many processes run it)."
        )
    if opts.emit is not None:
        said.append(
            f"An exactly-once pipeline stage: its outputs go to {opts.emit!r} (or the topics "
            "it names), each stored once, before the message is acked; an exception retries "
            "the message."
        )
    elif opts.batch is not None and opts.ack.value == "auto":
        said.append("Acked when the handler returns; an exception retries the message.")
    if opts.batch is not None:
        said.append(
            f"Handled in batches of up to {opts.batch} messages (waiting at most "
            f"{opts.batch_timeout:g} s to fill one)."
        )
    if opts.emit is None and not (opts.batch is not None and opts.ack.value == "auto"):
        said.append(ack_sentence(opts))
    if opts.max_deliver is not None:
        then = f"then it goes to {opts.dlq!r}" if opts.dlq else "then it is not delivered again"
        said.append(f"At most {_count(opts.max_deliver, 'handler call')} per message, {then}.")
    elif opts.dlq is not None:
        said.append(f"A payload that does not decode goes to {opts.dlq!r}.")
    if opts.backoff:
        delays = ", ".join(f"{d:g} s" for d in opts.backoff)
        said.append(f"Delays between attempts: {delays} (the last repeats).")
    if opts.key is not None:
        by = f"the header {opts.key!r}" if isinstance(opts.key, str) else "a function"
        said.append(f"Ordered per key ({by}), parallel across keys.")
    if opts.concurrency > 1:
        said.append(f"{opts.concurrency} handler calls at once.")
    return " ".join(said)


def ack_sentence(opts: SubscribeSettings) -> str:
    return {
        "auto": "Acked when handed to the handler (a failure is logged, not retried).",
        "manual": "Acked when the handler returns; an exception retries the message.",
        "none": "Never acked.",
    }[opts.ack.value]


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _given(opts: SubscribeSettings) -> Schema:
    """The options that differ from their defaults, as JSON values."""
    defaults = SubscribeSettings()
    given: Schema = {}
    for field in dataclasses.fields(opts):
        value = getattr(opts, field.name)
        if value == getattr(defaults, field.name):
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, dt.datetime):
            value = value.isoformat()
        elif callable(value):
            value = f"function {_name(value)}"
        given[field.name] = value
    return given


def _name(handler: Any) -> str:
    while isinstance(handler, functools.partial):
        handler = handler.func
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return str(name).rsplit("<locals>.", 1)[-1]  # a nested function: its own name


def _identifier(handler: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", _name(handler)).strip("_") or "handler"


def _channel_id(topic: str) -> str:
    words = {"*": "star", ">": "all"}
    tokens = [words.get(t, t) for t in re.split(r"[.:]", topic)]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", "_".join(tokens)).strip("_") or "topic"


def _label(tp: Any) -> str:
    """A name for a type without a schema name of its own (``list[Order]``)."""
    text = getattr(tp, "__name__", None) if isinstance(tp, type) else None
    text = text or repr(tp).replace("typing.", "")
    text = re.sub(r"\b[A-Za-z_][\w]*\.", "", text)  # module prefixes
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "Payload"


def _unique(name: str, taken: dict[str, Any]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _doc(handler: Any) -> str:
    while isinstance(handler, functools.partial):
        handler = handler.func
    return inspect.getdoc(handler) or ""


def _doc_first(handler: Any) -> str:
    doc = _doc(handler)
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _doc_rest(handler: Any) -> str:
    doc = _doc(handler)
    parts = doc.split("\n\n", 1)
    return parts[1].strip() if len(parts) == 2 else ""


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)

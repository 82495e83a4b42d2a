"""JSON encoding and handler-annotation-driven decoding.

A handler's first parameter's annotation decides what it receives:

==========================  =================================================
annotation                  the handler gets
==========================  =================================================
``jk.Message`` / none       the message itself
``bytes``                   the raw payload
``str``                     the payload decoded as UTF-8 text
pydantic ``BaseModel``      ``Model.model_validate_json(payload)``
anything else               ``msgspec.json.decode(payload, type=annotation)``
                            (dataclass, msgspec Struct, TypedDict, dict, list, ...)
==========================  =================================================

A second parameter, if present, receives the ``jk.Message``. Decoders are built
once per subscription and cached per type.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ._errors import DecodeError, EncodeError, HandlerSignatureError
from ._message import Message

Decoder = Callable[[Message], Any]

_encoder = msgspec.json.Encoder()


def _enc_hook(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic v2
    if callable(dump):
        return dump(mode="json")
    raise NotImplementedError(f"cannot encode {type(value).__name__} as JSON")


_hooked_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode_json(value: Any) -> bytes:
    """Encode a dataclass, Struct, pydantic model, dict, list or scalar as JSON."""
    try:
        return _hooked_encoder.encode(value)
    except (TypeError, ValueError, NotImplementedError, RecursionError, OverflowError) as exc:
        raise EncodeError(
            f"cannot encode {type(value).__name__} as JSON ({exc}); pass a dataclass, "
            "msgspec.Struct, pydantic model, dict, list or bytes"
        ) from exc


def encode_reply(value: Any) -> bytes:
    """A responder's return value as a payload: bytes as-is, str as UTF-8, else JSON."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return encode_json(value)


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and callable(getattr(tp, "model_validate_json", None))


@functools.lru_cache(maxsize=512)
def decoder_for(tp: Any) -> Callable[[bytes], Any]:
    """A function payload -> value of type ``tp``; raises DecodeError."""
    if tp is bytes:
        return bytes
    if tp is str:

        def text(data: bytes) -> str:
            try:
                return data.decode()
            except UnicodeDecodeError as exc:
                raise DecodeError(f"payload is not UTF-8 text: {exc}") from exc

        return text
    if _is_pydantic(tp):
        validate = tp.model_validate_json

        def pydantic_decode(data: bytes) -> Any:
            try:
                return validate(data)
            except ValueError as exc:  # pydantic.ValidationError is a ValueError
                raise DecodeError(f"payload is not a valid {tp.__name__}: {exc}") from exc

        return pydantic_decode
    try:
        dec = msgspec.json.Decoder(tp)
    except TypeError as exc:
        raise HandlerSignatureError(f"jetkit cannot decode JSON into {tp!r}: {exc}") from exc
    name = getattr(tp, "__name__", repr(tp))

    def msgspec_decode(data: bytes) -> Any:
        try:
            return dec.decode(data)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"payload does not decode as {name}: {exc}") from exc

    return msgspec_decode


@dataclasses.dataclass(frozen=True)
class HandlerPlan:
    """How to call a handler, worked out once at subscribe time.

    ``args(msg)`` decodes (raising DecodeError for a poison payload, before the
    handler runs); ``fn(*args)`` awaits the handler (sync handlers run in a thread).
    """

    fn: Callable[..., Awaitable[Any]]
    decode: Callable[[bytes], Any] | None  # None: the handler takes the Message
    wants_message: bool  # the handler sees the Message and may settle it itself
    takes: Any = Message  # the annotation decoding follows (Message: none, not decoded)
    returns: Any = inspect.Signature.empty  # the return annotation (empty: none)

    def args(self, msg: Message) -> tuple[Any, ...]:
        if self.decode is None:
            return (msg,)
        if self.wants_message:
            return (self.decode(msg.data), msg)
        return (self.decode(msg.data),)


def plan_handler(handler: Callable[..., Any]) -> HandlerPlan:
    """Inspect ``handler`` once and decide how to decode for it and call it."""
    if not callable(handler):
        raise HandlerSignatureError(f"handler must be callable, got {handler!r}")
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError) as exc:
        raise HandlerSignatureError(f"cannot inspect handler {handler!r}: {exc}") from exc
    name = getattr(handler, "__qualname__", repr(handler))
    everything = list(sig.parameters.values())
    keyword_only = [p.name for p in everything if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if keyword_only:
        raise HandlerSignatureError(
            f"handler {name} has required keyword-only parameters ({', '.join(keyword_only)}) "
            "that jetkit cannot fill; give them defaults or bind them with functools.partial"
        )
    params = [
        p
        for p in everything
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if not params:
        # ``def h(*args)`` or ``def h(msg=None)``: it can take the one argument jetkit gives
        params = [p for p in everything if p.kind is p.VAR_POSITIONAL][:1] or [
            p for p in everything if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ][:1]
    if not params or len(params) > 2:
        raise HandlerSignatureError(
            f"handler {name} must take one parameter (the value or a jk.Message) or two "
            f"(value, msg: jk.Message); it takes {len(params)} required positional parameters "
            "(use defaults for any others)"
        )
    target = handler if inspect.isroutine(handler) else type(handler).__call__
    try:
        hints = typing.get_type_hints(target)
    except Exception as exc:
        raise HandlerSignatureError(f"cannot resolve annotations of {name}: {exc}") from exc
    first = hints.get(params[0].name, Message)
    if first is typing.Any:
        first = Message
    two = len(params) == 2
    if two and hints.get(params[1].name, Message) is not Message:
        raise HandlerSignatureError(
            f"the second parameter of {name} receives the jk.Message; annotate it as "
            "jk.Message or leave it unannotated"
        )
    if two and first is Message:
        raise HandlerSignatureError(
            f"handler {name} takes the jk.Message twice; the first parameter is the value"
        )
    is_async = inspect.iscoroutinefunction(handler) or (
        not inspect.isroutine(handler) and inspect.iscoroutinefunction(type(handler).__call__)
    )
    fn: Callable[..., Awaitable[Any]]
    if is_async:
        fn = handler
    else:

        async def fn(*args: Any) -> Any:
            return await asyncio.to_thread(handler, *args)

    returns = hints.get("return", inspect.Signature.empty)
    if first is Message:
        return HandlerPlan(fn, decode=None, wants_message=True, returns=returns)
    return HandlerPlan(
        fn, decode=decoder_for(first), wants_message=two, takes=first, returns=returns
    )


def plan_batch_handler(handler: Callable[..., Any]) -> HandlerPlan:
    """Plan a batch handler (``subscribe(..., batch=N)``): it takes one list, of decoded
    values (``list[T]``: each payload decoded as a handler annotated ``T`` would get it)
    or of messages (``list[jk.Message]``, or no annotation). ``decode`` decodes one
    element (None: the elements are the messages)."""
    if not callable(handler):
        raise HandlerSignatureError(f"handler must be callable, got {handler!r}")
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError) as exc:
        raise HandlerSignatureError(f"cannot inspect handler {handler!r}: {exc}") from exc
    name = getattr(handler, "__qualname__", repr(handler))
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    required = [p for p in positional if p.default is p.empty and p.kind is not p.VAR_POSITIONAL]
    keyword_only = [
        p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    if keyword_only or len(required) > 1 or not positional:
        raise HandlerSignatureError(
            f"the batch handler {name} must take one parameter, the batch: a list[T] of "
            "decoded values or a list[jk.Message]; it takes "
            f"({', '.join(str(p) for p in sig.parameters.values())})"
        )
    target = handler if inspect.isroutine(handler) else type(handler).__call__
    try:
        hints = typing.get_type_hints(target)
    except Exception as exc:
        raise HandlerSignatureError(f"cannot resolve annotations of {name}: {exc}") from exc
    annotation = hints.get((required or positional)[0].name, typing.Any)
    element: Any
    if annotation is typing.Any:
        element = Message
    elif typing.get_origin(annotation) is list and len(typing.get_args(annotation)) == 1:
        element = typing.get_args(annotation)[0]
        if element is typing.Any:
            element = Message
    else:
        raise HandlerSignatureError(
            f"the batch handler {name} takes a list (batch=N hands it up to N messages at "
            f"once); annotate its parameter list[T] or list[jk.Message], not {annotation!r}"
        )
    decode = None if element is Message else plan_handler(_typed(element)).decode
    is_async = inspect.iscoroutinefunction(handler) or (
        not inspect.isroutine(handler) and inspect.iscoroutinefunction(type(handler).__call__)
    )
    call: Callable[..., Awaitable[Any]]
    if is_async:
        call = handler
    else:

        async def call(*args: Any) -> Any:
            return await asyncio.to_thread(handler, *args)

    return HandlerPlan(
        call,
        decode=decode,
        wants_message=element is Message,
        takes=element,
        returns=hints.get("return", inspect.Signature.empty),
    )


def _typed(element: Any) -> Callable[..., None]:
    """A stand-in handler taking one ``element``: its plan holds that element's decoder."""

    def one(value: Any) -> None: ...

    one.__annotations__ = {"value": element}
    return one

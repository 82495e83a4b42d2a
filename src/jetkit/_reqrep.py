"""Request/reply, always on core NATS: the requester and the responder.

An error reply is an empty payload with the header ``Jetkit-Error: <Type>: <message>``;
``request`` raises it as jk.RemoteError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._codec import HandlerPlan, decoder_for, encode_reply, plan_handler
from ._connection import Connection
from ._errors import (
    ERROR_HEADER,
    DecodeError,
    NoRespondersError,
    RemoteError,
    TimeoutError,
    describe_error,
)
from ._message import Message
from ._publish import Publisher
from ._subscription import Backpressure, CoreSubscription, is_handler_failure
from ._topics import TopicRegistry, consumer_name_ok
from ._validate import headers as check_headers
from ._validate import number
from ._wire import pub

if TYPE_CHECKING:
    from ._tracing import Tracing

MAX_TIMEOUT = 86_400.0


async def request(
    conn: Connection,
    publisher: Publisher,
    topics: TopicRegistry,
    topic: str,
    data: bytes,
    timeout: float,
    headers: dict[str, str] | None,
    tracing: Tracing | None = None,
) -> Message:
    """``Stream.request``: send ``data`` to ``topic`` and return the reply (tracing on: in
    a CLIENT span whose context the request carries)."""
    if tracing is not None:
        return await tracing.request(
            topic,
            headers,
            lambda sent: request(conn, publisher, topics, topic, data, timeout, sent),
        )
    topics.check(topic)
    number("timeout", timeout, above=0, maximum=MAX_TIMEOUT)
    headers = check_headers(headers)
    data = publisher.check_payload(topic, data, headers)
    try:
        reply = await conn.request(topic, data, timeout, headers=headers)
    except NoRespondersError:
        raise NoRespondersError(
            f"nobody responds on {topic!r}; start a responder with Stream.respond()"
        ) from None
    except TimeoutError:
        raise TimeoutError(f"no reply on {topic!r} within {timeout}s") from None
    error = reply.headers.get(ERROR_HEADER)
    if error is not None:
        kind, _, text = error.partition(": ")
        raise RemoteError(kind, text)
    return reply


def decode_reply(reply: Message, response_type: object) -> Any:
    """``reply`` as ``response_type`` (a Message stays a Message)."""
    if response_type is Message:
        return reply
    decode: Callable[[bytes], Any] = decoder_for(response_type)
    return decode(reply.data)


async def respond(
    conn: Connection,
    topics: TopicRegistry,
    topic: str,
    handler: Callable[..., Any],
    queue_group: str | None,
    concurrency: int,
    log: logging.Logger,
    tracing: Tracing | None = None,
) -> Responder:
    """``Stream.respond``: a running responder on ``topic``."""
    topics.check(topic, wildcards=True)
    if queue_group is not None:
        consumer_name_ok(queue_group, "queue_group")
    number("concurrency", concurrency, minimum=1, maximum=10_000, integer=True)
    responder = Responder(
        conn,
        topic,
        plan_handler(handler),
        queue_group=queue_group,
        concurrency=concurrency,
        buffer_size=1024,
        backpressure=Backpressure.BLOCK,
        logger=log,
    )
    if tracing is not None:
        tracing.watch(responder, server=True)
    await responder._start()
    return responder


class Responder(CoreSubscription):
    """A core subscription whose handler's return value answers each request."""

    _plan: HandlerPlan

    async def _process(self, msg: Message) -> None:
        if not msg.reply:
            self._log.debug(
                "message without reply subject on responder %r",
                msg.topic,
                extra=self._fields(msg),
            )
        try:
            args = self._plan.args(msg)
            result = await self._plan.fn(*args)
            payload, headers = encode_reply(result), None
        except DecodeError as exc:
            self.stats.failed += 1
            if self._tracer is not None:
                self._tracer.failed(exc)
            payload, headers = b"", {ERROR_HEADER: describe_error(exc)}
        except BaseException as exc:
            if not is_handler_failure(exc):
                raise
            self.stats.failed += 1
            if self._tracer is not None:
                self._tracer.failed(exc)
            self._log.warning(
                "responder for %r raised %s",
                msg.topic,
                describe_error(exc),
                extra=self._fields(msg),
            )
            payload, headers = b"", {ERROR_HEADER: describe_error(exc)}
        if not msg.reply:
            return
        conn = self._conn
        if len(payload) > conn.max_payload:
            self.stats.failed += 1
            self._log.warning(
                "the reply on %r is %d bytes, over the server's max_payload of %d",
                msg.topic,
                len(payload),
                conn.max_payload,
                extra=self._fields(msg),
            )
            payload, headers = (
                b"",
                {
                    ERROR_HEADER: f"PayloadTooLargeError: the reply is {len(payload)} bytes, over "
                    f"the server's max_payload of {conn.max_payload}"
                },
            )
        try:
            if headers is not None:
                await conn.publish(msg.reply, payload, headers=headers)
            elif conn.send(pub(msg.reply.encode(), payload)):
                await conn.relieve()
        except Exception as exc:
            self._log.warning(
                "could not send reply on %r: %s", msg.topic, exc, extra=self._fields(msg)
            )

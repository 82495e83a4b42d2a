"""``jk.Stream``: the facade. It checks and hands each call to the part that owns it.

open/close: _runtime (the parts, their start, connection events), _lifecycle (close)
publish:    _publish (checks, core path, acked JetStream path) -> _topics (streams);
            _schedule (deliver_at/deliver_after/ttl, cancel_scheduled)
subscribe:  _subscribe -> _subscription (buffer, workers) / _pull, _consumer (JetStream)
admin:      _admin (composed: ``_faces.AdminFace`` delegates to it); request/reply:
            _reqrep; health: _health
The options of ``open`` and ``subscribe`` are declared in ``_surface``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, overload

from . import _health, _reqrep
from ._admin import Admin
from ._codec import encode_json
from ._errors import ConfigError
from ._faces import AdminFace
from ._message import Message
from ._options import open_options
from ._publish import PubAck
from ._runtime import Runtime
from ._schedule import ScheduledMessage
from ._stored import refuse_core, stored_ack
from ._subscription import Subscription
from ._surface import OpenOptions, SubscribeOptions
from ._topics import TopicMode
from ._validate import flag

if TYPE_CHECKING:
    from .metrics import Collector

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class _Opener:
    """What ``Stream.open`` returns: ``await`` it, or use it with ``async with``."""

    def __init__(self, factory: Callable[[], Awaitable[Stream]]) -> None:
        self._factory = factory
        self._stream: Stream | None = None

    def __await__(self) -> Generator[Any, None, Stream]:
        return self._factory().__await__()

    async def __aenter__(self) -> Stream:
        self._stream = await self._factory()
        return self._stream

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            await self._stream.close()


class Stream(AdminFace):
    """A connection to NATS (embedded or external) with jetkit's messaging API.

    Open it with ``Stream.open(...)`` (its options are ``jk.OpenOptions``). The admin
    calls (declare_topic, topic_info, consumers, dead_letters, redrive, ...) are
    ``_admin.Admin``'s, offered here through ``AdminFace``.

    After ``os.fork()`` the Stream stays the parent's: in the child every call raises
    jk.ForkedStreamError and ``close()`` returns at once, leaving the parent's server,
    store and connection alone. Open a new Stream in the child.
    """

    def __init__(self, rt: Runtime) -> None:
        """Not called directly: use ``Stream.open``."""
        self._rt = rt
        self._admin = Admin(rt)
        self.drain_timeout = rt.drain_timeout
        # read by publish's hot path without going through the runtime
        self._publisher = rt.publisher
        self._registrations = rt.regs.tasks

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(cls, **options: Unpack[OpenOptions]) -> _Opener:
        """Start (or attach to) the embedded server, or connect to ``servers``.

        The options are ``jk.OpenOptions`` (store_dir, servers, default_mode, ...), each
        checked here, before anything starts (jk.ConfigError). ``await`` the result, or
        use it with ``async with``.
        """
        opts = open_options(**options)

        async def factory() -> Stream:
            rt = Runtime(opts)
            stream = cls(rt)
            try:
                await rt.start(stream)
            except BaseException:
                await rt.shutdown.teardown()
                raise
            return stream

        return _Opener(factory)

    async def close(self, *, hand_back: bool = False) -> None:
        """Drain every subscription (within ``drain_timeout``), disconnect, stop the server.

        ``hand_back=True`` finishes only the messages already in a handler and gives the
        ones received and not yet handled back to the server at once (see
        ``Subscription.drain``): what a service stopping on SIGTERM does.

        If the caller is cancelled meanwhile (``asyncio.wait_for``, Ctrl+C), the drain is
        cut short (unfinished JetStream messages are handed back for redelivery) but the
        server is still stopped and the store released before the cancellation goes on.
        Closing again waits for the first close. A subscription that ``@subscriber``
        failed to register, and that no publish or request raised, is raised here, after
        the close. In a process forked from the one that opened the Stream, this returns
        at once and touches nothing (the server and connection are the parent's).
        """
        flag("hand_back", hand_back)
        await self._rt.shutdown.close(hand_back)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def metrics_collector(self) -> Collector:
        """This Stream's Prometheus collector (what ``jetkit.metrics.collector(stream)``
        returns): made at the first call, which must be on the Stream's event loop, and
        counting from then on. Register it in one registry per Stream."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError(
                "call jetkit.metrics.collector(stream) from the Stream's event loop (in async "
                "code), e.g. right after Stream.open()"
            ) from None
        return self._rt.enable_metrics(self)

    def _hurry_close(self) -> None:
        """Cut the drain of a close under way short (``jetkit.sync``'s Ctrl+C, an App's
        second signal): what is in a handler is handed back, redelivered later."""
        self._rt.shutdown.hurry()

    # -- properties ------------------------------------------------------------------------

    @property
    def default_mode(self) -> TopicMode:
        """The mode of topics no ``declare_topic`` names."""
        return self._rt.topics.default_mode

    @property
    def store_dir(self) -> Path | None:
        """The embedded server's store (None for an external server)."""
        return self._rt.store_dir

    @property
    def server_url(self) -> str | None:
        """The URL this Stream is connected to."""
        return self._rt.conn.url

    @property
    def embedded(self) -> bool:
        """True when this Stream started and owns its nats-server."""
        store = self._rt.store
        return store is not None and store.server is not None

    @property
    def metrics_url(self) -> str | None:
        """Where this Stream serves its Prometheus metrics (None: metrics_port not set)."""
        server = self._rt.metrics_server
        return server.url if server is not None else None

    def connect_info(self) -> dict[str, Any]:
        """How another client reaches this Stream's server: ``nats.connect(**info)``.

        ``servers`` plus ``user``/``password`` or ``token`` (for an embedded store,
        the generated credentials; keep them secret) and ``tls`` if one was given.
        """
        self._rt.check_open()
        return dict(self._rt.conn.options)

    @property
    def max_payload(self) -> int:
        """The largest message (headers and payload) the server takes, in bytes."""
        return self._rt.conn.max_payload

    @property
    def connected(self) -> bool:
        """Whether the connection to NATS is up now (False while it reconnects)."""
        return self._rt.conn.is_connected

    @property
    def closed(self) -> bool:
        """Whether close() was called (or opening failed)."""
        return self._rt.closed

    @property
    def subscriptions(self) -> list[Subscription]:
        """The subscriptions (and responders) open now."""
        return list(self._rt.subs)

    def mode_for(self, topic: str) -> TopicMode:
        """The mode a topic uses: its declare_topic mode, else the Stream's default."""
        return self._rt.topics.mode_for(topic)

    # -- publishing ------------------------------------------------------------------------

    @overload
    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> Coroutine[Any, Any, PubAck | None]: ...

    @overload
    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> Coroutine[Any, Any, ScheduledMessage]: ...

    @overload
    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: float | dt.timedelta,
        ttl: float | dt.timedelta | None = None,
    ) -> Coroutine[Any, Any, ScheduledMessage]: ...

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime | None = None,
        deliver_after: float | dt.timedelta | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> Coroutine[Any, Any, PubAck | ScheduledMessage | None]:
        """Publish ``data`` to ``topic``.

        JetStream topics: returns the PubAck once the server stored the message (raises
        jk.TimeoutError if no ack arrives within ``publish_timeout``; it is never dropped
        silently). ``msg_id`` sets ``Nats-Msg-Id``: a second publish with the same id within
        the duplicate window is not stored again and returns ``duplicate=True``.
        Core topics: returns None once the message is handed to the connection.

        ``deliver_at`` (an aware datetime) or ``deliver_after`` (seconds): the server
        holds the message and delivers it then; returns a jk.ScheduledMessage for
        ``cancel_scheduled``. ``ttl`` (seconds, at least 1): the message expires from
        the topic that long after it is stored (after it is delivered, when scheduled).
        Both need a JetStream topic; see docs/concepts/scheduling-and-ttl.md.
        """
        # the hot path: a plain function handing over the publisher's coroutine (one
        # coroutine per publish, not two); registrations, close, schedules and TTLs take
        # the long way
        if (
            self._registrations
            or self._rt.closed
            or deliver_at is not None
            or deliver_after is not None
            or ttl is not None
        ):
            return self._publish_after_checks(
                topic, data, headers, msg_id, deliver_at, deliver_after, ttl
            )
        return self._publisher.publish(topic, data, headers, msg_id)

    async def _publish_after_checks(
        self,
        topic: str,
        data: bytes,
        headers: dict[str, str] | None,
        msg_id: str | None,
        deliver_at: object,
        deliver_after: object,
        ttl: object,
    ) -> PubAck | ScheduledMessage | None:
        await self._rt.ready()
        if deliver_at is None and deliver_after is None and ttl is None:
            return await self._publisher.publish(topic, data, headers, msg_id)
        return await self._rt.scheduler.publish(
            topic, data, headers, msg_id, deliver_at, deliver_after, ttl
        )

    @overload
    async def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck | None: ...

    @overload
    async def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime,
        deliver_after: None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> ScheduledMessage: ...

    @overload
    async def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: None = None,
        deliver_after: float | dt.timedelta,
        ttl: float | dt.timedelta | None = None,
    ) -> ScheduledMessage: ...

    async def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        deliver_at: dt.datetime | None = None,
        deliver_after: float | dt.timedelta | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck | ScheduledMessage | None:
        """Encode ``value`` (dataclass, Struct, pydantic model, dict, list) as JSON and
        publish it (the same options as ``publish``)."""
        data = encode_json(value)
        if deliver_at is None and deliver_after is None and ttl is None:
            return await self.publish(topic, data, headers=headers, msg_id=msg_id)
        return await self._publish_after_checks(
            topic, data, headers, msg_id, deliver_at, deliver_after, ttl
        )

    async def publish_stored(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck:
        """``publish`` to a JetStream topic: returns its PubAck once the server stored it.

        The same checks and path as ``publish`` (``msg_id``, ``ttl``, ``publish_timeout``
        alike); a core topic raises jk.ConfigError before anything is sent. Use it where
        the ack matters: ``ack.seq`` type-checks, where ``publish`` returns
        ``PubAck | None``.
        """
        refuse_core(self._rt.topics, topic, "publish_stored")
        ack = await self.publish(topic, data, headers=headers, msg_id=msg_id, ttl=ttl)
        return stored_ack(topic, ack)

    async def publish_json_stored(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        ttl: float | dt.timedelta | None = None,
    ) -> PubAck:
        """``publish_json`` to a JetStream topic: returns its PubAck (see
        ``publish_stored``)."""
        refuse_core(self._rt.topics, topic, "publish_json_stored")
        return await self.publish_stored(
            topic, encode_json(value), headers=headers, msg_id=msg_id, ttl=ttl
        )

    async def publish_many(
        self,
        topic: str,
        payloads: Iterable[bytes],
        *,
        headers: dict[str, str] | None = None,
        window: int = 256,
        ttl: float | dt.timedelta | None = None,
    ) -> list[PubAck | None]:
        """Publish many payloads to one topic with up to ``window`` acks outstanding.

        JetStream: returns every PubAck in order; if any publish failed, raises
        PublishBatchError whose ``results`` hold a PubAck or the exception per payload.
        Core: publishes them all and returns a list of None. ``ttl`` as for ``publish``
        (the same for every message); scheduled delivery is one ``publish`` per message.
        """
        await self._rt.ready()
        if ttl is not None:
            headers = await self._rt.scheduler.expiring_many(topic, headers, ttl)
        return await self._publisher.publish_many(topic, payloads, headers, window)

    async def cancel_scheduled(
        self, scheduled: ScheduledMessage | str, *, msg_id: str | None = None
    ) -> bool:
        """Cancel a scheduled message: the jk.ScheduledMessage ``publish`` returned, or
        the topic and the ``msg_id`` it was published with.

        Returns True if it was still pending and will now never be delivered; False if
        it was already delivered, cancelled before, or is unknown.
        """
        await self._rt.ready()
        return await self._rt.scheduler.cancel(scheduled, msg_id)

    # -- subscribing -----------------------------------------------------------------------

    async def subscribe(
        self, topic: str, handler: Callable[..., Any], **options: Unpack[SubscribeOptions]
    ) -> Subscription:
        """Call ``handler`` for every message on ``topic``; the options are
        ``jk.SubscribeOptions`` (durable, ack, max_deliver, backoff, dlq, ...).

        The handler's annotations decide what it gets (``jk.Message``, ``bytes``, ``str``,
        or the payload decoded as JSON into a dataclass, msgspec Struct, pydantic model,
        TypedDict or dict); it may be ``async def`` or a plain function, run in a thread
        (``jetkit.sync`` takes plain functions only). See
        docs/concepts/consumers-and-acks.md.
        """
        self._rt.check_open()
        return self._rt.track(await self._rt.subscriber.subscribe(topic, handler, options))

    subscribe_json = subscribe

    def subscriber(self, topic: str, **options: Unpack[SubscribeOptions]) -> Callable[[F], F]:
        """Decorator form of ``subscribe``: ``@s.subscriber("orders.events", durable="x")``.

        The topic, the handler and the options are checked when it decorates (the errors
        ``subscribe`` would raise, raised there); the subscription is then registered in
        the background. The next publish or request on this Stream waits for it, so
        "decorate, then publish" never loses a message. A registration that fails (the
        server refuses it: a durable's config conflicts, say) is logged at ERROR at once,
        raised by the next publish or request, and, if none comes, by ``close()``.
        """
        self._rt.check_open()

        def decorate(handler: F) -> F:
            rt = self._rt
            rt.subscriber.check(topic, handler, options)
            rt.regs.start(self._register(topic, handler, options), topic, handler)
            return handler

        return decorate

    async def _register(
        self, topic: str, handler: Callable[..., Any], options: SubscribeOptions
    ) -> None:
        # not subscribe(): a close that began since the decorator ran waits for this
        # registration (or cancels it) and then drains it, rather than failing it
        rt = self._rt
        rt.track(await rt.subscriber.subscribe(topic, handler, options))

    # -- request / reply -------------------------------------------------------------------

    async def request(
        self,
        topic: str,
        data: bytes,
        timeout: float = 5.0,
        *,
        headers: dict[str, str] | None = None,
    ) -> Message:
        """Send a request (always core) and return the reply.

        Raises jk.NoRespondersError when nobody responds on ``topic``, jk.TimeoutError
        when no reply arrives within ``timeout``, and jk.RemoteError when the responder
        raised.
        """
        await self._rt.ready()
        rt = self._rt
        return await _reqrep.request(
            rt.conn, rt.publisher, rt.topics, topic, data, timeout, headers, rt.tracing
        )

    async def request_json(
        self,
        topic: str,
        value: Any,
        response_type: type[T] | Any = Any,
        timeout: float = 5.0,
    ) -> T:
        """``request`` with ``value`` as JSON; the reply decoded as ``response_type``."""
        reply = await self.request(topic, encode_json(value), timeout)
        result: T = _reqrep.decode_reply(reply, response_type)
        return result

    async def respond(
        self,
        topic: str,
        handler: Callable[..., Any],
        queue_group: str | None = None,
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Answer requests on ``topic`` with ``handler``'s return value.

        The return value is the reply (bytes as-is, str as UTF-8, anything else as JSON);
        an exception becomes an error reply that ``request`` raises as jk.RemoteError.
        """
        rt = self._rt
        rt.check_open()
        return rt.track(
            await _reqrep.respond(
                rt.conn, rt.topics, topic, handler, queue_group, concurrency, rt.log, rt.tracing
            )
        )

    # -- health ----------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """Server, connection and JetStream state as a dict (never raises for bad state)."""
        rt = self._rt
        return await _health.report(rt.conn, rt.store, rt.api, rt.closed, len(rt.subs))

    async def healthy(self) -> None:
        """Return if server, connection and JetStream work; else raise StreamUnhealthyError."""
        rt = self._rt
        await _health.check(rt.conn, rt.store, rt.api, rt.publisher, rt.closed)

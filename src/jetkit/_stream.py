"""``jk.Stream``: the connection, the embedded server it may own, and the messaging API."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Generator, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import nats
import nats.errors

from . import _admin, _damage, _deadletters, _server, _store, _validate
from ._codec import decoder_for, encode_json, plan_handler
from ._connection import reconnect_on_server_errors, server_identity
from ._consumer import JetStreamSubscription, consumer_config
from ._deadletters import DeadLetter, RedriveResult
from ._errors import (
    ConfigError,
    ConnectionError,
    EncodeError,
    InvalidTopicError,
    JetkitError,
    JetStreamError,
    NoRespondersError,
    NotADeadLetterTopicError,
    NotFoundError,
    PayloadTooLargeError,
    RemoteError,
    StorageFullError,
    StreamClosedError,
    StreamUnhealthyError,
    TimeoutError,
)
from ._jsapi import JsApi
from ._message import Message
from ._options import subscribe_options
from ._publish import AckedPublisher, PubAck
from ._reqrep import ERROR_HEADER, Responder
from ._retry import Delay
from ._subscription import AckPolicy, Backpressure, CoreSubscription, StartAt, Subscription
from ._topics import (
    Discard,
    Retention,
    TopicMode,
    consumer_name_ok,
    stream_name,
    subject_matches,
    validate_topic,
)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_MAX_PAYLOAD_LIMIT = 64 * 1024 * 1024  # nats-server refuses a larger max_payload
_MAX_TIMEOUT = 86_400.0  # a day: longer waits are mistakes (or units confusion)
_STREAM_NAME_IN_USE = 10058
_SUBJECTS_OVERLAP = 10065


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


class Stream:
    """A connection to NATS (embedded or external) with jetkit's messaging API.

    Open it with ``Stream.open(...)``; see that method for the options.
    """

    def __init__(
        self,
        *,
        default_mode: TopicMode,
        drain_timeout: float,
        publish_timeout: float,
        logger: logging.Logger,
    ) -> None:
        self.default_mode = default_mode
        self.drain_timeout = drain_timeout
        self._log = logger
        self._nc: Any = None
        self._api: JsApi
        self._publisher: AckedPublisher
        self._publish_timeout = publish_timeout
        self._server: _server.EmbeddedServer | None = None
        self._attached = False
        self._store_dir: Path | None = None
        self._temp_store = False
        self._closed = False
        self._declared: dict[str, TopicMode] = {}
        self._modes: dict[str, TopicMode] = {}
        self._streams: dict[str, tuple[str, list[str]]] = {}
        self._ensuring: dict[str, asyncio.Future[tuple[str, list[str]]]] = {}
        self._valid: set[str] = set()
        self._subs: set[Subscription] = set()
        self._registrations: set[asyncio.Task[Subscription]] = set()
        self._last_error: Exception | None = None
        self._since_yield = 0
        self._connect_info: dict[str, Any] = {}
        self._server_opts: dict[str, Any] = {}
        self._attached_port: int | None = None
        self._takeover: asyncio.Future[None] | None = None
        # streams the server could not load (damaged metadata): recreating one serves
        # its messages again, and jetkit then rewrites its metadata
        self._damaged_streams: set[str] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._identity = ("", "")  # the server's (name, id): a new id is a restart

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        servers: Sequence[str] | str | None = None,
        default_mode: TopicMode = TopicMode.CORE,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
        max_payload: int | None = None,
        connect_timeout: float = 5.0,
        drain_timeout: float = 30.0,
        server_ready_timeout: float = 10.0,
        sync_always: bool = False,
        logger: logging.Logger | None = None,
        server_binary: str | os.PathLike[str] | None = None,
        publish_timeout: float = 5.0,
        name: str | None = None,
    ) -> _Opener:
        """Start (or attach to) the embedded server, or connect to ``servers``.

        ``store_dir``: the JetStream store of the embedded server; None means a
        temporary store removed on close. If a live jetkit server already serves
        the store, this Stream attaches to it as a client (closing leaves it running).
        ``servers``: URLs of an external NATS (cluster); no child process is started.
        ``server_binary`` (or ``$JETKIT_NATS_SERVER``): use that nats-server instead of
        the bundled one. ``publish_timeout``: how long a JetStream publish waits for
        its ack before raising jk.TimeoutError.
        """
        default_mode = _validate.option(TopicMode, default_mode, "default_mode")
        if servers is not None and store_dir is not None:
            raise ConfigError("pass store_dir (embedded server) or servers (external), not both")
        for label, secret in (("user", user), ("password", password), ("token", token)):
            # an empty credential would start (or reach) a server without authentication
            _validate.text(label, secret)
        if token is not None and (user is not None or password is not None):
            raise ConfigError("pass user/password or token, not both")
        if (user is None) != (password is None):
            raise ConfigError("user and password go together")
        _validate.optional_number("port", port, minimum=1, maximum=65535, integer=True)
        _validate.optional_number(
            "max_payload", max_payload, minimum=1, maximum=_MAX_PAYLOAD_LIMIT, integer=True
        )
        for label, seconds in (
            ("connect_timeout", connect_timeout),
            ("server_ready_timeout", server_ready_timeout),
            ("publish_timeout", publish_timeout),
        ):
            _validate.number(label, seconds, above=0, maximum=_MAX_TIMEOUT)
        _validate.number("drain_timeout", drain_timeout, minimum=0, maximum=_MAX_TIMEOUT)
        _validate.flag("sync_always", sync_always)
        _validate.text("host", host, optional=False)
        _validate.text("name", name)
        if tls is not None and not isinstance(tls, ssl.SSLContext):
            raise ConfigError(f"tls must be an ssl.SSLContext, got {tls!r}")
        if logger is not None and not isinstance(logger, logging.Logger):
            raise ConfigError(f"logger must be a logging.Logger, got {logger!r}")
        if servers is not None:
            urls = [servers] if isinstance(servers, str) else list(servers)
            if not urls or not all(isinstance(u, str) and u for u in urls):
                raise ConfigError(f"servers must be a list of NATS URLs, got {servers!r}")
        log = logger or logging.getLogger("jetkit")

        async def factory() -> Stream:
            stream = cls(
                default_mode=default_mode,
                drain_timeout=drain_timeout,
                publish_timeout=publish_timeout,
                logger=log,
            )
            try:
                if servers is not None:
                    urls = [servers] if isinstance(servers, str) else list(servers)
                    await stream._connect(
                        urls,
                        user,
                        password,
                        token,
                        tls,
                        connect_timeout,
                        name,
                        reconnect_forever=True,
                    )
                else:
                    await stream._open_embedded(
                        store_dir,
                        host=host,
                        port=port,
                        user=user,
                        password=password,
                        token=token,
                        tls=tls,
                        max_payload=max_payload,
                        connect_timeout=connect_timeout,
                        ready_timeout=server_ready_timeout,
                        sync_always=sync_always,
                        binary=server_binary,
                        name=name,
                    )
                stream._api = JsApi(
                    stream._nc, timeout=max(connect_timeout, 5.0), store_dir=stream._store_dir
                )
                stream._publisher = AckedPublisher(
                    stream._nc, publish_timeout, store_dir=stream._store_dir
                )
                await stream._publisher.start()
                await stream._report_damage()
            except BaseException:
                await stream._teardown()
                raise
            return stream

        return _Opener(factory)

    async def _open_embedded(
        self,
        store_dir: str | os.PathLike[str] | None,
        *,
        host: str,
        port: int | None,
        user: str | None,
        password: str | None,
        token: str | None,
        tls: ssl.SSLContext | None,
        max_payload: int | None,
        connect_timeout: float,
        ready_timeout: float,
        sync_always: bool,
        binary: str | os.PathLike[str] | None,
        name: str | None,
    ) -> None:
        if store_dir is None:
            path = Path(tempfile.mkdtemp(prefix="jetkit-store-"))
            self._temp_store = True
        else:
            path = Path(store_dir).expanduser().absolute()
        self._store_dir = path
        _store.prepare(path)
        if user is None and token is None:
            user, password = _store.load_or_create_credentials(path, self._log)
        self._server_opts = {
            "binary": binary,
            "host": host,
            "max_payload": max_payload,
            "sync_always": sync_always,
            "ready_timeout": ready_timeout,
            "user": user,
            "password": password,
            "token": token,
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        while True:
            lock_fd = _store.try_lock(path)
            if lock_fd is not None:
                break
            # a live jetkit server owns the store (or one is just exiting): attach to it
            if await self._attach(path, user, password, token, tls, connect_timeout, name):
                return
            if loop.time() >= deadline:
                raise _server.attach_timeout_error(path, ready_timeout)
            await asyncio.sleep(0.02)
        await self._own(path, lock_fd, port)
        assert self._server is not None
        await self._connect(
            [self._server.url],
            user,
            password,
            token,
            tls,
            connect_timeout,
            name,
            reconnect_forever=True,
        )

    async def _own(self, path: Path, lock_fd: int, port: int | None) -> None:
        """We hold the store's lock: start its server (the lock passes to it)."""
        opts = self._server_opts
        try:
            with contextlib.suppress(OSError):
                (path / _store.INFO_FILE).unlink()
            server = _server.EmbeddedServer(
                store_dir=path,
                binary=_server.find_binary(opts["binary"]),
                host=opts["host"],
                port=port,
                max_payload=opts["max_payload"],
                sync_always=opts["sync_always"],
                ready_timeout=opts["ready_timeout"],
                user=opts["user"],
                password=opts["password"],
                token=opts["token"],
                lock_fd=lock_fd,
                logger=self._log.getChild("server"),
            )
        except BaseException:
            os.close(lock_fd)
            raise
        server.on_storage_error = self._on_storage_error
        self._server = server
        await server.start()

    async def _take_over(self) -> None:
        """The server we attached to is gone (its owner exited): serve the store ourselves.

        The new server listens where the old one did, so the client reconnects by itself.
        """
        path, port = self._store_dir, self._attached_port
        assert path is not None and port is not None
        while not self._closed and not self._nc.is_connected:
            lock_fd = _store.try_lock(path)
            if lock_fd is None:  # the owner is still there (restarting it, or shutting down)
                await asyncio.sleep(0.1)
                continue
            try:
                await self._own(path, lock_fd, port)
            except JetkitError as exc:
                self._server = None
                self._log.error("jetkit: could not take over store %s: %s", path, exc)
                return
            self._attached = False
            self._log.warning("jetkit: the owner of %s exited; this process serves it now", path)
            return

    async def _attach(
        self,
        path: Path,
        user: str | None,
        password: str | None,
        token: str | None,
        tls: ssl.SSLContext | None,
        connect_timeout: float,
        name: str | None,
    ) -> bool:
        """Connect as a client to the live server that owns ``path``; False if not ready."""
        info = _store.read_attach_info(path)
        # the server dies with its owner: a dead owner means it is going away
        if (
            info is None
            or not _server.process_alive(info.get("pid"))
            or not _server.process_alive(info.get("owner_pid"))
        ):
            return False
        host = str(info.get("host", "127.0.0.1"))
        url = f"nats://{f'[{host}]' if ':' in host else host}:{info.get('port')}"
        try:
            await self._connect(
                [url], user, password, token, tls, connect_timeout, name, reconnect_forever=True
            )
        except ConnectionError:
            return False
        self._attached = True
        self._attached_port = int(str(info.get("port")))
        self._log.info(
            "jetkit: store %s is served by pid %s; attached as a client", path, info.get("pid")
        )
        return True

    async def _connect(
        self,
        urls: list[str],
        user: str | None,
        password: str | None,
        token: str | None,
        tls: ssl.SSLContext | None,
        connect_timeout: float,
        name: str | None,
        *,
        reconnect_forever: bool,
    ) -> None:
        opts: dict[str, Any] = {
            "servers": urls,
            "connect_timeout": connect_timeout,
            "allow_reconnect": True,
            # a bounded first connect (nats-py would retry a refused one forever);
            # the reconnect policy is set once connected
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.25,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect,
            # jetkit validates topics itself (once per topic), so nats-py need not
            # check every subject of every publish again
            "skip_subject_validation": True,
            "name": name or f"jetkit-{os.getpid()}",
        }
        if user is not None:
            opts["user"], opts["password"] = user, password
        if token is not None:
            opts["token"] = token
        if tls is not None:
            opts["tls"] = tls
        try:
            self._nc = await nats.connect(**opts)
            reconnect_on_server_errors(self._nc, self._log)
            self._identity = server_identity(self._nc)
            self._connect_info = {
                k: opts[k] for k in ("servers", "user", "password", "token", "tls") if k in opts
            }
            self._nc.options["max_reconnect_attempts"] = -1 if reconnect_forever else 60
        except Exception as exc:
            cause = self._last_error if isinstance(exc, nats.errors.NoServersError) else None
            text = str(cause or exc) or type(exc).__name__
            hint = (
                "check user/password or token"
                if "authorization" in text.lower()
                else "is the server running and reachable?"
            )
            raise ConnectionError(f"cannot connect to {', '.join(urls)}: {text}; {hint}") from exc

    # -- connection events -----------------------------------------------------------------

    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_error(self, exc: Exception) -> None:
        if self._nc is None and (
            self._last_error is None or "authorization" not in str(self._last_error).lower()
        ):
            self._last_error = exc  # while connecting; keep an auth failure over later resets
        if isinstance(exc, nats.errors.SlowConsumerError):
            for sub in self._subs:
                if isinstance(sub, CoreSubscription) and sub.sid == exc.sid:
                    sub.stats.received += 1
                    sub.stats.dropped += 1
                    return
            return
        self._log.debug("jetkit: connection error: %r", exc)

    async def _on_disconnect(self) -> None:
        publisher = getattr(self, "_publisher", None)
        if publisher is not None:
            publisher.connection_lost()
        for sub in list(self._subs):
            if isinstance(sub, JetStreamSubscription):
                sub.connection_lost()
        if self._closed:
            return
        self._log.warning("jetkit: disconnected from NATS; reconnecting")
        if self._attached and (self._takeover is None or self._takeover.done()):
            self._takeover = asyncio.ensure_future(self._take_over())

    def _on_storage_error(self, detail: str) -> None:
        """The embedded server cannot write its store: fail what waits for an ack now."""
        publisher = getattr(self, "_publisher", None)
        if publisher is not None:
            publisher.fail_waiting(
                lambda subject: self._disk_full(
                    f"the publish to {subject!r} was not confirmed and may or may not be stored"
                )
            )

    def _disk_full(self, what: str) -> StorageFullError:
        server = self._server
        detail = server.storage_error if server is not None else None
        return StorageFullError(
            f"store {self._store_dir} is out of disk space (nats-server: {detail}): {what}. "
            "Free disk space (delete files, or delete_topic() a topic you do not need); "
            "jetkit restarts the server and stores again by itself once there is room"
        )

    async def _report_damage(self) -> None:
        """Log what the embedded server's last start found damaged in the store."""
        server = self._server
        if server is None or not server.damage:
            return
        damage, server.damage = server.damage, _damage.Damage()
        self._damaged_streams.update(damage.streams)
        await _damage.report(damage, server.store_dir, self._api, self._log)

    async def _on_reconnect(self) -> None:
        self._log.warning("jetkit: reconnected to NATS at %s", self._nc.connected_url)
        if self._server is not None and self._server.damage:
            self._background(self._report_damage())
        identity, self._identity = self._identity, server_identity(self._nc)
        restarted = identity[0] == self._identity[0] and identity[1] != self._identity[1]
        for sub in list(self._subs):
            if isinstance(sub, JetStreamSubscription):
                sub.on_reconnect(restarted)

    # -- closing ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Drain every subscription (within ``drain_timeout``), disconnect, stop the server."""
        if self._closed:
            return
        self._closed = True
        if self._registrations:
            await asyncio.gather(*self._registrations, return_exceptions=True)
        subs = list(self._subs)
        if subs and self._nc is not None and self._nc.is_connected:
            results = await asyncio.gather(
                *(s.drain(timeout=self.drain_timeout) for s in subs), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    self._log.warning("jetkit: %s", result)
        for sub in list(self._subs):
            await sub.stop()
        await self._teardown()

    async def _teardown(self) -> None:
        self._closed = True
        for task in [self._takeover, *self._tasks]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        publisher = getattr(self, "_publisher", None)
        if publisher is not None:
            await publisher.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await self._nc.close()
        if self._server is not None:
            await self._server.stop()
        if self._temp_store and self._store_dir is not None:
            shutil.rmtree(self._store_dir, ignore_errors=True)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StreamClosedError("this Stream is closed; open a new one with Stream.open()")

    # -- properties ------------------------------------------------------------------------

    @property
    def store_dir(self) -> Path | None:
        """The embedded server's store (None for an external server)."""
        return self._store_dir

    @property
    def server_url(self) -> str | None:
        """The URL this Stream is connected to."""
        return str(self._nc.connected_url.geturl()) if self._nc and self._nc.connected_url else None

    @property
    def embedded(self) -> bool:
        """True when this Stream started and owns its nats-server."""
        return self._server is not None

    def connect_info(self) -> dict[str, Any]:
        """How another client reaches this Stream's server: ``nats.connect(**info)``.

        ``servers`` plus ``user``/``password`` or ``token`` (for an embedded store,
        the generated credentials; keep them secret) and ``tls`` if one was given.
        """
        self._check_open()
        return dict(self._connect_info)

    @property
    def max_payload(self) -> int:
        return int(self._nc.max_payload)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs)

    # -- topics ----------------------------------------------------------------------------

    def _topic(self, topic: str, *, wildcards: bool = False) -> str:
        if topic in self._valid:
            return topic
        validate_topic(topic, wildcards=wildcards)
        if not wildcards:
            self._valid.add(topic)
        return topic

    def mode_for(self, topic: str) -> TopicMode:
        """The mode a topic uses: its declare_topic mode, else the Stream's default."""
        mode = self._modes.get(topic)
        if mode is None:
            mode = self._declared.get(topic)
            if mode is None:
                for pattern, declared in self._declared.items():
                    if subject_matches(pattern, topic):
                        mode = declared
                        break
            mode = mode or self.default_mode
            self._modes[topic] = mode
        return mode

    async def _ensure_stream(self, topic: str) -> tuple[str, list[str]]:
        """The stream storing ``topic``; an existing one that covers it, else a new one."""
        found = self._streams.get(topic)
        if found is not None:
            return found
        pending = self._ensuring.get(topic)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[tuple[str, list[str]]] = asyncio.get_running_loop().create_future()
        self._ensuring[topic] = fut
        try:
            result = await self._find_or_create_stream(topic)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            self._ensuring.pop(topic, None)
        fut.set_result(result)
        self._streams[topic] = result
        return result

    async def _find_stream(self, topic: str) -> tuple[str, list[str]] | None:
        for pattern, mode in self._declared.items():
            covers = pattern == topic or subject_matches(pattern, topic)
            if mode is TopicMode.JETSTREAM and covers:
                with contextlib.suppress(NotFoundError):
                    info = await self._api.call(f"STREAM.INFO.{stream_name(pattern)}")
                    return info["config"]["name"], list(info["config"]["subjects"])
        resp = await self._api.call("STREAM.NAMES", {"subject": topic})
        for name in resp.get("streams") or []:
            info = await self._api.call(f"STREAM.INFO.{name}")
            subjects = list(info["config"].get("subjects") or [])
            if any(s == topic or subject_matches(s, topic) for s in subjects):
                return name, subjects
        return None

    async def _find_or_create_stream(self, topic: str) -> tuple[str, list[str]]:
        found = await self._find_stream(topic)
        if found is not None:
            return found
        name = stream_name(topic)
        cfg = _admin.stream_config(
            name,
            [topic],
            max_msgs=None,
            max_bytes=None,
            max_age=None,
            discard=Discard.OLD,
            replicas=1,
            retention=Retention.LIMITS,
        )
        try:
            await self._create_stream(name, cfg)
        except JetStreamError as exc:
            if exc.err_code not in (_STREAM_NAME_IN_USE, _SUBJECTS_OVERLAP):
                raise
            found = await self._find_stream(topic)
            if found is None:
                raise JetStreamError(
                    f"cannot store topic {topic!r}: {exc}. Another JetStream stream overlaps "
                    "it only partly; declare_topic() a pattern that covers both, or delete one",
                    exc.code,
                    exc.err_code,
                ) from exc
            return found
        self._log.debug("jetkit: created stream %s for topic %r", name, topic)
        return name, [topic]

    async def declare_topic(
        self,
        topic: str,
        mode: TopicMode | None = None,
        max_msgs: int | None = None,
        max_bytes: int | None = None,
        max_age: float | dt.timedelta | None = None,
        discard: Discard = Discard.OLD,
        replicas: int = 1,
        retention: Retention = Retention.LIMITS,
    ) -> _admin.TopicInfo | None:
        """Set a topic's mode and, for JetStream, create or update its stream and limits.

        ``topic`` may be a pattern (``orders.>``): every matching subject then uses this
        mode and is stored in one stream. ``mode=None`` means JETSTREAM when any stream
        option is given, else the Stream's default mode. Declaring again with other limits
        updates them (every limit not given is then unlimited); declaring without any
        limit leaves an existing stream as it is, including one that stores the topic
        under a wider pattern. Returns the stream's TopicInfo (None for a core topic).
        """
        self._check_open()
        self._topic(topic, wildcards=True)
        mode = None if mode is None else _validate.option(TopicMode, mode, "mode")
        discard = _validate.option(Discard, discard, "discard")
        retention = _validate.option(Retention, retention, "retention")
        _admin.check_limits(max_msgs, max_bytes, max_age, replicas)
        stream_opts = (
            max_msgs is not None
            or max_bytes is not None
            or max_age is not None
            or discard is not Discard.OLD
            or replicas != 1
            or retention is not Retention.LIMITS
        )
        if mode is None:
            mode = TopicMode.JETSTREAM if stream_opts else self.default_mode
        if mode is TopicMode.CORE:
            if stream_opts:
                raise ConfigError(
                    f"topic {topic!r} is declared CORE but given JetStream limits; core topics "
                    "are not stored. Use mode=jk.TopicMode.JETSTREAM"
                )
            self._set_declared(topic, mode)
            return None
        if not stream_opts:
            found = await self._find_stream(topic)
            if found is not None:  # already stored (maybe by a wider pattern): keep as is
                self._set_declared(topic, mode)
                return _admin.topic_info(await self._api.call(f"STREAM.INFO.{found[0]}"))
        name = stream_name(topic)
        cfg = _admin.stream_config(
            name,
            [topic],
            max_msgs=max_msgs,
            max_bytes=max_bytes,
            max_age=max_age,
            discard=discard,
            replicas=replicas,
            retention=retention,
        )
        try:
            current = await self._api.call(f"STREAM.INFO.{name}")
        except NotFoundError:
            current = None
        try:
            if current is None:
                resp = await self._create_stream(name, cfg)
            else:
                merged = {**current["config"], **cfg}
                resp = await self._api.call(f"STREAM.UPDATE.{name}", merged)
        except JetStreamError as exc:
            if exc.err_code == _SUBJECTS_OVERLAP:
                raise JetStreamError(
                    f"cannot declare {topic!r}: another stored topic overlaps it ({exc}). "
                    "Delete it with delete_topic() or declare a pattern that does not overlap",
                    exc.code,
                    exc.err_code,
                ) from exc
            raise
        self._set_declared(topic, mode)
        return _admin.topic_info(resp)

    async def _create_stream(self, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
        resp = await self._api.call(f"STREAM.CREATE.{name}", cfg)
        if name in self._damaged_streams:
            # nats-server served the old messages again but kept the damaged metadata
            # file; an update rewrites it, so the stream survives the next restart
            resp = await self._api.call(f"STREAM.UPDATE.{name}", cfg)
            self._damaged_streams.discard(name)
            self._log.warning(
                "jetkit: stream %r restored from a damaged store with %d messages and the "
                "limits given now",
                name,
                int(resp.get("state", {}).get("messages", 0)),
            )
        return resp

    def _set_declared(self, topic: str, mode: TopicMode) -> None:
        self._declared[topic] = mode
        self._modes.clear()
        self._streams.clear()

    async def _stream_of(self, topic: str) -> tuple[str, list[str]]:
        """The stream that stores ``topic`` (never creates one)."""
        self._topic(topic, wildcards=True)
        found = self._streams.get(topic) or await self._find_stream(topic)
        if found is None:
            raise NotFoundError(f"no JetStream topic stores {topic!r}", 404)
        return found

    async def topics(self) -> list[_admin.TopicInfo]:
        """Every JetStream topic (stream) on the server."""
        self._check_open()
        return [_admin.topic_info(s) for s in await _admin.list_streams(self._api)]

    async def topic_info(self, topic: str) -> _admin.TopicInfo:
        """Messages, bytes, first/last sequence and consumer count of a stored topic."""
        self._check_open()
        name, _ = await self._stream_of(topic)
        return _admin.topic_info(await self._api.call(f"STREAM.INFO.{name}"))

    async def purge_topic(self, topic: str) -> int:
        """Remove the stored messages of ``topic`` (only its subjects); returns how many."""
        self._check_open()
        name, subjects = await self._stream_of(topic)
        body = None if subjects == [topic] else {"filter": topic}
        resp = await self._api.call(f"STREAM.PURGE.{name}", body)
        return int(resp.get("purged", 0))

    async def delete_topic(self, topic: str) -> None:
        """Delete the stream that stores ``topic``, with its messages and consumers."""
        self._check_open()
        name, _ = await self._stream_of(topic)
        await self._api.call(f"STREAM.DELETE.{name}")
        self._streams = {k: v for k, v in self._streams.items() if v[0] != name}

    async def last_message(self, topic: str) -> Message | None:
        """The newest stored message on ``topic`` (a concrete subject), or None if none."""
        self._check_open()
        self._topic(topic)
        name, _ = await self._stream_of(topic)
        try:
            resp = await self._api.call(f"STREAM.MSG.GET.{name}", {"last_by_subj": topic})
        except NotFoundError:
            return None
        return _admin.stored_message(resp["message"])

    async def consumers(self, topic: str) -> list[_admin.ConsumerInfo]:
        """The consumers of a stored topic, with their lag."""
        self._check_open()
        name, _ = await self._stream_of(topic)
        return [_admin.consumer_info(c) for c in await _admin.list_consumers(self._api, name)]

    async def consumer_info(self, topic: str, durable: str) -> _admin.ConsumerInfo:
        """One consumer's position: pending (lag), ack_pending, redelivered, ack_floor."""
        self._check_open()
        consumer = consumer_name_ok(durable, "durable")
        name, _ = await self._stream_of(topic)
        return _admin.consumer_info(await self._api.call(f"CONSUMER.INFO.{name}.{consumer}"))

    async def delete_consumer(self, topic: str, durable: str) -> None:
        """Delete a durable consumer (its position is forgotten).

        A durable the server could not load (its state on disk is damaged) is removed
        from an embedded store too.
        """
        self._check_open()
        consumer = consumer_name_ok(durable, "durable")
        name, _ = await self._stream_of(topic)
        try:
            await self._api.call(f"CONSUMER.DELETE.{name}.{consumer}")
        except NotFoundError:
            if self._store_dir is None or not _damage.remove_consumer_state(
                self._store_dir, name, consumer
            ):
                raise
            self._log.warning(
                "jetkit: durable %r of stream %r could not be loaded; removed its state",
                consumer,
                name,
            )

    # -- dead letters ----------------------------------------------------------------------

    async def dead_letters(self, dlq_topic: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters stored on ``dlq_topic``, oldest first (at most ``limit``).

        Messages without the dead-letter headers are not dead letters and are left out.
        """
        self._check_open()
        self._topic(dlq_topic)
        _validate.optional_number("limit", limit, minimum=1, integer=True)
        name, last = await self._dlq_stream(dlq_topic)
        found: list[DeadLetter] = []
        async for msg in _deadletters.stored(self._api, name, dlq_topic, last):
            letter = _deadletters.dead_letter(msg)
            if letter is not None:
                found.append(letter)
                if limit is not None and len(found) >= limit:
                    break
        return found

    async def redrive(
        self,
        dlq_topic: str,
        *,
        limit: int | None = None,
        where: Callable[[DeadLetter], bool] | None = None,
    ) -> RedriveResult:
        """Publish dead letters again to their original topics, then delete them from the DLQ.

        Each one goes back with its original payload and headers plus
        ``Jetkit-Redrives: n``, and is deleted from ``dlq_topic`` (by sequence) only
        after that publish was acknowledged: the DLQ is never purged, so letters
        arriving meanwhile stay. ``where`` selects which letters to re-drive (the others
        are kept), ``limit`` how many at most. Messages without the dead-letter headers
        are skipped, never deleted; if the topic holds messages but no dead letter at
        all, raises jk.NotADeadLetterTopicError. A failing publish stops the re-drive
        with its error; what was re-driven until then is done, the rest stays.
        """
        self._check_open()
        self._topic(dlq_topic)
        _validate.optional_number("limit", limit, minimum=1, integer=True)
        if where is not None and not callable(where):
            raise ConfigError(f"where must be a function DeadLetter -> bool, got {where!r}")
        name, last = await self._dlq_stream(dlq_topic)
        redriven = skipped = kept = letters = 0
        async for msg in _deadletters.stored(self._api, name, dlq_topic, last):
            letter = _deadletters.dead_letter(msg)
            if letter is None:
                skipped += 1
                continue
            letters += 1
            if (limit is not None and redriven >= limit) or (
                where is not None and not where(letter)
            ):
                kept += 1
                continue
            try:
                topic, headers = _deadletters.redrive_message(letter, name)
                if topic == dlq_topic:
                    raise InvalidTopicError("its original topic is the DLQ itself")
                data = self._check_payload(topic, letter.data, headers)
            except (*_deadletters.NOT_PUBLISHABLE, PayloadTooLargeError) as exc:
                self._log.warning(
                    "jetkit: dead letter %s on %r cannot be re-driven (%s); left in place",
                    letter.seq,
                    dlq_topic,
                    exc,
                )
                skipped += 1
                continue
            await self._js_publish(topic, data, headers)
            await self._api.call(f"STREAM.MSG.DELETE.{name}", {"seq": letter.seq, "no_erase": True})
            redriven += 1
        if letters == 0 and skipped > 0:
            raise NotADeadLetterTopicError(
                f"{dlq_topic!r} holds {skipped} messages but no dead letter (none has the "
                "Jetkit-Original-Topic header); nothing was re-driven or deleted. Pass the "
                "topic given as dlq= to subscribe()"
            )
        return RedriveResult(redriven, skipped, kept)

    async def _dlq_stream(self, dlq_topic: str) -> tuple[str, int]:
        """The stream storing ``dlq_topic`` and its last sequence now."""
        name, _ = await self._stream_of(dlq_topic)
        info = await self._api.call(f"STREAM.INFO.{name}")
        return name, int(info.get("state", {}).get("last_seq", 0))

    # -- publishing ------------------------------------------------------------------------

    async def _settle_registrations(self) -> None:
        while self._registrations:
            task = next(iter(self._registrations))
            self._registrations.discard(task)
            await task

    def _check_payload(
        self, topic: str, data: object, headers: dict[str, str] | None = None
    ) -> bytes:
        """The payload as bytes, once the whole message is known to fit ``max_payload``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise EncodeError(
                f"publish() takes bytes, got {type(data).__name__}; use publish_json() for "
                "objects, or encode text with .encode()"
            )
        payload = bytes(data) if not isinstance(data, bytes) else data
        _validate.message_size(topic, payload, headers, self._nc.max_payload)
        return payload

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
    ) -> PubAck | None:
        """Publish ``data`` to ``topic``.

        JetStream topics: returns the PubAck once the server stored the message (raises
        jk.TimeoutError if no ack arrives within ``publish_timeout``; it is never dropped
        silently). ``msg_id`` sets ``Nats-Msg-Id``: a second publish with the same id within
        the duplicate window is not stored again and returns ``duplicate=True``.
        Core topics: returns None once the message is handed to the connection.
        """
        # the hot path: every check is a cheap test first, the full one only if needed
        if self._registrations:
            await self._settle_registrations()
        if self._closed:
            self._check_open()
        if topic not in self._valid:
            self._topic(topic)
        if headers is not None or msg_id is not None:
            headers = _validate.headers(headers, msg_id)
        if type(data) is not bytes or headers is not None or len(data) > self._nc._max_payload:
            data = self._check_payload(topic, data, headers)
        if (self._modes.get(topic) or self.mode_for(topic)) is TopicMode.CORE:
            try:
                await self._nc.publish(topic, data, headers=headers)
            except (nats.errors.Error, OSError) as exc:
                raise self._publish_error(topic, exc) from None
            self._since_yield += 1
            if self._since_yield >= 64:
                # nats-py's publish never yields to the event loop; a tight publish loop
                # would starve this process's own subscriptions into dropping
                self._since_yield = 0
                await asyncio.sleep(0)
            return None
        return await self._js_publish(topic, data, headers)

    async def _core_publish(
        self, topic: str, data: bytes, headers: dict[str, str] | None, reply: str = ""
    ) -> None:
        try:
            await self._nc.publish(topic, data, reply=reply, headers=headers)
        except (nats.errors.Error, OSError) as exc:
            raise self._publish_error(topic, exc) from None

    @staticmethod
    def _publish_error(topic: str, exc: Exception) -> JetkitError:
        if isinstance(exc, nats.errors.ConnectionClosedError):
            return StreamClosedError("the connection is closed; open the Stream again")
        if isinstance(exc, nats.errors.MaxPayloadError):
            return PayloadTooLargeError(
                f"message for {topic!r} (payload plus headers) is over max_payload"
            )
        return ConnectionError(f"publish to {topic!r} failed: {exc}")

    async def _js_publish(self, topic: str, data: bytes, headers: dict[str, str] | None) -> PubAck:
        if self._server is not None and self._server.storage_error is not None:
            raise self._disk_full("nothing was sent, the message is not stored")
        await self._ensure_stream(topic)
        try:
            return await self._publisher.publish(topic, data, headers)
        except NotFoundError:
            self._streams.pop(topic, None)  # deleted behind our back: create it again
            await self._ensure_stream(topic)
            return await self._publisher.publish(topic, data, headers)

    async def publish_json(
        self,
        topic: str,
        value: Any,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
    ) -> PubAck | None:
        """Encode ``value`` (dataclass, Struct, pydantic model, dict, list) as JSON and publish."""
        return await self.publish(topic, encode_json(value), headers=headers, msg_id=msg_id)

    async def publish_many(
        self,
        topic: str,
        payloads: Iterable[bytes],
        *,
        headers: dict[str, str] | None = None,
        window: int = 256,
    ) -> list[PubAck | None]:
        """Publish many payloads to one topic with up to ``window`` acks outstanding.

        JetStream: returns every PubAck in order; if any publish failed, raises
        PublishBatchError whose ``results`` hold a PubAck or the exception per payload.
        Core: publishes them all and returns a list of None.
        """
        if self._registrations:
            await self._settle_registrations()
        self._check_open()
        self._topic(topic)
        _validate.number("window", window, minimum=1, maximum=1_000_000, integer=True)
        headers = _validate.headers(headers)
        checked = (self._check_payload(topic, p, headers) for p in payloads)
        if self.mode_for(topic) is TopicMode.CORE:
            count = 0
            for data in checked:
                await self._core_publish(topic, data, headers)
                count += 1
            return [None] * count
        if self._server is not None and self._server.storage_error is not None:
            raise self._disk_full("nothing was sent, no message is stored")
        await self._ensure_stream(topic)
        acks = await self._publisher.publish_many(topic, checked, headers, window)
        return list(acks)

    # -- subscribing -----------------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        handler: Callable[..., Any],
        *,
        durable: str | None = None,
        queue_group: str | None = None,
        ack: AckPolicy = AckPolicy.AUTO,
        max_deliver: int | None = None,
        backoff: Sequence[Delay] | Delay | None = None,
        start_at: StartAt = StartAt.NEW,
        start_time: dt.datetime | float | None = None,
        start_seq: int | None = None,
        concurrency: int = 1,
        buffer_size: int = 1024,
        backpressure: Backpressure = Backpressure.BLOCK,
        dlq: str | None = None,
        ack_wait: float = 30.0,
        recreate: bool = False,
    ) -> Subscription:
        """Call ``handler`` for every message on ``topic`` (see the README for semantics)."""
        self._check_open()
        self._topic(topic, wildcards=True)
        plan = plan_handler(handler)
        opts = subscribe_options(
            topic,
            durable=durable,
            queue_group=queue_group,
            ack=ack,
            max_deliver=max_deliver,
            backoff=backoff,
            start_at=start_at,
            start_time=start_time,
            start_seq=start_seq,
            concurrency=concurrency,
            buffer_size=buffer_size,
            backpressure=backpressure,
            dlq=dlq,
            ack_wait=ack_wait,
            recreate=recreate,
        )
        common: dict[str, Any] = {
            "concurrency": opts.concurrency,
            "buffer_size": opts.buffer_size,
            "backpressure": opts.backpressure,
            "logger": self._log,
        }
        if self.mode_for(topic) is TopicMode.CORE:
            used = opts.jetstream_only()
            if used:
                raise ConfigError(
                    f"{', '.join(used)} need a JetStream topic, but {topic!r} is a core topic; "
                    "declare_topic(topic, mode=jk.TopicMode.JETSTREAM) or open the Stream with "
                    "default_mode=jk.TopicMode.JETSTREAM"
                )
            core = CoreSubscription(self._nc, topic, plan, queue_group=opts.queue_group, **common)
            await core._start()
            return self._track(core)
        if opts.backpressure is not Backpressure.BLOCK:
            raise ConfigError(
                f"{opts.backpressure} is not allowed on the JetStream topic {topic!r}: "
                "stored messages are never dropped; buffer_size bounds how many are pulled. "
                "Use Backpressure.BLOCK (the default)"
            )
        name, subjects = await self._ensure_stream(topic)
        if opts.dlq is not None:
            await self._ensure_stream(opts.dlq)
        durable, queue_group = opts.durable, opts.queue_group
        shared = durable is None and queue_group is not None
        consumer = durable or queue_group or f"jk_{self._nc._nuid.next().decode()}"
        config = consumer_config(
            name=consumer,
            durable=durable is not None,
            # the server needs a filter for last-per-subject, even on the whole stream
            filter_subject=(
                None
                if subjects == [topic] and opts.start_at is not StartAt.LAST_PER_SUBJECT
                else topic
            ),
            ack=opts.ack,
            max_deliver=opts.max_deliver,
            ack_wait=opts.ack_wait,
            start_at=opts.start_at,
            start_time=opts.start_time,
            start_seq=opts.start_seq,
            max_ack_pending=max(1000, 4 * (opts.buffer_size + opts.concurrency)),
        )
        sub = JetStreamSubscription(
            self._nc,
            self._api,
            topic,
            plan,
            stream=name,
            config=config,
            shared=shared,
            ack=opts.ack,
            max_deliver=opts.max_deliver,
            backoff=opts.backoff,
            dlq=opts.dlq,
            dead_letter=self._dead_letter,
            ack_wait=opts.ack_wait,
            recreate=opts.recreate,
            store=self._store_dir,
            **common,
        )
        await sub._start()
        return self._track(sub)

    async def _dead_letter(self, topic: str, data: bytes, headers: dict[str, str]) -> None:
        """Dead letters are always stored (JetStream), whatever the DLQ topic's mode."""
        await self._js_publish(topic, data, headers)

    def _track(self, sub: Subscription) -> Subscription:
        self._subs.add(sub)
        sub.on_closed = self._subs.discard
        return sub

    def subscriber(self, topic: str, **options: Any) -> Callable[[F], F]:
        """Decorator form of ``subscribe``: ``@s.subscriber("orders.events", durable="x")``.

        The subscription is registered in the background; the next publish or request
        on this Stream waits for it, so "decorate, then publish" never loses a message
        (and a failed registration raises there).
        """
        self._check_open()

        def decorate(handler: F) -> F:
            task = asyncio.ensure_future(self.subscribe(topic, handler, **options))
            self._registrations.add(task)
            return handler

        return decorate

    subscribe_json = subscribe

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
        if self._registrations:
            await self._settle_registrations()
        self._check_open()
        self._topic(topic)
        _validate.number("timeout", timeout, above=0, maximum=_MAX_TIMEOUT)
        headers = _validate.headers(headers)
        data = self._check_payload(topic, data, headers)
        try:
            nmsg = await self._nc.request(topic, data, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise NoRespondersError(
                f"nobody responds on {topic!r}; start a responder with Stream.respond()"
            ) from None
        except nats.errors.TimeoutError:
            raise TimeoutError(f"no reply on {topic!r} within {timeout}s") from None
        except nats.errors.ConnectionClosedError:
            raise StreamClosedError("the connection is closed; open the Stream again") from None
        except (nats.errors.Error, OSError) as exc:
            raise ConnectionError(f"request to {topic!r} failed: {exc}") from exc
        headers_in = nmsg.headers or {}
        error = headers_in.get(ERROR_HEADER)
        if error is not None:
            kind, _, text = error.partition(": ")
            raise RemoteError(kind, text)
        return Message(nmsg.subject, nmsg.data, headers_in)

    async def request_json(
        self,
        topic: str,
        value: Any,
        response_type: type[T] | Any = Any,
        timeout: float = 5.0,
    ) -> T:
        """``request`` with ``value`` as JSON; the reply decoded as ``response_type``."""
        reply = await self.request(topic, encode_json(value), timeout)
        if response_type is Message:
            return reply  # type: ignore[return-value]
        decode: Callable[[bytes], T] = decoder_for(cast(Hashable, response_type))
        result: T = decode(reply.data)
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
        self._check_open()
        self._topic(topic, wildcards=True)
        if queue_group is not None:
            consumer_name_ok(queue_group, "queue_group")
        _validate.number("concurrency", concurrency, minimum=1, maximum=10_000, integer=True)
        responder = Responder(
            self._nc,
            topic,
            plan_handler(handler),
            queue_group=queue_group,
            reply=self._core_publish,
            concurrency=concurrency,
            buffer_size=1024,
            backpressure=Backpressure.BLOCK,
            logger=self._log,
        )
        await responder._start()
        return self._track(responder)

    # -- health ----------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """Server, connection and JetStream state as a dict (never raises for bad state)."""
        server: dict[str, Any] = {
            "embedded": self._server is not None,
            "attached": self._attached,
            "store_dir": str(self._store_dir) if self._store_dir else None,
        }
        if self._server is not None:
            server.update(
                pid=self._server.pid,
                url=self._server.url,
                running=self._server.running,
                state=self._server.state,
                storage_error=self._server.storage_error,
                restarts=self._server.restart_count,
                last_exit_code=self._server.last_exit_code,
                last_error=self._server.last_error,
            )
        nc = self._nc
        connection = {
            "connected": bool(nc and nc.is_connected),
            "reconnecting": bool(nc and nc.is_reconnecting),
            "closed": self._closed,
            "url": self.server_url,
            "reconnects": int(nc.stats.get("reconnects", 0)) if nc else 0,
        }
        jetstream: dict[str, Any]
        try:
            info = await self._api.call("INFO") if not self._closed else {}
            jetstream = {
                "enabled": bool(info),
                "streams": info.get("streams", 0),
                "consumers": info.get("consumers", 0),
                "storage_bytes": info.get("storage", 0),
            }
        except JetkitError as exc:
            jetstream = {"enabled": False, "error": str(exc)}
        return {
            "server": server,
            "connection": connection,
            "jetstream": jetstream,
            "subscriptions": len(self._subs),
        }

    async def healthy(self) -> None:
        """Return if server, connection and JetStream work; else raise StreamUnhealthyError."""
        if self._closed:
            raise StreamUnhealthyError("the Stream is closed")
        server = self._server
        if server is not None and not server.running:
            raise StreamUnhealthyError(_server_problem(server))
        if self._nc.is_closed:
            raise StreamUnhealthyError(
                "the connection to NATS is closed"
                + (f" ({self._nc.last_error})" if self._nc.last_error else "")
                + "; open the Stream again"
            )
        if not self._nc.is_connected:
            raise StreamUnhealthyError("not connected to NATS (reconnecting)")
        if server is not None and server.storage_error is not None:
            raise StreamUnhealthyError(str(self._disk_full("publishes to stored topics fail")))
        if self._publisher.full is not None:
            raise StreamUnhealthyError(str(self._publisher.full))
        try:
            await self._api.call("INFO")
        except JetkitError as exc:
            raise StreamUnhealthyError(f"JetStream does not answer: {exc}") from exc


def _server_problem(server: _server.EmbeddedServer) -> str:
    """Why the embedded server is not running, and what jetkit is doing about it."""
    text = f"the embedded nats-server (store {server.store_dir}) is not running"
    if server.last_exit_code is not None:
        text += f" (it exited with code {server.last_exit_code})"
    if server.state == "waiting" and server.next_restart_at is not None:
        wait = max(0.0, server.next_restart_at - time.time())
        text += f"; it crashed repeatedly, jetkit restarts it in {wait:.1f}s"
    elif server.state == "restarting":
        text += "; jetkit is restarting it"
    if server.last_error:
        text += f". Last restart failed: {server.last_error}"
    return text

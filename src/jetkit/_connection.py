"""The connection to NATS: nats-py's client behind one small interface.

This is the only module that touches nats-py's private attributes (the outgoing
buffer, the subscription ids, the server's INFO, the protocol parser and its error
hook), and the one place that turns nats-py's errors into jetkit's (``map_error``).

jetkit's subscriptions are *routed*: jetkit's parser (``_wire``) hands their messages
to a sink function of theirs, without nats-py's per-message ``Msg``, queue and task.

Two changes to nats-py's behaviour live here. nats-py closes the client for good on
any ``-ERR`` from the server (for example "Maximum Payload Violation"), which would
leave every later call raising StreamClosedError: jetkit checks messages before
sending so that this should not happen, and if the server drops the connection
anyway, the client reconnects as after a network failure. And the first connect is
bounded (nats-py retries a refused one forever); once connected it reconnects forever.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import logging
import os
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.subscription import Subscription as NatsSubscription

from ._errors import (
    ConnectionError,
    DependencyError,
    JetkitError,
    NoRespondersError,
    PayloadTooLargeError,
    StreamClosedError,
    TimeoutError,
)
from ._message import Message
from ._natspy import SUPPORTED, check_client, check_connected, installed_version
from ._wire import Sink, WireParser, parse_headers, pub

Callback = Callable[[], Awaitable[None]]

# server errors after which reconnecting cannot help
_FATAL = ("authorization violation", "user authentication expired", "account authentication")
# errors the server reports without closing the connection
_HARMLESS = ("permissions violation", "invalid subject")


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(builtins.TimeoutError())


def map_error(exc: BaseException, what: str) -> JetkitError:
    """A nats-py (or socket) error during ``what`` as the jetkit error that says it."""
    if isinstance(exc, JetkitError):
        return exc
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return StreamClosedError("the connection is closed; open the Stream again")
    if isinstance(exc, nats.errors.TimeoutError):
        return TimeoutError(f"{what}: no answer in time")
    if isinstance(exc, nats.errors.NoRespondersError):
        return NoRespondersError(f"{what}: nobody is listening")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLargeError(f"{what}: the message (payload plus headers) is too large")
    return ConnectionError(f"{what} failed: {exc}")


class Connection:
    """One nats-py client, connected by ``connect`` and closed by ``close``."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self.nc = Client()
        self.parser = WireParser(self.nc)
        self.options: dict[str, Any] = {}  # what another client needs to connect
        self.max_payload = 0  # the server's, read at every (re)connect
        self._first_error: Exception | None = None  # while connecting
        self._replies: dict[bytes, asyncio.Future[Message]] = {}  # request token -> reply
        self._reply_ids = itertools.count(1)
        self._reply_prefix = ""
        self._reply_prefix_b = b""
        self._inline_flush = False  # a write without the flusher is scheduled

    async def connect(
        self,
        urls: list[str],
        *,
        user: str | None,
        password: str | None,
        token: str | None,
        tls: ssl.SSLContext | None,
        timeout: float,
        name: str | None,
        ping_interval: float,
        max_outstanding_pings: int,
        on_error: Callable[[Exception], Awaitable[None]],
        on_disconnect: Callback,
        on_reconnect: Callback,
    ) -> None:
        """Connect (bounded); then reconnect forever. ConnectionError names the cause."""

        self.nc = Client()  # a fresh client: one that failed to connect is not reused
        check_client(self.nc, Client)  # nats-py's insides jetkit uses are there (_natspy)
        self.parser = WireParser(self.nc)
        self.nc._ps = self.parser  # type: ignore[assignment]

        async def reconnected() -> None:
            self.max_payload = int(self.nc.max_payload)  # maybe another server's
            await on_reconnect()

        async def error_cb(exc: Exception) -> None:
            if self._first_error is None or "authorization" not in str(self._first_error).lower():
                self._first_error = exc  # keep an auth failure over the resets after it
            await on_error(exc)

        async def lame_duck() -> None:
            self._log.warning(
                "the NATS server %s entered lame-duck mode (it is shutting down); "
                "the connection moves to another server of the cluster when it closes",
                self.url,
            )

        opts: dict[str, Any] = {
            "servers": urls,
            "connect_timeout": timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.25,
            "ping_interval": ping_interval,
            "max_outstanding_pings": max_outstanding_pings,
            "error_cb": error_cb,
            "disconnected_cb": on_disconnect,
            "reconnected_cb": reconnected,
            "lame_duck_mode_cb": lame_duck,
            # jetkit checks topics itself (once per topic)
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
            # bounded: nats-py retries some failed first connects (a TLS handshake
            # refused, for one) forever while reconnecting is allowed
            await asyncio.wait_for(self.nc.connect(**opts), timeout * len(urls) + 1)
        except Exception as exc:
            if isinstance(exc, builtins.TimeoutError):
                with contextlib.suppress(Exception):
                    await self.nc.close()
            cause = self._first_error if isinstance(exc, nats.errors.NoServersError) else None
            text = str(cause or exc) or type(exc).__name__
            hint = (
                "check user/password or token"
                if "authorization" in text.lower()
                else "is the server running and reachable?"
            )
            raise ConnectionError(f"cannot connect to {', '.join(urls)}: {text}; {hint}") from exc
        try:
            check_connected(self.nc)
        except DependencyError:
            with contextlib.suppress(Exception):
                await self.nc.close()
            raise
        self.nc.options["max_reconnect_attempts"] = -1
        self._reply_prefix = self.nc.new_inbox() + "."
        self._reply_prefix_b = self._reply_prefix.encode()
        await self.subscribe(self._reply_prefix + "*", self._on_reply)
        self.max_payload = int(self.nc.max_payload)
        self.options = {
            k: opts[k] for k in ("servers", "user", "password", "token", "tls") if k in opts
        }
        self._reconnect_on_server_errors()

    def _reconnect_on_server_errors(self) -> None:
        nc = self.nc
        close_for_good = nc._process_err

        async def process_err(err_msg: str) -> None:
            text = err_msg.strip().strip("'")
            lower = text.lower()
            if nc.is_connecting or any(f in lower for f in _FATAL):
                await close_for_good(err_msg)
                return
            if any(h in lower for h in _HARMLESS):
                self._log.warning("the NATS server refused a request: %s", text)
                return
            self._log.warning("the NATS server dropped the connection (%s); reconnecting", text)
            await nc._process_op_err(nats.errors.Error(f"nats: {text}"))

        nc._process_err = process_err  # type: ignore[method-assign]

    # -- state -----------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    @property
    def is_closed(self) -> bool:
        return bool(self.nc.is_closed)

    @property
    def is_reconnecting(self) -> bool:
        return bool(self.nc.is_reconnecting)

    @property
    def url(self) -> str | None:
        url = self.nc.connected_url
        return str(url.geturl()) if url is not None else None

    @property
    def last_error(self) -> Exception | None:
        return self.nc.last_error

    @property
    def reconnects(self) -> int:
        return int(self.nc.stats.get("reconnects", 0))

    @property
    def server_version(self) -> str:
        """The version the connected server announced ("2.15.1"), "" if unknown."""
        return str((self.nc._server_info or {}).get("version", ""))

    @property
    def clustered(self) -> bool:
        """Whether the connected server is a node of a cluster (its INFO names the
        cluster): calls then ride through leader elections."""
        info = self.nc._server_info or {}
        return bool(info.get("cluster"))

    @property
    def cluster_size(self) -> int:
        """How many servers the cluster told the client about (itself included), at
        least 1: a lower bound of its nodes."""
        info = self.nc._server_info or {}
        urls = {str(u) for u in info.get("connect_urls") or ()}
        return max(1, len(urls))

    def identity(self) -> tuple[str, str]:
        """(server name, server id): a restarted server keeps its name, gets a new id."""
        info = self.nc._server_info or {}
        return str(info.get("server_name", "")), str(info.get("server_id", ""))

    def known_urls(self) -> list[str]:
        """Every server URL the client knows: those given and those the cluster told."""
        return [str(srv.uri.geturl()) for srv in self.nc._server_pool]

    async def move_to(self, url: str) -> None:
        """Reconnect now, to ``url`` (one of ``known_urls``) first.

        nats-py's reconnect takes the next server of its (shuffled) pool; its
        ``_reconnect_to_server_handler`` picks one instead: set for this reconnect only,
        it hands back ``url`` once and removes itself, so a failed attempt goes on
        through the pool as usual.
        """
        nc = self.nc
        if not nc.is_connected:
            return

        def pick_once(servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
            nc._reconnect_to_server_handler = None
            chosen = next((srv for srv in servers if srv.uri.geturl() == url), None)
            return chosen, 0.0

        nc._reconnect_to_server_handler = pick_once
        await nc.force_reconnect()

    def new_inbox(self) -> str:
        return self.nc.new_inbox()

    def unique_name(self) -> str:
        """A short unique token (for ephemeral consumer names)."""
        return secrets.token_hex(11)

    # -- sending ---------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            await self.nc.publish(subject, data, reply=reply, headers=headers)
        except (nats.errors.Error, OSError) as exc:
            raise map_error(exc, f"publish to {subject!r}") from None

    def send(self, command: bytes, bounded: bool = True) -> bool:
        """Put a raw protocol command in the outgoing buffer without waiting.

        For the hot paths (publishes, acks) whose callers checked everything already:
        the flusher writes whatever a loop turn buffered in one go. Returns True when
        the buffer holds more than nats-py's pending limit: then ``await relieve()``
        before sending more. While the connection is down, commands wait for the
        reconnect; ``bounded`` ones (publishes) up to that limit, past it
        ConnectionError and nothing is buffered. Acks pass ``bounded=False``: their
        number is bounded by the messages held, and they must not crowd out publishes.
        """
        nc = self.nc
        if nc._status != Client.CONNECTED:
            if nc.is_closed:
                raise StreamClosedError("the connection is closed; open the Stream again")
            if bounded and nc._pending_data_size + len(command) > nc._max_pending_size:
                raise ConnectionError(
                    "the connection to NATS is down and the buffer of what waits for it is "
                    "full; send again once it is back (Stream.health() tells)"
                )
            nc._pending.append(command)  # sent after the reconnect
            nc._pending_data_size += len(command)
            return False
        nc._pending.append(command)
        size = nc._pending_data_size = nc._pending_data_size + len(command)
        kick = nc._flush_queue
        if not kick._queue:  # type: ignore[union-attr]
            # wake the flusher: it writes everything buffered in this loop turn at once
            kick.put_nowait(asyncio.get_running_loop().create_future())  # type: ignore[union-attr]
        if nc._flusher_task.done() and not self._inline_flush:  # type: ignore[union-attr]
            # the flusher died (nats-py then writes inline): do the same, once per turn
            self._inline_flush = True
            asyncio.get_running_loop().call_soon(self._flush_inline)
        return bool(size > nc._max_pending_size)

    def _flush_inline(self) -> None:
        self._inline_flush = False
        nc = self.nc
        if nc.is_connected and nc._pending and nc._transport is not None:
            nc._transport.writelines(nc._pending)
            nc._pending = []
            nc._pending_data_size = 0

    async def relieve(self) -> None:
        """Wait (while connected) until the flusher wrote the outgoing buffer.

        After ``send`` said it is over the limit. Returns when it is written, or when
        the connection drops (``send`` then bounds what waits for the reconnect).
        """
        nc = self.nc
        if not nc.is_connected:
            return
        if nc._flusher_task is None or nc._flusher_task.done():
            self._flush_inline()
            return
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await nc._flush_queue.put(written)  # type: ignore[union-attr]
        while not written.done() and nc.is_connected:
            await asyncio.wait((written,), timeout=0.25)

    async def request(
        self,
        subject: str,
        data: bytes,
        timeout: float,
        *,
        headers: dict[str, str] | None = None,
        what: str | None = None,
    ) -> Message:
        """Send ``data`` to ``subject`` and return the first reply.

        Replies come to one routed wildcard inbox, each request waiting on a Future
        keyed by its token (no subscription, Msg or task per request).
        """
        if len(data) > self.max_payload:
            raise PayloadTooLargeError(
                f"{what or f'request to {subject!r}'}: {len(data)} bytes is over the "
                f"server's max_payload of {self.max_payload}"
            )
        loop = asyncio.get_running_loop()
        token = b"%d" % next(self._reply_ids)
        reply: asyncio.Future[Message] = loop.create_future()
        self._replies[token] = reply
        expiry = loop.call_later(timeout, _expire, reply)
        try:
            if headers is not None:
                await self.publish(
                    subject, data, reply=self._reply_prefix + token.decode(), headers=headers
                )
            elif self.send(pub(subject.encode(), data, self._reply_prefix_b + token)):
                await self.relieve()
            return await reply
        except builtins.TimeoutError:
            raise TimeoutError(f"{what or f'request to {subject!r}'}: no answer in time") from None
        except NoRespondersError:
            raise NoRespondersError(
                f"{what or f'request to {subject!r}'}: nobody is listening"
            ) from None
        finally:
            expiry.cancel()
            self._replies.pop(token, None)

    def _on_reply(self, subject: bytes, reply: bytes, hdr: bytes | None, payload: bytes) -> None:
        """The parser's hand-over: a reply for the request whose token ends ``subject``."""
        waiter = self._replies.pop(subject[len(self._reply_prefix_b) :], None)
        if waiter is None or waiter.done():
            return
        if not payload and hdr and parse_headers(hdr).get("Status") == "503":
            waiter.set_exception(NoRespondersError("nobody is listening"))
            return
        waiter.set_result(
            Message(subject.decode(), payload, None, reply.decode() or None, None, hdr)
        )

    async def flush(self, timeout: float) -> None:
        """A round trip: once it returns, the server has read everything sent before.

        nats-py 2.16 writes its PING straight to the socket while what was sent before
        it (a SUB) still waits for the flusher task: the server then answered the PING
        before it read the SUB, and a publish from another connection right after could
        find no interest. So the buffer is written first, then the PING."""
        self._flush_inline()
        try:
            await self.nc.flush(timeout=max(1, round(timeout)))
        except (nats.errors.Error, OSError) as exc:
            raise map_error(exc, "flush") from None

    async def close(self) -> None:
        await self.nc.close()

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(self, subject: str, sink: Sink, *, queue: str = "") -> NatsSubscription:
        """A routed subscription: jetkit's parser hands its messages to ``sink``.

        nats-py keeps the subscription (it subscribes again after a reconnect); its own
        queue stays empty. The route exists before the SUB is sent, so no message can
        miss it.
        """
        nc = self.nc
        routes = self.parser.routes
        sid = nc._sid + 1  # the id nats-py's subscribe is about to take
        routes[b"%d" % sid] = sink
        try:
            sub = await nc.subscribe(subject, queue=queue)
        except BaseException:
            routes.pop(b"%d" % sid, None)
            raise
        real = getattr(sub, "_id", None)
        if not isinstance(real, int):
            routes.pop(b"%d" % sid, None)
            raise DependencyError(
                f"nats-py {installed_version()}'s Subscription has no _id as jetkit expects; "
                f"install a supported version: pip install 'nats-py{SUPPORTED}'"
            )
        if real != sid:  # nats-py numbered differently: route the real id
            routes.pop(b"%d" % sid, None)
            routes[b"%d" % real] = sink
        return sub

    async def unsubscribe(self, sub: NatsSubscription) -> None:
        """Stop the messages of ``sub`` (what the server still sends is discarded)."""
        self.parser.routes.pop(b"%d" % sub._id, None)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def unsubscribe_now(self, sub: NatsSubscription) -> None:
        """Tell the server to stop sending to ``sub`` without stopping the task that runs
        its callback (which may be the caller)."""
        if self.send(b"UNSUB %d\r\n" % sub._id):
            await self.relieve()

"""Thin JSON calls to the JetStream API (``$JS.API.*``), mapped to jetkit errors."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import msgspec

from ._connection import Connection
from ._errors import (
    ConfigError,
    JetStreamError,
    NoRespondersError,
    NotFoundError,
    StorageFullError,
    TimeoutError,
)

STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
IN_FLIGHT = 64  # API calls of one Stream waiting for their answer at the same time

_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode


# "insufficient resources" (JetStream's storage limit reached), "insufficient storage
# resources available" (a stream's limits do not fit)
STORAGE_FULL_CODES = (10023, 10047)


def storage_full(
    detail: str, store_dir: Path | None, code: int = 0, err_code: int = 0
) -> StorageFullError:
    """The error for JetStream's storage limit being reached, with what to do."""
    where = f"store {store_dir}" if store_dir is not None else "the NATS server's store"
    return StorageFullError(
        f"{where} is full: JetStream's storage limit is reached (nats-server: {detail}); "
        "nothing more is stored until there is room. Purge or delete topics you do not "
        "need, or give topics limits (declare_topic(..., max_bytes=..., max_age=...)) so "
        "old messages make room. The limit is set when the server starts (three quarters "
        "of the disk's free space then): disk space freed elsewhere counts once it restarts",
        code,
        err_code,
    )


# answers that mean "not now" on a cluster (nothing was done; ask again): 10008 "JetStream
# system temporarily unavailable" (no meta leader), 10009 "JetStream cluster can not handle
# request" (a node still loading), 10007 "not assigned to this server"; any status 503
TRANSIENT_CODES = (10007, 10008, 10009)
NO_PEERS = 10005  # "no suitable peers for placement"
RESEND = 1.0  # seconds without an answer before a call safe to repeat is sent again
# calls that must not be repeated blindly: a purge of the whole topic would also remove
# what was published between the two (a filtered purge, a schedule's, may be)
_ONCE = ("STREAM.PURGE.",)
# calls whose repeat says "not found" when the first one did it
_DELETES = ("STREAM.DELETE.", "CONSUMER.DELETE.", "STREAM.MSG.DELETE.")


def pause(attempt: int) -> float:
    """Seconds to wait before asking again after the ``attempt``-th transient answer
    (0-based): 50 ms doubling up to one second, with up to 20 % jitter."""
    return float(min(0.05 * 2**attempt, RESEND)) * (1.0 + 0.2 * random.random())


def repeatable(suffix: str, payload: dict[str, Any] | None) -> bool:
    """Whether the call ``suffix`` may be sent again while no answer came."""
    return not suffix.startswith(_ONCE) or bool(payload and payload.get("filter"))


def no_answer(suffix: str, timeout: float, last: str) -> TimeoutError:
    """The error of a call that got no usable answer within ``api_timeout``."""
    seen = f" (last: {last})" if last else ""
    return TimeoutError(
        f"JetStream API call {suffix}: no answer within {timeout:g}s{seen}. On a cluster a "
        "leader election may be under way (they take several seconds): retry, or open the "
        f"Stream with a larger api_timeout (e.g. Stream.open(..., api_timeout=20))"
    )


def placement(replicas: int, nodes: int, detail: str) -> ConfigError:
    """The error for a topic whose replicas the cluster cannot place."""
    return ConfigError(
        f"replicas={replicas} cannot be placed: the cluster has {nodes} JetStream node(s) "
        f"that answer, and each replica needs a node of its own (nats-server: {detail}). "
        f"Declare the topic with replicas={min(replicas, nodes)} or fewer, or add nodes "
        "(or bring the stopped ones back)"
    )


class JsApi:
    """Request/response with the JetStream API over the Stream's connection.

    On a cluster every call rides through a leader election or a node that is still
    loading: a transient answer (status 503, "temporarily unavailable", no responders)
    is asked again with backoff, and a call safe to repeat that gets no answer is sent
    again about every second (the first answer to any of its sends wins), all until
    ``timeout`` (``api_timeout``) from its first send.
    """

    def __init__(
        self, conn: Connection, timeout: float = 5.0, store_dir: Path | None = None
    ) -> None:
        self._conn = conn
        self.timeout = timeout
        self._store_dir = store_dir
        self._gate: asyncio.Semaphore | None = None  # made on first use, in the loop
        self._holding = 0  # calls of this connection holding a place in the gate
        self._connection = 0  # how many times the connection was lost
        self.in_flight = 0  # calls sent, not answered yet
        self.answered = 0  # calls answered without an error (the failover watch reads both)

    async def call(self, suffix: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call; at most ``IN_FLIGHT`` at a time. A burst (a thousand subscribes
        at once, a close deleting a thousand ephemeral consumers) waits here, not in the
        server's API queue, which answers one call after another: there the last ones
        timed out. The timeout runs from when a call is sent. Calls sent before the
        connection was lost give their places up then (``connection_lost``)."""
        body = _encode(payload) if payload is not None else b""
        if self._gate is None:
            self._gate = asyncio.Semaphore(IN_FLIGHT)
        await self._gate.acquire()
        connection = self._connection
        self._holding += 1
        self.in_flight += 1
        try:
            resp = await self._call(suffix, payload, body)
        finally:
            self.in_flight -= 1
            if connection == self._connection:
                self._holding -= 1
                self._gate.release()
        self.answered += 1
        return resp

    def connection_lost(self) -> None:
        """The connection dropped: the calls sent on it give their places in the gate up.
        Their answers went with the connection, so each of them only waits for its
        timeout (or its re-send, on a cluster); holding a place meanwhile would keep the
        calls made after the reconnect (a consumer made again, a topic looked up)
        waiting up to ``api_timeout`` behind them."""
        self._connection += 1
        if self._gate is not None:
            for _ in range(self._holding):
                self._gate.release()
        self._holding = 0

    async def _call(
        self, suffix: str, payload: dict[str, Any] | None, body: bytes
    ) -> dict[str, Any]:
        """``call`` once through the gate: retried through elections until the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        attempt = 0
        resent = False
        last = ""
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise no_answer(suffix, self.timeout, last)
            clustered = self._conn.clustered
            try:
                if clustered and repeatable(suffix, payload):
                    data, resent_now = await self._sent_until_answered(suffix, body, left)
                    resent = resent or resent_now
                else:
                    msg = await self._conn.request(
                        "$JS.API." + suffix, body, left, what=f"JetStream API call {suffix}"
                    )
                    data = msg.data
            except TimeoutError:
                raise no_answer(suffix, self.timeout, last) from None
            except NoRespondersError:
                if not clustered:
                    raise JetStreamError(
                        "JetStream is not enabled on this NATS server; start nats-server "
                        "with -js (the embedded server always has it)"
                    ) from None
                last = "no responders"
            else:
                resp = _decode(data) if data else {}
                err = resp.get("error")
                if not err:
                    return resp
                code = int(err.get("code", 0))
                err_code = int(err.get("err_code", 0))
                text = f"{err.get('description', 'JetStream error')} ({suffix})"
                if code != 503 and err_code not in TRANSIENT_CODES:
                    if err_code == NO_PEERS:
                        replicas = int((payload or {}).get("num_replicas") or 1)
                        wait = pause(attempt)
                        if replicas <= self._conn.cluster_size and wait < left:
                            last = text  # a node may be (re)joining: ask again
                            await asyncio.sleep(wait)
                            attempt += 1
                            continue
                        raise placement(replicas, self._conn.cluster_size, text)
                    if (
                        resent
                        and suffix.startswith(_DELETES)
                        and (code == 404 or err_code in (STREAM_NOT_FOUND, CONSUMER_NOT_FOUND))
                    ):
                        return {"success": True}  # an earlier send of ours did it
                    raise self._error(text, code, err_code)
                last = text
            await asyncio.sleep(min(pause(attempt), max(0.0, deadline - loop.time())))
            attempt += 1

    async def _sent_until_answered(
        self, suffix: str, body: bytes, left: float
    ) -> tuple[bytes, bool]:
        """The first answer to the call, sent again every ``RESEND`` seconds (jittered)
        while none came, for ``left`` seconds; and whether it was sent more than once.
        Raises TimeoutError or NoRespondersError as a single send would."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + left
        sends: set[asyncio.Task[Any]] = set()
        count = 0
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"JetStream API call {suffix}: no answer in time")
                count += 1
                sends.add(
                    asyncio.ensure_future(
                        self._conn.request(
                            "$JS.API." + suffix, body, left, what=f"JetStream API call {suffix}"
                        )
                    )
                )
                window = min(left, RESEND * (0.8 + 0.4 * random.random()))
                done, _ = await asyncio.wait(
                    sends, timeout=window, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    sends.discard(task)
                    exc = task.exception()
                    if exc is None:
                        return task.result().data, count > 1
                    if not isinstance(exc, TimeoutError) or not sends:
                        raise exc
        finally:
            for task in sends:
                task.cancel()

    def nodes(self, at_most: int) -> int:
        """Replicas for a stream jetkit makes for itself: 1 on a single server, else as
        many as the cluster has nodes, up to ``at_most``."""
        return min(at_most, self._conn.cluster_size) if self._conn.clustered else 1

    def _error(self, text: str, code: int, err_code: int) -> JetStreamError:
        if code == 404 or err_code in (STREAM_NOT_FOUND, CONSUMER_NOT_FOUND):
            return NotFoundError(text, code, err_code)
        if err_code in STORAGE_FULL_CODES:
            return storage_full(text, self._store_dir, code, err_code)
        return JetStreamError(text, code, err_code)

    async def every(self, suffix: str, key: str) -> list[dict[str, Any]]:
        """Every item of a paged list call (``STREAM.LIST``: key ``streams``,
        ``CONSUMER.LIST.<stream>``: key ``consumers``), page by page."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            resp = await self.call(suffix, {"offset": offset})
            batch = resp.get(key) or []
            out.extend(batch)
            offset += len(batch)
            if not batch or offset >= int(resp.get("total", 0)):
                return out

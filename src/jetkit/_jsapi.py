"""Thin JSON calls to the JetStream API (``$JS.API.*``), mapped to jetkit errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from ._connection import Connection
from ._errors import JetStreamError, NoRespondersError, NotFoundError, StorageFullError

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


class JsApi:
    """Request/response with the JetStream API over the Stream's connection."""

    def __init__(
        self, conn: Connection, timeout: float = 5.0, store_dir: Path | None = None
    ) -> None:
        self._conn = conn
        self.timeout = timeout
        self._store_dir = store_dir
        self._gate: asyncio.Semaphore | None = None  # made on first use, in the loop
        self.in_flight = 0  # calls sent, not answered yet
        self.answered = 0  # calls answered without an error (the failover watch reads both)

    async def call(self, suffix: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call; at most ``IN_FLIGHT`` at a time. A burst (a thousand subscribes
        at once, a close deleting a thousand ephemeral consumers) waits here, not in the
        server's API queue, which answers one call after another: there the last ones
        timed out. The timeout runs from when a call is sent."""
        body = _encode(payload) if payload is not None else b""
        if self._gate is None:
            self._gate = asyncio.Semaphore(IN_FLIGHT)
        try:
            async with self._gate:
                self.in_flight += 1
                try:
                    msg = await self._conn.request(
                        "$JS.API." + suffix,
                        body,
                        self.timeout,
                        what=f"JetStream API call {suffix}",
                    )
                finally:
                    self.in_flight -= 1
        except NoRespondersError:
            raise JetStreamError(
                "JetStream is not enabled on this NATS server; start nats-server with -js "
                "(the embedded server always has it)"
            ) from None
        resp = _decode(msg.data) if msg.data else {}
        err = resp.get("error")
        if err:
            code = int(err.get("code", 0))
            err_code = int(err.get("err_code", 0))
            text = f"{err.get('description', 'JetStream error')} ({suffix})"
            if code == 404 or err_code in (STREAM_NOT_FOUND, CONSUMER_NOT_FOUND):
                raise NotFoundError(text, code, err_code)
            if err_code in STORAGE_FULL_CODES:
                raise storage_full(text, self._store_dir, code, err_code)
            raise JetStreamError(text, code, err_code)
        self.answered += 1
        return resp

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

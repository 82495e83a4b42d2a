"""Thin JSON calls to the JetStream API (``$JS.API.*``), mapped to jetkit errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import msgspec
import nats.errors

from ._errors import (
    ConnectionError,
    JetStreamError,
    NotFoundError,
    StorageFullError,
    StreamClosedError,
    TimeoutError,
)

STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014

_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode


def nanos(seconds: float | dt.timedelta) -> int:
    if isinstance(seconds, dt.timedelta):
        seconds = seconds.total_seconds()
    return int(seconds * 1_000_000_000)


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> dt.datetime | None:
    """Parse the server's RFC 3339 timestamps (nanosecond precision is cut to micro)."""
    if not text or text.startswith("0001-01-01"):
        return None
    main, _, frac = text.rstrip("Z").partition(".")
    tz = ""
    for sep in ("+", "-"):
        if sep in frac:
            frac, _, rest = frac.partition(sep)
            tz = sep + rest
    if not frac and len(main) > 19:
        main, tz = main[:19], main[19:]
    fraction = f".{frac[:6]:0<6}" if frac else ""
    stamp = dt.datetime.fromisoformat(main + fraction + (tz or "+00:00"))
    return stamp.astimezone(dt.UTC)


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
    """Request/response with the JetStream API on one connection."""

    def __init__(self, nc: Any, timeout: float = 5.0, store_dir: Path | None = None) -> None:
        self._nc = nc
        self.timeout = timeout
        self._store_dir = store_dir

    async def call(self, suffix: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        body = _encode(payload) if payload is not None else b""
        try:
            msg = await self._nc.request("$JS.API." + suffix, body, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise JetStreamError(
                "JetStream is not enabled on this NATS server; start nats-server with -js "
                "(the embedded server always has it)"
            ) from None
        except nats.errors.TimeoutError:
            raise TimeoutError(
                f"JetStream API call {suffix} got no answer within {self.timeout}s"
            ) from None
        except nats.errors.ConnectionClosedError:
            raise StreamClosedError("the connection is closed; open the Stream again") from None
        except (nats.errors.Error, OSError) as exc:
            raise ConnectionError(f"JetStream API call {suffix} failed: {exc}") from exc
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
        return resp

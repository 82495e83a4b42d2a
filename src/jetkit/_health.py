"""A Stream's health: the embedded server, the connection and JetStream, truthfully.

The connection is checked before JetStream is asked anything, so a disconnected Stream
answers at once instead of waiting out an API timeout.
"""

from __future__ import annotations

import time
from typing import Any

from ._connection import Connection
from ._errors import JetkitError, StreamUnhealthyError
from ._jsapi import JsApi
from ._publish import Publisher, disk_full
from ._server import EmbeddedServer
from ._store import EmbeddedStore


async def report(
    conn: Connection,
    store: EmbeddedStore | None,
    api: JsApi,
    closed: bool,
    subscriptions: int,
) -> dict[str, Any]:
    """``Stream.health``: a dict with the server, connection and JetStream state."""
    server: dict[str, Any] = {
        "embedded": store is not None and store.server is not None,
        "attached": store is not None and store.attached,
        "store_dir": str(store.path) if store is not None else None,
    }
    embedded = store.server if store is not None else None
    if embedded is not None:
        server.update(
            pid=embedded.pid,
            url=embedded.url,
            running=embedded.running,
            state=embedded.state,
            storage_error=embedded.storage_error,
            restarts=embedded.restart_count,
            last_exit_code=embedded.last_exit_code,
            last_error=embedded.last_error,
        )
    connection = {
        "connected": conn.is_connected,
        "reconnecting": conn.is_reconnecting,
        "closed": closed,
        "url": conn.url,
        "reconnects": conn.reconnects,
    }
    jetstream: dict[str, Any]
    if closed or not conn.is_connected:
        jetstream = {"enabled": False, "error": "not connected"}
    else:
        try:
            info = await api.call("INFO")
            jetstream = {
                "enabled": True,
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
        "subscriptions": subscriptions,
    }


async def check(
    conn: Connection,
    store: EmbeddedStore | None,
    api: JsApi,
    publisher: Publisher,
    closed: bool,
) -> None:
    """``Stream.healthy``: return if all works, else StreamUnhealthyError with the reason."""
    if closed:
        raise StreamUnhealthyError("the Stream is closed")
    server = store.server if store is not None else None
    if server is not None and not server.running:
        raise StreamUnhealthyError(server_problem(server))
    if conn.is_closed:
        raise StreamUnhealthyError(
            "the connection to NATS is closed"
            + (f" ({conn.last_error})" if conn.last_error else "")
            + "; open the Stream again"
        )
    if not conn.is_connected:
        raise StreamUnhealthyError("not connected to NATS (reconnecting)")
    if server is not None and server.storage_error is not None:
        error = disk_full(server.store_dir, server.storage_error, "publishes to stored topics fail")
        raise StreamUnhealthyError(str(error))
    if publisher.acked.full is not None:
        raise StreamUnhealthyError(str(publisher.acked.full))
    try:
        await api.call("INFO")
    except JetkitError as exc:
        raise StreamUnhealthyError(f"JetStream does not answer: {exc}") from exc


def server_problem(server: EmbeddedServer) -> str:
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

"""The nats-py connection: what jetkit changes about how it handles server errors.

nats-py closes the client for good on any ``-ERR`` from the server (for example
"Maximum Payload Violation" or "Maximum Control Line Exceeded"), so one bad message
would leave every later call raising StreamClosedError. jetkit checks messages before
sending so that this should not happen; if the server drops the connection anyway,
the client reconnects, as it does after a network failure, and subscriptions are
restored.
"""

from __future__ import annotations

import logging
from typing import Any

import nats.errors

# the only server errors after which reconnecting cannot help
_FATAL = ("authorization violation", "user authentication expired", "account authentication")
# errors the server reports without closing the connection
_HARMLESS = ("permissions violation", "invalid subject")


def reconnect_on_server_errors(nc: Any, log: logging.Logger) -> None:
    """Make ``nc`` reconnect (instead of closing) when the server sends ``-ERR``."""
    close_for_good = nc._process_err

    async def process_err(err_msg: str) -> None:
        text = err_msg.strip().strip("'")
        lower = text.lower()
        if nc.is_connecting or any(f in lower for f in _FATAL):
            await close_for_good(err_msg)
            return
        if any(h in lower for h in _HARMLESS):
            log.warning("jetkit: the NATS server refused a request: %s", text)
            return
        log.warning("jetkit: the NATS server dropped the connection (%s); reconnecting", text)
        await nc._process_op_err(nats.errors.Error(f"nats: {text}"))

    nc._process_err = process_err


def server_identity(nc: Any) -> tuple[str, str]:
    """(server name, server id) of the server ``nc`` is connected to; a restarted server
    keeps its name and gets a new id."""
    info = nc._server_info or {}
    return str(info.get("server_name", "")), str(info.get("server_id", ""))

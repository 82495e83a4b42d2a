"""What jetkit needs of nats-py's insides, and the check that they are there.

jetkit keeps nats-py's connection (connecting, auth, TLS, reconnect, server discovery,
lame duck, PING/PONG) but owns the hot paths, which nats-py does not expose:

* its parser (``_wire``) replaces nats-py's in the read loop (``Client._ps``) and hands
  each message, PING, PONG, INFO and -ERR back to ``_process_msg``, ``_process_ping``,
  ``_process_pong``, ``_process_info``, ``_process_err``; ``_process_err`` is wrapped so
  a protocol error closes the connection as jetkit decides (``_process_op_err``);
* publishes and acks go straight into the outgoing buffer (``_pending``,
  ``_pending_data_size``, ``_max_pending_size``), waking the flusher (``_flush_queue``:
  an ``asyncio.Queue``, whose own ``_queue`` tells whether a wake-up is queued) or
  writing inline when the flusher died (``_flusher_task``, ``_transport``);
* a subscription's messages are routed by the id nats-py is about to give it (``_sid``,
  ``Subscription._id``), so none can miss its route;
* ``_server_pool`` (the URLs known, given and discovered) and
  ``_reconnect_to_server_handler`` (set for one reconnect: the server to move to when
  the one connected has no JetStream quorum, ``_failover``);
* ``_status`` (connected or not: read for every publish and ack, where the public
  ``is_connected`` property costs a call more), ``_server_info`` (the server's name and
  id: a new id under the same name is a restart).

``pyproject.toml`` allows only the nats-py versions these were checked with
(``SUPPORTED``). A release that renames or reshapes one of them would otherwise fail
deep in a hot path, or stall; so ``check_client`` (before connecting) and
``check_connected`` (once connected) look for every one of them, and raise
jk.DependencyError naming the version found, the versions supported, and the fix.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
from typing import Any

from ._errors import DependencyError

SUPPORTED = ">=2.16,<2.17"

# attribute -> what it must be, on a client not yet connected
_BEFORE = {
    "_ps": "the parser nats-py's read loop calls (jetkit puts its own there)",
    "_server_info": "dict",
    "_status": "int",
    "_pending": "list",
    "_pending_data_size": "int",
    "_max_pending_size": "int",
    "_sid": "int",
    "_flush_queue": "attribute",
    "_flusher_task": "attribute",
    "_transport": "attribute",
    "_server_pool": "list",
    "_reconnect_to_server_handler": "attribute",
}
_METHODS = (
    "_process_msg",
    "_process_ping",
    "_process_pong",
    "_process_info",
    "_process_err",
    "_process_op_err",
    "force_reconnect",
)
_TYPES: dict[str, type | tuple[type, ...]] = {
    "_server_info": dict,
    "_status": int,
    "_pending": list,
    "_pending_data_size": int,
    "_max_pending_size": int,
    "_sid": int,
    "_server_pool": list,
}


def installed_version() -> str:
    try:
        return importlib.metadata.version("nats-py")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _refuse(what: str) -> DependencyError:
    return DependencyError(
        f"nats-py {installed_version()} is installed, and jetkit works with nats-py "
        f"{SUPPORTED}: {what}. Install a supported version: pip install 'nats-py{SUPPORTED}'"
    )


def check_client(client: Any, client_class: type) -> None:
    """Before connecting: every attribute and method jetkit uses is there, shaped as it
    expects (jk.DependencyError otherwise)."""
    missing = [name for name in _BEFORE if not hasattr(client, name)]
    missing += [
        name for name in _METHODS if not inspect.iscoroutinefunction(getattr(client, name, None))
    ]
    if missing:
        raise _refuse(f"its Client has no {', '.join(missing)} as jetkit expects")
    wrong = [
        f"{name} ({_BEFORE[name]}, found {type(getattr(client, name)).__name__})"
        for name, kind in _TYPES.items()
        if not isinstance(getattr(client, name), kind)
    ]
    if not callable(getattr(client._ps, "parse", None)):
        wrong.append("_ps (a parser with parse())")
    if not isinstance(getattr(client_class, "CONNECTED", None), int):
        wrong.append("Client.CONNECTED (int)")
    if wrong:
        raise _refuse(f"its Client's {', '.join(wrong)} differ from what jetkit expects")


def check_connected(client: Any) -> None:
    """Once connected: the flusher's queue and task and the transport are there."""
    queue = client._flush_queue
    wrong = []
    if not isinstance(queue, asyncio.Queue) or not hasattr(queue, "_queue"):
        wrong.append("_flush_queue (an asyncio.Queue)")
    if not isinstance(client._flusher_task, asyncio.Future):
        wrong.append("_flusher_task (a task)")
    if client._transport is None or not callable(getattr(client._transport, "writelines", None)):
        wrong.append("_transport (with writelines())")
    if wrong:
        raise _refuse(
            f"once connected, its Client's {', '.join(wrong)} differ from what jetkit expects"
        )

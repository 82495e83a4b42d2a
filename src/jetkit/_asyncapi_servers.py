"""The ``servers`` of an App's AsyncAPI document (``jetkit._asyncapi``): the embedded
server (``host:port``, or a ``{port}`` variable when the server picks a free one) or the
App's ``servers=`` URLs with their credentials left out, and the security schemes they
use (a user and password, or a token)."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from ._options import OpenSettings

Schema = dict[str, Any]

DEFAULT_PORT = "4222"


def server_entries(settings: OpenSettings) -> tuple[Schema, Schema]:
    """The ``servers`` of the document, and the security schemes they use."""
    given = "token" if settings.token is not None else None
    given = given or ("userPassword" if settings.user is not None else None)
    security: Schema = {}

    def secured(server: Schema, scheme: str | None) -> Schema:
        if scheme is not None:
            security[scheme] = _SCHEMES[scheme]
            server["security"] = [{"$ref": f"#/components/securitySchemes/{scheme}"}]
        return server

    if settings.servers is None:
        where = "a temporary store" if settings.store_dir is None else "its store"
        host = f"[{settings.host}]" if ":" in settings.host else settings.host  # IPv6
        server: Schema = {
            "host": f"{host}:{settings.port or '{port}'}",
            "protocol": "nats",
            "description": (
                f"The embedded nats-server jetkit starts on {where} (or attaches to, when "
                "another process of the app serves it). It admits only the credentials "
                "the App gives, or else those generated for the store."
            ),
        }
        if settings.port is None:
            server["variables"] = {
                "port": {
                    "default": DEFAULT_PORT,
                    "description": "A free port, picked when the server starts.",
                }
            }
        return {"embedded": secured(server, given or "userPassword")}, security
    found: Schema = {}
    for url in settings.servers:
        server, carried = _external(url)
        if settings.tls is not None and "description" not in server:
            server["description"] = "Over TLS."
        found[_key(server["host"], found)] = secured(server, carried or given)
    return found, security


_SCHEMES: dict[str, Schema] = {
    "userPassword": {"type": "userPassword", "description": "A NATS user and password."},
    "token": {"type": "apiKey", "in": "user", "description": "A NATS token."},
}


def _external(url: str) -> tuple[Schema, str | None]:
    """An external server's entry (credentials left out) and the security scheme its URL
    carries, if any."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"  # IPv6
    scheme = parts.scheme.lower()
    web = scheme in ("ws", "wss")  # NATS over WebSocket: no default port of its own
    port = parts.port or ("" if web else DEFAULT_PORT)
    server: Schema = {
        "host": f"{host}:{port}" if port else host,
        "protocol": scheme if web else "nats",
    }
    if scheme == "tls":
        server["description"] = "Over TLS."
    carried = None  # nats://user:password@host, or nats://token@host
    if parts.username:
        carried = "userPassword" if parts.password is not None else "token"
    return server, carried


def _key(host: str, taken: Schema) -> str:
    """A server's key: its host and port as a name (``nats-1.internal:4222`` ->
    ``nats-1_internal_4222``), made unique."""
    key = re.sub(r"[^A-Za-z0-9_-]+", "_", host).strip("_") or "nats"
    candidate, n = key, 1
    while candidate in taken:
        n += 1
        candidate = f"{key}_{n}"
    return candidate

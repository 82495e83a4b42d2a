"""Input checks run before anything is sent: numbers, enum options, headers, message size.

Every public call checks its arguments here first, so a bad value raises a clear
JetkitError (ConfigError, InvalidHeaderError, PayloadTooLargeError) instead of
reaching the server, where it could make the server close the connection.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from ._errors import ConfigError, InvalidHeaderError, PayloadTooLargeError

E = TypeVar("E", bound=enum.Enum)

MSG_ID_HEADER = "Nats-Msg-Id"
# the header block NATS puts in front of the payload: "NATS/1.0\r\n", lines, "\r\n"
_HEADER_FRAME = len(b"NATS/1.0\r\n") + 2
# RFC 7230 token characters: what NATS (and nats-py) accept in a header name
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_LINE_BREAK = re.compile(r"[\r\n\x00]")
INT64_MAX = 2**63 - 1


def number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    integer: bool = False,
    hint: str = "",
) -> Any:
    """``value`` if it is a finite number in range (an int when ``integer``); else ConfigError.

    ``minimum``/``maximum`` are inclusive bounds, ``above`` an exclusive lower bound.
    """
    if isinstance(value, dt.timedelta) and not integer:
        value = value.total_seconds()
    kind = "a whole number" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{name} must be {kind}, got {value!r}{hint}")
    assert isinstance(value, int | float)
    if isinstance(value, float) and not math.isfinite(value):  # (a huge int overflows it)
        raise ConfigError(f"{name} must be a finite number, got {value!r}{hint}")
    if above is not None and not value > above:
        raise ConfigError(f"{name} must be > {above:g}, got {value!r}{hint}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum:g}, got {value!r}{hint}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum:g}, got {value!r}{hint}")
    return value


def optional_number(name: str, value: object, **bounds: Any) -> Any:
    return None if value is None else number(name, value, **bounds)


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def option(enum_type: type[E], value: object, name: str) -> E:
    """An enum option: the member itself, or its value or name as a string (any case)."""
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        wanted = value.strip().lower()
        for member in enum_type:
            if wanted in (str(member.value).lower(), member.name.lower()):
                return member
    choices = ", ".join(f"jk.{enum_type.__name__}.{m.name}" for m in enum_type)
    raise ConfigError(f"{name} must be one of {choices}; got {value!r}")


def text(name: str, value: object, *, optional: bool = True) -> str | None:
    """A non-empty str (or None when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty str, got {value!r}")
    return value


def headers(given: object, msg_id: object = None) -> dict[str, str] | None:
    """The headers to send (``msg_id`` as ``Nats-Msg-Id``), checked; None if there are none.

    Names are HTTP-style tokens; names and values are str without CR, LF or NUL (NATS
    has no escaping: a line break would end the header and corrupt the message).
    """
    if given is None and msg_id is None:
        return None
    out: dict[str, str] = {}
    if given is not None:
        if not isinstance(given, Mapping):
            raise InvalidHeaderError(
                f"headers must be a dict of str to str, got {type(given).__name__}"
            )
        for key, value in given.items():
            if not isinstance(key, str) or not _HEADER_NAME.fullmatch(key):
                raise InvalidHeaderError(
                    f"header name {key!r} is not allowed: use letters, digits and "
                    "!#$%&'*+-.^_`|~ (no spaces, ':' or line breaks)"
                )
            header_value(f"header {key!r}", value)
            out[key] = value
    if msg_id is not None:
        header_value("msg_id", msg_id)
        if not str(msg_id).strip():
            raise InvalidHeaderError("msg_id must not be empty or blank")
        out[MSG_ID_HEADER] = str(msg_id)
    # no headers at all is None: an empty dict would still send an (empty) header block
    return out or None


def header_name_ok(name: str) -> bool:
    """Whether ``name`` may be a header name (what NATS accepts)."""
    return _HEADER_NAME.fullmatch(name) is not None


def headers_with(
    given: object, msg_id: object, extra: Mapping[str, str], reserved: tuple[str, ...]
) -> dict[str, str]:
    """``headers(given, msg_id)`` plus jetkit's ``extra`` headers; InvalidHeaderError if
    ``given`` sets a header whose name starts with one of ``reserved`` (lower case)."""
    out = headers(given, msg_id) or {}
    for key in out:
        if key.lower().startswith(reserved):
            raise InvalidHeaderError(
                f"header {key!r} is set by jetkit for deliver_at=/deliver_after=/ttl=; "
                "remove it from headers and use those arguments"
            )
    out.update(extra)
    return out


def header_value(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidHeaderError(
            f"{name} must be a str, got {type(value).__name__} {value!r}; convert it with str()"
        )
    if _LINE_BREAK.search(value):
        raise InvalidHeaderError(
            f"{name} contains a line break or NUL ({value!r}); NATS headers are one line: "
            "remove them or encode the value (e.g. base64)"
        )
    return value


def header_size(hdrs: Mapping[str, str] | None) -> int:
    """Bytes the header block takes on the wire (what counts against max_payload)."""
    if not hdrs:
        return 0
    size = _HEADER_FRAME
    for key, value in hdrs.items():
        size += len(key.strip().encode()) + len(value.strip().encode()) + 4
    return size


def message_size(topic: str, data: bytes, hdrs: Mapping[str, str] | None, limit: int) -> None:
    """PayloadTooLargeError unless headers plus payload fit the server's ``max_payload``."""
    extra = header_size(hdrs)
    if len(data) + extra > limit:
        with_headers = f" plus {extra} bytes of headers" if extra else ""
        raise PayloadTooLargeError(
            f"message for {topic!r} is {len(data)} bytes{with_headers}, over the server's "
            f"max_payload of {limit} bytes; send less per message (or raise max_payload when "
            "opening the Stream, up to 64 MiB)"
        )

"""The NATS wire protocol: jetkit's own parser of what the server sends, and the
``PUB`` command jetkit's hot paths send.

nats-py keeps the connection (connect, auth, TLS, reconnect with backoff, server
discovery, lame-duck mode, PING/PONG keepalive, the outgoing buffer); jetkit installs
this parser in nats-py's read loop in place of nats-py's regex parser. It splits the
byte stream with ``bytes.find`` and hands each message of a *routed* subscription
(jetkit's own: core subscriptions, pull consumers' inboxes, the PubAck inbox, the
request/reply inbox that JetStream API calls use too) straight to that subscription's
sink, a plain function: no per-message nats-py ``Msg``, queue, header parse or task.
Messages of any other subscription go to nats-py's ``_process_msg``, and every other
operation (INFO, PING, PONG, -ERR; +OK is skipped) to nats-py's own handlers.

Why only the parser, not the whole connection: measured per message, nats-py's
parser, ``Msg``, header parse and per-subscription queue were most of the client's
cost, while its read loop and transport cost one buffered read per 32 KiB chunk (a
few hundred messages). With this parser, nats-py's remaining code is about 1% of the
client's time on the consume path: owning the connection would mean re-implementing
everything listed above for at most that (see the README's Performance section).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from nats.errors import ProtocolError

# (subject, reply, raw header block or None, payload), all as received
Sink = Callable[[bytes, bytes, bytes | None, bytes], None]

_log = logging.getLogger("jetkit")

# a control line longer than this without its CRLF is not NATS
MAX_CONTROL_LINE = 1 << 20
_STATUS_LINE = len(b"NATS/1.0")


def parse_headers(raw: bytes) -> dict[str, str]:
    """A NATS header block (``NATS/1.0[ status[ description]]\\r\\nName: Value\\r\\n...``).

    An inline status becomes ``Status`` (and ``Description``), as nats-py reports it.
    Lines without a colon and names with non-ASCII bytes or blanks are skipped; values
    are UTF-8 with undecodable bytes replaced; a repeated name keeps its last value.
    """
    lines = raw.split(b"\r\n")
    out: dict[str, str] = {}
    status = lines[0][_STATUS_LINE:].strip()
    if status:
        code, _, desc = status.partition(b" ")
        if code.isdigit():
            out["Status"] = code.decode()
        desc = desc.strip()
        if desc:
            out["Description"] = desc.decode("utf-8", "replace")
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if not key or any(c.isspace() for c in key):
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


def pub(subject: bytes, payload: bytes, reply: bytes = b"") -> bytes:
    """The ``PUB`` command that sends ``payload`` to ``subject`` (replies to ``reply``).

    The caller checked the subject and the size: nothing here is validated.
    """
    if reply:
        return b"PUB %b %b %d\r\n%b\r\n" % (subject, reply, len(payload), payload)
    return b"PUB %b %d\r\n%b\r\n" % (subject, len(payload), payload)


def header_block(headers: dict[str, str]) -> bytes:
    """``headers`` as a NATS header block (checked by the caller)."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return b"NATS/1.0\r\n%b\r\n" % lines.encode()


def hpub(subject: bytes, block: bytes, payload: bytes, reply: bytes = b"") -> bytes:
    """The ``HPUB`` command: ``payload`` with the header ``block`` (``header_block``)."""
    size = len(block)
    if reply:
        return b"HPUB %b %b %d %d\r\n%b%b\r\n" % (
            subject,
            reply,
            size,
            size + len(payload),
            block,
            payload,
        )
    return b"HPUB %b %d %d\r\n%b%b\r\n" % (subject, size, size + len(payload), block, payload)


class WireParser:
    """Parses what the server sends; routed messages go to their sinks.

    ``routes`` maps a subscription id (as the bytes on the wire) to its sink. A sink
    must not block; if it sets ``pressure`` (a buffer filling up), the parser yields to
    the event loop once in the current read so the handlers get to run before more is
    taken in.

    Interface towards nats-py's client: ``parse(data)`` (awaited by its read loop)
    and ``reset()`` (called when it reconnects).
    """

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.routes: dict[bytes, Sink] = {}
        self.pressure = False
        self._rest = b""  # the start of a control line not yet complete
        self._head: tuple[int, bytes, bytes, int, int] | None = None  # a partial message
        self._part = bytearray()  # ... and what arrived of its body
        self._epoch = 0  # bumped by reset(): a parse that awaited stops if it changed

    def reset(self) -> None:
        self._rest = b""
        self._head = None
        self._part = bytearray()
        self.pressure = False
        self._epoch += 1

    async def parse(self, data: bytes = b"") -> None:
        epoch = self._epoch
        self.pressure = False  # a yield is per read
        if self._head is not None:
            part = self._part
            part += data
            head_sid, subject, reply, hlen, size = self._head
            if len(part) < size + 2:
                return
            if part[size + 1] != 10:
                raise ProtocolError("nats: message body without its line end")
            with memoryview(part) as view:  # one copy of each piece, not two
                hdr = bytes(view[:hlen]) if hlen else None
                payload = bytes(view[hlen:size])
                data = bytes(view[size + 2 :])
            self._head = None
            self._part = bytearray()
            del part
            await self._dispatch(head_sid, subject, reply, hdr, payload)
            if self._epoch != epoch:
                return
        elif self._rest:
            data = self._rest + data
            self._rest = b""
        buf = data
        find = buf.find
        pos = 0
        end = len(buf)
        routes = self.routes
        count = 0  # routed messages and their payload bytes, for nats-py's stats
        size_in = 0
        yielded = False
        try:
            while pos < end:
                eol = find(b"\n", pos)  # the line ends "\r\n"; split() drops the "\r"
                if eol < 0:
                    if end - pos > MAX_CONTROL_LINE:
                        raise ProtocolError("nats: control line too long")
                    self._rest = buf[pos:]
                    return
                op = buf[pos]
                if op == 77:  # MSG <subject> <sid> [reply] <size>
                    args = buf[pos + 4 : eol].split()
                    if len(args) == 3:
                        subject, sid, size_b = args
                        reply = b""
                    elif len(args) == 4:
                        subject, sid, reply, size_b = args
                    else:
                        raise ProtocolError("nats: malformed MSG")
                    hlen = 0
                    size = int(size_b)
                    if size < 0:
                        raise ProtocolError("nats: malformed MSG")
                elif op == 72:  # HMSG <subject> <sid> [reply] <header size> <total size>
                    args = buf[pos + 5 : eol].split()
                    if len(args) == 4:
                        subject, sid, hlen_b, size_b = args
                        reply = b""
                    elif len(args) == 5:
                        subject, sid, reply, hlen_b, size_b = args
                    else:
                        raise ProtocolError("nats: malformed HMSG")
                    hlen = int(hlen_b)
                    size = int(size_b)
                    if not 0 < hlen <= size:
                        raise ProtocolError("nats: malformed HMSG")
                else:
                    line = buf[pos:eol].rstrip(b"\r")
                    pos = eol + 1
                    await self._control(line)
                    if self._epoch != epoch:
                        return
                    continue
                start = eol + 1
                stop = start + size
                if stop + 2 > end:  # the body is still on its way
                    self._head = (int(sid), subject, reply, hlen, size)
                    self._part = bytearray(memoryview(buf)[start:])
                    return
                if buf[stop + 1] != 10:  # the body ends "\r\n", or we lost the framing
                    raise ProtocolError("nats: message body without its line end")
                pos = stop + 2
                sink = routes.get(sid)
                if sink is None:
                    hdr = buf[start : start + hlen] if hlen else None
                    payload = buf[start + hlen : stop]
                    await self.nc._process_msg(int(sid), subject, reply, payload, hdr)
                    if self._epoch != epoch:
                        return
                    continue
                count += 1
                size_in += size - hlen
                try:
                    if hlen:
                        sink(subject, reply, buf[start : start + hlen], buf[start + hlen : stop])
                    else:
                        sink(subject, reply, None, buf[start:stop])
                except Exception:
                    _log.exception("internal error delivering a message on %r", subject)
                if self.pressure and not yielded:
                    self.pressure = False
                    yielded = True
                    await asyncio.sleep(0)
                    if self._epoch != epoch:
                        return
        except ValueError:  # int() of something that is not a number
            raise ProtocolError("nats: malformed message") from None
        finally:
            if count:
                stats = self.nc.stats
                stats["in_msgs"] += count
                stats["in_bytes"] += size_in

    async def _dispatch(
        self, sid: int, subject: bytes, reply: bytes, hdr: bytes | None, payload: bytes
    ) -> None:
        """One message that arrived in pieces (the rare path)."""
        sink = self.routes.get(b"%d" % sid)
        if sink is None:
            await self.nc._process_msg(sid, subject, reply, payload, hdr)
            return
        self.nc.stats["in_msgs"] += 1
        self.nc.stats["in_bytes"] += len(payload)
        try:
            sink(subject, reply, hdr, payload)
        except Exception:
            _log.exception("internal error delivering a message on %r", subject)

    async def _control(self, line: bytes) -> None:
        op, _, rest = line.partition(b" ")
        op = op.upper()
        nc = self.nc
        if op == b"PING":
            await nc._process_ping()
        elif op == b"PONG":
            await nc._process_pong()
        elif op == b"+OK":
            pass
        elif op == b"-ERR":
            await nc._process_err(rest.strip().decode("utf-8", "replace").lower())
        elif op == b"INFO":
            try:
                info = json.loads(rest)
            except ValueError:
                raise ProtocolError("nats: malformed INFO") from None
            await nc._process_info(info)
        else:
            raise ProtocolError(f"nats: unknown protocol operation {line[:32]!r}")

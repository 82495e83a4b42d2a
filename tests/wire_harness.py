"""A ``WireParser`` fed by hand: the ``Recorder`` that stands in for nats-py's client and
records every call the parser makes, and ``feed`` (successive reads). Shared by the
parser's unit tests (tests/unit/test_wire_parser.py) and the recorded conversation with a
real nats-server (tests/integration/test_wire.py); not a test module itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jetkit._wire import WireParser

Event = tuple[Any, ...]

ROUTED = 1  # the sid the parser routes to a sink (subscription "r.>")
UNROUTED = 2  # the sid left to nats-py's _process_msg (subscription "u.>")
READ_CHUNK = 32 * 1024  # what nats-py's read loop reads at a time


class Recorder:
    """The ``nc`` a WireParser talks to: records every call the parser makes on it.

    ``stats`` is the part of nats-py's client the parser updates itself (for routed
    messages; nats-py's own _process_msg counts the others).
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.stats: dict[str, int] = {"in_msgs": 0, "in_bytes": 0}

    def sink(self, subject: bytes, reply: bytes, hdr: bytes | None, payload: bytes) -> None:
        self.events.append(("routed", subject, reply, hdr, payload))

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, payload: bytes, hdr: bytes | None
    ) -> None:
        self.events.append(("msg", sid, subject, reply, hdr, payload))

    async def _process_ping(self) -> None:
        self.events.append(("ping",))

    async def _process_pong(self) -> None:
        self.events.append(("pong",))

    async def _process_err(self, text: str) -> None:
        self.events.append(("err", text))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.events.append(("info", info))


def new_parser() -> tuple[WireParser, Recorder]:
    nc = Recorder()
    parser = WireParser(nc)
    parser.routes[b"%d" % ROUTED] = nc.sink
    return parser, nc


async def feed(chunks: Iterable[bytes]) -> Recorder:
    """Parse ``chunks`` as successive reads; check nothing is left half-parsed after."""
    parser, nc = new_parser()
    for chunk in chunks:
        await parser.parse(chunk)
    await parser.parse(b"PONG\r\n")  # a fresh line parses as one: no leftover state
    assert nc.events.pop() == ("pong",)
    return nc

"""jetkit's wire parser (``jetkit._wire``) against what a real nats-server sends.

1. A recorded conversation. A test-started nats-server (ping_interval 200ms, lame duck
   with a short grace period) talks to a raw asyncio socket that sends CONNECT (verbose),
   SUBs, PUBs and HPUBs of every awkward kind, an invalid SUB, a PING, two messages larger
   than nats-py's 32 KiB read chunk, waits for the server's own PINGs (one among the
   messages, one after them) and finally puts the server in lame-duck mode. Every byte the
   server sent, up to and including the lame-duck INFO, is kept. The recording is then fed
   to a ``WireParser`` whose ``nc`` is a ``Recorder``: it only records what the parser
   calls on it (the bytes are the real server's; nothing here plays NATS). The expected
   calls are derived from what was sent: ``expected_events`` checks the recording item by
   item against the exact bytes each command must produce, and only places what the
   server sends on its own clock (its PINGs) and the ``+OK``s (which the parser skips).
   The parser must report exactly that sequence however the recording is cut into reads.
   (Malformed input and ``reset()``, which need no server, are in
   tests/unit/test_wire_parser.py.)
2. End to end through jetkit: messages near max_payload and headers on core and JetStream
   topics, server PINGs on a live Stream, and the lame-duck warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import random
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

import jetkit as jk
from conftest import ExternalServer, nc_of, wait_until
from jetkit._wire import parse_headers
from wire_harness import READ_CHUNK, ROUTED, UNROUTED, Event, Recorder, feed


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text)} chars)"


def assert_events(got: Sequence[Event], want: Sequence[Event], how: str) -> None:
    """Equal event lists; on a difference, the first differing event (abbreviated)."""
    if list(got) == list(want):
        return
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            raise AssertionError(f"{how}: event {i} is {short(g)}, expected {short(w)}")
    raise AssertionError(f"{how}: {len(got)} events, expected {len(want)}")


# -- what the conversation sends ---------------------------------------------------------

# (raw header block as sent in HPUB, what parse_headers must make of it)
HEADERS: list[tuple[bytes, dict[str, str]]] = [
    (
        b"NATS/1.0\r\nA: 1\r\nB-Two: two\r\nc_3: three\r\n\r\n",
        {"A": "1", "B-Two": "two", "c_3": "three"},
    ),
    (
        "NATS/1.0\r\nGreeting: héllo wörld ✓ 日本\r\n\r\n".encode(),
        {"Greeting": "héllo wörld ✓ 日本"},
    ),
    (
        b"NATS/1.0\r\nUrl: nats://h:4222/a:b\r\nAt: 12:30:45\r\n\r\n",
        {"Url": "nats://h:4222/a:b", "At": "12:30:45"},
    ),
    (  # blanks around a value go (as in nats-py); a repeated name keeps its last value;
        # lines without a colon, names with blanks or non-ASCII bytes are skipped
        b"NATS/1.0\r\nPadded:   spaced out  \r\nTight:x\r\nTab:\tt\r\nEmpty:\r\n"
        b"Dup: first\r\nDup: second\r\nno colon\r\nTwo words: x\r\n"
        + "N\u00e4me: x\r\n\r\n".encode(),
        {"Padded": "spaced out", "Tight": "x", "Tab": "t", "Empty": "", "Dup": "second"},
    ),
    (b"NATS/1.0 503\r\n\r\n", {"Status": "503"}),  # an inline status, as in no-responders
    (  # status, description and headers, as in a JetStream idle heartbeat
        b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 7\r\nNats-Last-Stream: 9\r\n\r\n",
        {
            "Status": "100",
            "Description": "Idle Heartbeat",
            "Nats-Last-Consumer": "7",
            "Nats-Last-Stream": "9",
        },
    ),
]

# a payload full of things that look like protocol
TRICKY = (
    b"\r\nMSG r.x 1 3\r\nPING\r\n+OK\r\nHMSG u.x 2 12 14\r\n-ERR 'x'\r\nINFO {}\r\nPONG\r\n\r\n"
)


@dataclass(frozen=True)
class Pub:
    """One PUB/HPUB and the MSG/HMSG the server must send back for it."""

    subject: str
    payload: bytes
    reply: str = ""
    hdr: bytes | None = None

    @property
    def sid(self) -> int:
        return ROUTED if self.subject.startswith("r.") else UNROUTED

    def _line(self, op: str, sid: str) -> bytes:
        args = [self.subject, *([sid] if sid else []), *([self.reply] if self.reply else [])]
        if self.hdr is not None:
            args += [str(len(self.hdr)), str(len(self.hdr) + len(self.payload))]
        else:
            args.append(str(len(self.payload)))
        body = (self.hdr or b"") + self.payload
        return f"{op} {' '.join(args)}\r\n".encode() + body + b"\r\n"

    def command(self) -> bytes:
        return self._line("HPUB" if self.hdr is not None else "PUB", "")

    def delivery(self) -> bytes:
        return self._line("HMSG" if self.hdr is not None else "MSG", str(self.sid))

    def event(self) -> Event:
        subject, reply = self.subject.encode(), self.reply.encode()
        if self.sid == ROUTED:
            return ("routed", subject, reply, self.hdr, self.payload)
        return ("msg", self.sid, subject, reply, self.hdr, self.payload)


SMALL = [
    Pub("r.empty", b""),
    Pub("u.empty", b""),
    Pub("r.tricky", TRICKY, reply="reply.to.me"),
    Pub("u.tricky", TRICKY, reply="_INBOX.u.1"),
    Pub("r.binary", bytes(range(256))),
    Pub("u.binary", bytes(range(255, -1, -1)) * 2),
    Pub("r.h.several", b"one\r\ntwo", reply="_INBOX.r.1", hdr=HEADERS[0][0]),
    Pub("u.h.several", b"x", hdr=HEADERS[0][0]),
    Pub("r.h.utf8", "payload ü".encode(), hdr=HEADERS[1][0]),
    Pub("r.h.colon", b"", hdr=HEADERS[2][0]),
    Pub("u.h.colon", b"\r\n", reply="r.reply", hdr=HEADERS[2][0]),
    Pub("r.h.spaces", b"s", hdr=HEADERS[3][0]),
    Pub("r.h.status", b"", hdr=HEADERS[4][0]),
    Pub("u.h.status", b"", hdr=HEADERS[4][0]),
    Pub("r.h.heartbeat", b"", hdr=HEADERS[5][0]),
]
_rng = random.Random(20240601)
LARGE = [
    Pub("r.large", _rng.randbytes(300_000)),
    Pub("u.large", _rng.randbytes(70_000), reply="_INBOX.large", hdr=HEADERS[1][0]),
]
SENTINELS = [Pub("r.end.1", b""), Pub("r.end.2", b"")]
BAD_SUB = b"SUB foo..bar 3\r\n"  # an invalid subject: -ERR, and the connection stays
CONNECT = (
    b'CONNECT {"verbose":true,"pedantic":false,"tls_required":false,"name":"jetkit-wire",'
    b'"lang":"python","version":"0","protocol":1,"headers":true,"no_responders":true}\r\n'
)


# -- the expected event sequence, from what was sent ---------------------------------------


@dataclass(frozen=True)
class Fixed:
    """Exact bytes the server must send next, and the call they must become."""

    wire: bytes
    event: Event


@dataclass(frozen=True)
class Info:
    """An INFO line the server must send next (its JSON varies), checked by ``check``."""

    check: Callable[[dict[str, Any]], bool]
    what: str
    optional: bool = False


def expected_events(wire: bytes, items: Sequence[Fixed | Info]) -> tuple[list[Event], int]:
    """The calls the parser must make for ``wire``, and how many ``+OK`` it holds.

    Walks ``wire`` through ``items`` in order; between two items only the server's own
    ``PING`` (a call) and ``+OK`` (no call) may come. Fails on any other byte.
    """
    events: list[Event] = []
    oks = 0
    pos = 0

    def between() -> None:
        nonlocal pos, oks
        while True:
            if wire.startswith(b"PING\r\n", pos):
                events.append(("ping",))
                pos += 6
            elif wire.startswith(b"+OK\r\n", pos):
                oks += 1
                pos += 5
            else:
                return

    for item in items:
        between()
        if isinstance(item, Fixed):
            assert wire.startswith(item.wire, pos), (
                f"at byte {pos} expected {short(item.wire)}, the server sent {short(wire[pos:])}"
            )
            events.append(item.event)
            pos += len(item.wire)
            continue
        if not wire.startswith(b"INFO ", pos):
            assert item.optional, f"at byte {pos} expected INFO ({item.what}): {short(wire[pos:])}"
            continue
        eol = wire.index(b"\r\n", pos)
        info = json.loads(wire[pos + 5 : eol])
        assert item.check(info), f"INFO at byte {pos} is not {item.what}: {info}"
        events.append(("info", info))
        pos = eol + 2
    between()
    assert pos == len(wire), f"unexpected bytes at {pos}: {short(wire[pos:])}"
    return events, oks


@dataclass(frozen=True)
class Recording:
    wire: bytes  # every byte the server sent, up to and including the lame-duck INFO
    events: list[Event]  # the calls the parser must make for it
    oks: int  # +OK lines in it
    large_at: int  # where the first large message's MSG line starts
    routed: int  # routed messages in it
    routed_bytes: int  # their payload bytes (headers excluded, as nats-py counts)


async def read_until(
    reader: asyncio.StreamReader, rec: bytearray, needle: bytes, start: int, timeout: float = 10
) -> int:
    """Read into ``rec`` until ``needle`` occurs at or after ``start``; its position."""
    async with asyncio.timeout(timeout):
        while (at := rec.find(needle, start)) < 0:
            chunk = await reader.read(1 << 16)
            if not chunk:
                raise AssertionError(f"the server closed the connection before {needle!r}")
            rec += chunk
    return at


async def record_conversation(server: ExternalServer) -> bytes:
    assert server.proc is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    rec = bytearray()
    try:
        await read_until(reader, rec, b"\r\n", 0)  # the server's INFO
        writer.write(
            CONNECT
            + b"SUB r.> %d\r\nSUB u.> %d\r\nPING\r\n" % (ROUTED, UNROUTED)
            + b"".join(p.command() for p in SMALL)
            + BAD_SUB
            + SENTINELS[0].command()
        )
        at = await read_until(reader, rec, SENTINELS[0].delivery(), 0)
        # a server PING among the messages (ping_interval), inside the split-everywhere part
        await read_until(reader, rec, b"PING\r\n", at + len(SENTINELS[0].delivery()))
        writer.write(b"".join(p.command() for p in LARGE) + SENTINELS[1].command())
        quiet = await read_until(reader, rec, SENTINELS[1].delivery(), at)
        quiet += len(SENTINELS[1].delivery())
        # from here on the server sends only what it sends by itself
        await read_until(reader, rec, b"PING\r\n", quiet)  # ping_interval
        os.kill(server.proc.pid, signal.SIGUSR2)  # lame-duck mode
        ldm = await read_until(reader, rec, b'"ldm":true', quiet)
        end = await read_until(reader, rec, b"\r\n", ldm) + 2
        # what follows the INFO (more PINGs, the eviction after the grace period) depends
        # on timing and is left out
        return bytes(rec[:end])
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture(scope="module")
async def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    base = tmp_path_factory.mktemp("wire")
    config = base / "server.conf"
    # ping_max is high because the raw client never answers the server's PINGs
    config.write_text(
        'ping_interval: "200ms"\nping_max: 100\n'
        'lame_duck_duration: "30s"\nlame_duck_grace_period: "200ms"\n'
    )
    server = ExternalServer(base / "store", ["-c", str(config)])
    await server.start()
    try:
        wire = await record_conversation(server)
    finally:
        await server.stop()

    items: list[Fixed | Info] = [
        Info(lambda i: "server_id" in i and not i.get("ldm"), "the server's first INFO"),
        Fixed(b"PONG\r\n", ("pong",)),
        # nats-server 2.15 confirms the connection with an INFO after the first PONG
        Info(lambda i: bool(i.get("connect_info")), "connect_info", optional=True),
        *(Fixed(p.delivery(), p.event()) for p in SMALL),
        Fixed(b"-ERR 'Invalid Subject'\r\n", ("err", "'invalid subject'")),
        Fixed(SENTINELS[0].delivery(), SENTINELS[0].event()),
        *(Fixed(p.delivery(), p.event()) for p in LARGE),
        Fixed(SENTINELS[1].delivery(), SENTINELS[1].event()),
        Info(lambda i: i.get("ldm") is True, "lame duck"),
    ]
    events, oks = expected_events(wire, items)
    routed = [p for p in [*SMALL, *LARGE, *SENTINELS] if p.sid == ROUTED]
    return Recording(
        wire=wire,
        events=events,
        oks=oks,
        large_at=wire.index(b"MSG r.large "),
        routed=len(routed),
        routed_bytes=sum(len(p.payload) for p in routed),
    )


def check(nc: Recorder, rec: Recording, how: str) -> None:
    assert_events(nc.events, rec.events, how)
    assert nc.stats == {"in_msgs": rec.routed, "in_bytes": rec.routed_bytes}, how


# -- 1. the recording, split every way -------------------------------------------------------


async def test_the_recording_holds_the_whole_conversation(recording: Recording) -> None:
    kinds = [e[0] for e in recording.events]
    # CONNECT, two SUBs and every PUB were answered +OK; the bad SUB with -ERR only
    assert recording.oks == 3 + len(SMALL) + len(LARGE) + len(SENTINELS)
    assert kinds.count("pong") == 1 and kinds.count("err") == 1
    first, last = recording.events[0], recording.events[-1]
    assert first[0] == "info" and first[1]["max_payload"] > 0
    assert last[0] == "info" and last[1]["ldm"] is True
    # the server's own PINGs, waited for after each sentinel
    for sentinel, until in zip(SENTINELS, [*LARGE[:1], None], strict=True):
        start = recording.events.index(sentinel.event())
        stop = recording.events.index(until.event()) if until else None
        assert ("ping",) in recording.events[start:stop]
    assert recording.large_at > 1000 and len(recording.wire) > 370_000


async def test_the_recording_parses_in_one_read(recording: Recording) -> None:
    check(await feed([recording.wire]), recording, "one read")


async def test_the_recording_parses_in_nats_pys_32_kib_reads(recording: Recording) -> None:
    wire = recording.wire
    chunks = [wire[i : i + READ_CHUNK] for i in range(0, len(wire), READ_CHUNK)]
    check(await feed(chunks), recording, "32 KiB reads")


async def test_the_recording_parses_split_at_any_byte_before_the_large_message(
    recording: Recording,
) -> None:
    wire = recording.wire
    # every position up to the large message, its MSG line and the start of its body
    for at in range(1, recording.large_at + 64):
        check(await feed([wire[:at], wire[at:]]), recording, f"split at byte {at}")


async def test_the_recording_parses_byte_by_byte_through_its_first_kilobytes(
    recording: Recording,
) -> None:
    wire = recording.wire
    head = recording.large_at + 4096  # into the large message's body
    chunks = [wire[i : i + 1] for i in range(head)]
    check(await feed([*chunks, wire[head:]]), recording, "byte by byte")


async def test_the_recording_parses_cut_at_random_places(recording: Recording) -> None:
    wire = recording.wire
    rng = random.Random(1234)
    for n in range(200):
        cuts = set(rng.sample(range(1, len(wire)), rng.randint(1, 12)))
        # as many again among the small messages, where every byte is protocol
        cuts.update(rng.sample(range(1, recording.large_at + 64), rng.randint(0, 40)))
        bounds = [0, *sorted(cuts), len(wire)]
        chunks = [wire[a:b] for a, b in itertools.pairwise(bounds)]
        check(await feed(chunks), recording, f"random split {n} at {sorted(cuts)}")


async def test_parse_headers_gives_what_was_sent(recording: Recording) -> None:
    blocks = {e[-2] for e in recording.events if e[0] in ("routed", "msg") and e[-2]}
    expected = dict(HEADERS)
    assert blocks == set(expected)  # every block arrived as sent
    reference = Client()  # nats-py's own header parsing, for comparison
    for block, want in expected.items():
        assert parse_headers(block) == want, block
        assert await reference._process_headers(block) == want, block


# -- 2. end to end through jetkit -----------------------------------------------------------


def digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()[:16]


async def near_max_payload_in_order(s: jk.Stream, topic: str) -> None:
    got: list[bytes] = []

    async def handler(msg: jk.Message) -> None:
        got.append(msg.data)

    sub = await s.subscribe(topic, handler)
    rng = random.Random(topic)
    size = s.max_payload - 512
    big = [rng.randbytes(size), rng.randbytes(size - 1), rng.randbytes(size)]
    sent = [b"s1", big[0], b"s2", b"s3", big[1], big[2], b"", b"s4"]
    for payload in sent:
        await s.publish(topic, payload)
    await wait_until(lambda: len(got) >= len(sent))
    assert [digest(d) for d in got] == [digest(d) for d in sent]
    await sub.stop()


async def test_messages_near_max_payload_arrive_whole_and_in_order_on_a_core_topic(
    core: jk.Stream, topic: str
) -> None:
    assert core.max_payload >= 512 * 1024  # large against nats-py's 32 KiB read chunk
    await near_max_payload_in_order(core, topic)


async def test_messages_near_max_payload_arrive_whole_and_in_order_on_a_jetstream_topic(
    js: jk.Stream, topic: str
) -> None:
    assert js.mode_for(topic) is jk.TopicMode.JETSTREAM
    await near_max_payload_in_order(js, topic)


async def test_near_max_payload_reply_through_nats_pys_own_path(
    core: jk.Stream, topic: str
) -> None:
    """A request's reply arrives on nats-py's request inbox: a subscription the parser
    does not route (nats-py's _process_msg gets it)."""
    big = random.Random(topic).randbytes(core.max_payload - 512)

    async def echo_size(data: bytes) -> bytes:
        return big[: len(data)]

    sub = await core.respond(topic, echo_size)
    reply = await core.request(topic, b"x" * len(big))
    assert digest(reply.data) == digest(big)
    await sub.stop()


SENT_HEADERS = {
    "Plain": "v",
    "Utf8": "héllo wörld ✓ 日本",
    "Colon": "a:b: c",
    "Url": "nats://h:4222/x",
    "Padded": "  spaced out  ",
    "Empty": "",
}
# what arrives: nats-py strips blanks around every value when it sends the header block
# (and parse_headers would strip them on receipt too); everything else is exact
RECEIVED_HEADERS = {**SENT_HEADERS, "Padded": "spaced out"}


async def headers_round_trip(s: jk.Stream, topic: str) -> None:
    got: list[jk.Message] = []

    async def handler(msg: jk.Message) -> None:
        got.append(msg)

    sub = await s.subscribe(topic, handler)
    await s.publish(topic, b"with headers", headers=SENT_HEADERS)
    await s.publish(topic, b"without")
    await wait_until(lambda: len(got) >= 2)
    assert [m.data for m in got] == [b"with headers", b"without"]
    assert got[0].headers == RECEIVED_HEADERS
    assert got[1].headers == {}
    await sub.stop()


async def test_headers_round_trip_on_a_core_topic(core: jk.Stream, topic: str) -> None:
    await headers_round_trip(core, topic)


async def test_headers_round_trip_on_a_jetstream_topic(js: jk.Stream, topic: str) -> None:
    await headers_round_trip(js, topic)


async def external(tmp_path: Path, config: str) -> ExternalServer:
    path = tmp_path / "server.conf"
    path.write_text(config)
    server = ExternalServer(tmp_path / "store", ["-c", str(path)])
    await server.start()
    return server


@pytest.mark.slow
async def test_server_pings_are_answered(
    tmp_path: Path, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server sends at most ping_max (here 2) PINGs without a PONG in between; at its
    next tick it closes the connection as stale instead. So a client that received five
    PINGs (counted where jetkit's parser hands them to nats-py, which answers PONG) has
    answered them; it must also never have reconnected, and still round-trip a message."""
    server = await external(tmp_path, 'ping_interval: "200ms"\nping_max: 2\n')
    try:
        async with jk.Stream.open(servers=[server.url]) as s:
            nc = nc_of(s)
            pings = 0
            answer = nc._process_ping

            async def counted() -> None:  # counts, then nats-py's own handler answers
                nonlocal pings
                pings += 1
                await answer()

            monkeypatch.setattr(nc, "_process_ping", counted)
            await wait_until(lambda: pings >= 5, timeout=10)
            got: list[bytes] = []
            sub = await s.subscribe(topic, lambda m: got.append(m.data))
            await s.publish(topic, b"after five pings")
            await wait_until(lambda: got == [b"after five pings"])
            assert nc.stats["reconnects"] == 0 and nc.last_error is None
            assert nc.is_connected
            await sub.stop()
    finally:
        await server.stop()


@pytest.mark.slow
async def test_lame_duck_mode_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The server's INFO {"ldm": true} goes through jetkit's parser to nats-py, whose
    lame-duck callback (registered by jetkit) logs the warning."""
    caplog.set_level(logging.WARNING, logger="jetkit")
    server = await external(
        tmp_path, 'lame_duck_duration: "30s"\nlame_duck_grace_period: "500ms"\n'
    )
    try:
        async with jk.Stream.open(servers=[server.url]):
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGUSR2)

            def warned() -> bool:
                return any(
                    r.name == "jetkit"
                    and r.levelno == logging.WARNING
                    and "lame-duck" in r.getMessage()
                    for r in caplog.records
                )

            await wait_until(warned, timeout=10)
    finally:
        await server.stop()

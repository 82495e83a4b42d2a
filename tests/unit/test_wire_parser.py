"""jetkit's wire parser (``jetkit._wire``) without a server: malformed input raises
nats.errors.ProtocolError, and ``reset()`` drops a partial line or message. (The parser
against a recorded conversation with a real nats-server: tests/integration/test_wire.py.)"""

from __future__ import annotations

import pytest
from nats.errors import ProtocolError

from jetkit._wire import MAX_CONTROL_LINE
from wire_harness import READ_CHUNK, feed, new_parser

MALFORMED = [
    pytest.param(b"MSG a 1\r\n", id="MSG-without-size"),
    pytest.param(b"MSG a\r\n", id="MSG-without-sid"),
    pytest.param(b"MSG a 1 r 2 3\r\n", id="MSG-too-many-fields"),
    pytest.param(b"MSG a 1 x\r\nabc\r\n", id="MSG-size-not-a-number"),
    pytest.param(b"MSG a 1 3z\r\nabc\r\n", id="MSG-size-with-a-letter"),
    pytest.param(b"MSG a x 1\r\nz\r\n", id="MSG-sid-not-a-number"),
    pytest.param(b"HMSG a 1 12\r\n", id="HMSG-without-total"),
    pytest.param(b"HMSG a 1 r 12 14 16\r\n", id="HMSG-too-many-fields"),
    pytest.param(b"HMSG a 1 20 14\r\n", id="HMSG-header-size-over-total"),
    pytest.param(b"HMSG a 1 0 4\r\nabcd\r\n", id="HMSG-header-size-zero"),
    pytest.param(b"HMSG a 1 x 14\r\n", id="HMSG-header-size-not-a-number"),
    pytest.param(b"HMSG a 1 12 x\r\n", id="HMSG-total-not-a-number"),
    pytest.param(b"FOO\r\n", id="unknown-op"),
    pytest.param(b"PING\r\nFOO bar\r\n", id="unknown-op-after-a-good-one"),
    pytest.param(b"\r\n", id="empty-line"),
    pytest.param(b"INFO {not json}\r\n", id="INFO-not-json"),
    pytest.param(b"MSG a 1 3\r\nabcXYPING\r\n", id="MSG-body-without-line-end"),
    pytest.param(
        b"HMSG a 1 12 14\r\nNATS/1.0\r\n\r\nabXYPING\r\n", id="HMSG-body-without-line-end"
    ),
]


@pytest.mark.parametrize("data", MALFORMED)
async def test_malformed_input_is_a_protocol_error(data: bytes) -> None:
    parser, _ = new_parser()
    with pytest.raises(ProtocolError):
        await parser.parse(data)
    parser, _ = new_parser()
    with pytest.raises(ProtocolError):  # the same when it arrives a byte at a time
        for i in range(len(data)):
            await parser.parse(data[i : i + 1])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"MSG a 1 -2\r\nPING\r\n", id="minus-2"),
        pytest.param(b"MSG a 1 -1000\r\nPING\r\n", id="minus-1000"),
        pytest.param(b"MSG r.x 1 -1\r\nxy\r\n", id="minus-1"),
    ],
)
async def test_a_negative_size_is_a_protocol_error(data: bytes) -> None:
    """A size is never negative (nats-py's parser matches ``\\d+``): found by this test,
    when -2 delivered an empty message and parsed on, -1000 raised IndexError and -1
    delivered an empty message before raising."""
    parser, nc = new_parser()
    with pytest.raises(ProtocolError):
        await parser.parse(data)
    assert nc.events == []  # nothing delivered from a malformed stream


async def test_a_control_line_over_a_mebibyte_is_a_protocol_error() -> None:
    line = b"INFO " + b"x" * MAX_CONTROL_LINE  # no LF
    parser, _ = new_parser()
    with pytest.raises(ProtocolError):
        await parser.parse(line)
    parser, _ = new_parser()
    with pytest.raises(ProtocolError):  # also when it accumulates over reads
        for i in range(0, len(line), READ_CHUNK):
            await parser.parse(line[i : i + READ_CHUNK])
    # a long line that does end in time is fine
    value = "y" * (MAX_CONTROL_LINE - 100)
    info = b'INFO {"v":"%s"}\r\n' % value.encode()
    nc = await feed(info[i : i + READ_CHUNK] for i in range(0, len(info), READ_CHUNK))
    assert nc.events == [("info", {"v": value})]


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"MSG r.x 1 10\r\nabc", id="MSG-body"),
        pytest.param(b"MSG r.x 1 10\r\n", id="MSG-before-body"),
        pytest.param(b"MSG r.x 1 3\r\nabc\r", id="MSG-before-LF"),
        pytest.param(b"HMSG u.x 2 12 14\r\nNATS/1.0\r\n", id="HMSG-headers"),
        pytest.param(b"MSG r.x 1 1", id="MSG-line"),
        pytest.param(b'INFO {"a":', id="INFO-line"),
        pytest.param(b"PIN", id="PING-line"),
        pytest.param(b"PONG\r", id="before-LF"),
    ],
)
async def test_reset_drops_a_partial_line_or_message(partial: bytes) -> None:
    parser, nc = new_parser()
    await parser.parse(b"PING\r\n" + partial)
    parser.reset()  # nats-py reconnected: the next bytes are a new connection's
    fresh = b"PONG\r\nMSG r.y 1 2\r\nhi\r\nHMSG u.y 2 12 13\r\nNATS/1.0\r\n\r\n!\r\n"
    await parser.parse(fresh[:9])
    await parser.parse(fresh[9:])
    assert nc.events == [
        ("ping",),
        ("pong",),
        ("routed", b"r.y", b"", None, b"hi"),
        ("msg", 2, b"u.y", b"", b"NATS/1.0\r\n\r\n", b"!"),
    ]


async def test_reset_during_a_call_drops_the_rest_of_that_read() -> None:
    """nats-py resets the parser when it reconnects, possibly while the parser awaits
    one of its calls: what was read from the old connection must go with it."""
    parser, nc = new_parser()

    async def reconnect_on_err(text: str) -> None:
        nc.events.append(("err", text))
        parser.reset()

    nc._process_err = reconnect_on_err  # type: ignore[method-assign]
    await parser.parse(b"PING\r\n-ERR 'Stale Connection'\r\nMSG r.x 1 2\r\nhi\r\nPING\r\nMSG r")
    await parser.parse(b"PONG\r\n")
    assert nc.events == [("ping",), ("err", "'stale connection'"), ("pong",)]
    assert nc.stats == {"in_msgs": 0, "in_bytes": 0}

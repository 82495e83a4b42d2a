"""Ordered per key without a server: what a header key reads from a message's headers.
(Ordering itself: tests/integration/test_keys.py.)"""

from __future__ import annotations

import pytest

import jetkit as jk

KEY = "Order-Id"


@pytest.mark.parametrize(
    "raw",
    [
        b"NATS/1.0\r\nOrder-Id: 17\r\n\r\n",
        b"NATS/1.0\r\nA: b\r\nOrder-Id:  x y \r\nOrder-Id: last\r\n\r\n",
        b"NATS/1.0\r\nOrder-Id:\r\n\r\n",
        b"NATS/1.0\r\nX-Order-Id: 3\r\n\r\n",
        b"NATS/1.0\r\n Order-Id : 5\r\n\r\n",
        b"NATS/1.0\r\nOther: 1\r\n\r\n",
        b"NATS/1.0\r\nOrder-Id: caf\xc3\xa9\r\n\r\n",
    ],
)
def test_the_header_key_reads_what_the_parsed_headers_say(raw: bytes) -> None:
    from jetkit._keys import _header_key
    from jetkit._wire import parse_headers

    msg = jk.Message("t", b"", None, None, None, raw)
    assert _header_key(KEY)(msg) == (parse_headers(raw).get(KEY) or None)

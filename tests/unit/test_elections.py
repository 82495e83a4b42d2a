"""The pure parts of riding through cluster elections: the backoff between asks, which
API calls may be sent again while unanswered, the re-send interval of publishes, the
errors' words, and the HPUB a re-sent publish is."""

from __future__ import annotations

import pytest

import jetkit as jk
from jetkit import _acked, _jsapi, _wire


def test_the_backoff_doubles_from_50ms_to_a_second_with_jitter() -> None:
    for attempt, base in enumerate([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]):
        for _ in range(50):
            assert base <= _jsapi.pause(attempt) <= base * 1.2


def test_only_a_whole_purge_is_never_sent_twice() -> None:
    assert _jsapi.repeatable("STREAM.INFO.orders", None)
    assert _jsapi.repeatable("CONSUMER.CREATE.orders.d", {"config": {}})
    assert _jsapi.repeatable("STREAM.DELETE.orders", None)
    assert _jsapi.repeatable("STREAM.PURGE.orders", {"filter": "$JKS.orders.x"})
    assert not _jsapi.repeatable("STREAM.PURGE.orders", None)
    assert not _jsapi.repeatable("STREAM.PURGE.orders", {"keep": 5})


def test_publishes_are_sent_again_about_every_second() -> None:
    for _ in range(100):
        assert 0.8 <= _acked.resend_delay() <= 1.2


def test_the_errors_name_the_cause_and_the_fix() -> None:
    late = _jsapi.no_answer("STREAM.INFO.orders", 5.0, "no responders")
    assert isinstance(late, jk.TimeoutError)
    text = str(late)
    assert "within 5s" in text and "election" in text and "api_timeout" in text
    assert "no responders" in text
    refused = _jsapi.placement(5, 3, "no suitable peers for placement")
    assert isinstance(refused, jk.ConfigError)
    assert "replicas=5" in str(refused) and "3 JetStream node" in str(refused)
    assert "replicas=3 or fewer" in str(refused)


@pytest.mark.parametrize("reply", [b"", b"_INBOX.x.1"])
def test_hpub_frames_a_message_with_headers(reply: bytes) -> None:
    block = _wire.header_block({"Nats-Msg-Id": "jk-1", "a": "b"})
    assert block == b"NATS/1.0\r\nNats-Msg-Id: jk-1\r\na: b\r\n\r\n"
    frame = _wire.hpub(b"orders.events", block, b"data", reply)
    head, rest = frame.split(b"\r\n", 1)
    words = head.split()
    assert words[0] == b"HPUB" and words[1] == b"orders.events"
    assert (words[2] == reply) if reply else len(words) == 4
    assert int(words[-2]) == len(block) and int(words[-1]) == len(block) + 4
    assert rest == block + b"data\r\n"

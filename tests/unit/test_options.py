"""Option sets checked and normalised without a server (their refusals are in the
bad-input tables: tests/unit/test_bad_input_open.py, tests/integration/test_bad_input_*.py)."""

from __future__ import annotations

import datetime as dt

import pytest

import jetkit as jk
from jetkit._options import subscribe_options


def test_subscribe_options_are_checked_without_a_server() -> None:
    opts = subscribe_options(
        "t",
        backoff=[1, dt.timedelta(seconds=5)],
        ack=jk.AckPolicy.MANUAL,
        start_time=0,
        ack_wait=dt.timedelta(seconds=2),
    )
    assert opts.backoff == [1.0, 5.0]
    assert opts.start_at is jk.StartAt.BY_START_TIME
    assert opts.ack_wait == 2.0
    assert opts.jetstream_only() == ["ack", "backoff", "start_at", "start_time"]
    with pytest.raises(jk.ConfigError, match="ack_wait"):
        subscribe_options("t", ack_wait=0.05)
    with pytest.raises(jk.ConfigError, match=r"dlq 't.dead' lies inside the topic's pattern 't.>'"):
        subscribe_options("t.>", dlq="t.dead")
    with pytest.raises(jk.ConfigError, match=r"dlq 't.dead' must not be the topic itself"):
        subscribe_options("t.dead", dlq="t.dead")

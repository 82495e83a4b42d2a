"""Option sets checked and normalised without a server (their refusals are in the
bad-input tables: tests/unit/test_bad_input_open.py, tests/integration/test_bad_input_*.py)."""

from __future__ import annotations

import datetime as dt

import jetkit as jk
from jetkit._options import subscribe_options


def test_subscribe_options_are_normalised_without_a_server() -> None:
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


def test_a_key_with_concurrency_one_is_accepted() -> None:
    # (everything is in order anyway)
    assert subscribe_options("t", key="Order-Id", concurrency=1).key == "Order-Id"

"""Scheduled delivery and TTL without a server: the one hook that knows the held
subjects, the values written for the server, the version check, and the log lines of a
rebuilt index. (Against the server: tests/integration/test_schedules.py.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import jetkit as jk
from jetkit import _damage, _held
from jetkit._schedule import due_time, require, ttl_value, version_of


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_one_hook_tells_a_streams_own_subjects_from_the_held_ones() -> None:
    held = _held.held_subjects("orders_events")
    assert _held.own_subjects(["orders.events", held]) == ["orders.events"]
    assert _held.own_subjects(["orders.>", "orders.eu.x"]) == ["orders.>", "orders.eu.x"]
    assert _held.schedule_subject("orders_events", "id1").startswith(held.rstrip(">"))
    # the held subjects are spelled in _held only: every other module asks its hook
    src = Path(jk.__file__).parent
    spelled = sorted(
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if any(q + "$JK.SCHED" in p.read_text() for q in "\"'")
    )
    assert spelled == ["_held.py"]


def test_ttl_values_the_server_reads() -> None:
    assert ttl_value(1) == "1s"
    assert ttl_value(90) == "90s"
    assert ttl_value(1.5) == "1500ms"
    assert ttl_value(dt.timedelta(minutes=2)) == "120s"


def test_the_due_time_is_now_plus_the_delay_or_now_for_a_time_just_past() -> None:
    now = utc_now()
    assert due_time(None, 5, now) == now + dt.timedelta(seconds=5)
    assert due_time(None, dt.timedelta(seconds=5), now) == now + dt.timedelta(seconds=5)
    assert due_time(now - dt.timedelta(seconds=0.5), None, now) == now


def test_an_old_server_is_named() -> None:
    assert version_of("2.11.4") == (2, 11, 4)
    assert version_of("2.12.0-RC.2") == (2, 12, 0)
    assert version_of("") == (0, 0, 0)
    with pytest.raises(jk.ConfigError, match=r"needs nats-server 2\.12\.0 or newer.*2\.11\.4"):
        require((2, 11, 4), (2, 12, 0), "scheduled delivery")
    require((2, 15, 1), (2, 12, 0), "scheduled delivery")


def test_a_rebuilt_schedule_or_ttl_index_is_not_damage(tmp_path: Path) -> None:
    """After a crash nats-server rebuilds the index of a stream's schedules and TTLs from
    its messages (it says so in a warning); nothing is lost, so jetkit reports nothing."""
    lines = [
        f"[1] 2026/11/29 05:16:00.000000 [WRN] Filestore [k_a] {what} state is outdated; "
        "attempting to recover using linear scan (seq 1 to 300)"
        for what in ("Message scheduling", "TTL", "Sourcing")
    ]
    damage = _damage.Damage()
    _damage.read_log(lines, tmp_path, damage)
    assert not damage
    _damage.read_log(["[1] [WRN] Filestore [k_a] lost 3 messages"], tmp_path, damage)
    assert damage.repaired == {"k_a": ["lost 3 messages"]}

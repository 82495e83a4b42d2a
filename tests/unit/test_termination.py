"""When a stopping embedded server counts as stuck (``_termination``; the server itself:
tests/integration/test_server.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jetkit._termination import STALL, cpu_ticks, store_items, stuck


def test_the_store_is_counted_by_its_streams_and_consumers(tmp_path: Path) -> None:
    assert store_items(tmp_path) == 0  # no jetstream/ yet
    streams = tmp_path / "jetstream" / "$G" / "streams"
    for stream, consumers in (("a", 3), ("b", 0), ("c", 1)):
        (streams / stream / "msgs").mkdir(parents=True)
        for i in range(consumers):
            (streams / stream / "obs" / f"d{i}").mkdir(parents=True)
    assert store_items(tmp_path) == 3 + 4


@pytest.mark.parametrize(
    ("elapsed", "idle", "expected"),
    [
        (5.0, 5.0, False),  # within the grace: waited for, whatever it does
        (10.0, 0.0, False),  # past the grace, progressing
        (10.0, STALL, True),  # past the grace, no progress for STALL seconds
        (59.0, 0.1, False),  # progressing, below the bound
        (60.0, 0.1, True),  # the bound: killed even while busy
    ],
)
def test_a_server_is_stuck_past_the_grace_when_it_stalls_or_reaches_the_bound(
    elapsed: float, idle: float, expected: bool
) -> None:
    assert stuck(elapsed, idle, grace=10.0, bound=60.0) is expected


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="no /proc here")
def test_cpu_time_is_read_from_proc_and_unknown_for_no_process() -> None:
    assert isinstance(cpu_ticks(os.getpid()), int)
    assert cpu_ticks(2**22 + 1) is None  # above Linux's pid_max: no such process

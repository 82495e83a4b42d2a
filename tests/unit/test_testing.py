"""``jetkit.testing`` without a server. (The pytest plugin and the Collector against a
server: tests/integration/test_pytest_plugin.py.)"""

from __future__ import annotations

import pytest

from jetkit.testing import Collector, SimulatedFailure


def test_collector_refuses_a_bad_fail_first() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="fail_first"):
            Collector(fail_first=bad)  # type: ignore[arg-type]
    assert issubclass(SimulatedFailure, Exception)

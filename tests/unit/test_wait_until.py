"""What ``wait_until`` and ``wait_until_async`` say when the condition never comes: the
predicate's source and the values it read, so a failure shows the state it waited on."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import wait_until, wait_until_async


@dataclasses.dataclass
class Stats:
    acked: int = 0


async def test_a_lambda_that_never_holds_is_shown_with_the_values_it_compares() -> None:
    seen = [b"one"]
    stats = Stats(acked=2)
    with pytest.raises(AssertionError) as failed:
        await wait_until(lambda: len(seen) == 3 and stats.acked >= 5, timeout=0.05)
    assert str(failed.value).splitlines() == [
        "condition not met within 0.05s: lambda: len(seen) == 3 and stats.acked >= 5",
        "  len(seen) = 1",
        "  stats.acked = 2",
        "  seen = [b'one']",
        "  stats = Stats(acked=2)",
    ]


async def test_the_right_lambda_of_a_line_and_its_default_arguments_are_shown() -> None:
    got: list[int] = []
    other, waited = (lambda: True), (lambda n=2: len(got) == n)
    assert other()
    with pytest.raises(AssertionError) as failed:
        await wait_until(waited, 0.05)  # the timeout as the second argument, as before
    assert str(failed.value).splitlines() == [
        "condition not met within 0.05s: lambda n=2: len(got) == n",
        "  len(got) = 0",
        "  n = 2",
        "  got = []",
    ]


async def test_a_state_callable_is_printed_too() -> None:
    ready = False
    with pytest.raises(AssertionError, match=r"(?m)^  state: \{'pending': 4\}$"):
        await wait_until(lambda: ready, timeout=0.05, state=lambda: {"pending": 4})


async def test_an_async_predicate_is_shown_by_its_source_and_what_it_reads() -> None:
    topic = "orders.events"
    counts = {"orders.events": 1}

    async def settled() -> bool:
        return counts[topic] == 0

    async def pending() -> int:
        return counts[topic]

    with pytest.raises(AssertionError) as failed:
        await wait_until_async(settled, timeout=0.05, state=pending)
    assert str(failed.value).splitlines() == [
        "condition not met within 0.05s: settled()",
        "    async def settled() -> bool:",
        "        return counts[topic] == 0",
        "  counts = {'orders.events': 1}",
        "  topic = 'orders.events'",
        "  state: 1",
    ]


async def test_a_lambda_that_calls_a_coroutine_function_is_not_evaluated_again() -> None:
    async def settled() -> bool:
        return False

    with pytest.raises(AssertionError) as failed:
        await wait_until_async(lambda: settled(), timeout=0.05)
    assert str(failed.value).splitlines()[0] == (
        "condition not met within 0.05s: lambda: settled()"
    )


async def test_a_value_with_a_long_repr_is_cut() -> None:
    big = list(range(1000))
    with pytest.raises(AssertionError) as failed:
        await wait_until(lambda: len(big) == 0, timeout=0.05)
    last = str(failed.value).splitlines()[-1]
    assert last.startswith("  big = [0, 1, 2,") and last.endswith("... (4890 chars)")

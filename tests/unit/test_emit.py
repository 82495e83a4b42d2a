"""What a pipeline handler's return value stands for, and its outputs' msg ids (no server)."""

from __future__ import annotations

import pytest

import jetkit as jk
from jetkit._emit import MAX_ID, output_id, outputs


def test_a_return_value_is_one_output_to_the_emit_topic() -> None:
    assert outputs(None, "out") == []
    assert outputs(b"x", "out") == [jk.Emit("out", b"x")]
    assert outputs({"a": 1}, "out") == [jk.Emit("out", {"a": 1})]
    assert outputs([1, 2], "out") == [jk.Emit("out", [1, 2])]  # a JSON array, one output


def test_emits_and_lists_of_them_are_the_outputs() -> None:
    one = jk.Emit("a", 1, headers={"H": "v"})
    assert outputs(one, "out") == [one]
    assert outputs([one, jk.Emit("b", 2)], "out") == [one, jk.Emit("b", 2)]
    assert outputs([], "out") == []  # an empty list: no outputs
    with pytest.raises(jk.EncodeError, match=r"mixing jk\.Emit and other values"):
        outputs([one, 2], "out")


def test_an_emit_checks_its_topic_and_headers_when_made() -> None:
    with pytest.raises(jk.InvalidTopicError):
        jk.Emit("a.*", 1)
    with pytest.raises(jk.ConfigError, match="headers must be a mapping"):
        jk.Emit("a", 1, headers=[("H", "v")])  # type: ignore[arg-type]


def test_output_ids_come_from_the_input_and_stay_short() -> None:
    first = output_id("abc", "ORDERS", "billing", 17, 0)
    assert first == "jk-emit-abc-ORDERS-billing-17-0"
    assert first == output_id("abc", "ORDERS", "billing", 17, 0)  # run again: the same id
    others = {
        output_id("abc", "ORDERS", "billing", 17, 1),  # another output
        output_id("abc", "ORDERS", "billing", 18, 0),  # another input
        output_id("abc", "ORDERS", "shipping", 17, 0),  # another pipeline on the input
        output_id("abd", "ORDERS", "billing", 17, 0),  # the consumer created again
    }
    assert first not in others and len(others) == 4
    long = output_id("abc", "S" * 200, "c" * 200, 2**63 - 1, 99)
    assert len(long) <= MAX_ID and long == output_id("abc", "S" * 200, "c" * 200, 2**63 - 1, 99)
    assert long != output_id("abc", "S" * 200, "d" * 200, 2**63 - 1, 99)

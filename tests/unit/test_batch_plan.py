"""How a batch handler (``subscribe(..., batch=N)``) is planned: what its list holds."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import jetkit as jk
from jetkit._codec import plan_batch_handler


@dataclasses.dataclass
class Order:
    order_id: str


async def of_messages(msgs: list[jk.Message]) -> None: ...


async def unannotated(msgs) -> None:  # type: ignore[no-untyped-def]
    ...


async def of_any(items: list[Any]) -> None: ...


async def of_orders(orders: list[Order]) -> None: ...


def of_bytes(items: list[bytes]) -> None: ...


async def not_a_list(order: Order) -> None: ...


async def a_tuple(items: tuple[Order, ...]) -> None: ...


async def two(items: list[bytes], msgs: list[jk.Message]) -> None: ...


@pytest.mark.parametrize("handler", [of_messages, unannotated, of_any])
def test_the_messages_themselves(handler: Any) -> None:
    plan = plan_batch_handler(handler)
    assert plan.decode is None and plan.takes is jk.Message


async def test_decoded_values_one_element_at_a_time() -> None:
    plan = plan_batch_handler(of_orders)
    assert plan.takes is Order and plan.decode is not None
    assert plan.decode(b'{"order_id": "a"}') == Order("a")
    with pytest.raises(jk.DecodeError):
        plan.decode(b"[]")
    raw = plan_batch_handler(of_bytes)  # a sync handler: run in a thread
    assert raw.decode is not None and raw.decode(b"x") == b"x"
    assert await raw.fn([b"x"]) is None


@pytest.mark.parametrize(
    ("handler", "match"),
    [
        (not_a_list, r"annotate its parameter list\[T\] or list\[jk\.Message\]"),
        (a_tuple, r"annotate its parameter list\[T\]"),
        (two, "must take one parameter, the batch"),
        (42, "handler must be callable"),
    ],
)
def test_what_is_not_a_batch_handler(handler: Any, match: str) -> None:
    with pytest.raises(jk.HandlerSignatureError, match=match):
        plan_batch_handler(handler)

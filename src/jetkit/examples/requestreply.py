"""Request/reply on jetkit: a calculator service and a client.

Run it with ``python -m jetkit.examples.requestreply`` (Ctrl+C or ``--duration``
stops it):

    Client -- calc.requests --+-- calculator-1 \\
                              +-- calculator-2  > queue group "calculators":
                              +-- calculator-3 /  one of them answers each request

A request is JSON such as ``{"op": "div", "a": 1, "b": 0}``; the reply names the
result and the responder. What a responder raises (division by zero, an unknown
operation) reaches the client as ``jk.RemoteError``. Request/reply is core NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import itertools
import logging
import operator
import sys
from collections.abc import Awaitable, Callable, Sequence

import jetkit as jk
from jetkit.examples.basic import parser, run_example, sleep_or_stop, stop_event

REQUESTS = "calc.requests"
RESPONDERS = 3

OPERATIONS: dict[str, Callable[[float, float], float]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
}
SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
# what the client asks, in turn: the last two fail in the responder
PROBLEMS = [("add", 2, 3), ("sub", 10, 4), ("mul", 6, 7), ("div", 1, 4), ("div", 1, 0)]
PROBLEMS += [("pow", 2, 8)]


@dataclasses.dataclass
class Calculation:
    op: str
    a: float
    b: float


@dataclasses.dataclass
class Answer:
    result: float
    by: str


def calculator(name: str, answered: collections.Counter[str]) -> Callable[..., Awaitable[Answer]]:
    """A responder: ``Calculation`` in, ``Answer`` out; errors go back to the client."""

    async def calculate(calc: Calculation) -> Answer:
        answered[name] += 1
        if calc.op not in OPERATIONS:
            raise ValueError(f"unknown operation {calc.op!r}; use one of {', '.join(OPERATIONS)}")
        result = OPERATIONS[calc.op](calc.a, calc.b)  # 1 / 0 raises ZeroDivisionError
        print(f"🧮 {name}: {calc.a:g} {SYMBOLS[calc.op]} {calc.b:g} = {result:g}")
        return Answer(result=result, by=name)

    return calculate


async def client(s: jk.Stream, interval: float, stop: asyncio.Event) -> tuple[int, int, int]:
    """Send the problems in turn until ``stop``; (sent, answered, errors)."""
    sent = answers = errors = 0
    for op, a, b in itertools.cycle(PROBLEMS):
        if stop.is_set():
            break
        sent += 1
        print(f"📤 Client asks: {op} {a} {b}")
        try:
            answer: Answer = await s.request_json(
                REQUESTS, Calculation(op, a, b), Answer, timeout=5
            )
        except jk.RemoteError as exc:
            errors += 1
            print(f"   ❗ RemoteError: {exc.type}: {exc.message}")
        else:
            answers += 1
            print(f"   ✅ {a} {SYMBOLS[op]} {b} = {answer.result:g} (answered by {answer.by})")
        await sleep_or_stop(stop, interval)
    return sent, answers, errors


async def main_async(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="   %(message)s")
    stop = stop_event(args.duration)
    print("jetkit request/reply example: a calculator service\nPress Ctrl+C to stop\n")
    answered: collections.Counter[str] = collections.Counter()
    async with jk.Stream.open(store_dir=args.store_dir) as s:
        names = [f"calculator-{n}" for n in range(1, RESPONDERS + 1)]
        print(f"🧮 Starting {RESPONDERS} calculators (queue group 'calculators')")
        for name in names:
            await s.respond(REQUESTS, calculator(name, answered), queue_group="calculators")
        print("📤 Starting Client")
        sent, answers, errors = await client(s, args.interval, stop)
        print("\n🛑 Shutting down")
    split = ", ".join(f"{name}: {answered[name]}" for name in names)
    print(f"📊 {sent} requests: {answers} answered, {errors} RemoteError ({split})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser(
        "python -m jetkit.examples.requestreply",
        "Request/reply: a calculator service with a queue group of responders.",
    ).parse_args(argv)
    return run_example(lambda: main_async(args))


if __name__ == "__main__":
    sys.exit(main())

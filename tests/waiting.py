"""What ``wait_until`` and ``wait_until_async`` (tests/conftest.py) say when they give up:
the predicate's source and the current values of what it reads.

For a lambda, its own source (found in its file by its position, however many lambdas
share the line) and, for a synchronous one, each value it compares, evaluated again
(``len(seen) = 3``); then every variable it closes over or takes as a default argument.
For a named function, its first lines and those variables. Not a test module itself.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

LONGEST = 300  # characters of one value's repr
FUNCTION_LINES = 6  # lines of a named predicate's source


def not_met(
    predicate: Callable[..., object], timeout: float, state: str | None, evaluate: bool
) -> str:
    """The failure message: what was waited on, what it read, and ``state`` if given.
    ``evaluate``: the predicate is synchronous, so the parts it compares may be
    evaluated again (an asynchronous one's parts would be coroutines)."""
    source, body = _source(predicate)
    lines = [f"condition not met within {timeout}s: {source}"]
    shown: set[str] = set()
    if body is not None and evaluate:
        for part in _compared(body):
            text = ast.unparse(part)
            if text not in shown:
                shown.add(text)
                lines.append(f"  {text} = {_value(part, predicate)}")
    for name, value in _reads(predicate).items():
        if name not in shown:
            lines.append(f"  {name} = {short(value)}")
    if state is not None:
        lines.append(f"  state: {state}")
    return "\n".join(lines)


def _source(fn: Callable[..., object]) -> tuple[str, ast.expr | None]:
    """A lambda's source and body, or a function's first lines (and no body)."""
    code = getattr(fn, "__code__", None)
    path = inspect.getsourcefile(fn) if code is not None else None
    if code is None or path is None:
        return repr(fn), None
    text = "".join(linecache.getlines(path))
    if code.co_name != "<lambda>":
        try:
            lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
        except OSError:
            return f"{fn.__name__}()", None
        more = ["..."] if len(lines) > FUNCTION_LINES else []
        return f"{fn.__name__}()\n    " + "\n    ".join(lines[:FUNCTION_LINES] + more), None
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return fn.__qualname__, None
    # the lambda whose body holds the most of the code's instructions (the innermost on a
    # tie: a lambda inside another is inside both bodies)
    spots = [(line, col) for line, _, col, _ in code.co_positions() if line and col is not None]
    best: tuple[int, int, ast.Lambda] | None = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Lambda) and node.lineno == code.co_firstlineno:
            b = node.body
            start, end = (b.lineno, b.col_offset), (b.end_lineno or 0, b.end_col_offset or 0)
            inside = sum(start <= spot <= end for spot in spots)
            span = len(ast.get_source_segment(text, b) or "")
            if best is None or (inside, -span) > (best[0], -best[1]):
                best = (inside, span, node)
    if best is None:
        return fn.__qualname__, None
    return " ".join((ast.get_source_segment(text, best[2]) or "").split()), best[2].body


def _compared(body: ast.expr) -> Iterator[ast.expr]:
    """The parts of ``body`` worth showing: what each comparison compares (not its
    constants), and any other condition as a whole."""
    if isinstance(body, ast.BoolOp):
        for value in body.values:
            yield from _compared(value)
    elif isinstance(body, ast.UnaryOp) and isinstance(body.op, ast.Not):
        yield from _compared(body.operand)
    elif isinstance(body, ast.Compare):
        for part in (body.left, *body.comparators):
            if not isinstance(part, ast.Constant):
                yield part
    elif not isinstance(body, ast.Constant):
        yield body


def _namespace(fn: Callable[..., object]) -> dict[str, Any]:
    names = dict(getattr(fn, "__globals__", {}))
    names.update(_reads(fn))
    return names


def _reads(fn: Callable[..., object]) -> dict[str, Any]:
    """The variables ``fn`` closes over and its default arguments, by name."""
    function = getattr(fn, "__func__", fn)  # a bound method's function
    code = getattr(function, "__code__", None)
    if code is None:  # a partial, a builtin: nothing to read
        return {}
    found: dict[str, Any] = dict(inspect.getclosurevars(function).nonlocals)
    defaults = function.__defaults__ or ()
    names = code.co_varnames[: code.co_argcount]
    found.update(zip(names[len(names) - len(defaults) :], defaults, strict=True))
    found.update(function.__kwdefaults__ or {})
    return found


def _value(part: ast.expr, fn: Callable[..., object]) -> str:
    try:
        value = eval(compile(ast.Expression(part), "<wait_until>", "eval"), _namespace(fn))
    except Exception as exc:
        return f"(raised {exc!r})"
    if inspect.iscoroutine(value):
        value.close()  # never awaited: say so instead of leaving it to warn
        return "(a coroutine)"
    return short(value)


def short(value: object) -> str:
    """``repr(value)``, cut after LONGEST characters."""
    try:
        text = repr(value)
    except Exception as exc:
        return f"(repr raised {exc!r})"
    return text if len(text) <= LONGEST else f"{text[:LONGEST]}... ({len(text)} chars)"

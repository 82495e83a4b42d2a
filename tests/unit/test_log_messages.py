"""The library's log messages, read from its source. (The lines an operator reads, from a
running Stream: tests/integration/test_log_lines.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import jetkit as jk

_LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical"}


def _log_messages(tree: ast.AST) -> list[tuple[int, str]]:
    """The literal start of every message passed to a logger method in ``tree``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LOG_METHODS | {"log"}
        ):
            continue
        args = node.args[1:] if node.func.attr == "log" else node.args
        if not args:
            continue
        first = args[0]
        if isinstance(first, ast.JoinedStr) and first.values:
            first = first.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.append((node.lineno, first.value))
    return found


def test_no_log_message_repeats_the_logger_name() -> None:
    """The loggers are named ``jetkit`` (and ``jetkit.*``): a message that starts with
    "jetkit:" again prints the name twice under ``%(name)s: %(message)s``."""
    source = Path(jk.__file__).parent
    files = sorted(source.rglob("*.py"))
    messages = [
        (f"{path.relative_to(source)}:{line}", text)
        for path in files
        for line, text in _log_messages(ast.parse(path.read_text(), str(path)))
    ]
    assert len(messages) > 40  # the walk found the log calls
    assert [(where, text) for where, text in messages if text.startswith("jetkit:")] == []

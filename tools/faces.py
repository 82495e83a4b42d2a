"""Write jetkit's generated faces from the classes that declare the calls.

    python tools/faces.py          # write src/jetkit/_faces.py and src/jetkit/_sync_stream.py
    python tools/faces.py --check  # exit 1 (and say which) if a written file is not current

Each public call is written once, with its signature and docstring, in the class that
implements it: the admin calls in ``_admin.Admin``, the messaging calls in
``_stream.Stream``. From those this script writes:

* ``_faces.AdminFace``: ``jk.Stream``'s admin calls, each delegating to ``self._admin``;
* ``_sync_stream.Stream``: ``jetkit.sync.Stream``, one blocking twin of every public call
  and property of ``jk.Stream`` that its base (``_sync_runtime.StreamBase``, hand-written:
  opening, closing, the decorator, settling a message) does not define. A twin runs the
  async call on the Stream's loop thread (``self._call``); a call taking a handler refuses
  an ``async def`` one and returns a ``jetkit.sync.Subscription``; a call returning an
  async iterator (``read_stored``) returns its items as a list.

``tests/unit/test_surface.py`` runs ``--check``: a face that drifts from its source fails.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "jetkit"

# calls of jk.Stream that take a handler: jetkit.sync refuses async ones and wraps the
# subscription it returns
HANDLER_CALLS = {"subscribe", "respond"}


@dataclass
class Call:
    """One public method or property of a class, as written."""

    name: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    overloads: list[ast.FunctionDef | ast.AsyncFunctionDef]
    is_property: bool
    alias_of: str | None = None


def calls_of(path: Path, class_name: str) -> list[Call]:
    """The public methods, properties and aliases of ``class_name`` in ``path``, in order."""
    tree = ast.parse(path.read_text(), str(path))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    found: dict[str, Call] = {}
    order: list[str] = []
    for item in cls.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            if item.name.startswith("_"):
                continue
            names = {_decorator(d) for d in item.decorator_list}
            if "overload" in names:
                found.setdefault(item.name, Call(item.name, item, [], False)).overloads.append(item)
                if item.name not in order:
                    order.append(item.name)
                continue
            call = found.get(item.name)
            if call is None:
                call = found[item.name] = Call(item.name, item, [], "property" in names)
                order.append(item.name)
            call.node = item
            call.is_property = "property" in names
        elif isinstance(item, ast.Assign) and len(item.targets) == 1:
            target, value = item.targets[0], item.value
            if (
                isinstance(target, ast.Name)
                and isinstance(value, ast.Name)
                and not target.id.startswith("_")
                and value.id in found
            ):
                found[target.id] = Call(target.id, found[value.id].node, [], False, value.id)
                order.append(target.id)
    return [found[name] for name in order]


def names_defined(path: Path, class_name: str) -> set[str]:
    """Every name a class defines itself (methods, properties, attributes)."""
    tree = ast.parse(path.read_text(), str(path))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    names: set[str] = set()
    for item in cls.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(item.name)
        elif isinstance(item, ast.Assign):
            names.update(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
    return names


def _decorator(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def docstring(node: ast.AST) -> str:
    return ast.get_docstring(node, clean=False) or ""  # type: ignore[arg-type]


def doc_block(text: str) -> str:
    """A docstring as source, indented for a method body."""
    if not text:
        return ""
    return f'        """{text}"""\n'


def call_args(args: ast.arguments) -> str:
    """How a delegating method passes its own parameters on (self left out)."""
    parts: list[str] = []
    positional = [*args.posonlyargs, *args.args]
    for arg in positional:
        if arg.arg not in ("self", "cls"):
            parts.append(arg.arg)
    if args.vararg is not None:
        parts.append(f"*{args.vararg.arg}")
    for arg in args.kwonlyargs:
        parts.append(f"{arg.arg}={arg.arg}")
    if args.kwarg is not None:
        parts.append(f"**{args.kwarg.arg}")
    return ", ".join(parts)


def returns(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The return annotation a caller gets after ``await`` (a plain function returning
    ``Coroutine[Any, Any, X]`` gives X)."""
    if node.returns is None:
        return "None"
    ret = node.returns
    if (
        isinstance(ret, ast.Subscript)
        and _decorator(ret.value) == "Coroutine"
        and isinstance(ret.slice, ast.Tuple)
        and len(ret.slice.elts) == 3
    ):
        return ast.unparse(ret.slice.elts[2])
    return ast.unparse(ret)


def _async_iterator_item(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """X, when ``node`` is a plain function returning ``AsyncIterator[X]``."""
    ret = node.returns
    if (
        isinstance(node, ast.FunctionDef)
        and isinstance(ret, ast.Subscript)
        and _decorator(ret.value) == "AsyncIterator"
    ):
        return ast.unparse(ret.slice)
    return None


def signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return ast.unparse(node.args)


# -- _faces.AdminFace ----------------------------------------------------------------------

FACES_HEAD = '''"""Generated by tools/faces.py from ``_admin.Admin``: do not edit; run the tool.

``AdminFace`` gives ``jk.Stream`` the admin calls of ``_admin.Admin`` (composed: the
Stream holds one, ``self._admin``).
"""

# ruff: noqa: F401

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ._deadletters import DeadLetter, DeadLetterScan, RedriveResult
from ._info import ConsumerInfo, TopicInfo, TopicOverview
from ._message import Message
from ._subscription import StartAt
from ._topics import Discard, Retention, TopicMode

if TYPE_CHECKING:
    from ._admin import Admin


class AdminFace:
    """The admin calls of ``jk.Stream`` (see ``_admin.Admin``, where they are written)."""

    _admin: Admin
'''


def admin_face() -> str:
    out = [FACES_HEAD]
    for call in calls_of(PACKAGE / "_admin.py", "Admin"):
        node = call.node
        prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
        wait = "await " if isinstance(node, ast.AsyncFunctionDef) else ""
        ret = ast.unparse(node.returns) if node.returns is not None else "None"
        out.append(
            f"\n    {prefix} {call.name}({signature(node)}) -> {ret}:\n"
            f"{doc_block(docstring(node))}"
            f"        return {wait}self._admin.{call.name}({call_args(node.args)})\n"
        )
    return "".join(out)


# -- _sync_stream.Stream -------------------------------------------------------------------

SYNC_HEAD = '''"""Generated by tools/faces.py from ``jk.Stream``: do not edit; run the tool.

``Stream`` is ``jetkit.sync.Stream``: ``_sync_runtime.StreamBase`` (opening, closing, the
loop thread) plus a blocking twin of every public call of ``jk.Stream`` (see the
``jetkit.sync`` module docstring for how calls, handlers and errors work).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar, Unpack, overload

from ._deadletters import DeadLetter, DeadLetterScan, RedriveResult
from ._info import ConsumerInfo, TopicInfo, TopicOverview
from ._message import Message
from ._publish import PubAck
from ._schedule import ScheduledMessage
from ._subscription import StartAt
from ._surface import SubscribeOptions
from ._sync_runtime import StreamBase, Subscription, reject_async
from ._topics import Discard, Retention, TopicMode

T = TypeVar("T")


class Stream(StreamBase):
    """``jk.Stream`` without asyncio: the same calls, made from ordinary threads.

    Open it with ``jetkit.sync.Stream.open(...)`` (the options of ``jk.Stream.open``);
    use it in a ``with`` block or call ``close()``. See the ``jetkit.sync`` module
    docstring for how calls, handlers, errors and shutdown work.
    """
'''


def sync_stream() -> str:
    own = names_defined(PACKAGE / "_sync_runtime.py", "StreamBase")
    calls = [
        *calls_of(PACKAGE / "_stream.py", "Stream"),
        *calls_of(PACKAGE / "_admin.py", "Admin"),
    ]
    out = [SYNC_HEAD]
    for call in calls:
        if call.name in own:
            continue
        if call.alias_of is not None:
            out.append(f"\n    {call.name} = {call.alias_of}\n")
            continue
        node = call.node
        if call.is_property:
            out.append(
                f"\n    @property\n    def {call.name}(self) -> {returns(node)}:\n"
                f"{doc_block(docstring(node))}"
                f"        return self._s.{call.name}\n"
            )
            continue
        for stub in call.overloads:
            out.append(
                f"\n    @overload\n    def {call.name}({signature(stub)}) -> {returns(stub)}: ...\n"
            )
        ret = returns(node)
        args = call_args(node.args)
        is_async = isinstance(node, ast.AsyncFunctionDef) or (
            node.returns is not None and returns(node) != ast.unparse(node.returns)
        )
        body = [doc_block(docstring(node))]
        items = _async_iterator_item(node)
        if items is not None:  # read on the loop thread, handed over as a list
            ret = f"list[{items}]"
            body.append(
                f"\n        async def items() -> {ret}:\n"
                f"            return [item async for item in self._s.{call.name}({args})]\n\n"
                f'        result: {ret} = self._call("{call.name}()", items)\n'
                "        return result\n"
            )
        elif not is_async:
            body.append(f"        return self._s.{call.name}({args})\n")
        else:
            target = f"self._s.{call.name}"
            if call.overloads:
                body.append(f"        call: Callable[..., Coroutine[Any, Any, {ret}]] = {target}\n")
                target = "call"
            invoke = f'self._call("{call.name}()", {target}{", " + args if args else ""})'
            if call.name in HANDLER_CALLS:
                body.insert(1, "        reject_async(handler)\n")
                body.append(f"        return self._wrap({invoke})\n")
                ret = "Subscription"
            else:  # (typed here: a generic call's result comes back as Any)
                body.append(f"        result: {ret} = {invoke}\n        return result\n")
        out.append(f"\n    def {call.name}({signature(node)}) -> {ret}:\n{''.join(body)}")
    return "".join(out)


# -- writing -------------------------------------------------------------------------------


def formatted(source: str, name: str) -> str:
    """``source`` as ``ruff format`` writes it (the checked-in files are formatted)."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", name, "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return done.stdout


FILES = {
    PACKAGE / "_faces.py": admin_face,
    PACKAGE / "_sync_stream.py": sync_stream,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say what is not current")
    check = parser.parse_args(argv).check
    stale = []
    for path, make in FILES.items():
        text = formatted(make(), str(path.relative_to(ROOT)))
        current = path.read_text() if path.exists() else ""
        if text == current:
            continue
        stale.append(path.relative_to(ROOT))
        if not check:
            path.write_text(text)
    if check and stale:
        print(
            f"not current: {', '.join(map(str, stale))}; run `python tools/faces.py`",
            file=sys.stderr,
        )
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

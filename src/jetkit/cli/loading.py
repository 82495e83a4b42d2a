"""``MODULE:APP``: the ``jk.App`` a command names, imported as ``python -c "import
MODULE"`` would from the current directory."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from types import ModuleType

import jetkit as jk


class AppNotFound(Exception):
    """``MODULE:APP`` names no App; the message says why, in one sentence."""


def load_app(ref: str) -> tuple[ModuleType, jk.App]:
    """Import ``MODULE`` (the current directory first on ``sys.path``) and return it with
    its attribute ``APP`` (dotted for an attribute of an attribute), a ``jk.App``."""
    name, colon, attribute = ref.partition(":")
    if not colon or not name or not attribute:
        raise AppNotFound(f"expected MODULE:APP (e.g. service:app), got {ref!r}")
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise AppNotFound(
                f"no module named {name!r} (looked in the current directory, {here}, and in "
                "the installed packages)"
            ) from None
        raise AppNotFound(f"importing {name!r} failed: {exc}") from None
    except Exception as exc:
        raise AppNotFound(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from None
    found: object = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            apps = [k for k, v in vars(module).items() if isinstance(v, jk.App)]
            hint = f" (its jk.App: {', '.join(map(repr, apps))})" if apps else ""
            raise AppNotFound(f"module {name!r} has no attribute {attribute!r}{hint}")
        found = getattr(found, part)
    if not isinstance(found, jk.App):
        raise AppNotFound(f"{ref} is {_what(found)}, not a jk.App")
    return module, found


def _what(thing: object) -> str:
    if inspect.ismodule(thing):
        return "a module"
    if inspect.isclass(thing):
        return f"the class {thing.__name__}"
    if inspect.isroutine(thing):
        return "a function"
    return f"an instance of {type(thing).__name__}"

"""``jetkit asyncapi``: the AsyncAPI 3.0 document of a ``jk.App`` (``jetkit._asyncapi``)."""

from __future__ import annotations

import inspect
import os
import sys
from types import ModuleType
from typing import Annotated

import msgspec
import typer

import jetkit as jk

from .._app import find_app
from .._asyncapi import asyncapi_document
from .._errors import ConfigError
from . import output
from .common import quiet_when_the_reader_goes


def asyncapi(
    app: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:APP",
            help="The jk.App: a module importable from the current directory, and its name.",
            show_default=False,
        ),
    ],
    yaml: Annotated[bool, typer.Option("--yaml", help="YAML instead of JSON.")] = False,
) -> None:
    """Print the AsyncAPI 3.0 document of a jk.App: its server, a channel per topic, an
    operation per subscriber and responder, payloads as JSON Schema."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)  # MODULE is imported from here
    try:
        module, found = find_app(app)
    except ConfigError as exc:
        output.error(str(exc))
        raise typer.Exit(2) from None
    document = asyncapi_document(
        found,
        title=title(app, module, found),
        version=version(module),
        description=inspect.getdoc(module) or None,
    )
    text = (
        msgspec.yaml.encode(document)
        if yaml
        else msgspec.json.format(msgspec.json.encode(document), indent=2)
    )
    with quiet_when_the_reader_goes():
        output.write(text.decode().rstrip("\n"))


def title(ref: str, module: ModuleType, app: jk.App) -> str:
    """The App's connection name, else ``MODULE`` (``MODULE:APP`` unless APP is ``app``)."""
    name = app.options.get("name")
    if name:
        return str(name)
    return module.__name__ if ref.endswith(":app") else ref


def version(module: ModuleType) -> str:
    """The module's ``__version__``, else its top package's, else 0.0.0."""
    for where in (module, sys.modules.get(module.__name__.partition(".")[0])):
        found = getattr(where, "__version__", None)
        if isinstance(found, str) and found:
            return found
    return "0.0.0"

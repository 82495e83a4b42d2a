"""The AsyncAPI project's own parser accepts jetkit's documents.

``tests/asyncapi/validate.mjs`` runs ``@asyncapi/parser`` (the version pinned in
``tests/asyncapi/package.json``; ``npm ci --prefix tests/asyncapi`` installs it, and
``.ci/run`` does so when npm exists) over the documents of the example Apps
(``tests/asyncapi_examples.py``) and of ``jetkit.examples.service`` when it exists; a
document fails on any error-level diagnostic. Without node or the installed parser the
tests are skipped, saying which is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

import asyncapi_examples as ex
import jetkit as jk
from jetkit._asyncapi import asyncapi_document

PARSER = Path(__file__).resolve().parent.parent / "asyncapi"
INSTALLED = PARSER / "node_modules" / "@asyncapi" / "parser" / "package.json"
SERVICE = "jetkit.examples.service"  # the example service, once it exists


def documents() -> dict[str, tuple[dict[str, Any], str]]:
    """The documents to parse: name -> (document, format)."""
    found = {
        name: (asyncapi_document(app, title=name, version="1.0.0"), "json")
        for name, app in ex.APPS.items()
    }
    found["stored-yaml"] = (asyncapi_document(ex.stored, title="stored"), "yaml")
    if importlib.util.find_spec(SERVICE) is not None:
        app = getattr(importlib.import_module(SERVICE), "app", None)
        if isinstance(app, jk.App):
            found["service"] = (asyncapi_document(app, title=SERVICE), "json")
    # the control: an operation whose message is not its channel's must be refused
    tampered = asyncapi_document(ex.stored, title="tampered")
    tampered["operations"]["bill"]["messages"] = [{"$ref": "#/channels/prices_quote/messages/Text"}]
    found["tampered"] = (tampered, "json")
    return found


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The parser's verdict on each document, in one run of node."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the AsyncAPI parser runs on Node.js")
    if not INSTALLED.exists():
        pytest.skip(
            "@asyncapi/parser is not installed in tests/asyncapi: run "
            "`npm ci --prefix tests/asyncapi` (.ci/run does when npm exists)"
        )
    where = tmp_path_factory.mktemp("asyncapi")
    files = {}
    for name, (doc, form) in documents().items():
        path = files[name] = where / f"{name}.{form}"
        path.write_bytes(msgspec.yaml.encode(doc) if form == "yaml" else msgspec.json.encode(doc))
    out = subprocess.run(
        [node, str(PARSER / "validate.mjs"), *map(str, files.values())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode in (0, 1), f"validate.mjs could not run: {out.stderr}"
    report = json.loads(out.stdout)
    by_file = {r["file"]: r for r in report["results"]}
    print(f"@asyncapi/parser {report['parser']}")  # shown with -s: the version that judged
    return {
        name: {**by_file[str(path)], "parser": report["parser"]} for name, path in files.items()
    }


def errors(verdict: dict[str, Any]) -> list[str]:
    return [
        f"{d['code']} at {d['path'] or '/'}: {d['message']}"
        for d in verdict["diagnostics"]
        if d["severity"] == "error"
    ]


@pytest.mark.parametrize("name", [*sorted(ex.APPS), "stored-yaml", "service"])
def test_the_asyncapi_parser_accepts_the_document(
    name: str, verdicts: dict[str, dict[str, Any]]
) -> None:
    if name not in verdicts:
        pytest.skip(f"{SERVICE} has no jk.App named app yet")
    verdict = verdicts[name]
    assert verdict["parsed"] and errors(verdict) == [], errors(verdict)
    # nothing worse than the hint that a newer AsyncAPI (3.1) exists
    assert [d for d in verdict["diagnostics"] if d["severity"] == "warning"] == []


def test_the_parser_does_refuse_a_wrong_document(verdicts: dict[str, dict[str, Any]]) -> None:
    verdict = verdicts["tampered"]
    assert not verdict["parsed"]
    assert any("asyncapi3-operation-messages-from-referred-channel" in e for e in errors(verdict))

"""The check of nats-py's insides that jetkit uses (``_natspy``): an unsupported nats-py
gives one clear error at Stream.open, naming the version, the range and the fix."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.client import Client

import jetkit as jk
from jetkit import _natspy


def test_the_installed_nats_py_has_everything_jetkit_uses() -> None:
    _natspy.check_client(Client(), Client)


class StandIn(Client):
    """nats-py's Client as a later release might reshape it."""


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: delattr(c, "_pending"), "no _pending"),
        (lambda c: setattr(c, "_pending", ()), "_pending (list, found tuple)"),
        (lambda c: setattr(c, "_server_info", None), "_server_info (dict, found NoneType)"),
        (lambda c: setattr(c, "_ps", object()), "_ps (a parser with parse())"),
        (lambda c: setattr(c, "_process_msg", lambda *a: None), "no _process_msg"),
    ],
)
def test_a_client_missing_or_reshaping_one_part_is_refused_naming_it(
    change: Any, named: str
) -> None:
    client = StandIn()
    change(client)
    with pytest.raises(jk.DependencyError) as info:
        _natspy.check_client(client, Client)
    text = str(info.value)
    assert named in text
    assert f"nats-py {_natspy.installed_version()} is installed" in text
    assert f"pip install 'nats-py{_natspy.SUPPORTED}'" in text


def test_a_connected_client_without_its_flusher_is_refused() -> None:
    client = StandIn()
    client._flush_queue = asyncio.Queue()  # type: ignore[assignment]
    client._flusher_task = None
    with pytest.raises(jk.DependencyError, match="_flusher_task \\(a task\\)"):
        _natspy.check_connected(client)


def test_the_allowed_range_is_the_one_pyproject_pins() -> None:
    from conftest import ROOT

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"nats-py{_natspy.SUPPORTED}"' in pyproject

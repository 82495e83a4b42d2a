"""One source for the public surface: each option set declared once, every face derived.

No server: these read the code (signatures, declarations, the generated faces).
"""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import typing

import pytest

import jetkit as jk
import jetkit.sync as jsync
import jetkit.testing as jt
from conftest import ROOT
from jetkit import _options, _surface


def test_the_generated_faces_are_current() -> None:
    # the admin calls of jk.Stream and every call of jetkit.sync.Stream are written from
    # the classes that declare them; edit those, then run `python tools/faces.py`
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "faces.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def public(cls: type) -> dict[str, object]:
    return {
        name: getattr(cls, name)
        for name in dir(cls)
        if not name.startswith("_") and name not in ("open", "close")
    }


def parameters(fn: object) -> list[tuple[str, object, object, object]]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values()]


# what jetkit.sync does differently on purpose: a handler's call returns a sync
# Subscription; the decorator subscribes at once (there is no background registration)
SYNC_OWN = {"ack", "nak", "term", "in_progress", "drain_timeout"}


def test_the_sync_stream_has_every_call_of_the_async_one_with_its_parameters() -> None:
    async_calls = public(jk.Stream)
    sync_calls = public(jsync.Stream)
    missing = sorted(set(async_calls) - set(sync_calls))
    assert missing == []
    assert sorted(set(sync_calls) - set(async_calls)) == sorted(SYNC_OWN)
    for name, call in async_calls.items():
        twin = sync_calls[name]
        if isinstance(call, property):
            assert isinstance(twin, property), name
            continue
        assert parameters(twin) == parameters(call), name
    assert parameters(jsync.Stream.open) == parameters(jk.Stream.open)


OPTION_CALLS = [
    (jk.Stream.open, _surface.OpenOptions),
    (jsync.Stream.open, _surface.OpenOptions),
    (jt.BackgroundServer.open, _surface.OpenOptions),
    (jk.Stream.subscribe, _surface.SubscribeOptions),
    (jk.Stream.subscriber, _surface.SubscribeOptions),
    (jsync.Stream.subscribe, _surface.SubscribeOptions),
    (jsync.Stream.subscriber, _surface.SubscribeOptions),
    (jt.local_cluster, _surface.ClusterOptions),
    (jt.LocalCluster.__init__, _surface.ClusterOptions),
]


@pytest.mark.parametrize(("call", "declared"), OPTION_CALLS)
def test_every_call_takes_its_options_from_the_one_declaration(
    call: object, declared: type
) -> None:
    hints = typing.get_type_hints(call, include_extras=False)
    assert hints["options"] == typing.Unpack[declared]  # type: ignore[valid-type]


@pytest.mark.parametrize(
    ("declared", "settings"),
    [
        (_surface.SubscribeOptions, _options.SubscribeSettings),
        (_surface.OpenOptions, _options.OpenSettings),
    ],
)
def test_the_checked_settings_have_exactly_the_declared_options(
    declared: type, settings: type
) -> None:
    fields = [f.name for f in dataclasses.fields(settings)]
    assert fields == list(_surface.defaults(declared))


def test_a_declared_default_is_what_a_call_without_the_option_gets() -> None:
    checked = _options.subscribe_options("t")
    for name, value in _surface.defaults(_surface.SubscribeOptions).items():
        assert getattr(checked, name) == value, name


def test_no_public_call_takes_untyped_options() -> None:
    # (the rule: no ``**options: Any`` on a public call)
    for owner in (jk.Stream, jsync.Stream, jt.BackgroundServer, jt.LocalCluster):
        for name, member in inspect.getmembers(owner, callable):
            if name.startswith("_") and name != "__init__":
                continue
            for p in inspect.signature(member).parameters.values():
                if p.kind is inspect.Parameter.VAR_KEYWORD:
                    assert str(p.annotation).startswith("Unpack["), (owner, name)


def test_open_takes_exactly_the_async_options() -> None:
    sync_params = inspect.signature(jsync.Stream.open).parameters
    async_params = inspect.signature(jk.Stream.open).parameters
    assert [(p.name, p.kind, p.default) for p in sync_params.values()] == [
        (p.name, p.kind, p.default) for p in async_params.values()
    ]


def test_publishing_methods_take_the_async_parameters() -> None:
    for name in (
        "publish",
        "publish_json",
        "publish_stored",
        "publish_json_stored",
        "publish_many",
        "cancel_scheduled",
        "discard_dead_letter",
    ):
        sync_params = inspect.signature(getattr(jsync.Stream, name)).parameters
        async_params = inspect.signature(getattr(jk.Stream, name)).parameters
        assert [(p.name, p.kind, p.default) for p in sync_params.values()] == [
            (p.name, p.kind, p.default) for p in async_params.values()
        ], name

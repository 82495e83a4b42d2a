"""``jk.App``'s declarations, checked when they are made (no server)."""

from __future__ import annotations

import functools
import os

import pytest

import jetkit as jk
from jetkit._app import group_name


def test_declaring_checks_topic_options_handler_and_hooks_at_once() -> None:
    app = jk.App()
    with pytest.raises(jk.ConfigError, match="backoff"):
        app.subscriber("orders", backoff=[-1])
    with pytest.raises(jk.UnknownOptionError, match="did you mean 'durable'"):
        app.subscriber("orders", durabel="x")  # type: ignore[call-arg]
    with pytest.raises(jk.InvalidTopicError):
        app.subscriber("$JS.API.x")
    with pytest.raises(jk.HandlerSignatureError):
        app.subscriber("orders")(42)  # type: ignore[arg-type]
    with pytest.raises(jk.ConfigError, match="one argument, the Stream"):
        app.on_startup(lambda: None)
    with pytest.raises(jk.ConfigError):
        jk.App(drain_timeout=-1)
    with pytest.raises(jk.StreamClosedError, match="not running"):
        app.stream  # noqa: B018
    assert app.subscribers == () and app.responders == ()


def test_a_handler_without_a_group_gets_one_named_after_it() -> None:
    app = jk.App()

    @app.subscriber("a")
    def bill(data: bytes) -> None: ...

    @app.subscriber("b", durable="own")
    def ship(data: bytes) -> None: ...

    @app.responder("c")
    def answer(data: bytes) -> bytes:
        return data

    first, second = app.subscribers
    assert first.options["queue_group"] == group_name(bill)
    assert group_name(bill).endswith("bill") and "." not in group_name(bill)
    assert "queue_group" not in second.options  # durables share their durable
    assert app.responders[0].queue_group == group_name(answer)
    long = type("X" * 200, (), {"f": staticmethod(lambda data: None)}).f
    assert len(group_name(long)) <= 64


def test_group_names_are_valid_consumer_names() -> None:
    assert group_name(test_group_names_are_valid_consumer_names).replace("_", "").isalnum()
    assert os.sep not in group_name(test_group_names_are_valid_consumer_names)


def test_a_partial_or_a_callable_object_is_named_after_what_it_calls() -> None:
    def bill(data: bytes, extra: int) -> None: ...

    class Shipper:
        def __call__(self, data: bytes) -> None: ...

    partial = functools.partial(bill, extra=1)
    assert group_name(partial) == group_name(bill)  # not "functools"
    assert group_name(Shipper()).endswith("Shipper")
    assert group_name(Shipper()) != group_name(bill)

"""Bad input to the subscribe surface, gathered here (made table-driven in the next commit)."""

from __future__ import annotations

from typing import Any

import pytest

import jetkit as jk
from conftest import Recorder
from jetkit._options import subscribe_options


async def test_decorator_option_error_raises_when_decorating(core: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.ConfigError, match="concurrency"):

        @core.subscriber(topic, concurrency=0)
        async def bad(data: bytes) -> None: ...

    await core.publish(topic, b"x")  # nothing was left to raise from an unrelated publish


async def test_invalid_subscribe_topic(core: jk.Stream) -> None:
    with pytest.raises(jk.InvalidTopicError):
        await core.subscribe("a..b", lambda m: None)


async def test_bad_handlers(core: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.HandlerSignatureError):
        await core.subscribe(topic, lambda: None)
    with pytest.raises(jk.HandlerSignatureError):
        await core.subscribe(topic, lambda a, b, c: None)

    def wrong_second(v: bytes, other: int) -> None: ...

    with pytest.raises(jk.HandlerSignatureError):
        await core.subscribe(topic, wrong_second)
    with pytest.raises(jk.HandlerSignatureError):
        await core.subscribe(topic, 42)  # type: ignore[arg-type]


async def test_jetstream_options_on_a_core_topic(core: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.ConfigError, match=r"durable.*JetStream"):
        await core.subscribe(topic, lambda m: None, durable="d")
    with pytest.raises(jk.ConfigError, match="dlq"):
        await core.subscribe(topic, lambda m: None, dlq="dead")


async def test_bad_subscription_options(core: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.ConfigError):
        await core.subscribe(topic, lambda m: None, concurrency=0)
    with pytest.raises(jk.ConfigError):
        await core.subscribe(topic, lambda m: None, buffer_size=0)
    with pytest.raises(jk.InvalidTopicError):
        await core.subscribe(topic, lambda m: None, queue_group="a.b")


async def test_drop_policy_on_jetstream_is_an_error(js: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.ConfigError, match="never dropped"):
        await js.subscribe(topic, Recorder(), backpressure=jk.Backpressure.DROP_OLDEST)


async def test_bad_jetstream_options(js: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.ConfigError, match="MANUAL"):
        await js.subscribe(topic, Recorder(), backoff=[1])
    with pytest.raises(jk.ConfigError):
        await js.subscribe(topic, Recorder(), max_deliver=0)
    with pytest.raises(jk.ConfigError):
        await js.subscribe(topic, Recorder(), ack_wait=0)
    with pytest.raises(jk.InvalidTopicError):
        await js.subscribe(topic, Recorder(), durable="a.b")
    with pytest.raises(jk.ConfigError):
        await js.subscribe(topic, Recorder(), start_at=jk.StartAt.BY_SEQUENCE)
    with pytest.raises(jk.InvalidTopicError):
        await js.subscribe(topic, Recorder(), dlq="bad topic")


async def test_jetstream_only_options_on_a_core_topic_agree_in_number(
    core: jk.Stream, topic: str
) -> None:
    async def handler(msg: jk.Message) -> None:
        pass

    with pytest.raises(jk.ConfigError, match=r"^durable needs a JetStream topic, but "):
        await core.subscribe(topic, handler, durable="one")
    with pytest.raises(jk.ConfigError, match=r"^durable, dlq need a JetStream topic, but "):
        await core.subscribe(topic, handler, durable="two", dlq=f"{topic}.dead")


async def test_bad_key_arguments_are_refused_before_subscribing(
    core: jk.Stream, js: jk.Stream, topic: str
) -> None:
    async def handler(msg: jk.Message) -> None:
        pass

    async def async_key(msg: jk.Message) -> str:
        return "x"

    bad: list[Any] = ["", "Order Id", "Order:Id", 3, b"Order-Id", async_key, str]
    for key in bad:
        with pytest.raises(jk.ConfigError, match="key"):
            await js.subscribe(topic, handler, key=key)
    with pytest.raises(jk.ConfigError, match="key needs a JetStream topic"):
        await core.subscribe(f"{topic}.core", handler, key=KEY)
    # key with concurrency=1 is fine (everything is in order anyway)
    assert subscribe_options(topic, key=KEY, concurrency=1).key == KEY


async def test_the_decorator_checks_its_options_when_it_decorates(
    core: jk.Stream, topic: str
) -> None:
    async def handler(data: bytes) -> None: ...

    with pytest.raises(jk.ConfigError, match="backoff"):
        core.subscriber(topic, backoff=[-1])(handler)
    with pytest.raises(jk.ConfigError, match="JetStream topic"):
        core.subscriber(topic, durable="d")(handler)  # a core topic
    with pytest.raises(jk.InvalidTopicError):
        core.subscriber("bad topic")(handler)
    with pytest.raises(TypeError, match="duable"):
        core.subscriber(topic, duable="d")(handler)
    with pytest.raises(jk.HandlerSignatureError):
        core.subscriber(topic)(lambda *, needed: None)
    assert not core._registrations  # nothing was started for any of them


KEY = "Order-Id"

"""Bad input to the admin surface, gathered here (made table-driven in the next commit)."""

from __future__ import annotations

import pytest

import jetkit as jk


async def test_declare_topic_bad_input(js: jk.Stream, topic: str) -> None:
    with pytest.raises(jk.ConfigError):
        await js.declare_topic(topic, max_msgs=0)
    with pytest.raises(jk.ConfigError):
        await js.declare_topic(topic, replicas=0)
    with pytest.raises(jk.ConfigError, match="CORE"):
        await js.declare_topic(topic, mode=jk.TopicMode.CORE, max_msgs=5)
    with pytest.raises(jk.InvalidTopicError):
        await js.declare_topic("a..b")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"scan": 0}, jk.ConfigError),
        ({"scan": 1.5}, jk.ConfigError),
        ({"scan": True}, jk.ConfigError),
        ({"scan": None}, jk.ConfigError),
        ({"limit": 0}, jk.ConfigError),
        ({"limit": "3"}, jk.ConfigError),
        ({"first_seq": 0}, jk.ConfigError),
        ({"first_seq": 2**63}, jk.ConfigError),
    ],
)
async def test_scan_dead_letters_refuses_bad_bounds_before_asking_the_server(
    js: jk.Stream, topic: str, arguments: dict[str, object], error: type[Exception]
) -> None:
    # the topic is not stored: a check that asked the server would say NotFoundError
    with pytest.raises(error):
        await js.scan_dead_letters(f"{topic}.dlq", **arguments)  # type: ignore[arg-type]


async def test_scan_dead_letters_refuses_a_pattern_and_an_unstored_topic(
    js: jk.Stream, topic: str
) -> None:
    with pytest.raises(jk.InvalidTopicError):
        await js.scan_dead_letters(f"{topic}.>")
    with pytest.raises(jk.NotFoundError):
        await js.scan_dead_letters(f"{topic}.nothing.stored")


async def test_reset_consumer_bad_input(js: jk.Stream, topic: str) -> None:
    await js.publish(topic, b"x")
    with pytest.raises(jk.ConfigError, match="say where"):
        await js.reset_consumer(topic, "d")
    with pytest.raises(jk.ConfigError, match="cannot be reset to"):
        await js.reset_consumer(topic, "d", start_at=jk.StartAt.LAST_PER_SUBJECT)
    with pytest.raises(jk.ConfigError, match="start_seq"):
        await js.reset_consumer(topic, "d", start_seq=0)
    with pytest.raises(jk.ConfigError, match="needs start_time"):
        await js.reset_consumer(topic, "d", start_at=jk.StartAt.BY_START_TIME)
    with pytest.raises(jk.InvalidTopicError, match="durable"):
        await js.reset_consumer(topic, "a.b", start_at=jk.StartAt.ALL)
    with pytest.raises(jk.NotFoundError):
        await js.reset_consumer(topic, "nobody", start_at=jk.StartAt.ALL)
    with pytest.raises(jk.NotFoundError):
        await js.reset_consumer(f"{topic}.unstored", "d", start_at=jk.StartAt.ALL)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"keep": -1}, "keep"),
        ({"up_to_seq": 0}, "up_to_seq"),
        ({"keep": 1, "up_to_seq": 3}, "not both"),
        ({"subject": "other.topic"}, "not inside"),
        ({"subject": "bad subject"}, "whitespace|invalid|not a valid"),
    ],
)
async def test_purge_topic_bad_input(
    js: jk.Stream, topic: str, options: dict[str, object], match: str
) -> None:
    await js.publish(topic, b"kept")
    with pytest.raises((jk.ConfigError, jk.InvalidTopicError), match=match):
        await js.purge_topic(topic, **options)  # type: ignore[arg-type]
    assert (await js.topic_info(topic)).messages == 1


@pytest.mark.parametrize(
    ("topic_", "bounds", "error"),
    [
        ("a b", {}, jk.InvalidTopicError),
        ("", {}, jk.InvalidTopicError),
        (b"bytes", {}, jk.InvalidTopicError),
        ("orders.events", {"limit": 0}, jk.ConfigError),
        ("orders.events", {"limit": 2.5}, jk.ConfigError),
        ("orders.events", {"limit": True}, jk.ConfigError),
        ("orders.events", {"limit": None}, jk.ConfigError),
        ("orders.events", {"first_seq": 0}, jk.ConfigError),
        ("orders.events", {"first_seq": "1"}, jk.ConfigError),
    ],
)
async def test_read_stored_refuses_bad_input_at_the_call(
    js: jk.Stream, topic_: object, bounds: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):  # at the call: it is not iterated
        js.read_stored(topic_, **bounds)  # type: ignore[arg-type]


async def test_purge_topic_checks_the_topic_before_the_subject(js: jk.Stream) -> None:
    with pytest.raises(jk.InvalidTopicError, match="topic must be a str"):
        await js.purge_topic(5, subject="a.b")  # type: ignore[arg-type]
    with pytest.raises(jk.InvalidTopicError, match=r"^subject: "):
        await js.purge_topic("a.b", subject="")

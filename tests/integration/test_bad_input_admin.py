"""Bad input to the admin calls: ``declare_topic``, ``delete_consumer``,
``reset_consumer``, ``purge_topic``, ``read_stored`` and the dead-letter calls
(``dead_letters``, ``scan_dead_letters``, ``redrive``, ``discard_dead_letter``) refuse a
bad topic, name or bound with a clear error, and change nothing.

One table: each row is the call with the bad value, the error (or errors) and a fragment
of its message (a regular expression, as ``pytest.raises(match=)`` reads it). Every row
runs on the ``js`` Stream against a topic that holds one message; after it the topic is
as it was (its messages, sequences, limits and consumers), no consumer was made, and the
connection was never dropped. A call that is not awaited (``read_stored``) must refuse
at the call. (Refusals that need more state, such as a consumer of another topic or a
position past the end: test_admin.py and test_retries_dlq.py.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest

import jetkit as jk
from conftest import nc_of, outcome

Call = Callable[[jk.Stream, str], object]
Errors = type[Exception] | tuple[type[Exception], ...]


def row(call: Call, error: Errors, match: str, name: str) -> Any:
    return pytest.param(call, error, match, id=name)


# (call, error, message fragment); the id names the bad value
BAD_ADMIN_CALLS = [
    # declare_topic
    row(
        lambda s, t: s.declare_topic("a..b"),
        jk.InvalidTopicError,
        "has an empty token",
        "declare-topic-a..b",
    ),
    row(
        lambda s, t: s.declare_topic(t, max_msgs=0),
        jk.ConfigError,
        "max_msgs must be >= 1, got 0",
        "declare-max_msgs-0",
    ),
    row(
        lambda s, t: s.declare_topic(t, max_msgs=-5),
        jk.ConfigError,
        "max_msgs must be >= 1, got -5",
        "declare-max_msgs--5",
    ),
    row(
        lambda s, t: s.declare_topic(t, replicas=0),
        jk.ConfigError,
        "replicas must be >= 1, got 0",
        "declare-replicas-0",
    ),
    row(
        lambda s, t: s.declare_topic(t, max_age=math.nan),
        jk.ConfigError,
        "max_age must be a finite number, got nan",
        "declare-max_age-nan",
    ),
    row(
        lambda s, t: s.declare_topic(t, duplicate_window=0),
        jk.ConfigError,
        "duplicate_window must be > 0",
        "declare-duplicate_window-0",
    ),
    row(
        lambda s, t: s.declare_topic(t, duplicate_window="1m"),
        jk.ConfigError,
        "duplicate_window must be",
        "declare-duplicate_window-str",
    ),
    row(
        lambda s, t: s.declare_topic(t, max_age=10, duplicate_window=60),
        jk.ConfigError,
        r"duplicate_window \(60s\) is longer than max_age \(10s\)",
        "declare-duplicate_window-over-max_age",
    ),
    row(
        lambda s, t: s.declare_topic(t, retention="forever"),
        jk.ConfigError,
        "retention must be one of .*; got 'forever'",
        "declare-retention-str",
    ),
    row(
        lambda s, t: s.declare_topic(t, discard="oldest"),
        jk.ConfigError,
        "discard must be one of .*; got 'oldest'",
        "declare-discard-str",
    ),
    row(
        lambda s, t: s.declare_topic(t, mode=jk.TopicMode.CORE, max_msgs=5),
        jk.ConfigError,
        "CORE",
        "declare-CORE-with-max_msgs",
    ),
    # consumers
    row(
        lambda s, t: s.delete_consumer(t, 5),
        jk.InvalidTopicError,
        "durable must be a str, got int 5",
        "delete_consumer-int",
    ),
    row(lambda s, t: s.reset_consumer(t, "d"), jk.ConfigError, "say where", "reset-nowhere"),
    row(
        lambda s, t: s.reset_consumer(t, "d", start_at=jk.StartAt.LAST_PER_SUBJECT),
        jk.ConfigError,
        "cannot be reset to",
        "reset-LAST_PER_SUBJECT",
    ),
    row(
        lambda s, t: s.reset_consumer(t, "d", start_seq=0),
        jk.ConfigError,
        "start_seq",
        "reset-start_seq-0",
    ),
    row(
        lambda s, t: s.reset_consumer(t, "d", start_at=jk.StartAt.BY_START_TIME),
        jk.ConfigError,
        "needs start_time",
        "reset-BY_START_TIME-without-start_time",
    ),
    row(
        lambda s, t: s.reset_consumer(t, "a.b", start_at=jk.StartAt.ALL),
        jk.InvalidTopicError,
        "durable",
        "reset-durable-a.b",
    ),
    row(
        lambda s, t: s.reset_consumer(t, "nobody", start_at=jk.StartAt.ALL),
        jk.NotFoundError,
        "no consumer 'nobody' on the topic",
        "reset-no-such-durable",
    ),
    row(
        lambda s, t: s.reset_consumer(f"{t}.unstored", "d", start_at=jk.StartAt.ALL),
        jk.NotFoundError,
        "no JetStream topic stores",
        "reset-unstored-topic",
    ),
    # purge_topic
    *(
        row(
            lambda s, t, options=options: s.purge_topic(t, **options),
            (jk.ConfigError, jk.InvalidTopicError),
            match,
            f"purge-{name}",
        )
        for name, options, match in [
            ("keep--1", {"keep": -1}, "keep"),
            ("up_to_seq-0", {"up_to_seq": 0}, "up_to_seq"),
            ("keep-and-up_to_seq", {"keep": 1, "up_to_seq": 3}, "not both"),
            ("subject-other-topic", {"subject": "other.topic"}, "not inside"),
            ("subject-bad-subject", {"subject": "bad subject"}, "whitespace|invalid|not a valid"),
        ]
    ),
    row(
        lambda s, t: s.purge_topic(5, subject="a.b"),
        jk.InvalidTopicError,
        "topic must be a str",
        "purge-topic-int-before-the-subject",
    ),
    row(
        lambda s, t: s.purge_topic("a.b", subject=""),
        jk.InvalidTopicError,
        r"^subject: ",
        "purge-subject-empty",
    ),
    # read_stored (refused at the call: it is not iterated)
    row(
        lambda s, t: s.read_stored("a b"),
        jk.InvalidTopicError,
        "contains whitespace or a control character",
        "read_stored-topic-a-b",
    ),
    row(
        lambda s, t: s.read_stored(""),
        jk.InvalidTopicError,
        "topic is empty",
        "read_stored-topic-empty",
    ),
    row(
        lambda s, t: s.read_stored(b"bytes"),
        jk.InvalidTopicError,
        "topic must be a str, got bytes",
        "read_stored-topic-bytes",
    ),
    *(
        row(
            lambda s, t, bounds=bounds: s.read_stored(t, **bounds),
            jk.ConfigError,
            match,
            f"read_stored-{name}",
        )
        for name, bounds, match in [
            ("limit-0", {"limit": 0}, "limit must be >= 1, got 0"),
            ("limit-2.5", {"limit": 2.5}, "limit must be a whole number, got 2.5"),
            ("limit-True", {"limit": True}, "limit must be a whole number, got True"),
            ("limit-None", {"limit": None}, "limit must be a whole number, got None"),
            ("first_seq-0", {"first_seq": 0}, "first_seq must be >= 1, got 0"),
            ("first_seq-str", {"first_seq": "1"}, "first_seq must be a whole number, got '1'"),
        ]
    ),
    # dead letters (the DLQ topic is not stored: a check that asked the server first
    # would say NotFoundError)
    *(
        row(
            lambda s, t, arguments=arguments: s.scan_dead_letters(f"{t}.dlq", **arguments),
            jk.ConfigError,
            match,
            f"scan_dead_letters-{name}",
        )
        for name, arguments, match in [
            ("scan-0", {"scan": 0}, "scan must be >= 1, got 0"),
            ("scan-1.5", {"scan": 1.5}, "scan must be a whole number, got 1.5"),
            ("scan-True", {"scan": True}, "scan must be a whole number, got True"),
            ("scan-None", {"scan": None}, "scan must be a whole number, got None"),
            ("limit-0", {"limit": 0}, "limit must be >= 1, got 0"),
            ("limit-str", {"limit": "3"}, "limit must be a whole number, got '3'"),
            ("first_seq-0", {"first_seq": 0}, "first_seq must be >= 1, got 0"),
            (
                "first_seq-2**63",
                {"first_seq": 2**63},
                r"first_seq must be <= .*, got 9223372036854775808",
            ),
        ]
    ),
    row(
        lambda s, t: s.scan_dead_letters(f"{t}.>"),
        jk.InvalidTopicError,
        "contains the wildcard '>'",
        "scan_dead_letters-pattern",
    ),
    row(
        lambda s, t: s.scan_dead_letters(f"{t}.nothing.stored"),
        jk.NotFoundError,
        "no JetStream topic stores",
        "scan_dead_letters-unstored-topic",
    ),
    row(
        lambda s, t: s.dead_letters(f"{t}.nothing.stored"),
        jk.NotFoundError,
        "no JetStream topic stores",
        "dead_letters-unstored-topic",
    ),
    row(
        lambda s, t: s.redrive(t, limit=0),
        jk.ConfigError,
        "limit must be >= 1, got 0",
        "redrive-limit-0",
    ),
    row(
        lambda s, t: s.redrive(t, where="d1"),
        jk.ConfigError,
        "where must be a function DeadLetter -> bool, got 'd1'",
        "redrive-where-str",
    ),
    *(
        row(
            lambda s, t, seq=seq: s.discard_dead_letter(t, seq),
            jk.ConfigError,
            "seq",
            f"discard_dead_letter-seq-{seq!r}",
        )
        for seq in (0, -1, "1", True, 1.5, None)
    ),
    row(
        lambda s, t: s.discard_dead_letter(f"{t}.*", 1),
        jk.InvalidTopicError,
        r"contains the wildcard '\*'",
        "discard_dead_letter-pattern",
    ),
    row(
        lambda s, t: s.discard_dead_letter(f"{t}-nothing.stored", 1),
        jk.NotFoundError,
        "no JetStream topic stores",
        "discard_dead_letter-unstored-topic",
    ),
]


def unchanged(info: jk.TopicInfo) -> jk.TopicInfo:
    """What must not change (the size on disk may, as the server writes its files)."""
    return dataclasses.replace(info, disk_bytes=None)


@pytest.mark.parametrize(("call", "error", "match"), BAD_ADMIN_CALLS)
async def test_a_bad_admin_call_is_refused_and_changes_nothing(
    call: Call, error: Errors, match: str, js: jk.Stream, topic: str
) -> None:
    await js.publish(topic, b"kept")
    before = await js.topic_info(topic)
    reconnects = nc_of(js).stats["reconnects"]
    with pytest.raises(error, match=match):
        await outcome(call(js, topic))
    assert nc_of(js).stats["reconnects"] == reconnects  # the server never dropped us
    assert unchanged(await js.topic_info(topic)) == unchanged(before)
    assert await js.consumers(topic) == []
    await js.healthy()
    await js.delete_topic(topic)  # (the session's server serves many tests)

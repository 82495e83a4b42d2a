"""Bad input to subscribing: ``subscribe`` and the ``subscriber`` decorator refuse a bad
topic, handler or option with a clear error before subscribing, and the Stream lives on.

One table: each row is the Stream it runs on (``js``: JetStream topics by default;
``core``: core topics), the call with the bad value, the error and a fragment of its
message (a regular expression, as ``pytest.raises(match=)`` reads it; ``{topic}`` stands
for the test's topic). After every row nothing was subscribed or left registering, the
connection was never dropped, on ``js`` no stream or consumer was made for the topic, and
the Stream still publishes. (Option values the checks normalise: tests/unit/test_options.py.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

import jetkit as jk
from conftest import nc_of, outcome

Call = Callable[[jk.Stream, str], object]
KEY = "Order-Id"


def handler(msg: jk.Message) -> None:
    return None


def wrong_second(v: bytes, other: int) -> None: ...


def batch_handler(msgs: list[jk.Message]) -> None: ...


def int_handler(n: int) -> None: ...


async def keyword_only(msg: jk.Message, *, flag: bool) -> None: ...


async def async_key(msg: jk.Message) -> str:
    return "x"


def row(on: str, call: Call, error: type[Exception], match: str, name: str) -> Any:
    return pytest.param(on, call, error, match, id=name)


# (stream, call, error, message fragment); the id names the bad value
BAD_SUBSCRIPTIONS = [
    # topics and handlers
    row(
        "js",
        lambda s, t: s.subscribe("$SYS.>", handler),
        jk.InvalidTopicError,
        r"topic '\$SYS\.>' starts with '\$'",
        "topic-$SYS",
    ),
    row(
        "core",
        lambda s, t: s.subscribe("a..b", handler),
        jk.InvalidTopicError,
        "has an empty token",
        "topic-a..b",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, lambda: None),
        jk.HandlerSignatureError,
        "it takes 0 required positional parameters",
        "handler-without-arguments",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, lambda a, b, c: None),
        jk.HandlerSignatureError,
        "it takes 3 required positional parameters",
        "handler-with-three-arguments",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, wrong_second),
        jk.HandlerSignatureError,
        "the second parameter of wrong_second receives the jk.Message",
        "handler-second-argument-not-a-message",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, 42),
        jk.HandlerSignatureError,
        "handler must be callable, got 42",
        "handler-int",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, keyword_only),
        jk.HandlerSignatureError,
        "keyword-only",
        "handler-keyword-only",
    ),
    # options
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, ack_wait=float("nan")),
        jk.ConfigError,
        "ack_wait must be a finite number, got nan",
        "ack_wait-nan",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, ack_wait=float("inf")),
        jk.ConfigError,
        "ack_wait must be a finite number, got inf",
        "ack_wait-inf",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, ack_wait="30"),
        jk.ConfigError,
        "ack_wait must be a number, got '30'",
        "ack_wait-str",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, ack_wait=1e-9),
        jk.ConfigError,
        r"ack_wait must be >= 0\.1, got 1e-09",
        "ack_wait-1e-9",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, ack_wait=0.05),
        jk.ConfigError,
        "ack_wait",
        "ack_wait-0.05",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, ack_wait=0),
        jk.ConfigError,
        r"ack_wait must be >= 0\.1, got 0",
        "ack_wait-0",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, start_time=float("nan")),
        jk.ConfigError,
        "start_time must be a finite number, got nan",
        "start_time-nan",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, start_time=1e20),
        jk.ConfigError,
        r"start_time must be <= .*, got 1e\+20",
        "start_time-1e20",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, start_at="yesterday"),
        jk.ConfigError,
        "start_at must be one of jk.StartAt.NEW, .*; got 'yesterday'",
        "start_at-str",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, start_at=jk.StartAt.BY_SEQUENCE),
        jk.ConfigError,
        r"start_at=StartAt\.BY_SEQUENCE needs start_seq=",
        "start_at-BY_SEQUENCE-without-start_seq",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, start_seq=-1),
        jk.ConfigError,
        "start_seq must be >= 1, got -1",
        "start_seq--1",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, durable=5),
        jk.InvalidTopicError,
        "durable must be a str, got int 5",
        "durable-int",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, durable="a.b"),
        jk.InvalidTopicError,
        "durable 'a.b' is not allowed",
        "durable-a.b",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, ack=jk.AckPolicy.MANUAL, backoff=[float("inf")]),
        jk.ConfigError,
        "backoff delay must be a finite number, got inf",
        "backoff-inf",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, ack=jk.AckPolicy.MANUAL, backoff=[float("nan")]),
        jk.ConfigError,
        "backoff delay must be a finite number, got nan",
        "backoff-nan",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, ack=jk.AckPolicy.MANUAL, backoff="1,5"),
        jk.ConfigError,
        "backoff must be a list of delays in seconds, got '1,5'",
        "backoff-str",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, backoff=[1]),
        jk.ConfigError,
        "MANUAL",
        "backoff-without-MANUAL",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, max_deliver=0),
        jk.ConfigError,
        "max_deliver must be >= 1, got 0",
        "max_deliver-0",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, concurrency=True),
        jk.ConfigError,
        "concurrency must be a whole number, got True",
        "concurrency-True",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, handler, concurrency=0),
        jk.ConfigError,
        "concurrency must be >= 1, got 0",
        "concurrency-0",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, buffer_size=2.5),
        jk.ConfigError,
        "buffer_size must be a whole number, got 2.5",
        "buffer_size-2.5",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, handler, buffer_size=0),
        jk.ConfigError,
        "buffer_size must be >= 1, got 0",
        "buffer_size-0",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, handler, queue_group="a.b"),
        jk.InvalidTopicError,
        "queue_group 'a.b' is not allowed",
        "queue_group-a.b",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, backpressure=jk.Backpressure.DROP_OLDEST),
        jk.ConfigError,
        "never dropped",
        "backpressure-DROP_OLDEST-on-JetStream",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, dlq="bad topic"),
        jk.InvalidTopicError,
        "topic 'bad topic' contains whitespace",
        "dlq-bad-topic",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(f"{t}.>", handler, dlq=f"{t}.dead"),
        jk.ConfigError,
        r"dlq '{topic}.dead' lies inside the topic's pattern '{topic}.>'",
        "dlq-inside-the-pattern",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(f"{t}.dead", handler, dlq=f"{t}.dead"),
        jk.ConfigError,
        r"dlq '{topic}.dead' must not be the topic itself",
        "dlq-the-topic-itself",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, durabel="x"),
        jk.UnknownOptionError,
        r"'durabel'.*did you mean 'durable'",
        "unknown-durabel",
    ),
    # keys
    *(
        row(
            "js",
            lambda s, t, key=key: s.subscribe(t, handler, key=key),
            jk.ConfigError,
            "key",
            f"key-{name}",
        )
        for name, key in [
            ("empty", ""),
            ("space", "Order Id"),
            ("colon", "Order:Id"),
            ("int", 3),
            ("bytes", b"Order-Id"),
            ("async-function", async_key),
            ("str-type", str),
        ]
    ),
    # JetStream-only options on a core topic
    row(
        "core",
        lambda s, t: s.subscribe(t, handler, durable="d"),
        jk.ConfigError,
        r"^durable needs a JetStream topic, but ",
        "core-topic-durable",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, handler, dlq="dead"),
        jk.ConfigError,
        "dlq",
        "core-topic-dlq",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, handler, durable="two", dlq=f"{t}.dead"),
        jk.ConfigError,
        r"^durable, dlq need a JetStream topic, but ",
        "core-topic-durable-and-dlq",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(f"{t}.core", handler, key=KEY),
        jk.ConfigError,
        "key needs a JetStream topic",
        "core-topic-key",
    ),
    # the decorator: refused when it decorates, nothing left registering
    row(
        "core",
        lambda s, t: s.subscriber(t, concurrency=0)(handler),
        jk.ConfigError,
        "concurrency",
        "decorator-concurrency-0",
    ),
    row(
        "core",
        lambda s, t: s.subscriber(t, backoff=[-1])(handler),
        jk.ConfigError,
        "backoff",
        "decorator-backoff--1",
    ),
    row(
        "core",
        lambda s, t: s.subscriber(t, durable="d")(handler),
        jk.ConfigError,
        "JetStream topic",
        "decorator-core-topic-durable",
    ),
    row(
        "core",
        lambda s, t: s.subscriber("bad topic")(handler),
        jk.InvalidTopicError,
        "topic 'bad topic' contains whitespace",
        "decorator-topic-bad-topic",
    ),
    row(
        "core",
        lambda s, t: s.subscriber(t, duable="d")(handler),
        TypeError,
        "duable",
        "decorator-unknown-duable",
    ),
    row(
        "core",
        lambda s, t: s.subscriber(t)(lambda *, needed: None),
        jk.HandlerSignatureError,
        "has required keyword-only parameters",
        "decorator-handler-keyword-only",
    ),
    # exactly-once pipelines (emit=)
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, emit="a b"),
        jk.InvalidTopicError,
        "contains whitespace",
        "emit-whitespace",
    ),
    row(
        "js", lambda s, t: s.subscribe(t, handler, emit=5), jk.InvalidTopicError, "str", "emit-int"
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, emit="out.*"),
        jk.InvalidTopicError,
        "wildcard",
        "emit-wildcard",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, emit=t),
        jk.ConfigError,
        "lies inside the subscribed topic",
        "emit-itself",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(f"{t}.>", handler, emit=f"{t}.out"),
        jk.ConfigError,
        "lies inside the subscribed topic",
        "emit-inside-pattern",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, emit="out", ack=jk.AckPolicy.MANUAL),
        jk.ConfigError,
        "emit= settles the input itself",
        "emit-ack-manual",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, emit="out", ack=jk.AckPolicy.NONE),
        jk.ConfigError,
        "emit= settles the input itself",
        "emit-ack-none",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, handler, emit="out"),
        jk.ConfigError,
        "emit needs a JetStream topic",
        "emit-core-subscription",
    ),
    # batches (batch=, batch_timeout=)
    *[
        row(
            "js",
            lambda s, t, v=value: s.subscribe(t, batch_handler, batch=v),
            jk.ConfigError,
            match,
            f"batch-{name}",
        )
        for value, match, name in [
            (0, "batch must be >= 1, got 0", "0"),
            (-5, "batch must be >= 1, got -5", "negative"),
            (100_001, "batch must be <= 100000", "huge"),
            ("10", "batch must be a whole number", "str"),
            (2.5, "batch must be a whole number", "float"),
            (True, "batch must be a whole number", "bool"),
        ]
    ],
    *[
        row(
            "js",
            lambda s, t, v=value: s.subscribe(t, batch_handler, batch=10, batch_timeout=v),
            jk.ConfigError,
            match,
            f"batch_timeout-{name}",
        )
        for value, match, name in [
            (0, "batch_timeout must be > 0", "0"),
            (-1, "batch_timeout must be > 0", "negative"),
            (float("nan"), "batch_timeout must be a finite number", "nan"),
            (10_000, "batch_timeout must be <= 3600", "huge"),
        ]
    ],
    row(
        "js",
        lambda s, t: s.subscribe(t, handler, batch_timeout=1),
        jk.ConfigError,
        "batch_timeout applies to batches: give batch=N",
        "batch_timeout-without-batch",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, batch_handler, batch=2000),
        jk.ConfigError,
        "batch=2000 is larger than buffer_size=1024",
        "batch-over-buffer_size",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, batch_handler, batch=10, key=KEY),
        jk.ConfigError,
        "batch= and key= do not go together",
        "batch-with-key",
    ),
    row(
        "core",
        lambda s, t: s.subscribe(t, batch_handler, batch=10),
        jk.ConfigError,
        "batch needs a JetStream topic",
        "batch-core-subscription",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, int_handler, batch=10),
        jk.HandlerSignatureError,
        r"annotate its parameter list\[T\] or list\[jk.Message\]",
        "batch-handler-not-a-list",
    ),
    row(
        "js",
        lambda s, t: s.subscribe(t, wrong_second, batch=10),
        jk.HandlerSignatureError,
        "must take one parameter, the batch",
        "batch-handler-two-parameters",
    ),
]


@pytest.mark.parametrize(("on", "call", "error", "match"), BAD_SUBSCRIPTIONS)
async def test_a_bad_subscription_is_refused_before_subscribing_and_the_stream_lives_on(
    on: str,
    call: Call,
    error: type[Exception],
    match: str,
    topic: str,
    core: jk.Stream,
    js: jk.Stream,
) -> None:
    s = {"core": core, "js": js}[on]
    subscriptions = list(s.subscriptions)
    reconnects = nc_of(s).stats["reconnects"]
    with pytest.raises(error, match=match.replace("{topic}", re.escape(topic))):
        await outcome(call(s, topic))
    assert s.subscriptions == subscriptions and not s._registrations  # nothing started
    assert nc_of(s).stats["reconnects"] == reconnects  # the server never dropped us
    if on == "js":
        with pytest.raises(jk.NotFoundError):
            await s.topic_info(topic)  # no stream (and so no consumer) was made
    await s.publish(topic, b"still fine")
    await s.healthy()
    if on == "js":
        await s.delete_topic(topic)  # (the session's server serves many tests)

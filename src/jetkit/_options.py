"""Subscribe options: one pure check of everything ``Stream.subscribe`` is given.

``subscribe_options(...)`` turns the keyword arguments into a frozen
``SubscribeOptions`` (enums resolved, delays in seconds, the start position
resolved) or raises a ConfigError / InvalidTopicError naming the option and the
fix. It talks to nobody, so it is unit-tested without a server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from . import _validate
from ._errors import ConfigError
from ._retry import normalize_backoff
from ._subscription import AckPolicy, Backpressure, StartAt
from ._topics import consumer_name_ok, subject_matches, validate_topic

MIN_ACK_WAIT = 0.1  # below this the server redelivers before any handler can answer
MAX_ACK_WAIT = 7 * 86_400.0  # jetkit keeps slow handlers alive; a week is plenty
MAX_CONCURRENCY = 10_000
MAX_BUFFER = 1_000_000
MAX_DELIVER = 2**31 - 1
# Unix timestamps jetkit accepts as start_time: year 1970 to 9999
_MAX_TIMESTAMP = 253_402_300_799.0


@dataclasses.dataclass(frozen=True, slots=True)
class SubscribeOptions:
    """Checked subscribe options (see ``Stream.subscribe`` for their meaning)."""

    durable: str | None = None
    queue_group: str | None = None
    ack: AckPolicy = AckPolicy.AUTO
    max_deliver: int | None = None
    backoff: list[float] | None = None
    start_at: StartAt = StartAt.NEW
    start_time: dt.datetime | None = None
    start_seq: int | None = None
    concurrency: int = 1
    buffer_size: int = 1024
    backpressure: Backpressure = Backpressure.BLOCK
    dlq: str | None = None
    ack_wait: float = 30.0
    recreate: bool = False

    def jetstream_only(self) -> list[str]:
        """The options given that only a JetStream topic can honour."""
        given = {
            "durable": self.durable is not None,
            "ack": self.ack is not AckPolicy.AUTO,
            "max_deliver": self.max_deliver is not None,
            "backoff": self.backoff is not None,
            "start_at": self.start_at is not StartAt.NEW,
            "start_time": self.start_time is not None,
            "start_seq": self.start_seq is not None,
            "dlq": self.dlq is not None,
            "recreate": self.recreate,
        }
        return [name for name, used in given.items() if used]


def subscribe_options(
    topic: str,
    *,
    durable: object = None,
    queue_group: object = None,
    ack: object = AckPolicy.AUTO,
    max_deliver: object = None,
    backoff: object = None,
    start_at: object = StartAt.NEW,
    start_time: object = None,
    start_seq: object = None,
    concurrency: object = 1,
    buffer_size: object = 1024,
    backpressure: object = Backpressure.BLOCK,
    dlq: object = None,
    ack_wait: object = 30.0,
    recreate: object = False,
) -> SubscribeOptions:
    """Check and normalise the options of a subscription on ``topic`` (already valid)."""
    ack_policy = _validate.option(AckPolicy, ack, "ack")
    delays = normalize_backoff(backoff)  # type: ignore[arg-type]
    if delays and ack_policy is not AckPolicy.MANUAL:
        raise ConfigError("backoff applies to retries, which need ack=jk.AckPolicy.MANUAL")
    if dlq is not None:
        validate_topic(dlq, wildcards=False)
        assert isinstance(dlq, str)
        if dlq == topic or subject_matches(topic, dlq):
            raise ConfigError(f"dlq {dlq!r} must not be the topic {topic!r} itself")
    position, when, seq = resolve_start(
        _validate.option(StartAt, start_at, "start_at"), start_time, start_seq
    )
    return SubscribeOptions(
        durable=None if durable is None else consumer_name_ok(durable, "durable"),
        queue_group=(None if queue_group is None else consumer_name_ok(queue_group, "queue_group")),
        ack=ack_policy,
        max_deliver=_validate.optional_number(
            "max_deliver", max_deliver, minimum=1, maximum=MAX_DELIVER, integer=True
        ),
        backoff=delays,
        start_at=position,
        start_time=when,
        start_seq=seq,
        concurrency=_validate.number(
            "concurrency", concurrency, minimum=1, maximum=MAX_CONCURRENCY, integer=True
        ),
        buffer_size=_validate.number(
            "buffer_size", buffer_size, minimum=1, maximum=MAX_BUFFER, integer=True
        ),
        backpressure=_validate.option(Backpressure, backpressure, "backpressure"),
        dlq=dlq,
        ack_wait=float(
            _validate.number(
                "ack_wait",
                ack_wait,
                minimum=MIN_ACK_WAIT,
                maximum=MAX_ACK_WAIT,
                hint=" (seconds before an unacknowledged delivery is redelivered)",
            )
        ),
        recreate=_validate.flag("recreate", recreate),
    )


def to_datetime(value: object) -> dt.datetime:
    """Aware datetime as is; naive as local time; a number as a Unix timestamp."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            try:
                return dt.datetime.fromtimestamp(value.timestamp(), dt.UTC)
            except (OverflowError, OSError, ValueError) as exc:
                raise ConfigError(f"start_time {value!r} cannot be read as local time") from exc
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = _validate.number(
            "start_time", value, minimum=0, maximum=_MAX_TIMESTAMP, hint=" (a Unix timestamp)"
        )
        return dt.datetime.fromtimestamp(float(seconds), dt.UTC)
    raise ConfigError(f"start_time must be a datetime or a Unix timestamp, got {value!r}")


def resolve_start(
    start_at: StartAt, start_time: object, start_seq: object
) -> tuple[StartAt, dt.datetime | None, int | None]:
    """Check start options; a start_time/start_seq alone implies its StartAt."""
    seq: int | None = _validate.optional_number(
        "start_seq", start_seq, minimum=1, maximum=_validate.INT64_MAX, integer=True
    )
    if start_time is not None and start_at is StartAt.NEW:
        start_at = StartAt.BY_START_TIME
    if seq is not None and start_at is StartAt.NEW:
        start_at = StartAt.BY_SEQUENCE
    when = to_datetime(start_time) if start_time is not None else None
    if start_at is StartAt.BY_START_TIME and when is None:
        raise ConfigError("start_at=StartAt.BY_START_TIME needs start_time=")
    if start_at is StartAt.BY_SEQUENCE and seq is None:
        raise ConfigError("start_at=StartAt.BY_SEQUENCE needs start_seq= (>= 1)")
    if when is not None and start_at is not StartAt.BY_START_TIME:
        raise ConfigError(f"start_time= only applies to StartAt.BY_START_TIME, not {start_at}")
    if seq is not None and start_at is not StartAt.BY_SEQUENCE:
        raise ConfigError(f"start_seq= only applies to StartAt.BY_SEQUENCE, not {start_at}")
    return start_at, when, seq

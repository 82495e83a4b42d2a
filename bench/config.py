"""Message counts for full and quick mode, and the payload every scenario sends."""

from __future__ import annotations

import dataclasses

# The seed's order event as JSON (~150 bytes). ``order_id`` has a fixed width so a
# handler can read a message's index from a fixed slice (see ``index_of``).
_TEMPLATE = (
    '{"order_id":"order-%09d","customer_id":"customer-42","amount":99.99,'
    '"status":"created","timestamp":"2026-11-26T14:25:30Z","items":["sku-1","sku-2"]}'
)
_INDEX = slice(19, 28)


def payload(i: int = 123) -> bytes:
    """The order event with ``order_id`` ``order-<i>``."""
    return (_TEMPLATE % i).encode()


def index_of(data: bytes) -> int:
    """The ``i`` that ``payload(i)`` was built from."""
    return int(data[_INDEX])


PAYLOAD = payload()


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each measurement does (full mode: each lasts seconds)."""

    reps: int
    pubsub: int  # 1: core messages per run
    js_publish: int  # 2: acked publishes per run
    js_latency: int  # 2: sequential acked publishes per run
    consume: int  # 3: pre-filled messages consumed per run
    replay: int  # 4: messages in the replayed topic
    reqrep: int  # 5: requests per run (over 32 requesters)
    e2e_seconds: float  # 6: seconds of publishing at e2e_rate
    e2e_rate: int
    memory_seconds: float  # 7: seconds of 10x overload
    memory_reps: int
    startup_reps: int  # 8: opens per store
    startup_messages: int  # 8: messages in the non-empty store
    workers: int = 6_000  # 10: messages per run of jetkit run (a CPU-bound handler, 1 ms each)


FULL = Sizes(
    reps=5,
    pubsub=1_000_000,
    js_publish=300_000,
    js_latency=10_000,
    consume=200_000,
    replay=1_000_000,
    reqrep=200_000,
    e2e_seconds=10.0,
    e2e_rate=2_000,
    memory_seconds=15.0,
    memory_reps=3,
    startup_reps=10,
    startup_messages=1_000_000,
)

QUICK = Sizes(
    reps=3,
    pubsub=100_000,
    js_publish=50_000,
    js_latency=2_000,
    consume=40_000,
    replay=100_000,
    reqrep=30_000,
    e2e_seconds=3.0,
    e2e_rate=2_000,
    memory_seconds=4.0,
    memory_reps=1,
    startup_reps=5,
    startup_messages=100_000,
    workers=3_000,
)

REQUESTERS = 32
PUBLISH_WINDOW = 256  # acks in flight for pipelined publishing (jetkit's default)
FETCH_BATCH = 256  # nats-py / FastStream / Redis batch size for pulls and reads

"""The scenarios, in the order they run. Each module has NAME, TITLE and ``run(ctx)``."""

from __future__ import annotations

from types import ModuleType

from . import (
    batches,
    consume,
    keys,
    latency,
    memory,
    publish,
    pubsub,
    replay,
    reqrep,
    startup,
    workers,
)

ALL: list[ModuleType] = [
    pubsub,
    publish,
    consume,
    replay,
    reqrep,
    latency,
    memory,
    startup,
    keys,
    workers,
    batches,
]

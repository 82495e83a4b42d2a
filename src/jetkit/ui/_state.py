"""What the console knows about the server: the latest sample of its topics and
consumers, their rates (``_top.Top``), each consumer's lag over the last minutes, and
which topics hold dead letters.

One ``Sampler`` per console. Its loop samples every ``interval`` seconds (that is what
the lag chart is drawn from, kept in memory and bounded); a page asks for a sample at
most ``FRESH`` seconds old, so what a page shows is current without every open tab
adding load. While the connection is down nothing is asked of the server: the page
shows the health and the last figures known.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from typing import Any

import jetkit as jk

from .. import _top
from .._retry import H_TOPIC
from . import _view

INTERVAL = 2.0  # seconds between samples of the loop
FRESH = 0.5  # a page gets a sample at most this old
WINDOW = 600.0  # seconds of lag history kept (and drawn) per consumer
MAX_CONSUMERS = 500  # consumers with a lag history (the rest: figures, no chart)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    at: float  # time.time()
    up: bool  # connected, and JetStream answers
    health: dict[str, Any]
    topics: list[jk.TopicInfo]
    consumers: list[jk.ConsumerInfo]
    dead_letter_topics: frozenset[str]  # stream names whose newest message is a dead letter
    error: str | None  # why the last sample failed (the figures are from before)


class Sampler:
    """Samples a Stream's server; see the module docstring."""

    def __init__(self, stream: jk.Stream, interval: float = INTERVAL) -> None:
        self.stream = stream
        self.interval = interval
        self.top = _top.Top()
        self.last: Snapshot | None = None
        # (stream, consumer) -> [(time.time(), lag)], oldest first
        self.history: dict[tuple[str, str], deque[tuple[float, int]]] = {}
        # stream -> (seq, whether the message there is a dead letter), newest and oldest
        self._newest: dict[str, tuple[int, bool]] = {}
        self._oldest: dict[str, tuple[int, bool]] = {}
        self._lock = asyncio.Lock()

    async def fresh(self, max_age: float = FRESH) -> Snapshot:
        """A sample at most ``max_age`` seconds old (taken now if the last is older)."""
        async with self._lock:
            if self.last is None or time.time() - self.last.at > max_age:
                await self._sample()
            assert self.last is not None
            return self.last

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            await self.fresh(max_age=self.interval / 2)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def _sample(self) -> None:
        now = time.time()
        health = await self.stream.health()
        up = bool(health["connection"]["connected"] and health["jetstream"]["enabled"])
        last = self.last
        if not up:
            error = str(health["jetstream"].get("error") or "not connected")
            self.last = _stale(last, now, health, error)
            return
        try:
            sample = await _top.sample(self.stream)
            dlqs = await self._dead_letter_topics(sample.topics)
        except jk.JetkitError as exc:
            self.last = _stale(last, now, health, str(exc))
            return
        self.top.add(sample)
        self._record(now, sample.consumers)
        self.last = Snapshot(now, True, health, sample.topics, sample.consumers, dlqs, None)

    def _record(self, now: float, consumers: list[jk.ConsumerInfo]) -> None:
        seen = set()
        for c in consumers:
            key = (c.stream, c.name)
            seen.add(key)
            points = self.history.get(key)
            if points is None:
                if len(self.history) >= MAX_CONSUMERS:
                    continue
                points = self.history[key] = deque()
            points.append((now, c.pending))
            while points and points[0][0] < now - WINDOW:
                points.popleft()
        for key in [k for k in self.history if k not in seen]:
            del self.history[key]  # deleted consumers are forgotten

    async def _dead_letter_topics(self, topics: list[jk.TopicInfo]) -> frozenset[str]:
        """Streams whose newest or oldest message carries the dead-letter headers (one
        other message published to a DLQ, say from the publish form, does not hide it);
        each asked again only when that end's sequence moved."""
        found = set()
        names = {t.name for t in topics}
        for t in topics:
            subjects = _view.topics_of(t.subjects)
            if t.messages == 0 or len(subjects) != 1 or not _concrete(subjects[0]):
                continue
            for ends, seq in ((self._newest, t.last_seq), (self._oldest, t.first_seq)):
                known = ends.get(t.name)
                if known is None or known[0] != seq:
                    known = ends[t.name] = (seq, await self._is_letter(t, subjects[0], ends))
                if known[1]:
                    found.add(t.name)
                    break
        for ends in (self._newest, self._oldest):
            for name in [k for k in ends if k not in names]:
                del ends[name]
        return frozenset(found)

    async def _is_letter(
        self, t: jk.TopicInfo, subject: str, ends: dict[str, tuple[int, bool]]
    ) -> bool:
        try:
            if ends is self._newest:
                msg = await self.stream.last_message(subject)
            else:
                first = self.stream.read_stored(subject, first_seq=max(1, t.first_seq), limit=1)
                msg = next(iter([m async for m in first]), None)
        except jk.NotFoundError:
            return False
        return msg is not None and H_TOPIC in msg.headers

    def lag_series(
        self, consumers: list[jk.ConsumerInfo]
    ) -> list[tuple[str, list[tuple[float, int]]]]:
        """The lag history of ``consumers`` (named by consumer), for ``_view.chart``."""
        return [(c.name, list(self.history.get((c.stream, c.name), ()))) for c in consumers]


def _concrete(subject: str) -> bool:
    return "*" not in subject.split(".") and ">" not in subject.split(".")


def _stale(last: Snapshot | None, now: float, health: dict[str, Any], error: str) -> Snapshot:
    """The server cannot be asked: health now, and the figures last known."""
    if last is None:
        return Snapshot(now, False, health, [], [], frozenset(), error)
    return dataclasses.replace(last, at=now, up=False, health=health, error=error)

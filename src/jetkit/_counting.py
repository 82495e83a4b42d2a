"""What jetkit counts while metrics are on, kept apart from prometheus-client (which
``jetkit.metrics`` imports only when metrics are used): the handler-time histogram and
the publish counts per topic. Both are written on the event loop thread only."""

from __future__ import annotations

import bisect

# seconds; prometheus-client's default buckets
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
MAX_TOPIC_LABELS = 1000


class Histogram:
    """Handler run times, observed on the event loop and read by the collector."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def buckets(self) -> tuple[list[tuple[str, float]], float]:
        counts = list(self.counts)  # one consistent copy: +Inf equals the count
        cumulative, total = [], 0
        for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
            total += n
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return cumulative, self.sum


class PublishCounts:
    """Publishes and publish errors per topic (the Publisher calls ``ok``/``error``)."""

    def __init__(self) -> None:
        self.published: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def ok(self, topic: str, n: int = 1) -> None:
        table = self.published
        if topic in table:
            table[topic] += n
        else:
            _add(table, topic, n)

    def error(self, topic: str, n: int = 1) -> None:
        _add(self.errors, topic, n)


def _add(table: dict[str, int], topic: str, n: int) -> None:
    key = topic if topic in table or len(table) < MAX_TOPIC_LABELS else "_other"
    table[key] = table.get(key, 0) + n

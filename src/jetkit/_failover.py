"""Moving off a server through which JetStream has no quorum (``failover_after``).

A node cut off from the cluster's majority keeps its client connections: it answers
PINGs, so nats-py never leaves it, while every publish and API call through it waits
(no stream leader answers, or a stale one that cannot commit). The ``Failover`` watch
notices that from the Stream's own traffic, at no cost on the hot paths (twice a
second it looks at the publish that has waited longest and at the API's count of
answers): calls are waiting and none has succeeded for ``failover_after`` seconds.
Then it asks every server the client knows, each over a short connection of its own,
whether the streams of the waiting publishes have a quorum through it (``quorum``: the
stream's leader answers and hears from a majority of its replicas; with no publish
waiting, whether the meta leader answers); when the connected server has none and
another has, the Stream reconnects to that one. Subscriptions, waiting publishes
(which are sent again with their msg id) and everything else follow the connection as
after any reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import nats

from ._acked import AckedPublisher, _Entry, stored
from ._connection import Connection
from ._jsapi import JsApi

CHECK_EVERY = 0.5  # seconds between two looks at the counters
PROBE_TIMEOUT = 2.0  # seconds a server has to answer a probe (connect, then the question)
FRESH = 3.0  # seconds: a replica the leader heard from within this is in touch
IDLE = 2.0  # seconds with nothing waiting after which a stall is over


def quorum(answer: dict[str, Any]) -> bool:
    """Whether a ``STREAM.INFO`` (or ``STREAM.NAMES``) answer shows a working quorum.

    ``STREAM.NAMES`` is answered by the meta leader only: any answer without an error
    will do. ``STREAM.INFO``: a leader, and the leader plus the replicas it heard from
    within ``FRESH`` seconds (``active`` is in nanoseconds) are a majority.
    """
    if answer.get("error"):
        return False
    cluster = answer.get("cluster")
    if cluster is None:  # STREAM.NAMES, or a server that is not clustered
        return True
    if not cluster.get("leader"):
        return False
    replicas = cluster.get("replicas") or []
    in_touch = sum(
        1 for r in replicas if not r.get("offline") and float(r.get("active", 0)) / 1e9 < FRESH
    )
    return 2 * (1 + in_touch) > 1 + len(replicas)


async def ask(url: str, options: dict[str, Any], subjects: list[str]) -> bool:
    """Whether server ``url`` shows a quorum for every one of ``subjects`` (API calls),
    asked over a connection of its own, each within ``PROBE_TIMEOUT``."""
    kwargs = {k: v for k, v in options.items() if k in ("user", "password", "token", "tls")}
    nc = None
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=[url],
                connect_timeout=PROBE_TIMEOUT,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                name="jetkit-failover-probe",
                **kwargs,
            ),
            PROBE_TIMEOUT + 0.5,
        )
        for subject in subjects:
            msg = await nc.request(subject, b"", timeout=PROBE_TIMEOUT)
            if not msg.data or not quorum(msgspec.json.decode(msg.data)):
                return False
        return True
    except Exception:
        return False
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


class Failover:
    """The watch of one Stream (see the module docstring).

    Progress is an API call answered (``JsApi.answered``) or a publish stored: the
    publish that waited longest at one look is followed to its answer at the next ones
    (its Future says how it ended), so nothing is counted per publish. ``streams()``
    names the streams of the waiting publishes.
    """

    def __init__(
        self,
        conn: Connection,
        after: float,
        log: logging.Logger,
        *,
        acked: AckedPublisher,
        api: JsApi,
        streams: Callable[[], set[str]],
    ) -> None:
        self._conn = conn
        self.after = after
        self._log = log
        self._acked = acked
        self._api = api
        self._streams = streams
        self._followed: _Entry | None = None  # the oldest waiting publish at the last look
        self._stored = 0  # followed publishes that were stored
        self.moves = 0  # reconnections to another server this watch made

    def _waiting(self) -> bool:
        return self._acked.waiting or self._api.in_flight > 0

    def _progress(self) -> int:
        followed = self._followed
        outcome = None if followed is None else stored(followed)
        if outcome:
            self._stored += 1
        if followed is None or outcome is not None:
            self._followed = self._acked.oldest()
        return self._stored + self._api.answered

    async def watch(self) -> None:
        """Run until cancelled (the Stream's close cancels it)."""
        loop = asyncio.get_running_loop()
        stuck_since: float | None = None  # calls have waited since, none answered
        last_waiting = 0.0
        seen = self._progress()
        while True:
            await asyncio.sleep(CHECK_EVERY)
            now, count = loop.time(), self._progress()
            if count != seen or not self._conn.is_connected:
                seen, stuck_since = count, None
                continue
            if self._waiting():
                last_waiting = now
                if stuck_since is None:
                    stuck_since = now
            elif now - last_waiting > IDLE:  # (a retry's pause between calls is not idle)
                stuck_since = None
            if stuck_since is not None and now - stuck_since >= self.after:
                try:
                    await self._move(now - stuck_since)
                except Exception as exc:  # the watch must outlive any one attempt
                    self._log.debug("failover attempt failed: %r", exc)
                stuck_since = None  # at most one attempt per failover_after
                seen = self._progress()

    async def _move(self, stuck: float) -> None:
        """Ask every known server; reconnect to one with a quorum if this one has none."""
        current = self._conn.url
        urls = self._conn.known_urls()
        if current is None or len(urls) < 2:
            return
        streams = sorted(self._streams())
        subjects = [f"$JS.API.STREAM.INFO.{name}" for name in streams]
        subjects = subjects or ["$JS.API.STREAM.NAMES"]
        options = self._conn.options
        answers = await asyncio.gather(*(ask(url, options, subjects) for url in urls))
        good = {url for url, ok in zip(urls, answers, strict=True) if ok}
        if current in good or not good:
            self._log.info(
                "JetStream calls through %s waited %.1fs with no answer; %s",
                current,
                stuck,
                "it has a quorum: staying"
                if current in good
                else "no server shows a quorum now: staying",
            )
            return
        target = next(url for url in urls if url in good)
        self._log.warning(
            "JetStream has no quorum through %s (calls waited %.1fs with no answer; "
            "a node cut off from the cluster's majority?): moving to %s",
            current,
            stuck,
            target,
        )
        self.moves += 1
        await self._conn.move_to(target)

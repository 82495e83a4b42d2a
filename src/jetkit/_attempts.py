"""Handler calls per message, counted across redeliveries, stops and crashes.

``max_deliver`` limits *handler calls*. The server counts deliveries instead: a message
pulled into a subscription's buffer and never handed to the handler (the process was
stopped or killed, a drain gave it back) comes back with a higher delivery count, and
counting that would dead-letter messages the handler never saw. So jetkit keeps its own
count, where it survives the process: in the stream ``JK-ATTEMPTS`` (no topic maps to
that name), one message per subject ``$JK.ATTEMPTS.<stream>.<consumer>.<incarnation>.<seq>``
holding the number of handler calls begun for that message.

* The first call on a first delivery writes nothing (the hot path); if it fails, 1 is
  written before the message is nak'ed. A message that succeeds after a record was
  written gets 0 (a kill may undo its ack: then its calls start over, for it succeeded).
* Every later call (a redelivery, an in-place retry of ``key=``) writes its number
  *before* the handler runs, so a call cut short by a crash still counts.
* A first call cut short by ``kill -9`` is the one call not counted: such a message may
  be handled ``max_deliver + 1`` times at most, and still reaches the DLQ.
* ``incarnation`` tells apart consumers of the same name (a topic deleted and declared
  again starts its sequences at 1; a consumer reset starts over).
* When a count cannot be read (the server restarting, an election), the message is given
  back (nak, 1 s) and read again when it returns; after three such tries it is handled
  as if it had no calls before (a false dead letter is worse than one more call). A
  count that cannot be written does not stop the call (a crash during it may then go
  uncounted). Both are logged once per outage.

Records expire after ``MAX_AGE``; the stream is bounded by ``MAX_BYTES`` (oldest first).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

from ._errors import JetkitError, JetStreamError, NotFoundError
from ._jsapi import JsApi
from ._publish import PubAck
from ._time import nanos
from ._wire import pub

STREAM = "JK-ATTEMPTS"
PREFIX = "$JK.ATTEMPTS"
MAX_AGE = 30 * 86_400.0
MAX_BYTES = 64 * 2**20
STREAM_NAME_IN_USE = 10058

Publish = Callable[[str, bytes, dict[str, str] | None], Awaitable[PubAck]]
Send = Callable[[bytes], object]


def incarnation(consumer_info: dict[str, object]) -> str:
    """A short token naming one life of a consumer: from its creation time, which a
    consumer created again (same name, new or same stream) never repeats."""
    created = str(consumer_info.get("created") or "")
    return hashlib.blake2b(created.encode(), digest_size=6).hexdigest()


class AttemptLog:
    """The Stream's attempt records (shared by its subscriptions)."""

    def __init__(self, api: JsApi, publish: Publish, send: Send, log: logging.Logger) -> None:
        self._api = api
        self._publish = publish
        self._send = send
        self._log = log
        self._warned = False

    async def read(self, key: str) -> int | None:
        """Handler calls recorded for ``key`` (0: none); None if it cannot be asked."""
        try:
            resp = await self._api.call(
                f"STREAM.MSG.GET.{STREAM}", {"last_by_subj": f"{PREFIX}.{key}"}
            )
        except NotFoundError:
            return 0  # no record, or no stream yet
        except JetkitError as exc:
            self._unavailable(exc)
            return None
        self._warned = False  # a new outage is logged again
        try:
            return int(base64.b64decode(resp["message"].get("data") or b""))
        except (KeyError, ValueError, TypeError):
            return 0

    async def write(self, key: str, calls: int) -> bool:
        """Record ``calls`` for ``key``; False (logged once) if it could not be stored."""
        subject = f"{PREFIX}.{key}"
        data = str(calls).encode()
        try:
            try:
                await self._publish(subject, data, None)
            except NotFoundError:  # no stream yet (or deleted): make it, then again
                await self._create()
                await self._publish(subject, data, None)
        except JetkitError as exc:
            self._unavailable(exc)
            return False
        self._warned = False  # a new outage is logged again
        return True

    def reset(self, key: str) -> None:
        """The message of ``key`` succeeded: its count starts over. Sent without waiting,
        ahead of the message's ack on the same connection (a kill that undoes the ack
        most likely undoes neither or both)."""
        with contextlib.suppress(JetkitError):
            self._send(pub(f"{PREFIX}.{key}".encode(), b"0"))

    async def _create(self) -> None:
        config = {
            "name": STREAM,
            "subjects": [f"{PREFIX}.>"],
            "retention": "limits",
            "storage": "file",
            "max_msgs_per_subject": 1,
            "max_age": nanos(MAX_AGE),
            "max_bytes": MAX_BYTES,
            "discard": "old",
            # shared by every topic: on a cluster as replicated as a topic may be
            "num_replicas": self._api.nodes(3),
            "allow_direct": True,
        }
        try:
            await self._api.call(f"STREAM.CREATE.{STREAM}", config)
        except JetStreamError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise

    def _unavailable(self, exc: Exception) -> None:
        """Log the first failure of an outage."""
        if not self._warned:
            self._warned = True
            self._log.warning(
                "attempt counts cannot be read or stored in %s (%s); messages that come "
                "back wait for it (up to 3 tries), and a crash meanwhile may go uncounted",
                STREAM,
                exc,
            )

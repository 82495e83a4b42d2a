"""``jk.Message``: one delivered message and, in JetStream mode, its settlement."""

from __future__ import annotations

import base64
import datetime as dt
import time
from typing import Any, Protocol

from ._errors import AlreadySettledError, ConfigError
from ._time import parse_time
from ._validate import number
from ._wire import parse_headers

ACK = b"+ACK"
NAK = b"-NAK"
TERM = b"+TERM"
WPI = b"+WPI"
_MAX_NAK_DELAY = 365 * 86_400.0


class Settler(Protocol):
    """Whoever sends a message's acks (the consumer that delivered it)."""

    async def send_ack(self, msg: Message, token: bytes, wait: bool = False) -> None: ...


class Message:
    """A delivered message.

    ``topic``, ``data`` and ``headers`` always; ``seq`` (stream sequence),
    ``num_delivered`` (1 on first delivery) and ``timestamp`` (when the server
    stored it) in JetStream mode. In core mode ``seq`` is None, ``num_delivered``
    is 1 and ``timestamp`` is when jetkit received it; ack/nak/term/in_progress
    do nothing there, since core messages are not acknowledged.

    A message is settled at most once: the first of ack/nak/term wins and a second
    raises AlreadySettledError. When the handler settles it, jetkit does not.
    """

    __slots__ = (
        "_attempt",
        "_base",
        "_headers",
        "_held_since",
        "_pipeline",
        "_raw_headers",
        "_seq",
        "_settled",
        "_settler",
        "_tokens",
        "_ts_ns",
        "data",
        "reply",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        reply: str | None = None,
        settler: Settler | None = None,
        raw_headers: bytes | None = None,
    ) -> None:
        # hot path: nothing is parsed here; the headers (``raw_headers``, as received)
        # and the JetStream metadata in the reply subject are read on first use
        self.topic = topic
        self.data = data
        self._headers = headers
        self._raw_headers = raw_headers
        self.reply = reply
        self._settler = settler
        self._settled = False
        self._pipeline = False  # in an emit= handler: jetkit settles it after its outputs
        self._held_since = 0.0  # the delivering consumer's: when it last kept it alive
        self._tokens: list[str] | None = None
        self._base = 0
        self._seq: int | None = None
        self._ts_ns = 0 if settler is not None else time.time_ns()
        self._attempt = 0  # the handler call this is, where jetkit counts them (max_deliver)

    @classmethod
    def stored(cls, raw: dict[str, Any]) -> Message:
        """A message as read from the store (STREAM.MSG.GET: base64 payload and headers)."""
        headers: dict[str, str] = {}
        if raw.get("hdrs"):
            lines = base64.b64decode(raw["hdrs"]).decode("utf-8", "replace").split("\r\n")[1:]
            for line in lines:
                key, sep, value = line.partition(":")
                if sep:
                    headers[key.strip()] = value.strip()
        msg = cls(raw.get("subject", ""), base64.b64decode(raw.get("data") or b""), headers)
        msg._seq = int(raw.get("seq", 0))
        stamp = parse_time(raw.get("time"))
        if stamp is not None:
            msg._ts_ns = int(stamp.timestamp() * 1e9)
        return msg

    def _meta(self) -> list[str] | None:
        tokens = self._tokens
        if tokens is None and self._settler is not None and self.reply:
            parts = self.reply.split(".")
            if len(parts) >= 9 and parts[1] == "ACK":
                self._base = 2 if len(parts) == 9 else 4
                self._tokens = tokens = parts
        return tokens

    @property
    def seq(self) -> int | None:
        """The stream sequence (JetStream), else None."""
        if self._seq is None:
            tokens = self._meta()
            if tokens is not None:
                self._seq = int(tokens[self._base + 3])
        return self._seq

    @property
    def num_delivered(self) -> int:
        """1 on the first delivery, 2 on the first redelivery, ...

        On a subscription with ``max_deliver``, the handler call this is: deliveries that
        never reached a handler (a stop, a crash, a copy of a message still running)
        do not count, so ``num_delivered == max_deliver`` is the last attempt.
        """
        if self._attempt:
            return self._attempt
        return self._server_deliveries()

    def _server_deliveries(self) -> int:
        """The server's delivery count (every delivery counts)."""
        tokens = self._meta()
        return int(tokens[self._base + 2]) if tokens is not None else 1

    @property
    def headers(self) -> dict[str, str]:
        headers = self._headers
        if headers is None:
            raw = self._raw_headers
            headers = self._headers = parse_headers(raw) if raw else {}
        return headers

    @property
    def timestamp(self) -> dt.datetime:
        """When the server stored the message (core: when jetkit received it), in UTC."""
        return dt.datetime.fromtimestamp(self._time_ns() / 1e9, dt.UTC)

    def _time_ns(self) -> int:
        tokens = self._meta()
        return int(tokens[self._base + 5]) if tokens is not None else self._ts_ns

    @property
    def stream(self) -> str | None:
        tokens = self._meta()
        return tokens[self._base] if tokens is not None else None

    @property
    def consumer(self) -> str | None:
        tokens = self._meta()
        return tokens[self._base + 1] if tokens is not None else None

    @property
    def pending(self) -> int:
        """Messages left for this consumer after this one (JetStream), else 0."""
        tokens = self._meta()
        return int(tokens[self._base + 6]) if tokens is not None else 0

    def __repr__(self) -> str:
        return (
            f"Message(topic={self.topic!r}, seq={self.seq}, "
            f"num_delivered={self.num_delivered}, data={self.data[:64]!r})"
        )

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def is_jetstream(self) -> bool:
        return self._settler is not None

    def _claim(self) -> None:
        """Mark the message settled: the one place that does (the first settlement wins)."""
        if self._settled:
            raise AlreadySettledError(
                f"message {self.topic!r} seq {self.seq} was already settled; settle once"
            )
        self._settled = True

    async def _settle(self, token: bytes, wait: bool = False) -> None:
        if self._settler is None:
            return
        if self._pipeline:
            raise ConfigError(
                f"the input {self.topic!r} seq {self.seq} of an emit= subscription is settled "
                "by jetkit, once its outputs are stored (a raise retries it); return the "
                "outputs instead of settling it in the handler"
            )
        self._claim()
        await self._settler.send_ack(self, token, wait)

    async def ack(self, wait: bool = False) -> None:
        """Mark the message processed: it is not delivered again.

        By default the ack is sent without waiting for the server; ``wait=True`` waits
        until the server confirmed it (raises jk.TimeoutError if it does not).
        """
        await self._settle(ACK, wait)

    async def nak(self, delay: float | dt.timedelta | None = None) -> None:
        """Ask for redelivery, after ``delay`` seconds if given."""
        if delay is None:
            await self._settle(NAK)
            return
        seconds = number("delay", delay, minimum=0, maximum=_MAX_NAK_DELAY, hint=" (seconds)")
        await self._settle(b'-NAK {"delay": %d}' % int(seconds * 1e9))

    async def term(self, reason: str | None = None) -> None:
        """Stop delivering this message (it is not retried, and not dead-lettered)."""
        if reason is not None and not isinstance(reason, str):
            raise ConfigError(f"reason must be a str, got {reason!r}")
        await self._settle(TERM + (b" " + reason.encode() if reason else b""))

    async def in_progress(self) -> None:
        """Reset the ack timer: the handler is still working on it."""
        if self._settler is not None and not self._settled:
            await self._settler.send_ack(self, WPI)

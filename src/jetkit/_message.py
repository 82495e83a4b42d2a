"""``jk.Message``: one delivered message and, in JetStream mode, its settlement."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from ._errors import AlreadySettledError

ACK = b"+ACK"
NAK = b"-NAK"
TERM = b"+TERM"
WPI = b"+WPI"


class Settler(Protocol):
    """Whoever sends a message's acks (the consumer that delivered it)."""

    async def send_ack(self, msg: Message, token: bytes, wait: bool = False) -> None: ...


def parse_ack_subject(reply: str) -> tuple[str, str, int, int, int, int, int] | None:
    """Parse a JetStream reply subject into (stream, consumer, delivered, sseq, cseq, ts, pending).

    Handles both ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``
    and the newer form with domain and account hash (and an optional trailing token).
    """
    tokens = reply.split(".")
    n = len(tokens)
    if n < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    base = 2 if n == 9 else 4
    try:
        return (
            tokens[base],
            tokens[base + 1],
            int(tokens[base + 2]),
            int(tokens[base + 3]),
            int(tokens[base + 4]),
            int(tokens[base + 5]),
            int(tokens[base + 6]),
        )
    except (ValueError, IndexError):
        return None


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
        "_held_since",
        "_settled",
        "_settler",
        "consumer",
        "data",
        "headers",
        "num_delivered",
        "pending",
        "reply",
        "seq",
        "stream",
        "timestamp",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        reply: str | None = None,
        settler: Settler | None = None,
    ) -> None:
        self.topic = topic
        self.data = data
        self.headers: dict[str, str] = headers or {}
        self.reply = reply
        self._settler = settler
        self._settled = False
        self.seq: int | None = None
        self.num_delivered = 1
        self.stream: str | None = None
        self.consumer: str | None = None
        self.pending = 0
        self.timestamp: dt.datetime
        self._held_since = 0.0
        meta = parse_ack_subject(reply) if settler is not None and reply else None
        if meta is not None:
            self.stream, self.consumer, self.num_delivered, self.seq, _, ts, self.pending = meta
            self.timestamp = dt.datetime.fromtimestamp(ts / 1e9, dt.UTC)
        else:
            self.timestamp = dt.datetime.now(dt.UTC)

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

    async def _settle(self, token: bytes, wait: bool = False) -> None:
        if self._settler is None:
            return
        if self._settled:
            raise AlreadySettledError(
                f"message {self.topic!r} seq {self.seq} was already settled; settle once"
            )
        self._settled = True
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
        seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)
        await self._settle(b'-NAK {"delay": %d}' % int(seconds * 1e9))

    async def term(self, reason: str | None = None) -> None:
        """Stop delivering this message (it is not retried, and not dead-lettered)."""
        await self._settle(TERM + (b" " + reason.encode() if reason else b""))

    async def in_progress(self) -> None:
        """Reset the ack timer: the handler is still working on it."""
        if self._settler is not None and not self._settled:
            await self._settler.send_ack(self, WPI)

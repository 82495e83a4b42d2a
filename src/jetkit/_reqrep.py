"""Request/reply: the responder side (the requester side is ``Stream.request``).

An error reply is an empty payload with the header ``Jetkit-Error: <Type>: <message>``.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._codec import encode_reply
from ._errors import DecodeError
from ._message import Message
from ._retry import describe_error
from ._subscription import CoreSubscription, is_handler_failure

ERROR_HEADER = "Jetkit-Error"


class ReplySink(Protocol):
    async def __call__(
        self, topic: str, data: bytes, headers: dict[str, str] | None, reply: str = ""
    ) -> None: ...


class Responder(CoreSubscription):
    """A core subscription whose handler's return value answers each request."""

    def __init__(self, nc: Any, topic: str, plan: Any, *, reply: ReplySink, **kwargs: Any) -> None:
        super().__init__(nc, topic, plan, **kwargs)
        self._reply = reply

    async def _process(self, msg: Message) -> None:
        if not msg.reply:
            self._log.debug("jetkit: message without reply subject on responder %r", msg.topic)
        try:
            args = self._plan.args(msg)
            result = await self._plan.fn(*args)
            payload, headers = encode_reply(result), None
        except DecodeError as exc:
            self.stats.failed += 1
            payload, headers = b"", {ERROR_HEADER: describe_error(exc)}
        except BaseException as exc:
            if not is_handler_failure(exc):
                raise
            self.stats.failed += 1
            self._log.warning("jetkit: responder for %r raised %s", msg.topic, describe_error(exc))
            payload, headers = b"", {ERROR_HEADER: " ".join(describe_error(exc).split())[:1024]}
        if msg.reply:
            try:
                await self._reply(msg.reply, payload, headers)
            except Exception as exc:
                self._log.warning("jetkit: could not send reply on %r: %s", msg.topic, exc)

"""Acked JetStream publishing without a task per publish.

One wildcard inbox subscription receives every PubAck; each publish is a
Future keyed by a short token, with a timer that fails it after ``timeout``.
``publish_many`` keeps up to ``window`` publishes in flight (a sliding window,
so client and server overlap) and reports every failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import Iterable
from typing import Any

import msgspec
import nats.errors

from ._errors import (
    ConnectionError,
    JetkitError,
    JetStreamError,
    NotFoundError,
    StreamClosedError,
    TimeoutError,
)


@dataclasses.dataclass(frozen=True, slots=True)
class PubAck:
    """The server stored the message: in ``stream`` at ``seq``.

    ``duplicate`` is True when a message with the same ``msg_id`` was already stored
    within the stream's duplicate window (2 minutes by default); it was not stored
    again and will not be delivered again.
    """

    stream: str
    seq: int
    duplicate: bool = False


class PublishBatchError(JetkitError):
    """Some publishes of a batch failed; ``results`` holds a PubAck or exception per item."""

    def __init__(self, results: list[PubAck | BaseException]) -> None:
        failed = [r for r in results if isinstance(r, BaseException)]
        super().__init__(f"{len(failed)} of {len(results)} publishes failed; first: {failed[0]!r}")
        self.results = results


class _AckResp(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(_AckResp).decode


class AckedPublisher:
    """Publishes to JetStream subjects and resolves each PubAck."""

    def __init__(self, nc: Any, timeout: float) -> None:
        self._nc = nc
        self.timeout = timeout
        self._prefix = ""
        self._pending: dict[str, tuple[asyncio.Future[PubAck], asyncio.TimerHandle, str]] = {}
        self._ids = itertools.count(1)
        self._sub: Any = None

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def close(self) -> None:
        for fut, timer, _ in self._pending.values():
            timer.cancel()
            if not fut.done():
                fut.set_exception(StreamClosedError("the Stream closed before the ack arrived"))
        self._pending.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    def _expire(self, token: str) -> None:
        entry = self._pending.pop(token, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(
                TimeoutError(
                    f"no ack from JetStream for a publish to {entry[2]!r} within "
                    f"{self.timeout}s; the message may or may not be stored: publish it again "
                    "with the same msg_id to be safe"
                )
            )

    async def _on_ack(self, msg: Any) -> None:
        entry = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if entry is None:
            return
        fut, timer, subject = entry
        timer.cancel()
        if fut.done():
            return
        if not msg.data:
            status = (msg.headers or {}).get("Status", "")
            if status == "503":
                fut.set_exception(
                    NotFoundError(f"no JetStream topic stores {subject!r} (it was deleted?)", 503)
                )
            else:
                fut.set_exception(JetStreamError(f"publish to {subject!r}: status {status}"))
            return
        try:
            resp = _decode_ack(msg.data)
        except msgspec.DecodeError as exc:
            fut.set_exception(JetStreamError(f"unreadable PubAck for {subject!r}: {exc}"))
            return
        if resp.error:
            code = int(resp.error.get("code", 0))
            err_code = int(resp.error.get("err_code", 0))
            desc = resp.error.get("description", "publish refused")
            fut.set_exception(
                JetStreamError(f"publish to {subject!r} refused: {desc}", code, err_code)
            )
            return
        fut.set_result(PubAck(resp.stream, resp.seq, resp.duplicate))

    async def send(
        self, subject: str, data: bytes, headers: dict[str, str] | None
    ) -> asyncio.Future[PubAck]:
        """Send one publish; the returned Future resolves to its PubAck."""
        loop = asyncio.get_running_loop()
        token = str(next(self._ids))
        fut: asyncio.Future[PubAck] = loop.create_future()
        timer = loop.call_later(self.timeout, self._expire, token)
        self._pending[token] = (fut, timer, subject)
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
        except nats.errors.ConnectionClosedError:
            self._drop(token)
            raise StreamClosedError("the connection is closed; open the Stream again") from None
        except (nats.errors.Error, OSError) as exc:
            self._drop(token)
            raise ConnectionError(f"publish to {subject!r} failed: {exc}") from exc
        return fut

    def _drop(self, token: str) -> None:
        entry = self._pending.pop(token, None)
        if entry is not None:
            entry[1].cancel()

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None) -> PubAck:
        return await (await self.send(subject, data, headers))

    async def publish_many(
        self,
        subject: str,
        payloads: Iterable[bytes],
        headers: dict[str, str] | None,
        window: int,
    ) -> list[PubAck]:
        """Publish with up to ``window`` acks outstanding; every item gets a result.

        If sending fails part-way (e.g. the connection closed), that error is the result
        of the failing payload and of every payload not sent.
        """
        futures: list[asyncio.Future[PubAck]] = []
        inflight: set[asyncio.Future[PubAck]] = set()
        failure: BaseException | None = None
        unsent = 0
        items = iter(payloads)
        for data in items:
            if inflight and len(inflight) >= window:
                _, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            try:
                fut = await self.send(subject, data, headers)
            except JetkitError as exc:
                failure = exc
                unsent = 1 + sum(1 for _ in items)
                break
            futures.append(fut)
            inflight.add(fut)
        if inflight:
            await asyncio.wait(inflight)
        results: list[PubAck | BaseException] = []
        for fut in futures:
            error = fut.exception()
            results.append(error if error is not None else fut.result())
        if failure is not None:
            results.extend([failure] * unsent)
        if any(isinstance(r, BaseException) for r in results):
            raise PublishBatchError(results)
        return [r for r in results if isinstance(r, PubAck)]

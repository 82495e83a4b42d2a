"""Topic and consumer administration over the JetStream API: declare, inspect, delete."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from typing import Any

from ._jsapi import JsApi, nanos, parse_time
from ._message import Message
from ._topics import Discard, Retention
from ._validate import INT64_MAX, number, optional_number

_MAX_AGE = 100 * 365 * 86_400.0  # a century, well inside JetStream's int64 nanoseconds


@dataclasses.dataclass(frozen=True)
class TopicInfo:
    """A JetStream topic (stream) and what it holds."""

    name: str  # the stream name
    subjects: list[str]
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    first_time: dt.datetime | None
    last_time: dt.datetime | None
    consumers: int
    retention: Retention
    max_msgs: int | None
    max_bytes: int | None
    max_age: float | None
    discard: Discard
    replicas: int


@dataclasses.dataclass(frozen=True)
class ConsumerInfo:
    """A consumer's position: ``pending`` is its lag (stored, not yet delivered)."""

    name: str
    stream: str
    durable: bool
    pending: int
    ack_pending: int
    redelivered: int
    waiting: int
    delivered_seq: int
    ack_floor: int
    ack_policy: str
    max_deliver: int | None  # as the subscriber asked (jetkit keeps one more on the server)
    filter_subject: str | None


def check_limits(max_msgs: object, max_bytes: object, max_age: object, replicas: object) -> None:
    """ConfigError unless the stream limits are whole/finite numbers in range."""
    number("replicas", replicas, minimum=1, maximum=5, integer=True)
    for label, value in (("max_msgs", max_msgs), ("max_bytes", max_bytes)):
        optional_number(
            label, value, minimum=1, maximum=INT64_MAX, integer=True, hint=" (or None: no limit)"
        )
    optional_number(
        "max_age", max_age, above=0, maximum=_MAX_AGE, hint=" (seconds or timedelta, or None)"
    )


def stream_config(
    name: str,
    subjects: list[str],
    *,
    max_msgs: int | None,
    max_bytes: int | None,
    max_age: float | dt.timedelta | None,
    discard: Discard,
    replicas: int,
    retention: Retention,
) -> dict[str, Any]:
    check_limits(max_msgs, max_bytes, max_age, replicas)
    return {
        "name": name,
        "subjects": subjects,
        "retention": retention.value,
        "storage": "file",
        "max_msgs": max_msgs if max_msgs is not None else -1,
        "max_bytes": max_bytes if max_bytes is not None else -1,
        "max_age": nanos(max_age) if max_age is not None else 0,
        "discard": discard.value,
        "num_replicas": replicas,
        "duplicate_window": min(nanos(120), nanos(max_age)) if max_age else nanos(120),
        "allow_direct": True,
    }


def topic_info(resp: dict[str, Any]) -> TopicInfo:
    cfg = resp.get("config", {})
    state = resp.get("state", {})
    return TopicInfo(
        name=cfg.get("name", ""),
        subjects=list(cfg.get("subjects") or []),
        messages=int(state.get("messages", 0)),
        bytes=int(state.get("bytes", 0)),
        first_seq=int(state.get("first_seq", 0)),
        last_seq=int(state.get("last_seq", 0)),
        first_time=parse_time(state.get("first_ts")),
        last_time=parse_time(state.get("last_ts")),
        consumers=int(state.get("consumer_count", 0)),
        retention=Retention(cfg.get("retention", "limits")),
        max_msgs=None if cfg.get("max_msgs", -1) < 0 else cfg["max_msgs"],
        max_bytes=None if cfg.get("max_bytes", -1) < 0 else cfg["max_bytes"],
        max_age=(cfg.get("max_age") or 0) / 1e9 or None,
        discard=Discard(cfg.get("discard", "old")),
        replicas=int(cfg.get("num_replicas", 1)),
    )


def consumer_info(resp: dict[str, Any]) -> ConsumerInfo:
    cfg = resp.get("config", {})
    server_max = int(cfg.get("max_deliver", -1))
    explicit = cfg.get("ack_policy") == "explicit"
    return ConsumerInfo(
        name=resp.get("name", ""),
        stream=resp.get("stream_name", ""),
        durable=bool(cfg.get("durable_name")),
        pending=int(resp.get("num_pending", 0)),
        ack_pending=int(resp.get("num_ack_pending", 0)),
        redelivered=int(resp.get("num_redelivered", 0)),
        waiting=int(resp.get("num_waiting", 0)),
        delivered_seq=int(resp.get("delivered", {}).get("stream_seq", 0)),
        ack_floor=int(resp.get("ack_floor", {}).get("stream_seq", 0)),
        ack_policy=str(cfg.get("ack_policy", "")),
        max_deliver=server_max - 1 if server_max > 0 and explicit else None,
        filter_subject=cfg.get("filter_subject") or None,
    )


async def list_streams(api: JsApi) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        resp = await api.call("STREAM.LIST", {"offset": offset})
        batch = resp.get("streams") or []
        out.extend(batch)
        offset += len(batch)
        if not batch or offset >= int(resp.get("total", 0)):
            return out


async def list_consumers(api: JsApi, stream: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        resp = await api.call(f"CONSUMER.LIST.{stream}", {"offset": offset})
        batch = resp.get("consumers") or []
        out.extend(batch)
        offset += len(batch)
        if not batch or offset >= int(resp.get("total", 0)):
            return out


def stored_message(raw: dict[str, Any]) -> Message:
    """A message as STREAM.MSG.GET returns it (base64 payload and headers)."""
    headers: dict[str, str] = {}
    if raw.get("hdrs"):
        lines = base64.b64decode(raw["hdrs"]).decode("utf-8", "replace").split("\r\n")[1:]
        for line in lines:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip()] = value.strip()
    msg = Message(raw.get("subject", ""), base64.b64decode(raw.get("data") or b""), headers)
    msg.seq = int(raw.get("seq", 0))
    stamp = parse_time(raw.get("time"))
    if stamp is not None:
        msg._ts_ns = int(stamp.timestamp() * 1e9)
    return msg

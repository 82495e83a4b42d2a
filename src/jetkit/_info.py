"""What the server reports about topics and consumers, as typed records."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from ._held import own_subjects
from ._time import parse_time
from ._topics import Discard, Retention


@dataclasses.dataclass(frozen=True)
class ReplicaInfo:
    """One node's copy of a replicated topic (``TopicInfo.replica_states``)."""

    name: str  # the node (server name)
    leader: bool
    current: bool  # has everything the leader has (the leader always)
    offline: bool  # the leader has not heard from it (a node that is down)
    lag: int  # operations behind the leader
    seen: float | None  # seconds since the leader last heard from it (None: leader)


@dataclasses.dataclass(frozen=True)
class TopicInfo:
    """A JetStream topic (stream) and what it holds."""

    name: str  # the stream name
    subjects: list[str]  # its topics (not the subject holding scheduled messages)
    messages: int  # scheduled messages still held count too
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
    # the size of the stream's directory in an embedded store (None: not on this machine)
    disk_bytes: int | None = None
    # the server node that leads the stream now and every node holding a copy (leader
    # first): on a cluster, where it moves; a single server leads its own streams
    leader: str | None = None
    replica_nodes: list[str] = dataclasses.field(default_factory=list)
    replica_states: list[ReplicaInfo] = dataclasses.field(default_factory=list)


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
    max_deliver: int | None  # as the subscriber asked (jetkit counts attempts itself)
    filter_subject: str | None
    # when the server last delivered a message to it or took an ack from it (None: never)
    last_active: dt.datetime | None = None
    # the ack floor counted in deliveries (ack_floor is a stream sequence, which for a
    # consumer of part of a stream also moves over other subjects' messages)
    ack_floor_consumer_seq: int = 0
    # the server node that leads this consumer (on a cluster, not always the stream's)
    leader: str | None = None


@dataclasses.dataclass(frozen=True)
class TopicOverview:
    """A stored topic (its stream) and that stream's consumers: one item of
    ``Stream.overview()``."""

    topic: TopicInfo
    consumers: list[ConsumerInfo]


def topic_info(resp: dict[str, Any], disk_bytes: int | None = None) -> TopicInfo:
    cfg = resp.get("config", {})
    state = resp.get("state", {})
    cluster = resp.get("cluster") or {}
    leader = cluster.get("leader") or None
    followers = [r.get("name", "") for r in cluster.get("replicas") or []]
    return TopicInfo(
        name=cfg.get("name", ""),
        subjects=own_subjects(list(cfg.get("subjects") or [])),
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
        disk_bytes=disk_bytes,
        leader=leader,
        replica_nodes=[leader, *followers] if leader else [],
        replica_states=_replicas(leader, cluster.get("replicas") or []),
    )


def _replicas(leader: str | None, followers: list[dict[str, Any]]) -> list[ReplicaInfo]:
    if not leader:
        return []
    states = [ReplicaInfo(leader, True, True, False, 0, None)]
    for r in followers:
        active = r.get("active")
        states.append(
            ReplicaInfo(
                name=str(r.get("name", "")),
                leader=False,
                current=bool(r.get("current", False)),
                offline=bool(r.get("offline", False)),
                lag=int(r.get("lag", 0) or 0),
                seen=int(active) / 1e9 if isinstance(active, int | float) else None,
            )
        )
    return states


def consumer_info(resp: dict[str, Any]) -> ConsumerInfo:
    cfg = resp.get("config", {})
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
        max_deliver=_max_deliver(cfg),
        filter_subject=cfg.get("filter_subject") or None,
        last_active=_last_active(resp),
        ack_floor_consumer_seq=int((resp.get("ack_floor") or {}).get("consumer_seq", 0)),
        leader=(resp.get("cluster") or {}).get("leader") or None,
    )


def _last_active(resp: dict[str, Any]) -> dt.datetime | None:
    """The later of the last delivery and the last ack (the server omits what never was)."""
    times = [
        t
        for t in (
            parse_time((resp.get("delivered") or {}).get("last_active")),
            parse_time((resp.get("ack_floor") or {}).get("last_active")),
        )
        if t is not None
    ]
    return max(times) if times else None


def _max_deliver(cfg: dict[str, Any]) -> int | None:
    """The attempts a jetkit subscriber asked for (kept in the consumer's metadata; the
    server itself redelivers without limit), or the server's limit for other consumers."""
    asked = (cfg.get("metadata") or {}).get("jetkit_max_deliver")
    if asked is not None:
        return int(asked) if asked.isdigit() else None
    server = int(cfg.get("max_deliver", -1))
    return server if server > 0 else None

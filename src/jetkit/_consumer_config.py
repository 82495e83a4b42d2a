"""The server side of a JetStream subscription: its consumer's config, created or
reconciled with what already exists (a durable keeps its position)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from ._damage import consumer_dir, remove_consumer_state
from ._errors import (
    DamagedConsumerError,
    IncompatibleConsumerError,
    JetkitError,
    JetStreamError,
    NotFoundError,
)
from ._held import own_filter, own_subjects
from ._jsapi import JsApi
from ._subscription import AckPolicy, StartAt
from ._time import nanos, rfc3339

EPHEMERAL_INACTIVE = 120.0
WORK_QUEUE_NEEDS_ALL = 10101
CONSUMER_STORE_FAILED = 10012  # "error creating store for consumer": damaged state
MAX_DELIVER_KEY = "jetkit_max_deliver"  # consumer metadata: the max_deliver asked for


def consumer_config(
    *,
    name: str,
    durable: bool,
    filter_subject: str | None,
    ack: AckPolicy,
    max_deliver: int | None,
    ack_wait: float,
    start_at: StartAt,
    start_time: dt.datetime | None,
    start_seq: int | None,
    max_ack_pending: int,
) -> dict[str, Any]:
    """The server-side consumer config for a jetkit subscription.

    The server never stops redelivering (its ``max_deliver`` is unlimited): jetkit
    counts the attempts itself and dead-letters a message past ``max_deliver`` without
    calling the handler, also when the last attempt was cut short by a crash, and a
    message whose dead letter could not be published is nak'ed and comes back instead
    of being dropped by the server. The limit asked for is kept in the consumer's
    metadata, for ``consumer_info``.
    """
    cfg: dict[str, Any] = {
        "ack_policy": "none" if ack is AckPolicy.NONE else "explicit",
        "deliver_policy": start_at.value,
        "replay_policy": "instant",
        "max_deliver": -1,
        "max_waiting": 512,
        "metadata": {MAX_DELIVER_KEY: "" if max_deliver is None else str(max_deliver)},
    }
    if ack is not AckPolicy.NONE:
        cfg["ack_wait"] = nanos(ack_wait)
        cfg["max_ack_pending"] = max_ack_pending
    if durable:
        cfg["durable_name"] = name
    else:
        cfg["name"] = name
        cfg["inactive_threshold"] = nanos(EPHEMERAL_INACTIVE)
    if filter_subject:
        cfg["filter_subject"] = filter_subject
    if start_time is not None:
        cfg["opt_start_time"] = rfc3339(start_time)
    if start_seq is not None:
        cfg["opt_start_seq"] = start_seq
    return cfg


_FIXED = {"ack_policy": "ack"}
_UPDATABLE = ("max_deliver", "ack_wait", "max_ack_pending", "filter_subject", "max_waiting")
_START_FIELDS = ("deliver_policy", "opt_start_time", "opt_start_seq")


async def ensure_consumer(
    api: JsApi,
    stream: str,
    config: dict[str, Any],
    *,
    recreate: bool,
    log: logging.Logger,
    store: Path | None = None,
) -> dict[str, Any]:
    """Create the consumer, or reconcile an existing one with ``config``.

    Start fields of an existing consumer are kept (it resumes); ack policy cannot
    change (IncompatibleConsumerError unless ``recreate``); the rest is updated.
    A durable whose state on disk the server cannot load raises DamagedConsumerError,
    unless ``recreate`` and jetkit can reach the store (``store``): then its damaged
    state is removed and it is created afresh.
    """
    name = config.get("durable_name") or config["name"]
    if not config.get("filter_subject") and not config.get("filter_subjects"):
        config = await own_filter(api, stream, config)
    existing: dict[str, Any] | None
    try:
        existing = await api.call(f"CONSUMER.INFO.{stream}.{name}")
    except NotFoundError:
        existing = None
    if existing is not None and recreate:
        await api.call(f"CONSUMER.DELETE.{stream}.{name}")
        existing = None
    if existing is None:
        created = await _create_new(api, stream, name, config, recreate, log, store)
        if config.get("durable_name") and log.isEnabledFor(logging.INFO):
            await _say_unseen(api, stream, name, created, log)
        return created
    current: dict[str, Any] = existing.get("config", {})
    if current.get("deliver_subject"):
        raise IncompatibleConsumerError(
            f"consumer {name!r} on stream {stream!r} is a push consumer; jetkit needs a pull "
            "consumer: pick another durable name or pass recreate=True",
            "deliver_subject",
        )
    for key, option in _FIXED.items():
        if current.get(key) != config.get(key):
            raise IncompatibleConsumerError(
                f"durable {name!r} exists with {key}={current.get(key)!r} but this subscribe "
                f"asks for {config.get(key)!r} (option {option}=); that cannot change in place. "
                "Pass recreate=True to start it over, or use another durable name",
                option,
            )
    if any(current.get(f) != config.get(f) for f in _START_FIELDS):
        log.info(
            "durable %r exists and resumes from its position; the requested start "
            "(%s) was not applied (pass recreate=True to start over)",
            name,
            config.get("deliver_policy"),
        )
    if current.get("filter_subjects") and "filter_subject" in config:
        current = {**current, "filter_subject": None}
    ours = config["metadata"][MAX_DELIVER_KEY]
    if (current.get("metadata") or {}).get(MAX_DELIVER_KEY) == ours and all(
        current.get(f) == config.get(f) for f in _UPDATABLE
    ):
        return existing
    merged = {**current, **{f: config[f] for f in _UPDATABLE if f in config}}
    # the server adds metadata of its own: keep it, set ours
    merged["metadata"] = {**(current.get("metadata") or {}), MAX_DELIVER_KEY: ours}
    if "filter_subject" not in config:
        merged.pop("filter_subject", None)
    merged.pop("filter_subjects", None)
    if config.get("filter_subjects"):
        merged["filter_subjects"] = config["filter_subjects"]
    for field in _START_FIELDS:
        if field in current:
            merged[field] = current[field]
    return await api.call(
        f"CONSUMER.CREATE.{stream}.{name}",
        {"stream_name": stream, "config": merged, "action": "update"},
    )


async def _create_new(
    api: JsApi,
    stream: str,
    name: str,
    config: dict[str, Any],
    recreate: bool,
    log: logging.Logger,
    store: Path | None,
) -> dict[str, Any]:
    """Create the consumer (none exists): see ``ensure_consumer``."""
    try:
        return await _create(api, stream, name, config, store)
    except DamagedConsumerError:
        if not recreate or store is None:
            raise
        if not remove_consumer_state(store, stream, name):
            raise
        log.warning(
            "durable %r of stream %r could not be loaded (damaged state on disk); "
            "recreate=True: removed it and created it again from its start position",
            name,
            stream,
        )
        return await _create(api, stream, name, config, store)
    except JetStreamError as exc:
        # a WORK_QUEUE topic only allows "deliver all": there, the default start
        # (NEW) means every message not yet taken, which is what ALL delivers
        if exc.err_code != WORK_QUEUE_NEEDS_ALL or config["deliver_policy"] != "new":
            raise
        return await _create(api, stream, name, {**config, "deliver_policy": "all"}, store)


async def _say_unseen(
    api: JsApi, stream: str, name: str, created: dict[str, Any], log: logging.Logger
) -> None:
    """A new durable at StartAt.NEW on a topic that already stores messages: say how
    many it will not see (INFO), and how to have them. Only when a durable is created,
    and only if the stream ever stored a message (the create's answer says so)."""
    cfg = created.get("config") or {}
    if cfg.get("deliver_policy") != "new":
        return
    if not int((created.get("delivered") or {}).get("stream_seq") or 0):
        return  # nothing was ever stored before it
    filters = list(cfg.get("filter_subjects") or []) or (
        [cfg["filter_subject"]] if cfg.get("filter_subject") else []
    )
    try:
        unseen, topics = await _stored_on(api, stream, filters)
    except JetkitError:
        return  # a remark, not worth failing the subscribe for
    if not unseen:
        return
    where = ", ".join(repr(t) for t in topics)
    reset = f" (or reset_consumer({where}, {name!r}, start_at=jk.StartAt.ALL))"
    log.info(
        "new durable %r starts at StartAt.NEW: the %d message%s already stored on %s "
        "%s not delivered to it, only those published from now on; to process them too, "
        "subscribe with start_at=jk.StartAt.ALL%s",
        name,
        unseen,
        "" if unseen == 1 else "s",
        where,
        "is" if unseen == 1 else "are",
        reset if len(topics) == 1 else "",
    )


async def _stored_on(api: JsApi, stream: str, filters: list[str]) -> tuple[int, list[str]]:
    """How many messages ``stream`` stores on ``filters`` (all its own subjects when
    there are none), and those subjects."""
    if not filters:
        info = await api.call(f"STREAM.INFO.{stream}")
        subjects = list((info.get("config") or {}).get("subjects") or [])
        return int((info.get("state") or {}).get("messages") or 0), own_subjects(subjects)
    count = 0
    for subject in filters:
        seen = 0
        while True:  # the server pages the per-subject counts
            info = await api.call(
                f"STREAM.INFO.{stream}", {"subjects_filter": subject, "offset": seen}
            )
            page = (info.get("state") or {}).get("subjects") or {}
            count += sum(int(n) for n in page.values())
            seen += len(page)
            if not page or seen >= int(info.get("total") or 0):
                break
    return count, filters


async def _create(
    api: JsApi, stream: str, name: str, config: dict[str, Any], store: Path | None
) -> dict[str, Any]:
    try:
        return await api.call(
            f"CONSUMER.CREATE.{stream}.{name}",
            {"stream_name": stream, "config": config, "action": "create"},
        )
    except JetStreamError as exc:
        if exc.err_code != CONSUMER_STORE_FAILED:
            raise
        if store is not None and not consumer_dir(store, stream, name).exists():
            # nothing on disk to be damaged: the server could not write it (disk full?)
            raise JetStreamError(
                f"the server could not create durable {name!r} of stream {stream!r} ({exc}); "
                "is the store's disk full?",
                exc.code,
                exc.err_code,
            ) from exc
        raise DamagedConsumerError(
            f"the server cannot create or load durable {name!r} of stream {stream!r} ({exc}): "
            "its state on disk is damaged (or the disk is full). Subscribe with "
            "recreate=True to start it over from start_at (its position is lost), or use "
            "another durable name",
            exc.code,
            exc.err_code,
        ) from exc

"""From ``Stream.subscribe``'s arguments to a running subscription, core or JetStream."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._attempts import AttemptLog
from ._batch import BatchSubscription
from ._codec import HandlerPlan, plan_batch_handler, plan_handler
from ._connection import Connection
from ._consumer import JetStreamSubscription
from ._consumer_config import consumer_config
from ._emit import Emitter, check_stored
from ._errors import ConfigError
from ._jsapi import JsApi
from ._keys import KeyedSubscription
from ._options import SubscribeSettings, subscribe_options
from ._publish import Publisher
from ._subscription import AckPolicy, Backpressure, CoreSubscription, StartAt, Subscription
from ._topics import TopicMode, TopicRegistry

if TYPE_CHECKING:
    from ._tracing import Tracing


class Subscriber:
    """Builds subscriptions for one Stream (its connection, topics and publisher)."""

    def __init__(
        self,
        conn: Connection,
        api: JsApi,
        topics: TopicRegistry,
        publisher: Publisher,
        store_dir: Path | None,
        log: logging.Logger,
        tracing: Tracing | None = None,
    ) -> None:
        self._conn = conn
        self._tracing = tracing
        self._attempts = AttemptLog(api, publisher.acked.publish, conn.send, log)
        self._api = api
        self._topics = topics
        self._publisher = publisher
        self._store_dir = store_dir
        self._log = log

    def check(
        self, topic: str, handler: Callable[..., Any], options: Mapping[str, object]
    ) -> tuple[HandlerPlan, SubscribeSettings]:
        """Every check of a subscription that needs no server: the topic, the handler, the
        options, and what the topic's mode allows. ``subscribe`` starts with it; the
        decorator (``Stream.subscriber``) calls it when it decorates."""
        self._topics.check(topic, wildcards=True)
        batched = options.get("batch") is not None
        plan = plan_batch_handler(handler) if batched else plan_handler(handler)
        opts = subscribe_options(topic, **options)
        if self._topics.mode_for(topic) is TopicMode.CORE:
            used = opts.jetstream_only()
            if used:
                raise ConfigError(
                    f"{', '.join(used)} need{'s' if len(used) == 1 else ''} a JetStream topic, "
                    f"but {topic!r} is a core topic; "
                    "declare_topic(topic, mode=jk.TopicMode.JETSTREAM) or open the Stream with "
                    "default_mode=jk.TopicMode.JETSTREAM"
                )
        elif opts.backpressure is not Backpressure.BLOCK:
            raise ConfigError(
                f"{opts.backpressure} is not allowed on the JetStream topic {topic!r}: "
                "stored messages are never dropped; buffer_size bounds how many are pulled. "
                "Use Backpressure.BLOCK (the default)"
            )
        elif opts.emit is not None:
            check_stored(opts.emit, self._topics)
        return plan, opts

    async def subscribe(
        self, topic: str, handler: Callable[..., Any], options: Mapping[str, object]
    ) -> Subscription:
        plan, opts = self.check(topic, handler, options)
        if self._topics.mode_for(topic) is TopicMode.CORE:
            core = CoreSubscription(
                self._conn,
                topic,
                plan,
                queue_group=opts.queue_group,
                concurrency=opts.concurrency,
                buffer_size=opts.buffer_size,
                backpressure=opts.backpressure,
                logger=self._log,
            )
            if self._tracing is not None:
                self._tracing.watch(core)
            await core._start()
            return core
        stream, config = await self._server_side(topic, opts)
        kind: type[JetStreamSubscription] = JetStreamSubscription
        if opts.key is not None:
            kind = KeyedSubscription
        elif opts.batch is not None:
            kind = BatchSubscription
        emitter = None
        if opts.emit is not None:
            emitter = Emitter(self._publisher, self._topics, opts.emit)
            # the input is settled by jetkit after its outputs (see _emit)
            opts = dataclasses.replace(opts, ack=AckPolicy.MANUAL)
        sub = kind(
            self._conn,
            self._api,
            topic,
            plan,
            opts,
            stream=stream,
            config=config,
            shared=opts.durable is None and opts.queue_group is not None,
            dead_letter=self._publisher.dead_letter,
            attempts=self._attempts,
            emitter=emitter,
            store=self._store_dir,
            logger=self._log,
        )
        if self._tracing is not None:
            self._tracing.watch(sub)
        await sub._start()
        return sub

    async def _server_side(self, topic: str, opts: SubscribeSettings) -> tuple[str, dict[str, Any]]:
        """The stream and the consumer config a JetStream subscription needs."""
        # subjects may be stale (another process switched schedules on): a consumer of the
        # whole stream is filtered with fresh ones in ensure_consumer (_held.own_filter)
        name, subjects = await self._topics.ensure_stream(topic)
        # what jetkit creates for a topic is replicated like it (on a cluster)
        replicas = await self._topics.replicas_of(name) if self._conn.clustered else 1
        if opts.dlq is not None:
            await self._topics.ensure_stream(opts.dlq, replicas=replicas)
        if opts.emit is not None:
            await self._topics.ensure_stream(opts.emit, replicas=replicas)
        durable, group = opts.durable, opts.queue_group
        consumer = durable or group or f"jk_{self._conn.unique_name()}"
        # the server needs a filter for last-per-subject, even on the whole stream
        whole = subjects == [topic] and opts.start_at is not StartAt.LAST_PER_SUBJECT
        config = consumer_config(
            name=consumer,
            durable=durable is not None,
            filter_subject=None if whole else topic,
            ack=opts.ack,
            max_deliver=opts.max_deliver,
            ack_wait=opts.ack_wait,
            start_at=opts.start_at,
            start_time=opts.start_time,
            start_seq=opts.start_seq,
            max_ack_pending=max(1000, 4 * (opts.buffer_size + opts.concurrency)),
        )
        return name, config

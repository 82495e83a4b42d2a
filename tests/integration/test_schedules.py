"""Scheduled delivery (deliver_at / deliver_after, cancel_scheduled) and per-message TTL,
against the real embedded server. Order, not time, proves that a message was held: a
sentinel published right after a scheduled message arrives before it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path

import pytest

import jetkit as jk
from conftest import wait_until, wait_until_async
from jetkit import _schedule


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def collect(s: jk.Stream, topic: str, **opts: object) -> list[bytes]:
    got: list[bytes] = []
    await s.subscribe(topic, lambda m: got.append(m.data), **opts)  # type: ignore[arg-type]
    return got


async def stream_subjects(s: jk.Stream, topic: str) -> list[str]:
    """The subjects of the topic's stream as the server has them."""
    name = (await s.topic_info(topic)).name
    info = await s._rt.api.call(f"STREAM.INFO.{name}")
    return list(info["config"]["subjects"])


# -- scheduled delivery --------------------------------------------------------------------


async def test_deliver_after_holds_the_message_until_later(js: jk.Stream, topic: str) -> None:
    got = await collect(js, topic)
    scheduled = await js.publish(topic, b"later", deliver_after=1)
    await js.publish(topic, b"sentinel")
    assert isinstance(scheduled, jk.ScheduledMessage)
    assert scheduled.topic == topic and scheduled.deliver_at.tzinfo is not None
    await wait_until(lambda: len(got) == 2)
    assert got == [b"sentinel", b"later"]
    # delivered: the held copy is gone, only the two messages remain on the topic
    assert (await js.topic_info(topic)).messages == 2
    assert await js.cancel_scheduled(scheduled) is False


async def test_deliver_at_and_publish_json(js: jk.Stream, topic: str) -> None:
    got = await collect(js, topic)
    when = utc_now() + dt.timedelta(seconds=1)
    scheduled = await js.publish_json(topic, {"order": 42}, deliver_at=when)
    await js.publish(topic, b"sentinel")
    assert scheduled.deliver_at == when.astimezone(dt.UTC)
    await wait_until(lambda: len(got) == 2)
    assert got == [b"sentinel", b'{"order":42}']


async def test_a_time_in_another_zone_is_the_same_instant(js: jk.Stream, topic: str) -> None:
    zone = dt.timezone(dt.timedelta(hours=-5))
    when = (utc_now() + dt.timedelta(seconds=1)).astimezone(zone)
    scheduled = await js.publish(topic, b"x", deliver_at=when)
    assert scheduled.deliver_at == when and scheduled.deliver_at.tzinfo is dt.UTC


async def test_cancel_returns_true_and_the_message_never_arrives(js: jk.Stream, topic: str) -> None:
    got = await collect(js, topic)
    cancelled = await js.publish(topic, b"cancelled", deliver_after=1)
    await js.publish(topic, b"after", deliver_after=1.5)  # due after the cancelled one
    assert await js.cancel_scheduled(cancelled) is True
    assert await js.cancel_scheduled(cancelled) is False  # already cancelled
    await wait_until(lambda: got == [b"after"])
    await js.publish(topic, b"sentinel")
    await wait_until(lambda: len(got) == 2)
    assert got == [b"after", b"sentinel"]


async def test_cancel_by_msg_id(js: jk.Stream, topic: str) -> None:
    got = await collect(js, topic)
    await js.publish(topic, b"reminder", deliver_after=1, msg_id="order-7")
    again = await js.publish(topic, b"reminder", deliver_after=1, msg_id="order-7")
    assert again.duplicate  # a retry within the duplicate window is not held twice
    await js.publish(topic, b"other", deliver_after=1.5, msg_id="order-8")
    assert await js.cancel_scheduled(topic, msg_id="order-7") is True
    assert await js.cancel_scheduled(topic, msg_id="order-7") is False
    assert await js.cancel_scheduled(topic, msg_id="never-scheduled") is False
    await wait_until(lambda: got == [b"other"])
    assert await js.cancel_scheduled(topic, msg_id="order-8") is False  # delivered


async def test_a_subscriber_from_before_never_sees_the_held_message(
    js: jk.Stream, topic: str
) -> None:
    """A durable of the whole stream, made before schedules were switched on, gets a
    filter: the held message (in the same stream) is not delivered to it early."""
    got = await collect(js, topic, durable="before")
    await js.publish(topic, b"first")
    await wait_until(lambda: got == [b"first"])
    await js.publish(topic, b"held", deliver_after=1)
    await js.publish(topic, b"sentinel")
    await wait_until(lambda: len(got) == 3)
    assert got == [b"first", b"sentinel", b"held"]
    info = await js.consumer_info(topic, "before")
    assert info.filter_subject == topic


async def test_a_topic_declared_with_limits_keeps_its_schedules(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(topic, jk.TopicMode.JETSTREAM, max_msgs=100)
    got = await collect(js, topic)
    await js.publish(topic, b"held", deliver_after=1)
    await js.declare_topic(topic, jk.TopicMode.JETSTREAM, max_msgs=200)  # an update
    await js.publish(topic, b"sentinel")
    await wait_until(lambda: len(got) == 2)
    assert got == [b"sentinel", b"held"]


async def test_concurrent_first_scheduled_publishes(js: jk.Stream, topic: str) -> None:
    got = await collect(js, topic)
    held = await asyncio.gather(
        *(js.publish(topic, b"%d" % i, deliver_after=0.5) for i in range(20))
    )
    assert len({h.id for h in held}) == 20
    await wait_until(lambda: len(got) == 20)
    assert sorted(got) == sorted(b"%d" % i for i in range(20))


async def test_within_the_tolerance_a_past_time_means_now(js: jk.Stream, topic: str) -> None:
    got = await collect(js, topic)
    await js.publish(topic, b"now", deliver_at=utc_now() - dt.timedelta(seconds=0.5))
    await wait_until(lambda: got == [b"now"])


@pytest.mark.slow
async def test_a_scheduled_message_survives_a_restart(tmp_path: Path) -> None:
    async with await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        held = await s.publish("orders.followup", b"held", deliver_after=3)
        await s.publish("orders.followup", b"before")
        last = await s.last_message("orders.followup")
        assert last is not None and last.data == b"before"  # still held when stopped
    # the server is stopped; the message falls due while it is down or after it restarts
    async with await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        got: list[bytes] = []
        await s.subscribe("orders.followup", lambda m: got.append(m.data), start_at=jk.StartAt.ALL)
        await wait_until(lambda: len(got) == 2, timeout=20)
        assert got == [b"before", b"held"]
        assert await s.cancel_scheduled(held) is False


# -- TTL -----------------------------------------------------------------------------------


async def test_a_message_with_ttl_expires_and_one_without_stays(js: jk.Stream, topic: str) -> None:
    ack = await js.publish(topic, b"short-lived", ttl=1)
    assert isinstance(ack, jk.PubAck)
    await js.publish(topic, b"kept")
    assert (await js.topic_info(topic)).messages == 2

    async def expired() -> bool:
        return (await js.topic_info(topic)).messages == 1

    await wait_until_async(expired, timeout=15)
    last = await js.last_message(topic)
    assert last is not None and last.data == b"kept"


async def test_ttl_as_timedelta_and_publish_many(js: jk.Stream, topic: str) -> None:
    await js.publish(topic, b"kept")
    acks = await js.publish_many(topic, [b"a", b"b"], ttl=dt.timedelta(seconds=1))
    assert len(acks) == 2

    async def expired() -> bool:
        return (await js.topic_info(topic)).messages == 1

    await wait_until_async(expired, timeout=15)


async def test_ttl_of_a_scheduled_message_counts_from_its_delivery(
    js: jk.Stream, topic: str
) -> None:
    got: list[jk.Message] = []
    await js.subscribe(topic, got.append)
    await js.publish(topic, b"held", deliver_after=0.5, ttl=60)
    await wait_until(lambda: len(got) == 1)
    assert got[0].headers.get("Nats-TTL") == "60s"


# -- refused because of the topic's configuration or state -------------------------------


async def test_an_interest_topic_refuses_schedules(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(topic, jk.TopicMode.JETSTREAM, retention=jk.Retention.INTEREST)
    with pytest.raises(jk.ConfigError, match="INTEREST"):
        await js.publish(topic, b"x", deliver_after=1)
    # refused before the stream was changed (switching schedules on cannot be undone)
    assert await stream_subjects(js, topic) == [topic]


async def test_a_discard_new_topic_refuses_schedules_naming_the_cause(
    js: jk.Stream, topic: str
) -> None:
    await js.declare_topic(topic, jk.TopicMode.JETSTREAM, max_msgs=100, discard=jk.Discard.NEW)
    with pytest.raises(jk.ConfigError, match=r"Discard.NEW") as refused:
        await js.publish(topic, b"x", deliver_after=1)
    assert "discard=jk.Discard.OLD" in str(refused.value)
    assert "mirror" not in str(refused.value)
    assert await stream_subjects(js, topic) == [topic]  # refused before the stream changed
    await js.publish(topic, b"kept", ttl=60)  # a TTL is fine there
    await js.declare_topic(topic, jk.TopicMode.JETSTREAM, max_msgs=100)  # the fix it names
    held = await js.publish(topic, b"x", deliver_after=30)
    assert await js.cancel_scheduled(held) is True


async def test_a_schedule_beyond_max_age_is_refused(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(topic, jk.TopicMode.JETSTREAM, max_age=60)
    with pytest.raises(jk.ConfigError, match="max_age"):
        await js.publish(topic, b"x", deliver_after=120)
    assert await stream_subjects(js, topic) == [topic]  # the stream is unchanged
    held = await js.publish(topic, b"x", deliver_after=30)
    assert await js.cancel_scheduled(held) is True


async def test_cancel_scheduled_bad_arguments(js: jk.Stream, topic: str) -> None:
    held = await js.publish(topic, b"x", deliver_after=30)
    with pytest.raises(jk.ConfigError, match="not both"):
        await js.cancel_scheduled(held, msg_id="x")
    assert await js.cancel_scheduled(held) is True
    # a topic that holds nothing scheduled, or does not exist
    await js.publish(topic + ".plain", b"x")
    assert await js.cancel_scheduled(topic + ".plain", msg_id="x") is False
    assert await js.cancel_scheduled(topic + ".none", msg_id="x") is False


# -- other Streams, interrupted switches, forged or copied values ------------------------


async def test_a_topic_deleted_behind_our_back_is_made_again_with_the_features(
    js: jk.Stream, core: jk.Stream, topic: str
) -> None:
    await js.publish(topic, b"x", ttl=5)
    await js.publish(topic, b"x", deliver_after=30)
    await core.delete_topic(topic)  # another Stream: js still thinks it is set up
    assert isinstance(await js.publish(topic, b"y", ttl=5), jk.PubAck)
    await core.delete_topic(topic)
    held = await js.publish(topic, b"y", deliver_after=30)
    assert await js.cancel_scheduled(held) is True


async def test_a_stream_that_cached_the_subjects_before_still_filters(
    js: jk.Stream, core: jk.Stream, topic: str
) -> None:
    """js knew the topic's stream before another Stream switched schedules on for it; a
    subscription js makes afterwards must still not receive the held message."""
    await js.publish(topic, b"first")  # js caches the stream with its one subject
    await core.declare_topic(topic, jk.TopicMode.JETSTREAM)
    assert await core.cancel_scheduled(await core.publish(topic, b"x", deliver_after=30))
    got = await collect(js, topic)  # made after the switch: core could not filter it
    await core.publish(topic, b"held", deliver_after=1)
    await js.publish(topic, b"sentinel")
    await wait_until(lambda: len(got) == 2)
    assert got == [b"sentinel", b"held"]


async def test_a_consumer_made_again_after_the_switch_is_filtered(
    js: jk.Stream, core: jk.Stream, topic: str
) -> None:
    """A subscription made before schedules were switched on keeps its old (unfiltered)
    config; when its consumer is deleted behind its back it makes it again, and that one
    must not receive a held message early either."""
    got = await collect(js, topic, durable="again")
    await js.publish(topic, b"first")
    await wait_until(lambda: got == [b"first"])
    assert await js.cancel_scheduled(await js.publish(topic, b"x", deliver_after=30))
    await core.declare_topic(topic, jk.TopicMode.JETSTREAM)
    await core.delete_consumer(topic, "again")

    async def made_again() -> bool:
        try:
            await core.consumer_info(topic, "again")
        except jk.NotFoundError:
            return False
        return True

    await wait_until_async(made_again, timeout=30)
    held = await core.publish(topic, b"held", deliver_after=30)
    await core.publish(topic, b"sentinel")
    await wait_until(lambda: b"sentinel" in got)
    assert got == [b"first", b"sentinel"]
    assert (await core.consumer_info(topic, "again")).filter_subject == topic
    assert await core.cancel_scheduled(held) is True


async def test_purge_topic_keeps_held_messages(js: jk.Stream, core: jk.Stream, topic: str) -> None:
    """purge_topic removes the topic's messages, not those held for later, also in a
    Stream that cached the topic's stream before another one switched schedules on."""
    await js.publish(topic, b"first")  # js caches the stream with its one subject
    await core.declare_topic(topic, jk.TopicMode.JETSTREAM)
    held = await core.publish(topic, b"held", deliver_after=30, msg_id="purge-me-not")
    assert await js.purge_topic(topic) == 1
    await js.publish(topic, b"second")
    assert await core.purge_topic(topic, up_to_seq=10**6) == 1
    assert await core.cancel_scheduled(held) is True


async def test_a_refused_first_schedule_does_not_fail_one_that_fits(
    js: jk.Stream, topic: str
) -> None:
    """Concurrent first scheduled publishes share the stream's update; the refusal of one
    (its delay is beyond max_age) is its own, not the others'."""
    await js.declare_topic(topic, jk.TopicMode.JETSTREAM, max_age=60)
    too_late, fits = await asyncio.gather(
        js.publish(topic, b"x", deliver_after=120),
        js.publish(topic, b"y", deliver_after=30),
        return_exceptions=True,
    )
    assert isinstance(too_late, jk.ConfigError)
    assert isinstance(fits, jk.ScheduledMessage)
    assert await js.cancel_scheduled(fits) is True


async def test_topic_info_names_the_topic_not_the_held_subject(js: jk.Stream, topic: str) -> None:
    """topics()/topic_info() (and so jetkit topics, top, metrics labels and the console)
    show a topic's subjects as before schedules were switched on; held messages count."""
    held = await js.publish(topic, b"held", deliver_after=30)
    assert len(await stream_subjects(js, topic)) == 2
    info = await js.topic_info(topic)
    assert info.subjects == [topic] and info.messages == 1
    assert [t.subjects for t in await js.topics() if t.name == info.name] == [[topic]]
    assert await js.cancel_scheduled(held) is True


async def test_a_max_age_shortened_by_another_stream_is_seen(
    js: jk.Stream, core: jk.Stream, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """js switched schedules on and knows the topic's limits; another Stream declares the
    topic with a shorter max_age: a schedule beyond it is refused, not accepted and then
    removed by the server before it is due."""
    monkeypatch.setattr(_schedule, "FRESH_FOR", 0.0)  # what js read is old at once
    assert await js.cancel_scheduled(await js.publish(topic, b"x", deliver_after=300))
    await core.declare_topic(topic, jk.TopicMode.JETSTREAM, max_age=60)
    with pytest.raises(jk.ConfigError, match="max_age=60s"):
        await js.publish(topic, b"x", deliver_after=120)
    assert await js.cancel_scheduled(await js.publish(topic, b"x", deliver_after=30))


async def test_consumers_left_unfiltered_by_an_interrupted_switch_are_filtered(
    js: jk.Stream, core: jk.Stream, topic: str
) -> None:
    """A process that switched schedules on may stop before it filtered the stream's
    consumers (as done here by hand); the next one to schedule on it filters them."""
    got = await collect(js, topic, durable="early")
    await js.publish(topic, b"first")
    await wait_until(lambda: got == [b"first"])
    name = (await js.topic_info(topic)).name
    cfg = (await js._rt.api.call(f"STREAM.INFO.{name}"))["config"]
    cfg.update(allow_msg_schedules=True, subjects=[topic, f"$JK.SCHED.{name}.>"])
    await js._rt.api.call(f"STREAM.UPDATE.{name}", cfg)  # ... and stopped there
    await core.declare_topic(topic, jk.TopicMode.JETSTREAM)
    held = await core.publish(topic, b"held", deliver_after=30)
    await core.publish(topic, b"sentinel")
    await wait_until(lambda: b"sentinel" in got)
    assert got == [b"first", b"sentinel"]
    assert await core.cancel_scheduled(held) is True


async def test_a_forged_scheduled_message_cannot_cancel_others(js: jk.Stream, topic: str) -> None:
    """ScheduledMessage is a plain dataclass (it may be rebuilt from stored fields): an id
    or stream that is not one token is refused, not used as a purge filter."""
    held = await js.publish(topic, b"x", deliver_after=30)
    for change in ({"id": ">"}, {"id": "*"}, {"id": "a.b"}, {"stream": f"{held.stream}.x"}):
        forged = dataclasses.replace(held, **change)  # type: ignore[arg-type]
        with pytest.raises(jk.ConfigError, match="not one publish"):
            await js.cancel_scheduled(forged)
    assert await js.cancel_scheduled(held) is True


async def test_a_msg_id_given_as_header_cancels_too(js: jk.Stream, topic: str) -> None:
    """headers={"Nats-Msg-Id": ...} is the msg_id the server deduplicates by; cancelling by
    it must find the held message (not answer False while it is still held)."""
    await js.publish(topic, b"x", deliver_after=30, headers={"Nats-Msg-Id": "hdr-1"})
    again = await js.publish(topic, b"x", deliver_after=30, msg_id="hdr-1")
    assert again.duplicate
    assert await js.cancel_scheduled(topic, msg_id="hdr-1") is True


async def test_a_copied_ttl_header_names_the_fix(js: jk.Stream, topic: str) -> None:
    """Forwarding a received message's headers copies its Nats-TTL; a topic that does not
    allow TTLs refuses it, and the error says what to do."""
    await js.publish(topic, b"x", ttl=60)
    got = await js.last_message(topic)
    assert got is not None and got.headers["Nats-TTL"] == "60s"
    with pytest.raises(jk.JetStreamError, match=r"TTL is disabled.*Nats-TTL.*pass ttl="):
        await js.publish(topic + ".copy", got.data, headers=dict(got.headers))

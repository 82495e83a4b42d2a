"""A damaged store is reported on open, and what can be recovered is recovered.

Each test fills a store, stops its server cleanly, damages one file the way a crash
or a bad disk would, and opens the store again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import jetkit as jk
from conftest import wait_until
from jetkit import _damage

pytestmark = pytest.mark.faults

TOPIC = "orders.events"
STREAM = "orders_events"


def open_js(store: Path) -> object:
    return jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM)


async def fill(store: Path, count: int, *, acked: int = 0) -> None:
    """Publish ``count`` messages; durable 'proc' acknowledges (confirmed) the first ``acked``."""
    async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
        for i in range(count):
            await s.publish(TOPIC, f"m{i}".encode())
        if not acked:
            return
        done: list[int] = []

        async def handler(msg: jk.Message) -> None:
            if len(done) < acked:
                await msg.ack(wait=True)
                done.append(msg.seq or 0)
            else:
                await msg.nak()

        # a short ack_wait: a restart forgets the naks, the rest comes back after it
        sub = await s.subscribe(
            TOPIC,
            handler,
            durable="proc",
            ack=jk.AckPolicy.MANUAL,
            start_at=jk.StartAt.ALL,
            ack_wait=0.5,
        )
        await wait_until(lambda: len(done) == acked)
        await sub.stop()


def consumer_state(store: Path) -> Path:
    return _damage.consumer_dir(store, STREAM, "proc") / "o.dat"


def warnings_about(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and all(w in r.getMessage() for w in words)
    ]


async def collect(s: jk.Stream, count: int, **options: object) -> list[jk.Message]:
    got: list[jk.Message] = []

    async def handler(msg: jk.Message) -> None:
        got.append(msg)

    sub = await s.subscribe(TOPIC, handler, **options)  # type: ignore[arg-type]
    await wait_until(lambda: len(got) >= count)
    await sub.stop()
    return got


async def test_zeroed_consumer_state_is_reported_and_recreate_recovers_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await fill(tmp_path, 10, acked=5)
    state = consumer_state(tmp_path)
    state.write_bytes(b"\0" * state.stat().st_size)
    caplog.set_level(logging.WARNING, logger="jetkit")
    async with open_js(tmp_path) as s:  # type: ignore[attr-defined]
        assert warnings_about(caplog, "'proc'", "damaged", "recreate=True")
        with pytest.raises(jk.DamagedConsumerError, match="recreate=True"):
            await s.subscribe(TOPIC, lambda m: None, durable="proc", ack=jk.AckPolicy.MANUAL)
        got = await collect(
            s,
            10,
            durable="proc",
            ack=jk.AckPolicy.MANUAL,
            start_at=jk.StartAt.ALL,
            recreate=True,
        )
        assert [m.seq for m in got[:10]] == list(range(1, 11))
        assert (await s.consumer_info(TOPIC, "proc")).ack_floor >= 10
    async with open_js(tmp_path) as s:  # type: ignore[attr-defined]
        assert (await s.consumer_info(TOPIC, "proc")).ack_floor == 10  # it persists again


async def test_damaged_consumer_can_be_deleted(tmp_path: Path) -> None:
    await fill(tmp_path, 3, acked=1)
    consumer_state(tmp_path).write_bytes(b"garbage!")
    async with open_js(tmp_path) as s:  # type: ignore[attr-defined]
        await s.delete_consumer(TOPIC, "proc")
        assert not consumer_state(tmp_path).parent.exists()
        with pytest.raises(jk.NotFoundError):
            await s.delete_consumer(TOPIC, "proc")
        await s.subscribe(TOPIC, lambda m: None, durable="proc")  # a fresh one


async def test_empty_consumer_state_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await fill(tmp_path, 6, acked=3)
    consumer_state(tmp_path).write_bytes(b"")
    caplog.set_level(logging.WARNING, logger="jetkit")
    async with open_js(tmp_path):
        assert warnings_about(caplog, "'proc'", "o.dat is empty", "delivered again")


async def test_truncated_message_block_is_reported_with_what_was_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await fill(tmp_path, 100)
    block = _damage.streams_dir(tmp_path) / STREAM / "msgs" / "1.blk"
    size = block.stat().st_size
    with block.open("r+b") as fh:
        fh.truncate(size // 2 + 7)  # mid-record
    caplog.set_level(logging.WARNING, logger="jetkit")
    async with open_js(tmp_path) as s:  # type: ignore[attr-defined]
        found = warnings_about(caplog, repr(STREAM), "damaged files", "lost or missing")
        assert found, [r.getMessage() for r in caplog.records]
        info = await s.topic_info(TOPIC)
        assert 0 < info.messages < 100
        assert f"{100 - info.messages} lost or missing" in found[0]


async def test_stream_with_damaged_metadata_is_reported_and_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await fill(tmp_path, 10, acked=4)
    (_damage.streams_dir(tmp_path) / STREAM / "meta.inf").write_bytes(b"garbage\n")
    caplog.set_level(logging.WARNING, logger="jetkit")
    async with open_js(tmp_path) as s:  # type: ignore[attr-defined]
        assert warnings_about(caplog, repr(STREAM), "was not loaded", "still on disk")
        with pytest.raises(jk.NotFoundError):
            await s.topic_info(TOPIC)
        await s.declare_topic(TOPIC, mode=jk.TopicMode.JETSTREAM, max_msgs=1000)
        assert warnings_about(caplog, repr(STREAM), "restored", "10 messages")
        assert (await s.topic_info(TOPIC)).messages == 10
    async with open_js(tmp_path) as s:  # type: ignore[attr-defined]
        info = await s.topic_info(TOPIC)  # the metadata was rewritten: it stays
        assert (info.messages, info.max_msgs) == (10, 1000)
        got = await collect(s, 6, durable="proc", ack=jk.AckPolicy.MANUAL, ack_wait=0.5)
        assert got[0].seq == 5  # the durable kept its position


def test_scan_reads_only_metadata_and_never_raises(tmp_path: Path) -> None:
    assert not _damage.scan(tmp_path / "nothing-here")
    consumer = _damage.consumer_dir(tmp_path, "s", "c")
    consumer.mkdir(parents=True)
    (consumer / "meta.inf").write_text("{}")
    (consumer / "meta.sum").write_text("x")
    (consumer / "o.dat").write_bytes(bytes([0x16, 2, 0, 0]))
    (consumer.parent.parent / "meta.inf").write_text("{}")
    (consumer.parent.parent / "meta.sum").write_text("x")
    assert not _damage.scan(tmp_path)
    (consumer / "o.dat").write_bytes(b"\x00\x00")
    assert "damaged" in _damage.scan(tmp_path).consumers[("s", "c")]

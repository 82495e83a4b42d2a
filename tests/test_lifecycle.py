"""A Stream's life at its edges (issue 21): a close cut short, a decorator whose
registration fails."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import jetkit as jk
import jetkit.sync as jsync
from conftest import server_of, stop_process, wait_until
from jetkit._files import INFO_FILE
from jetkit._store import process_alive

CHILD_BOUND = 20.0  # seconds a forked child may take before it counts as hung


# -- 5. a close cut short ------------------------------------------------------------------


def stop_leftover(s: jk.Stream) -> None:
    """A server that a broken close left running is killed here (the test's own cleanup)."""
    server = s._store.server if s._store is not None else None
    if server is not None and server._proc is not None:
        stop_process(server._proc)


async def test_a_cancelled_close_still_stops_the_server_and_a_reopen_owns_the_store(
    tmp_path: Path, topic: str
) -> None:
    s = await jk.Stream.open(
        store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM, drain_timeout=30
    )
    held: list[jk.Message] = []
    release = asyncio.Event()

    async def slow(data: bytes, msg: jk.Message) -> None:
        held.append(msg)
        await release.wait()

    try:
        options = {"durable": "slow", "ack": jk.AckPolicy.MANUAL, "ack_wait": 1.0}
        await s.subscribe(topic, slow, **options)
        await s.publish(topic, b"in flight")
        await wait_until(lambda: bool(held))
        server_pid = server_of(s).pid
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(s.close(), 0.2)  # the handler would hold it for 30 s
        # the cancellation cut the drain short, not the teardown
        assert s.closed
        assert server_pid is not None and not process_alive(server_pid)
        assert not (tmp_path / INFO_FILE).exists()
        assert held[0].settled  # handed back (nak) by the stop that replaced the drain
        await asyncio.wait_for(s.close(), 10)  # a second close returns
        got: asyncio.Queue[jk.Message] = asyncio.Queue()

        async def collect(msg: jk.Message) -> None:
            await got.put(msg)

        async with jk.Stream.open(
            store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM, server_ready_timeout=5
        ) as again:
            assert again.embedded  # the owner, not a client of an orphaned server
            await again.subscribe(topic, collect, **options)
            msg = await asyncio.wait_for(got.get(), 10)  # not lost
            assert msg.data == b"in flight" and msg.num_delivered >= 2
    finally:
        release.set()
        await s.close()
        stop_leftover(s)


def main_thread_waits_in_close() -> bool:
    """Whether the main thread is blocked on a lock under jetkit.sync's close()."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    if frame is None or frame.f_code.co_name != "wait":
        return False
    while frame is not None:
        if frame.f_code.co_name == "close" and frame.f_code.co_filename == jsync.__file__:
            return True
        frame = frame.f_back
    return False


def test_ctrl_c_during_a_sync_close_stops_the_server_and_a_reopen_owns_the_store(
    tmp_path: Path, topic: str
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(data: bytes) -> None:
        started.set()
        release.wait(30)

    def press_ctrl_c() -> None:
        # a sentinel, not a sleep: the main thread is inside close(), waiting for the drain
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if main_thread_waits_in_close():
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                return
            release.wait(0.001)  # a poll with a bound, like conftest's wait_until

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    s = jsync.Stream.open(store_dir=tmp_path, drain_timeout=30)
    try:
        server_pid = s.health()["server"]["pid"]
        s.subscribe(topic, slow)
        s.publish(topic, b"in flight")
        assert started.wait(10)
        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        with pytest.raises(KeyboardInterrupt):
            s.close()
        presser.join()
        assert s.closed and not process_alive(server_pid)
        # the store's lock went with the server: this process owns the store again
        again = jsync.Stream.open(store_dir=tmp_path, server_ready_timeout=5)
        try:
            assert again.embedded
        finally:
            again.close()
    finally:
        signal.signal(signal.SIGINT, previous)
        release.set()
        s.close()
        stop_leftover(s._s)


# -- 6. the decorator's registrations ------------------------------------------------------


async def test_the_decorator_checks_its_options_when_it_decorates(
    core: jk.Stream, topic: str
) -> None:
    async def handler(data: bytes) -> None: ...

    with pytest.raises(jk.ConfigError, match="backoff"):
        core.subscriber(topic, backoff=[-1])(handler)
    with pytest.raises(jk.ConfigError, match="JetStream topic"):
        core.subscriber(topic, durable="d")(handler)  # a core topic
    with pytest.raises(jk.InvalidTopicError):
        core.subscriber("bad topic")(handler)
    with pytest.raises(TypeError, match="duable"):
        core.subscriber(topic, duable="d")(handler)
    with pytest.raises(jk.HandlerSignatureError):
        core.subscriber(topic)(lambda *, needed: None)
    assert not core._registrations  # nothing was started for any of them


async def test_a_failed_registration_is_logged_and_raised_by_close_if_nobody_saw_it(
    tmp_path: Path, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jetkit")
    s = await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM)
    try:
        await (await s.subscribe(topic, lambda m: None, durable="d", ack=jk.AckPolicy.NONE)).stop()
        server_pid = server_of(s).pid

        @s.subscriber(topic, durable="d")  # ack=AUTO: the durable exists with ack NONE
        async def handler(data: bytes) -> None: ...

        # logged when it fails, though nothing publishes
        await wait_until(lambda: "could not be registered" in caplog.text)
        assert "'d'" in caplog.text and "recreate=True" in caplog.text
        with pytest.raises(jk.IncompatibleConsumerError):
            await s.close()
        # raised after the close completed
        assert s.closed and server_pid is not None and not process_alive(server_pid)
        await s.close()  # seen now: a second close does not raise it again
    finally:
        await s.close()
        stop_leftover(s)


async def test_a_failed_registration_raises_from_the_next_publish_then_not_from_close(
    tmp_path: Path, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jetkit")
    s = await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM)
    try:
        await (await s.subscribe(topic, lambda m: None, durable="d", ack=jk.AckPolicy.NONE)).stop()

        @s.subscriber(topic, durable="d")
        async def handler(data: bytes) -> None: ...

        with pytest.raises(jk.IncompatibleConsumerError):
            await s.publish(topic, b"x")
        assert "could not be registered" in caplog.text
        assert await s.publish(topic, b"y") is not None  # raised once, then publishing goes on
    finally:
        await s.close()  # the error was seen: close does not raise it
        stop_leftover(s)


async def test_decorating_then_closing_at_once_registers_and_raises_nothing(
    tmp_path: Path, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jetkit")
    s = await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM)

    @s.subscriber(topic, durable="late")
    async def handler(data: bytes) -> None: ...

    await s.close()  # the close waits for the registration, then drains it
    assert "could not be registered" not in caplog.text
    async with jk.Stream.open(store_dir=tmp_path) as again:
        assert [c.name for c in await again.consumers(topic)] == ["late"]


def test_the_sync_decorator_raises_when_it_decorates(tmp_path: Path, topic: str) -> None:
    with jsync.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        with pytest.raises(jk.ConfigError, match="backoff"):
            s.subscriber(topic, backoff=[-1])(lambda data: None)
        with pytest.raises(TypeError, match="duable"):
            s.subscriber(topic, duable="d")(lambda data: None)
        s.subscribe(topic, lambda m: None, durable="d", ack=jk.AckPolicy.NONE).stop()
        with pytest.raises(jk.IncompatibleConsumerError):
            s.subscriber(topic, durable="d")(lambda data: None)
        assert s.publish(topic, b"x") is not None

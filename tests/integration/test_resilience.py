"""No handler can kill a subscription; the supervisor never gives up; publishes in flight
resolve promptly when the connection drops; a crash during close() restarts nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

import jetkit as jk
from conftest import kill_server, nc_of, server_of, wait_until
from jetkit import _jsapi, _store


class Odd(BaseException):
    """A BaseException that is not an Exception, as some libraries raise."""


@pytest.mark.parametrize("raised", [asyncio.CancelledError, Odd])
@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_handler_raising_a_base_exception_is_a_retried_failure(
    js: jk.Stream, topic: str, raised: type[BaseException], concurrency: int
) -> None:
    done: list[bytes] = []

    async def handler(data: bytes, msg: jk.Message) -> None:
        if msg.num_delivered == 1:
            raise raised()
        done.append(data)

    sub = await js.subscribe(
        topic, handler, ack=jk.AckPolicy.MANUAL, max_deliver=3, concurrency=concurrency
    )
    for i in range(6):
        await js.publish(topic, f"m{i}".encode())
    await wait_until(lambda: len(done) == 6)
    assert sorted(done) == [f"m{i}".encode() for i in range(6)]
    assert sub.stats.failed == 6 and sub.stats.retried == 6 and sub.stats.acked == 6
    await js.publish(topic, b"sentinel")  # the subscription still runs
    await wait_until(lambda: len(done) == 7)
    await sub.stop()


async def test_a_core_handler_raising_a_base_exception_keeps_running(
    core: jk.Stream, topic: str
) -> None:
    seen: list[bytes] = []

    async def handler(data: bytes) -> None:
        seen.append(data)
        if data == b"bad":
            raise asyncio.CancelledError()

    sub = await core.subscribe(topic, handler)
    await core.publish(topic, b"bad")
    await core.publish(topic, b"sentinel")
    await wait_until(lambda: seen == [b"bad", b"sentinel"])
    assert sub.stats.failed == 1
    await sub.stop()


async def test_a_responder_raising_a_base_exception_answers_with_an_error(
    core: jk.Stream, topic: str
) -> None:
    async def respond(data: bytes) -> bytes:
        if data == b"bad":
            raise Odd("odd")
        return data

    sub = await core.respond(topic, respond)
    with pytest.raises(jk.RemoteError, match="Odd"):
        await core.request(topic, b"bad")
    assert (await core.request(topic, b"ok")).data == b"ok"
    await sub.stop()


@pytest.mark.slow
async def test_supervisor_never_gives_up(tmp_path: Path) -> None:
    async with jk.Stream.open(store_dir=tmp_path) as s:
        server = server_of(s)
        assert server is not None
        for crash in range(1, 8):
            await wait_until(lambda: server.running and nc_of(s).is_connected, timeout=30)
            kill_server(server)
            if crash == 6:  # past five quick restarts: a delay, and healthy() says so
                await wait_until(lambda: server.state == "waiting")
                with pytest.raises(jk.StreamUnhealthyError, match="crashed repeatedly"):
                    await s.healthy()
            await wait_until(lambda c=crash: server.restart_count == c, timeout=30)  # type: ignore[misc]
        await wait_until(lambda: server.running, timeout=30)
        await wait_until(lambda: nc_of(s).is_connected, timeout=30)
        await s.healthy()
        assert server.restart_count == 7


@pytest.mark.slow
async def test_publishes_in_flight_resolve_promptly_when_the_connection_drops(
    tmp_path: Path,
) -> None:
    # publish_timeout is far longer than the test may take: waiting it out would fail
    async with jk.Stream.open(
        store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM, publish_timeout=300
    ) as s:
        assert server_of(s) is not None
        await s.publish("inflight", b"warm-up")
        started = asyncio.Event()

        def payloads() -> object:
            for i in range(20_000):
                if i == 2_000:
                    started.set()
                yield f"m{i}".encode()

        batch = asyncio.ensure_future(s.publish_many("inflight", payloads(), window=512))  # type: ignore[arg-type]
        await started.wait()
        kill_server(server_of(s))
        with pytest.raises(jk.PublishBatchError) as caught:
            await batch
        results = caught.value.results
        lost = [r for r in results if isinstance(r, jk.ConnectionLostError)]
        acked = [r for r in results if isinstance(r, jk.PubAck)]
        assert lost and acked and len(lost) + len(acked) == 20_000
        assert "may or may not be stored" in str(lost[0])
        await wait_until(lambda: nc_of(s).is_connected, timeout=30)
        info = await s.topic_info("inflight")
        assert info.messages >= len(acked) + 1  # nothing acknowledged is lost


async def test_calls_cut_off_by_a_crash_do_not_hold_back_the_calls_after_the_restart(
    tmp_path: Path, topic: str
) -> None:
    """A JetStream API call sent just before the server dies waits for its timeout (its
    answer went with the connection). As many of them as the Stream lets wait for an
    answer at once (``IN_FLIGHT``) held every place, so a call made after the restart
    waited ``api_timeout`` behind them (the fault suite's recovery after a kill went from
    0.26 s to 1.8 s). Now they give their places up when the connection drops: the call
    after the restart is answered while every cut-off one is still waiting."""
    # without the fix the call after the restart is answered only once the cut-off ones
    # time out (40 s; the test's own limit is 60): then they are all done, and it fails
    async with jk.Stream.open(
        store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM, api_timeout=40
    ) as s:
        await s.declare_topic(topic)
        server = server_of(s)
        nc = nc_of(s)
        assert server.pid is not None and nc._transport is not None
        os.kill(server.pid, signal.SIGSTOP)  # what is sent now gets no answer
        cut_off = [asyncio.ensure_future(s.topic_info(topic)) for _ in range(_jsapi.IN_FLIGHT)]
        try:
            writer = nc._transport._io_writer  # type: ignore[attr-defined]
            await wait_until(
                lambda: (
                    s._rt.api.in_flight == _jsapi.IN_FLIGHT
                    and nc._pending_data_size == 0
                    and writer.transport.get_write_buffer_size() == 0
                )
            )  # every cut-off call is in the socket, none is answered
            kill_server(server)  # the supervisor starts it again
            info = await s.topic_info(topic)
            assert info.subjects == [topic]
            assert [c for c in cut_off if c.done()] == []
        finally:
            for call in cut_off:
                call.cancel()
            await asyncio.gather(*cut_off, return_exceptions=True)


@pytest.mark.slow
async def test_a_crash_during_close_restarts_nothing(tmp_path: Path) -> None:
    for _ in range(5):
        s = await jk.Stream.open(store_dir=tmp_path)
        server = server_of(s)
        assert server is not None
        kill_server(server)
        # the supervisor noticed the crash (and is restarting the server)
        await wait_until(lambda srv=server: srv.last_exit_code is not None)  # type: ignore[misc]
        await asyncio.sleep(0)  # let the supervisor start its restart
        await s.close()
        lock = _store.try_lock(tmp_path)  # no server (restarted or not) holds the store
        assert lock is not None
        os.close(lock)


INTERRUPTED_CHILD = """
import asyncio, sys
import jetkit as jk

async def main():
    s = await jk.Stream.open(store_dir=sys.argv[1], default_mode=jk.TopicMode.JETSTREAM)

    async def handler(msg: jk.Message) -> None:
        raise KeyboardInterrupt

    await s.subscribe("interrupted", handler, durable="worker", ack=jk.AckPolicy.MANUAL,
                      start_at=jk.StartAt.ALL, ack_wait=300)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_keyboard_interrupt_in_a_handler_stops_the_program_after_a_nak(
    tmp_path: Path,
) -> None:
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        await s.publish("interrupted", b"work")
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            INTERRUPTED_CHILD,
            str(tmp_path),
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert await asyncio.wait_for(child.wait(), 30) != 0  # the interrupt propagated
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        got: list[jk.Message] = []
        # ack_wait is 300 s: only the nak can bring the message back within the test
        await s.subscribe(
            "interrupted",
            lambda m: got.append(m),  # type: ignore[arg-type,func-returns-value]
            durable="worker",
            ack=jk.AckPolicy.MANUAL,
            ack_wait=300,
        )
        await wait_until(lambda: len(got) == 1, timeout=20)
        assert got[0].num_delivered == 2


async def test_a_dead_flusher_does_not_stall_sending(tmp_path: Path, topic: str) -> None:
    """nats-py's flusher task can die while the connection stays up; nats-py then writes
    inline. jetkit's raw sends (publishes, acks) must too, not wait for a kick that never
    comes."""
    async with (
        jk.Stream.open(store_dir=tmp_path) as receiver,
        jk.Stream.open(store_dir=tmp_path) as sender,
    ):
        got: list[bytes] = []

        async def record(data: bytes) -> None:
            got.append(data)

        sub = await receiver.subscribe(topic, record)
        flusher = nc_of(sender)._flusher_task
        assert flusher is not None
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await sender.publish(topic, b"m0")  # a lone publish: nothing else to push it out
        await wait_until(lambda: got == [b"m0"])
        for i in range(1, 3):
            await sender.publish(topic, b"m%d" % i)
        await wait_until(lambda: got == [b"m0", b"m1", b"m2"])
        await sub.stop()


async def test_a_dropped_connection_is_restored(js: jk.Stream, topic: str) -> None:
    """If the server closes the connection anyway, jetkit reconnects (nats-py would not)."""
    got: list[bytes] = []

    async def record(data: bytes) -> None:
        got.append(data)

    sub = await js.subscribe(topic, record)
    reconnects = nc_of(js).stats["reconnects"]
    # bypass every check: a PUB over max_payload makes the server close the connection
    await nc_of(js)._send_command(b"PUB x %d\r\n" % (js.max_payload + 1))
    await nc_of(js)._flush_pending()
    await wait_until(lambda: nc_of(js).stats["reconnects"] > reconnects, timeout=20)
    await wait_until(lambda: nc_of(js).is_connected, timeout=20)
    await js.healthy()
    assert await js.publish(topic, b"after") is not None
    await wait_until(lambda: got == [b"after"])
    await sub.stop()

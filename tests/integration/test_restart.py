"""Durability across restarts: reopening a store, SIGKILLed owners, crashes during the
last attempt, and an external server that restarts or dies."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import jetkit as jk
from conftest import ExternalServer, nc_of, wait_until, wait_until_async
from jetkit._retry import H_DELIVERIES, H_ERROR

pytestmark = pytest.mark.slow


async def open_js(store: Path, **opts: object) -> jk.Stream:
    return await jk.Stream.open(
        store_dir=store,
        default_mode=jk.TopicMode.JETSTREAM,
        **opts,  # type: ignore[arg-type]
    )


async def test_durable_resumes_across_reopen(tmp_path: Path) -> None:
    got: list[bytes] = []

    async def handler(data: bytes) -> None:
        got.append(data)

    async with await open_js(tmp_path) as s:
        sub = await s.subscribe("orders", handler, durable="proc", ack=jk.AckPolicy.MANUAL)
        for i in range(5):
            await s.publish("orders", f"o{i}".encode())
        await wait_until(lambda: len(got) == 5)
        assert sub.stats.acked == 5
    async with await open_js(tmp_path) as s:  # published while nobody listens
        for i in range(5, 8):
            await s.publish("orders", f"o{i}".encode())
    got.clear()
    async with await open_js(tmp_path) as s:
        await s.subscribe("orders", handler, durable="proc", ack=jk.AckPolicy.MANUAL)
        await wait_until(lambda: len(got) == 3)

        async def settled() -> bool:
            info = await s.consumer_info("orders", "proc")
            return info.pending == 0 and info.ack_pending == 0

        # nothing left to deliver and nothing unacknowledged: no o0..o4 can come back
        await wait_until_async(settled)
        assert got == [b"o5", b"o6", b"o7"]
        assert (await s.consumer_info("orders", "proc")).redelivered == 0


async def test_unacked_message_survives_close(tmp_path: Path) -> None:
    seen: list[tuple[bytes, int]] = []
    hold = asyncio.Event()

    async def handler(msg: jk.Message) -> None:
        seen.append((msg.data, msg.num_delivered))
        if msg.data == b"m3" and msg.num_delivered == 1:
            await hold.wait()  # still running when the Stream closes

    s = await open_js(tmp_path, drain_timeout=0.3)
    await s.subscribe("jobs", handler, durable="w", ack=jk.AckPolicy.MANUAL, ack_wait=1)
    for i in range(5):
        await s.publish("jobs", f"m{i}".encode())
    await wait_until(lambda: (b"m3", 1) in seen)
    await s.close()  # drain times out on m3: it and m4 are handed back unacked
    seen.clear()
    async with await open_js(tmp_path) as s:
        # the naks jetkit sent on close do not outlive the server's restart: the
        # messages come back once ack_wait has passed
        await s.subscribe("jobs", handler, durable="w", ack=jk.AckPolicy.MANUAL, ack_wait=1)
        await wait_until(lambda: len(seen) == 2)
        # m4 may never have been delivered before the close (the server then
        # sends it at once, before m3's ack_wait has passed): the order is free
        got = dict(seen)
        assert sorted(got) == [b"m3", b"m4"]
        assert got[b"m3"] == 2


async def test_replay_from_start_time_resumes_on_the_next_run(tmp_path: Path) -> None:
    got: list[bytes] = []

    async def analytics(data: bytes) -> None:
        got.append(data)

    async def run(publish: list[bytes], sentinel: bytes) -> list[bytes]:
        got.clear()
        async with await open_js(tmp_path) as s:
            for p in publish:
                await s.publish("orders.events", p)
            hour_ago = dt.datetime.now() - dt.timedelta(hours=1)
            await s.subscribe(
                "orders.events",
                analytics,
                durable="analytics-processor",
                start_at=jk.StartAt.BY_START_TIME,
                start_time=hour_ago,
            )
            # delivered in stream order: once the sentinel is here, so is every replay
            await s.publish("orders.events", sentinel)
            await wait_until(lambda: sentinel in got)
        assert got[-1] == sentinel
        return got[:-1]

    assert await run([b"a", b"b"], b"end-1") == [b"a", b"b"]
    assert await run([b"c"], b"end-2") == [b"c"]  # resumed: a and b are not replayed


CONSUMER_CHILD = """
import asyncio, sys
import jetkit as jk

async def main():
    s = await jk.Stream.open(store_dir=sys.argv[1], default_mode=jk.TopicMode.JETSTREAM)

    async def handler(msg: jk.Message) -> None:
        await msg.ack(wait=True)
        print(msg.data.decode(), flush=True)
        await asyncio.sleep(0.02)

    await s.subscribe("resume.test", handler, durable="worker", ack=jk.AckPolicy.MANUAL,
                      start_at=jk.StartAt.ALL, ack_wait=1)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def spawn(code: str, store: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(store), stdout=subprocess.PIPE
    )


async def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def test_durable_resumes_after_sigkill(tmp_path: Path) -> None:
    everything = {f"m{i}" for i in range(40)}
    async with await open_js(tmp_path) as s:
        await s.publish_many("resume.test", [m.encode() for m in sorted(everything)])
    proc = await spawn(CONSUMER_CHILD, tmp_path)
    acked: set[str] = set()
    try:
        assert proc.stdout is not None
        while len(acked) < 10:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the consumer child exited early"
            acked.add(line.decode().strip())
    finally:
        await kill(proc)
    received: set[str] = set()

    async def handler(data: bytes) -> None:
        received.add(data.decode())

    async with await open_js(tmp_path) as s:
        await s.subscribe(
            "resume.test", handler, durable="worker", ack=jk.AckPolicy.MANUAL, ack_wait=1
        )
        # at most one message was acked but not yet printed when the child died
        await wait_until(lambda: len(received | acked) >= 39, timeout=20)

        async def done() -> bool:
            if len(received | acked) == 40:
                return True
            info = await s.consumer_info("resume.test", "worker")  # re-read every poll
            return info.pending == 0 and info.ack_pending == 0

        await wait_until_async(done, timeout=10)
        assert not received & acked, "an acknowledged message was delivered again"
        assert received | acked <= everything and len(received | acked) >= 39


CRASH_CHILD = """
import asyncio, sys
import jetkit as jk

async def main():
    s = await jk.Stream.open(store_dir=sys.argv[1], default_mode=jk.TopicMode.JETSTREAM)

    async def handler(msg: jk.Message) -> None:
        if msg.num_delivered == 1:
            raise RuntimeError("first attempt fails")
        print("attempt", msg.num_delivered, flush=True)
        await asyncio.sleep(60)  # the last attempt never finishes

    await s.subscribe("crash.test", handler, durable="crashy", ack=jk.AckPolicy.MANUAL,
                      max_deliver=2, ack_wait=1, dlq="crash.dlq", start_at=jk.StartAt.ALL)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_last_attempt_cut_short_by_a_crash_reaches_the_dlq(tmp_path: Path) -> None:
    async with await open_js(tmp_path) as s:
        await s.publish("crash.test", b"order-7")
    proc = await spawn(CRASH_CHILD, tmp_path)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.decode().strip() == "attempt 2"
    finally:
        await kill(proc)
    dead: list[jk.Message] = []
    calls: list[bytes] = []

    async def handler(data: bytes) -> None:
        calls.append(data)

    async with await open_js(tmp_path) as s:
        await s.subscribe("crash.dlq", lambda m: dead.append(m), start_at=jk.StartAt.ALL)
        sub = await s.subscribe(
            "crash.test",
            handler,
            durable="crashy",
            ack=jk.AckPolicy.MANUAL,
            max_deliver=2,
            ack_wait=1,
            dlq="crash.dlq",
        )
        await wait_until(lambda: len(dead) == 1, timeout=20)
        assert dead[0].data == b"order-7"
        assert dead[0].headers[H_DELIVERIES] == "2"
        assert dead[0].headers[H_ERROR].startswith("Interrupted:")
        assert calls == []
        assert sub.stats.dead_lettered == 1


@pytest.fixture
async def external(tmp_path: Path) -> AsyncIterator[ExternalServer]:
    server = ExternalServer(tmp_path / "external")
    await server.start()
    yield server
    await server.stop()


async def test_subscription_survives_external_server_restart(external: ExternalServer) -> None:
    got: list[bytes] = []

    async def handler(data: bytes) -> None:
        got.append(data)

    async with jk.Stream.open(servers=[external.url], default_mode=jk.TopicMode.JETSTREAM) as s:
        await s.subscribe("ext.orders", handler, durable="ext", ack=jk.AckPolicy.MANUAL)
        await s.publish("ext.orders", b"before")
        await wait_until(lambda: got == [b"before"])
        await external.stop()
        await external.start()
        await wait_until(lambda: nc_of(s).is_connected, timeout=20)
        await s.publish("ext.orders", b"after")
        await wait_until(lambda: got == [b"before", b"after"], timeout=20)
        await s.healthy()


async def test_publish_to_a_dead_server_never_reports_success(
    external: ExternalServer,
) -> None:
    async with jk.Stream.open(
        servers=[external.url],
        default_mode=jk.TopicMode.JETSTREAM,
        publish_timeout=0.5,
        drain_timeout=1,
    ) as s:
        await s.publish("dead.orders", b"stored")
        await external.stop()
        await wait_until(lambda: not nc_of(s).is_connected)
        with pytest.raises((jk.TimeoutError, jk.ConnectionError)):
            await s.publish("dead.orders", b"lost?")
        with pytest.raises(jk.StreamUnhealthyError):
            await s.healthy()
        health = await s.health()
        assert health["connection"]["connected"] is False


async def test_health_of_a_stream_whose_server_stopped_answers_at_once(
    external: ExternalServer,
) -> None:
    async with jk.Stream.open(
        servers=[external.url], default_mode=jk.TopicMode.JETSTREAM, drain_timeout=1
    ) as s:
        assert (await s.health())["jetstream"]["enabled"] is True
        await external.stop()
        await wait_until(lambda: not nc_of(s).is_connected)
        # the JetStream API timeout is 5 s: health() must not wait for it
        health = await asyncio.wait_for(s.health(), 2)
        assert health["connection"]["connected"] is False
        assert health["jetstream"]["enabled"] is False

"""``jk.App``: handlers declared at import time, served once per app, stopped gracefully."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import jetkit as jk
from conftest import wait_until, wait_until_async


@dataclasses.dataclass
class Order:
    order_id: str


def make_app(store: Path, topic: str, seen: list[tuple[str, bytes]], answered: list[str]) -> jk.App:
    """The same service, as each worker process builds it (its handlers have the same
    names, so the same queue groups)."""
    app = jk.App(store_dir=store)

    @app.on_startup
    async def declare(s: jk.Stream) -> None:
        await s.declare_topic(f"{topic}.stored", mode=jk.TopicMode.JETSTREAM)

    @app.subscriber(f"{topic}.core")
    async def core(data: bytes) -> None:
        seen.append(("core", data))

    @app.subscriber(f"{topic}.stored")
    async def stored(data: bytes) -> None:
        seen.append(("stored", data))

    @app.responder(f"{topic}.ask")
    async def ask(data: bytes) -> bytes:
        answered.append(data.decode())
        return b"ok"

    return app


async def test_two_workers_of_one_app_handle_each_message_once(store: Path, topic: str) -> None:
    # two copies of the app attached to one store stand for two worker processes
    seen: list[tuple[str, bytes]] = []
    answered: list[str] = []
    first, second = make_app(store, topic, seen, answered), make_app(store, topic, seen, answered)
    async with first.serve() as one, second.serve() as two:
        with pytest.raises(jk.ConfigError, match="running already"):
            async with first.serve():
                pass
        for i in range(20):
            await one.publish(f"{topic}.core", b"c%d" % i)
            await two.publish(f"{topic}.stored", b"s%d" % i)
        for i in range(10):
            assert (await one.request(f"{topic}.ask", b"q%d" % i)).data == b"ok"
        await wait_until(lambda: len(seen) == 40)
        await one.publish(f"{topic}.stored", b"sentinel")  # after it, nothing more came
        await wait_until(lambda: len(seen) == 41)
    assert sorted(seen) == sorted(
        [("core", b"c%d" % i) for i in range(20)]
        + [("stored", b"s%d" % i) for i in range(20)]
        + [("stored", b"sentinel")]
    )
    assert sorted(answered) == sorted(f"q{i}" for i in range(10))


async def test_startup_hooks_run_before_the_subscribers_and_shutdown_hooks_see_the_stream(
    topic: str,
) -> None:
    events: list[str] = []
    app = jk.App(default_mode=jk.TopicMode.JETSTREAM)

    @app.on_startup
    async def declare(s: jk.Stream) -> None:
        events.append("startup")
        await s.declare_topic(topic, max_msgs=100)

    @app.subscriber(topic, durable="d", start_at=jk.StartAt.ALL)
    async def handle(order: Order) -> None:
        events.append(order.order_id)

    @app.on_shutdown
    def bye(s: jk.Stream) -> None:
        events.append(f"shutdown open={not s.closed}")

    async with app.serve() as s:
        assert app.stream is s
        await s.publish_json(topic, Order("o-1"))
        await wait_until(lambda: "o-1" in events)
    assert events == ["startup", "o-1", "shutdown open=True"]
    assert s.closed
    with pytest.raises(jk.StreamClosedError):
        app.stream  # noqa: B018


async def test_stopping_hands_back_what_was_pulled_and_not_started(store: Path, topic: str) -> None:
    # one message in its handler, four buffered: stopping gives the four back at once
    # (another subscriber gets them while the first handler still runs, so not after
    # ack_wait: 30 s here), their attempts unused; the running one finishes and is acked
    gate = asyncio.Event()
    started: list[bytes] = []
    app = jk.App(store_dir=store, default_mode=jk.TopicMode.JETSTREAM, drain_timeout=20)
    options = dict(
        durable="w", ack=jk.AckPolicy.MANUAL, max_deliver=2, ack_wait=30, start_at=jk.StartAt.ALL
    )

    @app.subscriber(topic, **options)  # type: ignore[arg-type]
    async def slow(msg: jk.Message) -> None:
        started.append(msg.data)
        await gate.wait()

    async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
        await s.declare_topic(topic)
        for i in range(5):
            await s.publish(topic, b"m%d" % i)
        serving = app.serve()
        await serving.__aenter__()
        [sub] = app.stream.subscriptions
        await wait_until(lambda: len(started) == 1 and sub.buffered == 4)
        stopping = asyncio.ensure_future(serving.__aexit__(None, None, None))
        rest: list[jk.Message] = []

        async def take(msg: jk.Message) -> None:
            rest.append(msg)
            if len(rest) == 4:
                gate.set()  # only now may the first handler finish

        other = await s.subscribe(topic, take, **options)  # type: ignore[arg-type]
        await stopping
        await wait_until_async(lambda: _settled(s, topic, "w"))
        await other.stop()
    assert started == [b"m0"]
    assert sorted(m.data for m in rest) == [b"m1", b"m2", b"m3", b"m4"]
    assert all(m.num_delivered == 1 for m in rest)  # never handled: no attempt used


async def _settled(s: jk.Stream, topic: str, durable: str) -> bool:
    info = await s.consumer_info(topic, durable)
    return info.pending == 0 and info.ack_pending == 0


def test_an_asgi_app_publishes_from_a_route_under_the_lifespan(topic: str) -> None:
    received: list[bytes] = []
    done = threading.Event()
    app = jk.App()

    @app.subscriber(topic)
    def handle(data: bytes) -> None:
        received.append(data)
        done.set()

    async def order(request: Request) -> PlainTextResponse:
        await app.stream.publish(topic, await request.body())
        return PlainTextResponse("queued")

    web = Starlette(routes=[Route("/orders", order, methods=["POST"])], lifespan=app.lifespan)
    with TestClient(web) as client:
        response = client.post("/orders", content=b"order-1")
        assert response.text == "queued"
        assert done.wait(10)
    assert received == [b"order-1"]
    with pytest.raises(jk.StreamClosedError):
        app.stream  # noqa: B018


SERVICE = """
import asyncio, sys
import jetkit as jk

app = jk.App(store_dir=sys.argv[1], default_mode=jk.TopicMode.JETSTREAM, drain_timeout=30)

@app.on_startup
async def ready(s):
    await s.declare_topic("svc.orders")

@app.subscriber("svc.orders", durable="svc", ack=jk.AckPolicy.MANUAL, start_at=jk.StartAt.ALL)
async def handle(msg: jk.Message) -> None:
    print("start", msg.data.decode(), flush=True)
    await asyncio.sleep(1.0)  # slow work in flight when SIGTERM comes
    print("done", msg.data.decode(), flush=True)

if __name__ == "__main__":
    app.run()
    print("exited cleanly", flush=True)
"""


@pytest.mark.slow
async def test_sigterm_lets_the_running_handler_finish_and_exits_0(tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    store = tmp_path / "store"
    async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
        await s.declare_topic("svc.orders")
        await s.publish("svc.orders", b"o1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), str(store), stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 30)).split() == [b"start", b"o1"]
            proc.send_signal(signal.SIGTERM)
            rest = (await asyncio.wait_for(proc.stdout.read(), 30)).decode().split("\n")
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert rest[:2] == ["done o1", "exited cleanly"]

        async def acked() -> bool:
            return (await s.consumer_info("svc.orders", "svc")).ack_floor == 1

        await wait_until_async(acked)  # it finished and acked: not handled again


STUCK = """
import asyncio, sys
import jetkit as jk

app = jk.App(store_dir=sys.argv[1])

@app.on_startup
async def wait_for_ever(s):
    print("starting", flush=True)
    await asyncio.Event().wait()  # a startup that never ends (a dependency down)

if __name__ == "__main__":
    app.run()
    print("exited cleanly", flush=True)
"""


@pytest.mark.slow
async def test_a_signal_while_the_app_starts_stops_the_start(tmp_path: Path) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(STUCK)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(tmp_path / "store"), stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"starting"
        proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rest == "exited cleanly\n"

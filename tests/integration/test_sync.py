"""``jetkit.sync.Stream``: the core scenarios of the async API, from plain functions.

No asyncio here: every test is a plain ``def``, as a script or a Flask view would be.
One sync Stream (its own embedded server and loop thread) serves the module; the
lifecycle tests open their own.
"""

from __future__ import annotations

import dataclasses
import gc
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import jetkit as jk
import jetkit._sync_runtime
import jetkit.sync as jsync


@dataclasses.dataclass
class Order:
    id: int
    item: str


@pytest.fixture(scope="module")
def s() -> Iterator[jsync.Stream]:
    stream = jsync.Stream.open(drain_timeout=5)
    yield stream
    stream.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate`` holds, woken by an Event rather than sleeping blind."""
    woken = threading.Event()
    deadline = threading.Timer(timeout, woken.set)
    deadline.start()
    try:
        while not predicate():
            if woken.wait(0.01):
                raise AssertionError(f"condition not met within {timeout}s")
    finally:
        deadline.cancel()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


# -- opening -----------------------------------------------------------------------------


def test_a_failed_open_raises_its_error_and_leaves_no_thread(s: jsync.Stream) -> None:
    assert s.server_url is not None
    port = int(s.server_url.rsplit(":", 1)[1])
    runners = set(jetkit._sync_runtime._runners)
    before = threading.active_count()
    with pytest.raises(jk.PortInUseError):
        jsync.Stream.open(port=port)
    assert threading.active_count() == before
    assert jetkit._sync_runtime._runners == runners


# -- publish / subscribe -----------------------------------------------------------------


def test_core_publish_subscribe_runs_plain_handlers_in_a_handler_thread(
    s: jsync.Stream, topic: str
) -> None:
    got: queue.Queue[tuple[str, str]] = queue.Queue()

    def handler(text: str) -> None:
        got.put((text, threading.current_thread().name))

    sub = s.subscribe(topic, handler)
    assert isinstance(sub, jsync.Subscription) and not sub.closed
    assert s.publish(topic, b"hello") is None
    text, thread = got.get(timeout=5)
    assert text == "hello"
    assert thread.startswith("jetkit-sync-handler")
    sub.drain()
    assert sub.closed and sub.stats.received == 1


def test_jetstream_publish_returns_the_puback(s: jsync.Stream, topic: str) -> None:
    s.declare_topic(topic, jk.TopicMode.JETSTREAM)
    ack = s.publish(topic, b"one", msg_id="m-1")
    assert isinstance(ack, jk.PubAck) and ack.seq == 1 and not ack.duplicate
    again = s.publish(topic, b"one", msg_id="m-1")
    assert again is not None and again.duplicate
    last = s.last_message(topic)
    assert last is not None and last.data == b"one"


def test_publish_json_reaches_a_dataclass_handler(s: jsync.Stream, topic: str) -> None:
    got: queue.Queue[Order] = queue.Queue()

    def handler(order: Order) -> None:
        got.put(order)

    s.subscribe(topic, handler)
    s.publish_json(topic, Order(7, "tea"))
    assert got.get(timeout=5) == Order(7, "tea")


def test_publish_many_returns_acks_on_jetstream_and_nones_on_core(
    s: jsync.Stream, topic: str
) -> None:
    s.declare_topic(topic, jk.TopicMode.JETSTREAM)
    acks = s.publish_many(topic, [b"%d" % i for i in range(50)], window=8)
    assert [a.seq for a in acks if a is not None] == list(range(1, 51))
    assert s.topic_info(topic).messages == 50
    core = topic + ".core"
    assert s.publish_many(core, [b"a", b"b"]) == [None, None]


def test_scheduled_delivery_cancel_and_ttl_work_from_plain_functions(
    s: jsync.Stream, topic: str
) -> None:
    s.declare_topic(topic, jk.TopicMode.JETSTREAM)
    got: queue.Queue[bytes] = queue.Queue()
    s.subscribe(topic, lambda m: got.put(m.data))
    held = s.publish(topic, b"held", deliver_after=0.5, ttl=60)
    assert isinstance(held, jk.ScheduledMessage) and held.topic == topic
    cancelled = s.publish_json(topic, {"n": 1}, deliver_after=1, msg_id="c-1")
    assert isinstance(cancelled, jk.ScheduledMessage)
    assert s.cancel_scheduled(topic, msg_id="c-1") is True
    s.publish(topic, b"sentinel")
    assert got.get(timeout=5) == b"sentinel"
    assert got.get(timeout=10) == b"held"
    assert s.cancel_scheduled(held) is False
    ack = s.publish(topic, b"expiring", ttl=5)
    assert isinstance(ack, jk.PubAck)
    assert len(s.publish_many(topic, [b"a"], ttl=5)) == 1
    with pytest.raises(jk.ConfigError, match="not both"):
        s.publish(topic, b"x", deliver_after=1, deliver_at=held.deliver_at)  # type: ignore[call-overload]


def test_publish_stored_returns_the_ack_and_refuses_a_core_topic(
    s: jsync.Stream, topic: str
) -> None:
    s.declare_topic(topic, jk.TopicMode.JETSTREAM)
    assert s.publish_stored(topic, b"a").seq == 1
    assert s.publish_json_stored(topic, {"n": 1}, msg_id="j-1").seq == 2
    with pytest.raises(jk.ConfigError, match="is a core topic"):
        s.publish_stored(f"{topic}.core", b"x")


def test_queue_group_delivers_each_message_once(s: jsync.Stream, topic: str) -> None:
    seen: list[bytes] = []
    lock = threading.Lock()
    done = threading.Event()

    def handler(data: bytes) -> None:
        with lock:
            seen.append(data)
            if len(seen) == 20:
                done.set()

    subs = [s.subscribe(topic, handler, queue_group="workers") for _ in range(2)]
    for i in range(20):
        s.publish(topic, b"%d" % i)
    assert done.wait(5)
    for sub in subs:
        sub.drain()
    assert sorted(seen) == sorted(b"%d" % i for i in range(20))
    assert sum(sub.stats.received for sub in subs) == 20


# -- durable consumers -------------------------------------------------------------------


def test_manual_ack_failing_handler_is_retried_then_dead_lettered(
    s: jsync.Stream, topic: str
) -> None:
    s.declare_topic(topic, jk.TopicMode.JETSTREAM)
    dlq = topic + ".dlq"
    attempts: list[int] = []

    def handler(data: bytes, msg: jk.Message) -> None:
        attempts.append(msg.num_delivered)
        raise ValueError(f"cannot process {data!r}")

    sub = s.subscribe(
        topic, handler, durable="d1", ack=jk.AckPolicy.MANUAL, max_deliver=3, backoff=0, dlq=dlq
    )
    s.publish(topic, b"poison-ish")
    wait_for(lambda: sub.stats.dead_lettered == 1)
    assert attempts == [1, 2, 3]
    assert sub.stats.retried == 2 and sub.stats.failed == 3
    (letter,) = s.dead_letters(dlq)
    assert letter.data == b"poison-ish" and letter.original_topic == topic
    assert "ValueError" in letter.error
    sub.drain()


def test_manual_handler_settles_through_the_stream(s: jsync.Stream, topic: str) -> None:
    s.declare_topic(topic, jk.TopicMode.JETSTREAM)
    seen: list[tuple[bytes, int]] = []

    def handler(msg: jk.Message) -> None:
        seen.append((msg.data, msg.num_delivered))
        if msg.data == b"later" and msg.num_delivered == 1:
            s.nak(msg)
        elif msg.data == b"drop":
            s.in_progress(msg)
            s.term(msg, "not wanted")
        else:
            s.ack(msg, wait=True)
            with pytest.raises(jk.AlreadySettledError):
                s.ack(msg)

    sub = s.subscribe(topic, handler, durable="settle", ack=jk.AckPolicy.MANUAL)
    for data in (b"ok", b"later", b"drop"):
        s.publish(topic, data)
    wait_for(lambda: len(seen) == 4)
    sub.drain()
    assert sorted(seen) == [(b"drop", 1), (b"later", 1), (b"later", 2), (b"ok", 1)]
    assert sub.stats.failed == 0
    info = s.consumer_info(topic, "settle")
    assert info.ack_pending == 0 and info.pending == 0


# -- request / reply ---------------------------------------------------------------------


def test_requests_are_answered_and_a_responders_error_is_a_remote_error(
    s: jsync.Stream, topic: str
) -> None:
    def double(order: Order) -> Order:
        if order.id < 0:
            raise ValueError("negative id")
        return Order(order.id * 2, order.item)

    responder = s.respond(topic, double, queue_group="calc")
    reply = s.request(topic, b'{"id": 2, "item": "x"}', timeout=5)
    assert reply.data == b'{"id":4,"item":"x"}'
    assert s.request_json(topic, Order(5, "y"), Order) == Order(10, "y")
    with pytest.raises(jk.RemoteError) as err:
        s.request_json(topic, Order(-1, "z"), Order)
    assert err.value.type == "ValueError" and "negative id" in str(err.value)
    with pytest.raises(jk.NoRespondersError):
        s.request(topic + ".nobody", b"", timeout=2)
    responder.stop()
    assert responder.closed


# -- administration ----------------------------------------------------------------------


def test_every_admin_call_and_property_works_from_plain_functions(
    s: jsync.Stream, topic: str
) -> None:
    info = s.declare_topic(topic, max_msgs=100)
    assert info is not None and info.max_msgs == 100
    assert s.mode_for(topic) is jk.TopicMode.JETSTREAM
    s.publish_many(topic, [b"a", b"b", b"c"])
    assert info.name in [t.name for t in s.topics()]
    assert s.topic_info(topic).messages == 3
    sub = s.subscribe(topic, lambda m: None, durable="admin", start_at=jk.StartAt.ALL)
    wait_for(lambda: sub.stats.received == 3)
    sub.drain()
    assert [c.name for c in s.consumers(topic)] == ["admin"]
    assert s.consumer_info(topic, "admin").pending == 0
    reset = s.reset_consumer(topic, "admin", start_seq=2)
    assert reset.pending == 2
    s.delete_consumer(topic, "admin")
    assert s.consumers(topic) == []
    assert s.purge_topic(topic, keep=1) == 2
    last = s.last_message(topic)
    assert last is not None and last.data == b"c"
    s.delete_topic(topic)
    with pytest.raises(jk.NotFoundError):
        s.consumer_info(topic, "admin")

    s.healthy()
    health = s.health()
    assert health["connection"]["connected"] is True and health["jetstream"]["enabled"]
    assert s.embedded and s.connected and not s.closed
    assert s.store_dir is not None and s.store_dir.is_dir()
    assert s.server_url is not None and s.server_url.startswith("nats://127.0.0.1:")
    assert s.connect_info()["servers"] == [s.server_url]
    assert s.metrics_url is None
    assert s.max_payload > 0
    assert s.default_mode is jk.TopicMode.CORE


def test_redrive_puts_dead_letters_back(s: jsync.Stream, topic: str) -> None:
    s.declare_topic(topic, jk.TopicMode.JETSTREAM)
    dlq = topic + ".dlq"
    failing = threading.Event()
    failing.set()
    handled: queue.Queue[bytes] = queue.Queue()

    def handler(data: bytes) -> None:
        if failing.is_set():
            raise RuntimeError("down")
        handled.put(data)

    sub = s.subscribe(topic, handler, durable="r", ack=jk.AckPolicy.MANUAL, max_deliver=1, dlq=dlq)
    s.publish(topic, b"retry-me")
    wait_for(lambda: sub.stats.dead_lettered == 1)
    failing.clear()
    result = s.redrive(dlq)
    assert result.redriven == 1
    assert handled.get(timeout=5) == b"retry-me"
    assert s.dead_letters(dlq) == []
    sub.drain()


# -- errors in the caller's thread -------------------------------------------------------


def test_errors_are_the_async_ones_raised_in_the_callers_thread(
    s: jsync.Stream, topic: str
) -> None:
    got: queue.Queue[bytes] = queue.Queue()

    def everything(data: bytes) -> None:
        got.put(data)

    s.subscribe(topic + ".>", everything)
    with pytest.raises(jk.InvalidTopicError) as err:
        s.publish(topic + ". bad", b"never sent")
    assert type(err.value) is jk.InvalidTopicError  # the async error, not a wrapper
    with pytest.raises(jk.ConfigError):
        s.publish_many(topic + ".x", [b"a"], window=0)
    with pytest.raises(jk.NotFoundError):
        s.topic_info(topic + ".never.declared")
    s.publish(topic + ".sentinel", b"sentinel")
    assert got.get(timeout=5) == b"sentinel"  # the first (and only) thing that arrived
    assert got.empty()


def test_async_handlers_are_refused(s: jsync.Stream, topic: str) -> None:
    async def handler(data: bytes) -> None:
        pass

    with pytest.raises(jk.HandlerSignatureError, match="plain functions"):
        s.subscribe(topic, handler)
    with pytest.raises(jk.HandlerSignatureError):
        s.respond(topic, handler)


# -- deadlocks refused -------------------------------------------------------------------


def test_calls_from_the_loop_thread_are_refused(s: jsync.Stream, topic: str) -> None:
    result: queue.Queue[BaseException | None] = queue.Queue()

    def on_loop() -> None:
        try:
            s.publish(topic, b"x")
        except BaseException as exc:
            result.put(exc)
        else:
            result.put(None)

    s._runner.loop.call_soon_threadsafe(on_loop)
    exc = result.get(timeout=5)
    assert isinstance(exc, jk.ConfigError) and "own event-loop thread" in str(exc)


def test_handlers_may_call_the_stream_but_not_close_or_drain_it(
    s: jsync.Stream, topic: str
) -> None:
    outcomes: queue.Queue[Any] = queue.Queue()
    subs: list[jsync.Subscription] = []

    def handler(data: bytes) -> None:
        s.publish(topic + ".echo", data)  # handler threads may call the Stream
        for call in (s.close, subs[0].drain):
            try:
                call()
            except jk.ConfigError as exc:
                outcomes.put(str(exc))

    echoes: queue.Queue[bytes] = queue.Queue()

    def echo(data: bytes) -> None:
        echoes.put(data)

    s.subscribe(topic + ".echo", echo)
    subs.append(s.subscribe(topic, handler))
    s.publish(topic, b"ping")
    assert echoes.get(timeout=5) == b"ping"
    for _ in range(2):
        assert "from a handler of this Stream" in outcomes.get(timeout=5)
    assert not s.closed
    subs[0].drain()


# -- closing -----------------------------------------------------------------------------


def test_close_twice_and_use_after_close(tmp_path: Path, topic: str) -> None:
    started: threading.Event = threading.Event()
    release = threading.Event()
    finished: list[bytes] = []

    def slow(data: bytes) -> None:
        started.set()
        release.wait(5)
        finished.append(data)

    with jsync.Stream.open(store_dir=tmp_path, drain_timeout=10) as s2:
        pid = s2.health()["server"]["pid"]
        sub = s2.subscribe(topic, slow)
        s2.publish(topic, b"in flight")
        assert started.wait(5)
        threading.Timer(0.05, release.set).start()
    assert finished == [b"in flight"]  # close drained the handler first
    assert s2.closed and sub.closed and not s2.connected
    assert not alive(pid)
    s2.close()
    for call in (
        lambda: s2.publish(topic, b"x"),
        lambda: s2.subscribe(topic, lambda m: None),
        lambda: s2.request(topic, b""),
        lambda: s2.topics(),
        lambda: s2.health(),
        lambda: s2.connect_info(),
    ):
        with pytest.raises(jk.StreamClosedError):
            call()
    sub.drain()  # a closed subscription: nothing to do
    runner = s2._runner
    assert not runner._thread.is_alive()
    assert not [t for t in runner.threads._workers if t.is_alive()]


def test_a_forgotten_stream_is_closed_when_collected() -> None:
    stream = jsync.Stream.open()
    store = stream.store_dir
    thread = stream._runner._thread
    assert store is not None and store.is_dir()
    del stream
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()
    assert not store.exists()  # the temporary store goes only with a clean close


FORGETFUL = """
import sys, threading
import jetkit as jk
import jetkit.sync as jsync

s = jsync.Stream.open(default_mode=jk.TopicMode.JETSTREAM)
got = threading.Event()
s.subscribe("forgot.it", lambda m: got.set(), durable="d", ack=jk.AckPolicy.MANUAL)
s.publish("forgot.it", b"x")
got.wait(5)
print(s.health()["server"]["pid"], s.store_dir, flush=True)
# exits without closing
"""


@pytest.mark.slow
def test_atexit_closes_a_stream_left_open(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", FORGETFUL], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    pid_text, store = proc.stdout.split()
    # the server was stopped and the temporary store removed before the process ended:
    # only a clean close does both (a dying owner's server is killed, its store left)
    assert not alive(int(pid_text))
    assert not Path(store).exists()
    assert "Traceback" not in proc.stderr


def test_many_handlers_at_once_may_request_this_streams_responder(
    s: jsync.Stream, topic: str
) -> None:
    """More busy handlers than a default thread pool has (min(32, cpus + 4)): each still
    gets its reply from the responder on the same Stream."""

    def double(data: bytes) -> bytes:
        return data * 2

    s.respond(f"{topic}.double", double)
    replies: list[bytes] = []
    gate = threading.Barrier(40, timeout=20)  # all 40 handlers busy at once

    def handler(data: bytes) -> None:
        gate.wait()
        replies.append(s.request(f"{topic}.double", data, timeout=10).data)

    s.subscribe(topic, handler, concurrency=40)
    for i in range(40):
        s.publish(topic, str(i).encode())
    wait_for(lambda: len(replies) == 40, timeout=30)
    assert sorted(replies) == sorted(str(i).encode() * 2 for i in range(40))


def test_close_returns_with_every_handler_thread_blocked(tmp_path: Path, topic: str) -> None:
    release = threading.Event()
    busy: list[bytes] = []

    def stuck(data: bytes) -> None:
        busy.append(data)
        release.wait(60)

    s2 = jsync.Stream.open(store_dir=tmp_path, drain_timeout=1)
    try:
        pid = s2.health()["server"]["pid"]
        s2.subscribe(topic, stuck, concurrency=40)
        for i in range(40):
            s2.publish(topic, str(i).encode())
        wait_for(lambda: len(busy) == 40)
        s2.close()  # drain gives up after 1 s; the server's stop still gets a thread
        assert s2.closed and not alive(pid)
    finally:
        release.set()
        s2.close()


def test_subscribe_key_orders_per_key(s: jsync.Stream, topic: str) -> None:
    s.declare_topic(topic, jk.TopicMode.JETSTREAM)
    seen: list[bytes] = []
    lock = threading.Lock()

    def handler(data: bytes) -> None:
        with lock:
            seen.append(data)

    sub = s.subscribe(topic, handler, concurrency=4, key=lambda m: m.headers.get("K"))
    for n in range(20):
        s.publish(topic, f"{n % 2}:{n}".encode(), headers={"K": str(n % 2)})
    wait_for(lambda: len(seen) == 20)
    for k in ("0", "1"):
        mine = [d for d in seen if d.startswith(k.encode())]
        assert mine == [f"{k}:{n}".encode() for n in range(20) if str(n % 2) == k]
    with pytest.raises(jk.ConfigError, match="key"):
        s.subscribe(topic, handler, key="no spaces allowed")
    sub.drain()

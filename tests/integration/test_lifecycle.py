"""A Stream's life at its edges (issue 21): a fork, a close cut short, a decorator whose
registration fails (the decorator's refused options: test_bad_input_subscribe.py); many
subscriptions at once, a close with many durables (issue 29).

The fork tests fork this very process: the child does its part in a thread with a bound,
reports through a pipe and leaves with ``os._exit``; the parent waits for it with a bound
and kills it if it does not exit, so a hang fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import jetkit as jk
import jetkit._sync_runtime
import jetkit.sync as jsync
from conftest import server_of, stop_process, wait_until
from jetkit._files import INFO_FILE, LOG_FILE
from jetkit._store import process_alive

CHILD_BOUND = 20.0  # seconds a forked child may take before it counts as hung


# -- forking this process ------------------------------------------------------------------


@contextlib.contextmanager
def fork_allowed() -> Iterator[None]:
    """Python 3.12+ warns about fork() in a process with threads (pytest makes it an
    error); these tests fork on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*fork", category=DeprecationWarning)
        yield


def in_child(body: Callable[[], str]) -> str:
    """Run ``body`` in a forked child and return what it returned (or HUNG / an error).

    The child runs it in a thread and waits half the bound for it; the parent reads the
    report and waits for the child's exit within the bound, killing it otherwise.
    """
    read_end, write_end = os.pipe()
    with fork_allowed():
        pid = os.fork()
    if pid == 0:  # the child: nothing may escape this block
        code = 0
        try:
            os.close(read_end)
            out: list[str] = []

            def run() -> None:
                try:
                    out.append(body())
                except BaseException as exc:
                    out.append(f"body raised {exc!r}")

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            thread.join(CHILD_BOUND / 2)
            os.write(write_end, (out[0] if out else "HUNG").encode())
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    os.close(write_end)
    report = b""
    deadline = time.monotonic() + CHILD_BOUND
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(0.0, left))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"the forked child did not exit within {CHILD_BOUND}s")
            chunk = os.read(read_end, 65536)
            if not chunk:  # the child closed its end: it is exiting
                break
            report += chunk
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report.decode()


def describe(call: Callable[[], object]) -> str:
    """What a call did, as text the parent can check."""
    try:
        call()
    except jk.JetkitError as exc:
        return f"{type(exc).__name__}: {exc}"
    except BaseException as exc:
        return f"unexpected {exc!r}"
    return "returned"


def fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# -- 4. a Stream after os.fork() -----------------------------------------------------------


def test_a_sync_stream_in_a_forked_child_refuses_every_call_at_once(topic: str) -> None:
    s = jsync.Stream.open(default_mode=jk.TopicMode.JETSTREAM, publish_timeout=2)
    try:
        sub = s.subscribe(topic, lambda data: None)
        server_pid = s.health()["server"]["pid"]
        info = s.store_dir / INFO_FILE if s.store_dir is not None else None

        def child() -> str:
            lines = [
                describe(lambda: s.publish(topic, b"from the child")),
                describe(lambda: s.request(topic, b"?", timeout=1)),
                describe(s.topics),
                describe(s.health),
                describe(sub.drain),
                describe(sub.stop),
                describe(s.close),  # returns at once, touching nothing of the parent's
                describe(jetkit._sync_runtime._close_all),  # the module's atexit hook
            ]
            lines.append(f"closed={s.closed}")
            return "\n".join(lines)

        lines = in_child(child).splitlines()
        refused = (
            "ForkedStreamError: this jetkit.sync.Stream was opened in another process "
            f"(pid {os.getpid()}); open a new Stream after fork"
        )
        assert lines[:6] == [refused] * 6, lines
        assert lines[6:] == ["returned", "returned", "closed=True"], lines
        # the parent's Stream, its server and its connection are untouched
        assert process_alive(server_pid) and info is not None and info.exists()
        ack = s.publish(topic, b"after the fork")
        assert ack is not None and ack.seq >= 1
        assert not s.closed and not sub.closed
    finally:
        s.close()


FORK_THEN_EXIT = """
import os, sys, time, warnings
import jetkit as jk
import jetkit.sync as jsync

warnings.simplefilter("ignore", DeprecationWarning)
s = jsync.Stream.open(default_mode=jk.TopicMode.JETSTREAM)
pid = os.fork()
if pid == 0:
    sys.exit(0)  # never touches the Stream: the interpreter's exit (atexit) must not hang
deadline = time.monotonic() + 20
while os.waitpid(pid, os.WNOHANG) == (0, 0):
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("the child hung at exit", flush=True)
        s.close()
        sys.exit(3)
    time.sleep(0.01)
print(s.publish("fork.exit", b"x").seq, flush=True)
s.close()
"""


@pytest.mark.slow
def test_a_forked_child_that_never_used_the_sync_stream_exits_normally() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", FORK_THEN_EXIT], capture_output=True, text=True, timeout=50
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "1"  # the parent still publishes after the child left
    assert "Traceback" not in proc.stderr


async def test_an_async_stream_in_a_forked_child_leaves_the_parents_server_alone(
    tmp_path: Path, topic: str
) -> None:
    s = await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM)
    try:
        server = server_of(s)
        server_pid, lock_fd = server.pid, server._lock_fd
        assert server_pid is not None and lock_fd is not None

        def child() -> str:
            # first, before anything opens a file: the store's lock is not kept by the child
            lines = [f"lock fd open={fd_open(lock_fd)}"]

            async def main() -> None:
                try:
                    await s.publish(topic, b"from the child")
                    lines.append("returned")
                except jk.JetkitError as exc:
                    lines.append(f"{type(exc).__name__}: {exc}")
                await s.close()
                lines.append(f"closed={s.closed}")

            asyncio.run(main())
            return "\n".join(lines)

        lines = in_child(child).splitlines()
        assert lines == [
            "lock fd open=False",
            "ForkedStreamError: this jk.Stream was opened in another process "
            f"(pid {os.getpid()}); open a new Stream after fork",
            "closed=True",
        ], lines
        # the child's close stopped nothing: same server, its info file, the lock still ours
        assert server.pid == server_pid and process_alive(server_pid)
        assert (tmp_path / INFO_FILE).exists() and fd_open(lock_fd)
        ack = await s.publish(topic, b"after the fork")
        assert ack is not None and ack.seq >= 1
    finally:
        await s.close()


# -- 5. a close cut short ------------------------------------------------------------------


def stop_leftover(s: jk.Stream) -> None:
    """A server that a broken close left running is killed here (the test's own cleanup)."""
    server = s._rt.store.server if s._rt.store is not None else None
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
        if (
            frame.f_code.co_name == "close"
            and frame.f_code.co_filename == jetkit._sync_runtime.__file__
        ):
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


# -- 7. many subscriptions: subscribed at once, closed with their acks ---------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_thousand_subscribes_at_once_all_succeed(tmp_path: Path, topic: str) -> None:
    """Each makes JetStream API calls; sent all at once, the last ones waited in the
    server's queue past their timeout (a jk.TimeoutError in every run here). A Stream
    keeps 64 in flight: each is answered within its timeout."""
    count = 1_000
    handled: set[str] = set()

    async def note(msg: jk.Message) -> None:
        handled.add(msg.topic)

    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        names = [f"{topic}.{i}" for i in range(count)]
        subs = await asyncio.gather(*(s.subscribe(name, note) for name in names))
        assert len(subs) == count
        for name in names:
            await s.publish(name, b"one")
        await wait_until(lambda: len(handled) == count, timeout=120)


@pytest.mark.parametrize(
    "count",
    [
        pytest.param(60, id="60"),
        # nats-server 2.15.1 takes over 20 s to stop this many (about 10 ms per consumer):
        # the stop before killed it after 10 s. About two minutes: `pytest -m scale`
        pytest.param(
            2_000,
            id="2000",
            marks=[pytest.mark.slow, pytest.mark.scale, pytest.mark.timeout(600)],
        ),
    ],
)
async def test_a_close_with_many_durables_keeps_every_ack_and_never_kills_the_server(
    tmp_path: Path, topic: str, caplog: pytest.LogCaptureFixture, count: int
) -> None:
    """Each durable acks its messages, the Stream closes, and opens again: every ack
    is there (nothing pending, nothing awaiting an ack), and a sentinel published now is
    the first and only message each durable gets. The server stopped by itself both
    times: jetkit never had to kill it."""
    caplog.set_level(logging.WARNING, logger="jetkit")
    topics = [f"{topic}.{i}" for i in range(count)]
    per_topic = 2
    handled: list[str] = []
    got: dict[str, list[bytes]] = {t: [] for t in topics}

    async def ack(msg: jk.Message) -> None:
        handled.append(msg.topic)

    async def collect(msg: jk.Message) -> None:
        got[msg.topic].append(msg.data)

    options = {"ack": jk.AckPolicy.MANUAL}
    bound = 30 + count / 20  # seconds to wait for the messages (not timed: a bound)
    s = await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM)
    try:
        for i, name in enumerate(topics):
            await s.subscribe(name, ack, durable=f"d{i}", **options)
        for k in range(per_topic):
            for name in topics:
                await s.publish(name, b"before %d" % k)
        await wait_until(lambda: len(handled) == count * per_topic, timeout=bound)
    finally:
        await s.close()
    assert (tmp_path / LOG_FILE).read_text().rstrip().endswith("Server Exiting..")

    s = await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM)
    try:
        for i, name in enumerate(topics):
            info = await s.consumer_info(name, f"d{i}")
            left = (info.ack_floor_consumer_seq, info.pending, info.ack_pending)
            assert left == (per_topic, 0, 0), name
            await s.subscribe(name, collect, durable=f"d{i}", **options)
        for name in topics:
            await s.publish(name, b"sentinel")
        await wait_until(lambda: all(got.values()), timeout=bound)
    finally:
        await s.close()
    assert (tmp_path / LOG_FILE).read_text().rstrip().endswith("Server Exiting..")
    assert {name: seen for name, seen in got.items() if seen != [b"sentinel"]} == {}
    assert [r.getMessage() for r in caplog.records if "killing it" in r.getMessage()] == []

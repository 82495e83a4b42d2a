"""jetkit's pytest plugin and ``jetkit.testing.Collector``, as a user meets them.

The slow tests run a user's own test file through ``python -m pytest`` in a fresh
directory (its own config, pytest-asyncio's defaults); the others use the fixtures in
jetkit's own session, where the plugin is loaded too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jetkit as jk
from conftest import ROOT
from jetkit.testing import BackgroundServer, Collector

USER_TESTS = """
import threading

import jetkit as jk
from jetkit.testing import Collector


def test_nothing_started_before_a_test_asks():
    assert "jetkit-test-server" not in [t.name for t in threading.enumerate()]


async def test_retry_with_backoff_then_success(jetkit_stream):
    got = Collector(fail_first=2)
    await jetkit_stream.subscribe("orders.events", got, durable="worker",
                                  ack=jk.AckPolicy.MANUAL, backoff=[0.1])
    await jetkit_stream.publish("orders.events", b"order-1")
    assert [m.num_delivered for m in await got.wait(3)] == [1, 2, 3]
    assert got.data == [b"order-1"] * 3


async def test_failing_message_goes_to_the_dlq(jetkit_stream):
    dead = Collector()
    await jetkit_stream.subscribe("orders.events", Collector(fail=lambda m: m.data == b"bad"),
                                  durable="worker", ack=jk.AckPolicy.MANUAL, max_deliver=2,
                                  backoff=[0.1], dlq="failed.orders")
    await jetkit_stream.subscribe("failed.orders", dead)
    await jetkit_stream.publish("orders.events", b"bad")
    await jetkit_stream.publish("orders.events", b"good")
    [letter] = await dead.wait(1)
    assert letter.data == b"bad"
    assert letter.headers["Jetkit-Deliveries"] == "2"
    assert letter.headers["Jetkit-Error"].startswith("SimulatedFailure: ")


async def test_every_test_starts_from_an_empty_server(jetkit_stream):
    assert await jetkit_stream.topics() == []


async def test_durable_resumes_after_a_restart(jetkit_server, jetkit_stream):
    await jetkit_stream.publish("orders.events", b"1")
    async with jetkit_server.open() as service:
        got = Collector()
        await service.subscribe("orders.events", got, durable="worker",
                                ack=jk.AckPolicy.MANUAL, start_at=jk.StartAt.ALL)
        await got.wait(1)
    await jetkit_stream.publish("orders.events", b"2")
    async with jetkit_server.open() as service:
        got = Collector()
        await service.subscribe("orders.events", got, durable="worker",
                                ack=jk.AckPolicy.MANUAL)
        assert [m.data for m in await got.wait(1)] == [b"2"]


async def test_nothing_was_left_behind(jetkit_stream):
    assert await jetkit_stream.topics() == []


def test_the_server_is_shared_by_the_session(jetkit_server):
    assert jetkit_server.url.startswith("nats://127.0.0.1:")
    assert jetkit_server.store_dir.is_dir()
    assert set(jetkit_server.connect_info()) >= {"servers", "user", "password"}
"""


def run_user_suite(directory: Path, ini: str, tests: str, *args: str) -> str:
    """``python -m pytest`` on a user's project: ``pytest.ini`` and ``test_user.py``."""
    (directory / "pytest.ini").write_text(textwrap.dedent(ini))
    (directory / "test_user.py").write_text(tests)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    return proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_users_suite_with_pytest_asyncio_defaults(tmp_path: Path) -> None:
    out = run_user_suite(tmp_path, "[pytest]\nasyncio_mode = auto\n", USER_TESTS)
    assert "7 passed" in out, out
    assert not list(tmp_path.glob("jetkit-test-*"))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_users_suite_in_strict_mode_with_a_session_loop(tmp_path: Path) -> None:
    """pytest-asyncio's strict mode (tests marked) with one event loop for everything."""
    tests = USER_TESTS.replace("\nasync def ", "\n@pytest.mark.asyncio\nasync def ")
    tests = "import pytest\n" + tests
    ini = """\
        [pytest]
        asyncio_mode = strict
        asyncio_default_fixture_loop_scope = session
        asyncio_default_test_loop_scope = session
        """
    out = run_user_suite(tmp_path, ini, tests)
    assert "7 passed" in out, out


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_collector_that_waits_in_vain_says_how_many_came(tmp_path: Path) -> None:
    tests = """
from jetkit.testing import Collector


async def test_too_few(jetkit_stream):
    got = Collector()
    await jetkit_stream.subscribe("orders.events", got)
    await jetkit_stream.publish("orders.events", b"only one")
    await got.wait(2, timeout=0.5)
"""
    out = run_user_suite(tmp_path, "[pytest]\nasyncio_mode = auto\n", tests)
    assert "1 failed" in out, out
    assert "Collector expected 2 messages within 0.5s, got 1: [b'only one']" in out, out


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_testing_guides_example_passes(tmp_path: Path) -> None:
    guide = (ROOT / "docs" / "testing.md").read_text()
    code = guide[guide.index("```python\n") + 10 :]
    code = code[: code.index("```\n")]
    out = run_user_suite(tmp_path, "[pytest]\nasyncio_mode = auto\n", code)
    assert "3 passed" in out, out


# -- in jetkit's own session (session event loop) -----------------------------------------


async def test_collector_records_every_delivery_and_fails_on_request(
    jetkit_stream: jk.Stream,
) -> None:
    got = Collector(fail_first=1)
    await jetkit_stream.subscribe(
        "plugin.retry", got, durable="w", ack=jk.AckPolicy.MANUAL, backoff=[0.05]
    )
    await jetkit_stream.publish_json("plugin.retry", {"n": 1})
    messages = await got.wait(2)
    assert [m.num_delivered for m in messages] == [1, 2]
    assert got.json() == [{"n": 1}, {"n": 1}]
    assert got.failures == 1 and len(got) == 2


async def test_collector_answers_requests_with_nothing(jetkit_stream: jk.Stream) -> None:
    got = Collector(fail=lambda m: m.data == b"boom")
    await jetkit_stream.respond("plugin.rpc", got)
    assert (await jetkit_stream.request("plugin.rpc", b"hi")).data == b""
    with pytest.raises(jk.RemoteError) as info:
        await jetkit_stream.request("plugin.rpc", b"boom")
    assert info.value.type == "SimulatedFailure"
    assert got.data == [b"hi", b"boom"]


async def test_collector_wait_times_out_with_what_came(jetkit_stream: jk.Stream) -> None:
    got = Collector()
    await jetkit_stream.subscribe("plugin.few", got)
    await jetkit_stream.publish("plugin.few", b"one")
    with pytest.raises(AssertionError, match=r"expected 3 messages within 0.2s, got 1"):
        await got.wait(3, timeout=0.2)


async def test_jetkit_streams_topics_are_gone_after_the_test(
    jetkit_server: BackgroundServer,
) -> None:
    """Runs after the tests above in this module (same session server)."""
    async with jetkit_server.open() as s:
        assert await s.topics() == []


def test_background_server_stops_and_removes_its_store() -> None:
    server = BackgroundServer().start()
    store, thread = server.store_dir, server._thread
    assert store.is_dir() and thread is not None and thread.is_alive()
    server.stop()
    assert not store.exists() and not thread.is_alive()

"""The embedded server: lifecycle, store ownership, attach, supervision. (Opening refused
before any server runs: tests/unit/test_server_start.py and test_bad_input_open.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import jetkit as jk
from conftest import alive, kill_server, nc_of, server_of, wait_until
from jetkit import _files


async def test_temp_store_is_removed_and_server_stopped_on_close() -> None:
    s = await jk.Stream.open()
    assert s.embedded
    store = s.store_dir
    assert store is not None and store.is_dir()
    pid = (await s.health())["server"]["pid"]
    assert alive(pid)
    await s.close()
    assert not store.exists()
    assert not alive(pid)
    with pytest.raises(jk.StreamClosedError):
        await s.publish("a.b", b"x")


async def test_store_files_are_private_and_server_listens_on_loopback(
    core: jk.Stream, store: Path
) -> None:
    for name in (_files.CREDS_FILE, _files.CONF_FILE):
        mode = stat.S_IMODE((store / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    conf = (store / _files.CONF_FILE).read_text()
    assert 'host: "127.0.0.1"' in conf
    assert (store / "jetstream").is_dir()
    url = core.server_url
    assert url is not None and url.startswith("nats://127.0.0.1:")
    assert int(url.rsplit(":", 1)[1]) == server_of(core).port > 0  # the port it chose


async def test_client_without_credentials_is_refused(core: jk.Stream) -> None:
    assert core.server_url is not None
    with pytest.raises(jk.ConnectionError, match=r"[Aa]uthorization"):
        await jk.Stream.open(servers=[core.server_url], connect_timeout=2)


async def test_second_open_attaches_and_closing_it_leaves_the_server(
    core: jk.Stream, store: Path, topic: str
) -> None:
    other = await jk.Stream.open(store_dir=store)
    assert not other.embedded
    assert (await other.health())["server"]["attached"] is True
    got: list[bytes] = []
    sub = await core.subscribe(topic, lambda m: got.append(m.data))
    await other.publish(topic, b"from-attached")
    await wait_until(lambda: got == [b"from-attached"])
    await other.close()
    await core.healthy()
    await sub.stop()


async def test_sync_always_is_written_to_the_config(tmp_path: Path) -> None:
    async with jk.Stream.open(store_dir=tmp_path, sync_always=True) as s:
        await s.healthy()
        assert "sync_interval: always" in (tmp_path / _files.CONF_FILE).read_text()


async def test_a_port_in_use_is_refused_and_the_store_opens_after(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(jk.PortInUseError, match=str(port)):
            await jk.Stream.open(store_dir=tmp_path, port=port)
    # the failed attempt released the store: it opens now
    async with jk.Stream.open(store_dir=tmp_path) as s:
        await s.healthy()


@pytest.mark.slow
async def test_crashed_server_is_restarted_and_stored_data_survives(
    tmp_path: Path, topic: str
) -> None:
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        ack = await s.publish(topic, b"before")
        assert ack is not None
        server = server_of(s)
        assert server is not None
        old_pid = server.pid
        kill_server(server)
        await wait_until(lambda: server.restart_count == 1 and server.running, timeout=20)
        assert server.pid != old_pid
        await wait_until(lambda: nc_of(s).is_connected, timeout=20)
        ack2 = await s.publish(topic, b"after")
        assert ack2 is not None and ack2.seq == ack.seq + 1
        info = await s.topic_info(topic)
        assert info.messages == 2
        await s.healthy()


OWNER = """
import asyncio, sys
import jetkit as jk

async def main():
    s = await jk.Stream.open(store_dir=sys.argv[1], default_mode=jk.TopicMode.JETSTREAM)
    await s.publish("kill.test", b"stored")
    print((await s.health())["server"]["pid"], flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_server_dies_with_a_sigkilled_owner_and_the_store_opens_again(
    tmp_path: Path,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OWNER, str(tmp_path), stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        server_pid = int(line)
        assert alive(server_pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    await wait_until(lambda: not alive(server_pid), timeout=10)
    info = json.loads((tmp_path / _files.INFO_FILE).read_text())
    assert info["pid"] == server_pid  # left behind by the dead owner: must not confuse us
    async with jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM) as s:
        assert s.embedded
        assert (await s.topic_info("kill.test")).messages == 1


@pytest.mark.slow
async def test_attached_stream_takes_over_when_the_owner_closes(tmp_path: Path) -> None:
    owner = await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM)
    client = await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM)
    try:
        assert not client.embedded
        got: list[bytes] = []

        async def handler(data: bytes) -> None:
            got.append(data)

        await client.subscribe("takeover.t", handler, durable="d", ack=jk.AckPolicy.MANUAL)
        await owner.publish("takeover.t", b"one")
        await wait_until(lambda: got == [b"one"])
        url = client.server_url
        await owner.close()
        await wait_until(lambda: client.embedded and nc_of(client).is_connected, timeout=20)
        assert client.server_url == url  # same port: the reconnect found it
        await client.publish("takeover.t", b"two")
        await wait_until(lambda: got == [b"one", b"two"], timeout=20)
        await client.healthy()
        pid = (await client.health())["server"]["pid"]
    finally:
        await client.close()
        await owner.close()
    assert not alive(pid)


async def test_connect_info_lets_another_client_in(core: jk.Stream, topic: str) -> None:
    import nats

    info = core.connect_info()
    assert info["servers"] == [core.server_url] and info["user"] and info["password"]
    got: list[bytes] = []
    sub = await core.subscribe(topic, lambda m: got.append(m.data))
    nc = await nats.connect(**info)
    try:
        await nc.publish(topic, b"from nats-py")
        await nc.flush()
        await wait_until(lambda: got == [b"from nats-py"])
    finally:
        await nc.close()
        await sub.stop()


# -- stopping the server (issue 29) --------------------------------------------------------


def _kills(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "killing it" in r.getMessage()]


async def test_a_server_writing_its_state_is_waited_for_not_killed(
    tmp_path: Path, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No grace at all: the stop before killed the server at once; one that progresses
    (60 durables' state to write, its CPU time moving) is waited for until it exits."""
    caplog.set_level(logging.INFO, logger="jetkit")
    s = await jk.Stream.open(store_dir=tmp_path, default_mode=jk.TopicMode.JETSTREAM)
    try:
        for i in range(60):
            sub = await s.subscribe(f"{topic}.{i}", lambda m: None, durable=f"d{i}")
            await sub.drain()
        server = server_of(s)
        pid = server.pid
        assert pid is not None
        await server.stop(grace=0)
    finally:
        await s.close()
    assert not alive(pid)
    assert _kills(caplog) == []
    assert (tmp_path / _files.LOG_FILE).read_text().rstrip().endswith("Server Exiting..")


@pytest.mark.slow
async def test_a_hung_server_is_still_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that makes no progress (SIGSTOPped: SIGTERM stays pending, its CPU time
    stands still) is killed once the grace is over (none here)."""
    caplog.set_level(logging.WARNING, logger="jetkit")
    s = await jk.Stream.open(store_dir=tmp_path)
    server = server_of(s)
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        await server.stop(grace=0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        await s.close()
    assert not alive(pid)
    assert len(_kills(caplog)) == 1
    assert "Server Exiting" not in (tmp_path / _files.LOG_FILE).read_text()

"""The store is private: created 0700, files 0600, links never followed, never without auth."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

import jetkit as jk
from jetkit import _files

WRITTEN = (_files.CONF_FILE, _files.CREDS_FILE, _files.INFO_FILE, _files.LOG_FILE)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


async def test_store_is_created_0700_and_every_file_is_0600(
    tmp_path: Path, umask_zero: None
) -> None:
    store = tmp_path / "new" / "store"
    async with jk.Stream.open(store_dir=store):
        assert mode(store) == 0o700
        for name in (*WRITTEN, _files.LOCK_FILE):
            assert mode(store / name) == 0o600, name
        assert not [p for p in store.iterdir() if p.name.endswith(".tmp")]


async def test_planted_links_do_not_redirect_what_jetkit_writes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    # the temporary names an older jetkit used, and the log itself
    for name in WRITTEN:
        (store / f"{name}.tmp").symlink_to(victim)
    (store / _files.LOG_FILE).unlink(missing_ok=True)
    (store / _files.LOG_FILE).symlink_to(victim)
    async with jk.Stream.open(store_dir=store):
        assert victim.read_text() == "untouched"
        log = store / _files.LOG_FILE
        assert not log.is_symlink() and "Server is ready" in log.read_text()
        password = json.loads((store / _files.CREDS_FILE).read_text())["password"]
    assert password not in victim.read_text()


async def test_credentials_file_with_empty_strings_gets_new_ones(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    (store / _files.CREDS_FILE).write_text(json.dumps({"user": "", "password": ""}))
    async with jk.Stream.open(store_dir=store) as s:
        info = s.connect_info()
        assert info["user"] and info["password"]
        assert (await server_info(s))["auth_required"] is True
        nc = await nats.connect(**info)  # the new ones work
        await nc.close()


async def server_info(s: jk.Stream) -> dict[str, object]:
    """The INFO the server sends to any client before it authenticates."""
    url = urllib.parse.urlparse(s.connect_info()["servers"][0])
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        line = await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()
    assert line.startswith(b"INFO ")
    info: dict[str, object] = json.loads(line[5:])
    return info


async def test_explicit_user_and_password_start_the_server_with_them(tmp_path: Path) -> None:
    async with jk.Stream.open(store_dir=tmp_path / "s", user="alice", password="pw-1") as s:
        assert (s.connect_info()["user"], s.connect_info()["password"]) == ("alice", "pw-1")
        assert (await server_info(s))["auth_required"] is True
        with pytest.raises(jk.ConnectionError, match=r"(?i)authorization"):
            await jk.Stream.open(servers=s.connect_info()["servers"], user="alice", password="x")
        other = await jk.Stream.open(store_dir=tmp_path / "s", user="alice", password="pw-1")
        assert not other.embedded  # attached with the same credentials
        await other.close()


async def test_a_store_dir_inside_a_store_or_a_file_is_refused_and_the_store_stays_intact(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
        await s.publish("inside.t", b"kept")
    data = store / "jetstream"
    assert (data / "$G").is_dir()
    for wrong in (data, data / "$G" / "streams", store / "sub"):
        with pytest.raises(jk.ConfigError, match=r"inside the jetkit store|data itself"):
            await jk.Stream.open(store_dir=wrong)
    assert not (data / "jetstream").exists()  # nothing was moved
    a_file = tmp_path / "file.json"
    a_file.write_text("{}")
    with pytest.raises(jk.StoreNotWritableError, match="is a file, not a directory"):
        await jk.Stream.open(store_dir=a_file)
    async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
        assert (await s.topic_info("inside.t")).messages == 1  # the real store is intact

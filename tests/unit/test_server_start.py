"""Opening refused or failed before any nats-server runs: an unwritable or insecure store,
a missing, too old or broken binary (shell scripts that only play one), a server that
never gets ready, an unreachable external server."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import jetkit as jk
from conftest import alive, free_port
from jetkit import _server


async def test_a_store_under_a_file_is_refused_as_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(jk.StoreNotWritableError, match="not writable"):
        await jk.Stream.open(store_dir=blocker / "store")


async def test_a_missing_binary_is_refused_naming_where_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(jk.ServerBinaryError, match="does not exist"):
        await jk.Stream.open(store_dir=tmp_path, server_binary=tmp_path / "nope")
    monkeypatch.setenv(_server.BINARY_ENV, str(tmp_path / "nope"))
    with pytest.raises(jk.ServerBinaryError, match=_server.BINARY_ENV):
        await jk.Stream.open(store_dir=tmp_path)


def fake_server(tmp_path: Path, version: str, body: str) -> Path:
    script = tmp_path / f"fake-nats-{version}"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            if [ "$1" = "--version" ]; then echo "nats-server: v{version}"; exit 0; fi
            {body}
            """
        )
    )
    script.chmod(0o755)
    return script


async def test_a_binary_older_than_2_10_is_refused_naming_both_versions(tmp_path: Path) -> None:
    old = fake_server(tmp_path, "2.2.0", "exit 0")
    with pytest.raises(jk.ServerBinaryError, match=r"2\.2\.0.*>= 2\.10"):
        await jk.Stream.open(store_dir=tmp_path / "s", server_binary=old)


async def test_a_server_that_exits_at_start_fails_the_open_with_its_last_words(
    tmp_path: Path,
) -> None:
    bad = fake_server(tmp_path, "2.12.0", 'echo "[FTL] something broke" >&2; exit 3')
    with pytest.raises(jk.ServerStartError, match="something broke"):
        await jk.Stream.open(store_dir=tmp_path / "s", server_binary=bad)


async def test_a_server_that_never_gets_ready_times_out_and_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    slow = fake_server(tmp_path, "2.12.0", f"echo $$ > {pidfile}; exec sleep 30")
    with pytest.raises(jk.ServerTimeoutError, match="server_ready_timeout"):
        await jk.Stream.open(store_dir=tmp_path / "s", server_binary=slow, server_ready_timeout=0.5)
    assert not alive(int(pidfile.read_text()))


async def test_an_unreachable_external_server_is_a_connection_error() -> None:
    port = free_port()
    with pytest.raises(jk.ConnectionError, match="cannot connect"):
        await jk.Stream.open(servers=[f"nats://127.0.0.1:{port}"], connect_timeout=1)


@pytest.mark.parametrize("bits", [0o020, 0o002])
async def test_store_writable_by_others_is_refused(tmp_path: Path, bits: int) -> None:
    store = tmp_path / "shared"
    store.mkdir()
    store.chmod(0o700 | bits)
    with pytest.raises(jk.InsecureStoreError, match="chmod go-w"):
        await jk.Stream.open(store_dir=store)
    assert list(store.iterdir()) == []  # nothing was written, nothing started

"""A full disk: a clear StorageFullError (never a timeout), healthy() says so, and storing
resumes once space is freed, without reopening. Needs root to mount a small tmpfs."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import jetkit as jk
from conftest import nc_of, server_of, wait_until

pytestmark = pytest.mark.faults

TOPIC = "disk.events"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs, unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the disk-full tests needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(path: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = path / "filler"
    block = b"\0" * (1 << 20)
    with filler.open("wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(block)
            fh.flush()
    return filler


async def test_disk_filled_under_the_server_then_freed(small_disk: Path) -> None:
    # a publish_timeout far longer than the test's wait: a timeout cannot pass for the error
    async with jk.Stream.open(
        store_dir=small_disk / "store",
        default_mode=jk.TopicMode.JETSTREAM,
        publish_timeout=120,
    ) as s:
        acked = [await s.publish(TOPIC, f"m{i}".encode()) for i in range(20)]
        filler = fill_disk(small_disk)
        payload = b"x" * 4096
        with pytest.raises(jk.StorageFullError, match="out of disk space") as caught:
            for _ in range(10_000):  # the server may fit a few more in a partly used page
                acked.append(await s.publish(TOPIC, payload))
        assert "Free disk space" in str(caught.value)
        with pytest.raises(jk.StorageFullError):  # fails fast from now on
            await s.publish(TOPIC, b"more")
        with pytest.raises(jk.StreamUnhealthyError, match="out of disk space"):
            await s.healthy()

        filler.unlink()
        await wait_until(lambda: server_of(s).storage_error is None, 20)
        await wait_until(lambda: nc_of(s).is_connected, 20)
        await s.healthy()
        after = await s.publish(TOPIC, b"after")
        assert after is not None
        info = await s.topic_info(TOPIC)
        assert info.messages == len(acked) + 1  # every acknowledged message is there


async def test_storage_limit_reached_then_purged(small_disk: Path) -> None:
    # JetStream's own limit (3/4 of the free space when the server started) is hit first
    async with jk.Stream.open(
        store_dir=small_disk / "store", default_mode=jk.TopicMode.JETSTREAM, max_payload=1 << 20
    ) as s:
        payload = b"y" * ((1 << 20) - 100)
        with pytest.raises(jk.StorageFullError, match="storage limit is reached") as caught:
            for _ in range(100):
                await s.publish(TOPIC, payload)
        assert "Purge or delete topics" in str(caught.value)
        with pytest.raises(jk.StreamUnhealthyError, match="storage limit"):
            await s.healthy()
        await s.purge_topic(TOPIC)
        assert await s.publish(TOPIC, b"room again") is not None
        await s.healthy()

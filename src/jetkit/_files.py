"""The files jetkit writes in a store: private (0600), never through a link.

Every file is written through a temporary file created with O_EXCL | O_NOFOLLOW and
then renamed, so a link planted at any name cannot redirect what jetkit writes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

LOCK_FILE = "jetkit.lock"
INFO_FILE = "jetkit-server.json"
CREDS_FILE = "jetkit-credentials.json"
CONF_FILE = "nats-server.conf"
LOG_FILE = "nats-server.log"
CLUSTER_FILE = "jetkit-cluster.json"  # a local cluster's (_cluster), while it runs
PORTS_FILE = "jetkit-cluster-ports.json"  # a local cluster's ports, kept for its next start


def is_cluster_dir(path: Path) -> bool:
    """Whether ``path`` is a local cluster's directory (``jetkit cluster``), running or
    not: never a store to serve."""
    path = path.expanduser()
    return any(
        p.exists() for p in (path / CLUSTER_FILE, path / PORTS_FILE, path / "n1" / CONF_FILE)
    )


PRIVATE = 0o600
_ROOM = 16 * 1024 * 1024  # free space that counts as room to store again
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create_private(directory: Path, name: str) -> tuple[int, Path]:
    """A new 0600 file with a random name next to ``name``: (fd, path). Never follows links."""
    for _ in range(100):
        path = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(path, _NEW_FILE, PRIVATE)
        except FileExistsError:
            continue
        os.fchmod(fd, PRIVATE)  # whatever the umask
        return fd, path
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


def write_private(path: Path, text: str) -> None:
    """Write ``path`` (0600) atomically: a new temporary file, then a rename over it."""
    fd, tmp = create_private(path.parent, path.name)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def open_log(path: Path) -> int:
    """A fresh, empty 0600 log file at ``path`` (replacing the last one); its fd."""
    fd, tmp = create_private(path.parent, path.name)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd


def free_space(store_dir: Path) -> int | None:
    """Bytes free for us on the store's filesystem (None if that cannot be read)."""
    try:
        st = os.statvfs(store_dir)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def has_room(store_dir: Path) -> bool:
    """Whether the store's disk has room to store again: 16 MiB free (or a tenth of a
    small filesystem). True when it cannot be told."""
    try:
        st = os.statvfs(store_dir)
    except OSError:
        return True
    room = min(_ROOM, st.f_blocks * st.f_frsize // 10)
    return st.f_bavail * st.f_frsize >= room

"""The store directory: who may use it, its lock, its private files, its credentials.

A store holds a generated password and the server's data, so it is private: jetkit
creates it 0700 and refuses one that other users could write to (they could replace
the config or plant links). Every file jetkit writes there is 0600 and is written
through a temporary file created with O_EXCL | O_NOFOLLOW and then renamed, so a
link planted at any name cannot redirect what jetkit writes.

nats-server does not lock its store, so jetkit does: the process that starts the
server takes an exclusive ``flock`` on ``jetkit.lock`` and hands the same open file
to the server, so the lock is released only when both are gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
from pathlib import Path

from ._errors import InsecureStoreError, StoreNotWritableError

LOCK_FILE = "jetkit.lock"
INFO_FILE = "jetkit-server.json"
CREDS_FILE = "jetkit-credentials.json"
CONF_FILE = "nats-server.conf"
LOG_FILE = "nats-server.log"

_ROOM = 16 * 1024 * 1024  # free space that counts as room to store again
_PRIVATE = 0o600
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def prepare(store_dir: Path) -> None:
    """Create the store (0700) or check an existing one; prove it is writable."""
    try:
        store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(store_dir)
    except OSError as exc:
        raise _not_writable(store_dir, exc) from exc
    if info.st_uid != os.geteuid():
        raise InsecureStoreError(
            f"store directory {str(store_dir)!r} belongs to another user (uid {info.st_uid}); "
            "a store holds a password and your data: use a directory of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InsecureStoreError(
            f"store directory {str(store_dir)!r} is writable by other users (mode "
            f"{stat.filemode(info.st_mode)}); they could replace its files. Run "
            f"`chmod go-w {store_dir}` (or `chmod 700`), or choose another store_dir"
        )
    try:
        probe = create_private(store_dir, ".jetkit-probe")
        os.close(probe[0])
        os.unlink(probe[1])
    except OSError as exc:
        raise _not_writable(store_dir, exc) from exc


def _not_writable(store_dir: Path, exc: OSError) -> StoreNotWritableError:
    return StoreNotWritableError(
        f"store directory {str(store_dir)!r} is not writable ({exc.strerror or exc}); "
        "choose another store_dir or fix its permissions"
    )


def create_private(directory: Path, name: str) -> tuple[int, Path]:
    """A new 0600 file with a random name next to ``name``: (fd, path). Never follows links."""
    for _ in range(100):
        path = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(path, _NEW_FILE, _PRIVATE)
        except FileExistsError:
            continue
        os.fchmod(fd, _PRIVATE)  # whatever the umask
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


def try_lock(store_dir: Path) -> int | None:
    """Take the store's lock; the fd on success, None if a live server holds it."""
    fd = os.open(
        store_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _PRIVATE
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def load_or_create_credentials(store_dir: Path, log: logging.Logger) -> tuple[str, str]:
    """The store's generated user and password, created on first use (file mode 0600).

    A file that cannot be read, or that holds an empty user or password (which would
    start a server without authentication), is replaced by new credentials.
    """
    path = store_dir / CREDS_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as fh:
            data = json.load(fh)
        user, password = data["user"], data["password"]
        if isinstance(user, str) and isinstance(password, str) and user and password:
            return user, password
        log.warning("jetkit: %s holds an empty user or password; generating new ones", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("jetkit: cannot read %s (%s); generating new credentials", path, exc)
    user, password = "jetkit", secrets.token_urlsafe(24)
    write_private(path, json.dumps({"user": user, "password": password}))
    return user, password


def read_attach_info(store_dir: Path) -> dict[str, object] | None:
    """Where the live server of this store listens (written by its owner), or None."""
    try:
        fd = os.open(store_dir / INFO_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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

"""One ``jetkit.sync.Stream`` per process, opened on first use: for Flask, Django and
any other WSGI app.

Servers that fork (gunicorn, uWSGI) may import the app in one process and serve it in
children made by ``os.fork()``. A Stream opened before the fork belongs to the parent:
jetkit refuses it in a child (``jk.ForkedStreamError``). So the Stream is opened by
the process that uses it, on first use, and a child forgets the one it inherited.
jetkit closes a Stream still open when the interpreter exits; ``close()`` does it
earlier (gunicorn's ``worker_exit`` hook).
"""

import os
import threading

import jetkit as jk
import jetkit.sync

STORE_DIR = os.environ.get("SHOP_STORE_DIR", "./jetstream-store")

_lock = threading.Lock()
_stream: jetkit.sync.Stream | None = None


def stream() -> jetkit.sync.Stream:
    """This process's Stream, opened on first use (thread-safe)."""
    global _stream
    with _lock:
        if _stream is None:
            _stream = jetkit.sync.Stream.open(
                store_dir=STORE_DIR, default_mode=jk.TopicMode.JETSTREAM
            )
        return _stream


def close() -> None:
    """Close this process's Stream, if it opened one."""
    global _stream
    with _lock:
        if _stream is not None:
            _stream.close()
            _stream = None


def _forget_after_fork() -> None:
    global _lock, _stream
    _lock = threading.Lock()  # another thread may have held the parent's at the fork
    _stream = None  # the parent's: the child opens its own on first use


os.register_at_fork(after_in_child=_forget_after_fork)

"""After ``os.fork()``: a child must not use what its parent's jetkit objects run on.

A forked child gets a copy of every object but only the thread that forked: a Stream's
event loop, the sync Stream's loop thread and the server's supervisor stay in the
parent, and the child shares the parent's sockets and the store's lock. So the objects
that would act on those (``jk.Stream``, ``jetkit.sync``'s runner, ``EmbeddedServer``)
register here, and in the child each is told, before any other code of the child runs,
that it was forked (``_after_fork_in_child``): it sets a flag that its calls check first
and lets go of what must not outlive the parent (the store's lock). Nothing here takes a
lock, since another thread of the parent may have held it at the moment of the fork.

The hook also runs in the short-lived child that ``subprocess`` makes when given a
``preexec_fn`` (jetkit's own server start does), before it executes the new program.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Protocol

from ._errors import ForkedStreamError


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_tracked: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def track(obj: ForkAware) -> None:
    """Tell ``obj`` when this process forks (in the child); forgotten when collected."""
    _tracked.add(obj)


def forked_error(what: str, pid: int) -> ForkedStreamError:
    """The error every call of a Stream raises in a child of the process ``pid``."""
    return ForkedStreamError(
        f"this {what} was opened in another process (pid {pid}); open a new Stream after fork"
    )


def _after_fork_in_child() -> None:
    objs = list(_tracked)
    _tracked.clear()  # the child's own objects register anew
    for obj in objs:
        with contextlib.suppress(Exception):  # the child must go on; nothing to tell
            obj._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

"""The handler threads of a ``jetkit.sync`` Stream (its loop's default executor)."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

here = threading.local()  # .runner: the sync Stream runner whose handler thread this is


MAX_THREADS = 4096


class HandlerThreads(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor: sync handlers (and jetkit's ``to_thread`` calls) run here.

    A ThreadPoolExecutor only by type (asyncio requires one): its own submit and
    threads, because ThreadPoolExecutor refuses work once the interpreter begins to
    exit, and the atexit close still needs threads to drain handlers and to wait for the
    server to stop. Its threads are daemon threads that know their Stream
    (``here.runner``), which is how the deadlock guard recognises them.
    """

    def __init__(self, runner: object) -> None:
        super().__init__(thread_name_prefix="jetkit-sync-handler")
        self._runner = runner
        # not ThreadPoolExecutor's small default: a handler blocked in a call that needs
        # another thread (a request answered by this Stream's responder, the server's
        # stop in close()) would wait for a thread that never comes. Each subscription's
        # concurrency bounds its own handlers; threads are made only when none is idle.
        self._max = MAX_THREADS
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._shut = False

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        with self._lock:
            if self._shut:
                raise RuntimeError("this jetkit.sync.Stream is closed")
            self._queue.put(run)
            if not self._idle.acquire(blocking=False) and len(self._workers) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"jetkit-sync-handler-{len(self._workers)}"
                )
                thread.daemon = True
                thread.start()
                self._workers.append(thread)
        return future

    def _work(self) -> None:
        here.runner = self._runner
        while True:
            job = self._queue.get()
            if job is None:
                return
            job()
            del job
            self._idle.release()

    def join_idle(self, timeout: float) -> None:
        """After shutdown: wait (up to ``timeout`` in all) for the threads to end."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._workers)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let the threads end once idle (a handler still running finishes on its own)."""
        with self._lock:
            self._shut = True
            threads = list(self._workers)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()

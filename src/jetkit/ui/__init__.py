"""``jetkit ui``: a local web console for topics, consumers and dead letters.

Needs the ``ui`` extra (Starlette, uvicorn, Jinja2), imported only by the command: the
library and the other commands never load it. Serves on 127.0.0.1 only; every
request must carry the random token of the URL printed at start (``_guard``). The
pages (``_app``) read through one Stream and a ``Sampler`` (``_state``) that keeps
the lag history the charts are drawn from.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import signal
import socket
import webbrowser
from collections.abc import Callable, Iterator

import uvicorn

import jetkit as jk

from .._tools import Target
from ._app import create_app
from ._state import INTERVAL, Sampler

__all__ = ["create_app", "serve"]

_log = logging.getLogger("jetkit")


class _Server(uvicorn.Server):
    """uvicorn, with signals left to ``serve`` (uvicorn re-raises a caught SIGINT after
    shutting down, which would end the command with 130 instead of 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# what uvicorn logs about requests the Guard answers anyway: any web page can open a
# WebSocket to 127.0.0.1:PORT, and any local user can send garbage, which must not
# write to the terminal of whoever runs the console
_NOT_OURS = (
    "Unsupported upgrade request",
    "No supported WebSocket library",
    "Invalid HTTP request received",
)


class _Quiet(logging.Filter):
    """Keeps uvicorn's messages about requests of others (``_NOT_OURS``) off stderr.
    And stopped while a request ran (Ctrl+C during a long re-drive): uvicorn cancels it
    after its grace period and logs that as an error with a traceback. One line says
    it instead, once the console has stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = False

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith(_NOT_OURS):
            return False
        if "graceful shutdown exceeded" in text:
            self.cut = True
            return False
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


def listen(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` (0: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise jk.PortInUseError(
                f"port {port} on 127.0.0.1 is taken: pass another --port, or 0 for a free one"
            ) from None
        raise jk.ConfigError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(
    target: Target,
    *,
    port: int = 0,
    open_browser: bool = True,
    write: Callable[[str], None],
    interval: float = INTERVAL,
) -> None:
    """Serve the console until SIGINT or SIGTERM; ``write`` gets the one URL line."""
    sock = listen(port)
    try:
        port = sock.getsockname()[1]
        token = secrets.token_urlsafe(32)
        # the browser gets a URL good for one visit: its command line is public (ps)
        once = secrets.token_urlsafe(32)
        async with target.open() as stream:
            sampler = Sampler(stream, interval)
            config = uvicorn.Config(
                create_app(sampler, token, port, once=[once]),
                log_level="warning",
                access_log=False,
                lifespan="off",
                ws="none",  # no WebSocket: an upgrade request is a plain one to the Guard
                timeout_graceful_shutdown=3,
            )
            server = _Server(config)
            cut_short = _Quiet()
            uvicorn_log = logging.getLogger("uvicorn.error")
            uvicorn_log.addFilter(cut_short)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            sampling = asyncio.ensure_future(sampler.run(stop))
            serving = asyncio.ensure_future(server.serve(sockets=[sock]))
            url = f"http://127.0.0.1:{port}/?token={token}"
            write(url)
            if open_browser:
                once_url = f"http://127.0.0.1:{port}/?token={once}"
                await loop.run_in_executor(None, webbrowser.open, once_url)
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            stop.set()
            await asyncio.gather(serving, sampling, stopped, return_exceptions=True)
            uvicorn_log.removeFilter(cut_short)
            if cut_short.cut:
                _log.warning(
                    "jetkit ui: stopped while a request still ran; a re-drive cut short "
                    "leaves the rest in the DLQ: re-drive again (within the topic's "
                    "duplicate window, the letter it was sending is not sent twice)"
                )
            failed = serving.exception()
            if failed is not None:
                raise failed
    finally:
        sock.close()

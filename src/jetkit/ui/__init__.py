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
import secrets
import signal
import socket
import webbrowser
from collections.abc import Callable, Iterator

import uvicorn

import jetkit as jk

from .._cli_target import Target
from ._app import create_app
from ._state import INTERVAL, Sampler

__all__ = ["create_app", "serve"]


class _Server(uvicorn.Server):
    """uvicorn, with signals left to ``serve`` (uvicorn re-raises a caught SIGINT after
    shutting down, which would end the command with 130 instead of 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
        async with target.open() as stream:
            sampler = Sampler(stream, interval)
            config = uvicorn.Config(
                create_app(sampler, token, port),
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=3,
            )
            server = _Server(config)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            sampling = asyncio.ensure_future(sampler.run(stop))
            serving = asyncio.ensure_future(server.serve(sockets=[sock]))
            url = f"http://127.0.0.1:{port}/?token={token}"
            write(url)
            if open_browser:
                await loop.run_in_executor(None, webbrowser.open, url)
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            stop.set()
            await asyncio.gather(serving, sampling, stopped, return_exceptions=True)
            failed = serving.exception()
            if failed is not None:
                raise failed
    finally:
        sock.close()

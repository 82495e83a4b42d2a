"""One worker process of ``jetkit run``: ``python -m jetkit._worker SPEC``.

The supervisor (``_runner``) starts it with SPEC, a JSON object: ``app`` (MODULE:APP),
``index`` (its slot, 0..N-1), ``path`` (the directory put first on ``sys.path``),
``report_fd`` (the write end of a pipe it inherited) and ``overrides`` (``Stream.open``
options that replace the App's: ``store_dir`` or ``servers``, and the metrics port).

It imports the App and runs ``app.run_until_stopped(ready=...)``: a first SIGTERM or
SIGINT stops pulling and lets running handlers finish within ``drain_timeout``, a
second one stops at once. On the pipe it reports, as JSON lines, ``{"ready": true,
...}`` once every subscriber and responder is registered, and again whenever its
connection goes down or comes back, or it takes over the store's server (``owner``);
its metrics URL, if any. When it exits the pipe closes, which the supervisor reads as
"not ready". Exit codes: 0 stopped by a signal, 2 the App could not be loaded, 1 the
App failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from typing import Any

from ._app import App, load_app
from ._errors import JetkitError
from ._stream import Stream

POLL = 0.2  # seconds between two looks at the connection (for readiness)


class Reporter:
    """Writes the worker's state to the supervisor's pipe (a supervisor gone: ignored)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def send(self, **state: Any) -> None:
        line = json.dumps(state).encode() + b"\n"
        with contextlib.suppress(OSError):  # PIPE_BUF-sized lines are written whole
            os.write(self._fd, line)


async def watch(stream: Stream, reporter: Reporter) -> None:
    """Report readiness (connected, subscriptions registered) and ownership as they change."""
    last: tuple[bool, bool] | None = None
    while not stream.closed:
        state = (stream.connected, stream.embedded)
        if state != last:
            reporter.send(ready=state[0], owner=state[1], metrics=stream.metrics_url)
            last = state
        await asyncio.sleep(POLL)
    reporter.send(ready=False, owner=False, metrics=None)


async def serve(app: App, reporter: Reporter, overrides: dict[str, Any]) -> None:
    watching: list[asyncio.Task[None]] = []

    def ready() -> None:
        watching.append(asyncio.get_running_loop().create_task(watch(app.stream, reporter)))

    try:
        await app.run_until_stopped(ready=ready, **overrides)
    finally:
        for task in watching:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    index = int(spec["index"])
    sys.path.insert(0, spec["path"])
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s jetkit worker {index} [%(process)d] %(levelname)s %(name)s: "
        "%(message)s",
    )
    log = logging.getLogger("jetkit.run")
    reporter = Reporter(int(spec["report_fd"]))
    try:
        try:
            app = load_app(spec["app"])
        except JetkitError as exc:
            log.error("%s", exc)
            return 2
        asyncio.run(serve(app, reporter, spec["overrides"]))
    except KeyboardInterrupt:  # SIGINT before the App's own handler was in place
        return 0
    except JetkitError as exc:
        log.error("the app stopped: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

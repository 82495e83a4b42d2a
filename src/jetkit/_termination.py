"""Stopping the embedded nats-server: SIGTERM, waited for while it makes progress,
SIGKILL only once it is stuck.

A graceful stop writes every stream's and consumer's state before the process exits;
a SIGKILL in the middle undoes acks not yet written and can leave state half-written.
How long the graceful stop takes grows with the store: nats-server stops the consumers
one after the other, and each one whose state is not yet written waits about 10 ms for
its state writer (``consumerFileStore.Stop`` -> ``waitOnFlusher``). nats-server 2.15.1
waits there for every consumer, even with nothing to write, so 2,000 durables take over
20 s on any machine with it (the bundled 2.14.6 stops them in 0.4-1.3 s here; see
docs/performance.md). So there is no single right timeout:

* for the first ``grace`` seconds the server is simply waited for (as before);
* after that it is waited for as long as it progresses: its CPU time (read from
  ``/proc``) advanced within the last ``STALL`` seconds. A stopping server uses CPU
  all along (about 80 ms a second while it stops consumers); a stopped (SIGSTOP),
  deadlocked or blocked one uses none;
* and never longer than a bound that grows with the store: ``grace`` plus ``STALL``
  plus ``PER_ITEM`` seconds for each stream and consumer in it (a server spinning for
  ever is still killed).

Where ``/proc`` cannot be read (not Linux), progress is unknown: the bound alone
applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path

STALL = 3.0  # seconds without CPU progress after which a stopping server is stuck
PER_ITEM = 0.05  # seconds of the bound per stream and per consumer in the store
POLL = 0.5  # how often progress is read once the grace is over


def store_items(store_dir: Path) -> int:
    """How many streams and consumers the store holds (counted from its directories:
    ``jetstream/<account>/streams/<stream>/obs/<consumer>``)."""
    count = 0
    with contextlib.suppress(OSError):
        for account in os.scandir(store_dir / "jetstream"):
            streams = Path(account.path) / "streams"
            with contextlib.suppress(OSError):
                for stream in os.scandir(streams):
                    count += 1
                    with contextlib.suppress(OSError):
                        count += sum(1 for _ in os.scandir(Path(stream.path) / "obs"))
    return count


def cpu_ticks(pid: int) -> int | None:
    """The CPU time ``pid`` has used (user + system, in clock ticks); None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def stuck(elapsed: float, idle: float, grace: float, bound: float) -> bool:
    """Whether a server ``elapsed`` seconds into its graceful stop, whose CPU time stood
    still for the last ``idle`` seconds, is to be killed."""
    if elapsed < grace:
        return False
    return elapsed >= bound or idle >= STALL


async def terminate(
    proc: subprocess.Popen[bytes], grace: float, store_dir: Path, log: logging.Logger
) -> bool:
    """Stop ``proc`` gracefully (see the module docstring); kill it once it is stuck.
    True if it had to be killed."""
    items = store_items(store_dir)
    bound = grace + STALL + PER_ITEM * items
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    started = time.monotonic()
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(proc.wait, grace)
        return False
    ticks, moved = cpu_ticks(proc.pid), time.monotonic()
    told = False
    while True:
        now = time.monotonic()
        seen = cpu_ticks(proc.pid)
        if seen is None or seen != ticks:  # (unknown counts as progress: the bound rules)
            ticks, moved = seen, now
        if stuck(now - started, now - moved, grace, bound):
            break
        if not told:
            told = True
            log.info(
                "nats-server is still writing its state %.0fs after SIGTERM (%d streams "
                "and consumers in %s); waiting while it progresses",
                now - started,
                items,
                store_dir,
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, POLL)
            return False
    now = time.monotonic()
    if now - moved >= STALL:
        why = f"no progress for {now - moved:.0f}s"
    else:
        why = f"still busy after {now - started:.0f}s, the most this store may take"
    log.warning("nats-server did not stop on SIGTERM (%s); killing it", why)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(proc.wait, 5)
    return True

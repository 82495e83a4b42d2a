"""Damage in an embedded store: found on open, reported, and repaired where it can be.

nats-server recovers what it can from a damaged store and mostly says nothing a user
would see: a durable whose state file is empty starts over, a damaged message block
is cut at the first bad record, a stream whose metadata file is damaged is not
loaded at all. jetkit makes that visible. Before the server starts, ``scan`` reads
the store's metadata files; while it starts, the server's own warnings are
collected (``EmbeddedServer.startup_warnings``); ``report`` logs one warning per
damaged topic or durable, naming what is lost and what to do.

Layout (nats-server's, global account ``$G``)::

    jetstream/$G/streams/<stream>/meta.inf, meta.sum      stream config + checksum
    jetstream/$G/streams/<stream>/msgs/<n>.blk            messages
    jetstream/$G/streams/<stream>/obs/<consumer>/o.dat    the durable's position
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path

from ._errors import JetkitError
from ._jsapi import JsApi

# o.dat starts with a magic byte and a version (1 or 2)
_STATE_MAGIC = 0x16
_STATE_VERSIONS = (1, 2)
_STARTS_OVER = (
    "it starts over from its start position, so messages it had acknowledged are delivered again"
)

# server log lines (all [WRN]) that mean damage; the named groups say where
_LOG_PATTERNS = [
    re.compile(
        r"Error adding consumer '[^']* > (?P<stream>[^']+) > (?P<consumer>[^']+)': (?P<why>.*)"
    ),
    re.compile(r"Stream metafile \"(?P<path>[^\"]+)\": (?P<why>.*)"),
    re.compile(r"(?P<why>Missing stream (?:checksum file|metafile)[^\"]*) \"?(?P<path>[^\"]+)"),
    re.compile(
        r"(?P<why>Error (?:unmarshalling|reading) (?:stream |consumer )?metafile) "
        r"\"(?P<path>[^\"]+)\""
    ),
    re.compile(r"Filestore \[(?P<stream>[^\]]+)\] (?P<why>.*)"),
    re.compile(
        r"JetStream consumer '[^']* > (?P<stream>[^']+) > (?P<consumer>[^']+)' (?P<why>delivered "
        r"sequence \d+ past last stream sequence of \d+)"
    ),
]
_FILESTORE = _LOG_PATTERNS[4]
# Filestore warnings that are not damage: an index the server rebuilds from the messages
# after a crash (per-message TTLs, message schedules, sourcing), nothing is dropped
_REBUILT_INDEX = re.compile(r"state is outdated; attempting to recover using \w+ scan")


def streams_dir(store: Path) -> Path:
    return store / "jetstream" / "$G" / "streams"


def consumer_dir(store: Path, stream: str, consumer: str) -> Path:
    return streams_dir(store) / stream / "obs" / consumer


@dataclasses.dataclass
class Damage:
    """What is wrong with a store: per stream, and per (stream, consumer)."""

    streams: dict[str, str] = dataclasses.field(default_factory=dict)
    consumers: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    # streams the server had to repair while loading (blocks cut, state rebuilt)
    repaired: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.streams or self.consumers or self.repaired)


def scan(store: Path) -> Damage:
    """Read the store's metadata files (before the server starts); never raises."""
    damage = Damage()
    root = streams_dir(store)
    try:
        streams = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return damage
    for sdir in streams:
        problem = _meta_problem(sdir)
        if problem:
            damage.streams[sdir.name] = problem
        try:
            consumers = sorted(p for p in (sdir / "obs").iterdir() if p.is_dir())
        except OSError:
            continue
        for cdir in consumers:
            problem = _meta_problem(cdir) or _state_problem(cdir / "o.dat")
            if problem:
                damage.consumers[(sdir.name, cdir.name)] = problem
    return damage


def _meta_problem(directory: Path) -> str | None:
    try:
        json.loads((directory / "meta.inf").read_bytes())
    except FileNotFoundError:
        return "its metadata file meta.inf is missing"
    except (OSError, ValueError):
        return "its metadata file meta.inf is damaged"
    if not (directory / "meta.sum").exists():
        return "its checksum file meta.sum is missing"
    return None


def _state_problem(path: Path) -> str | None:
    try:
        head = path.read_bytes()[:2]
    except FileNotFoundError:
        return f"its position file o.dat is missing: {_STARTS_OVER}"
    except OSError as exc:
        return f"its position file o.dat cannot be read ({exc.strerror})"
    if not head:
        return f"its position file o.dat is empty: {_STARTS_OVER}"
    if head[0] != _STATE_MAGIC or len(head) < 2 or head[1] not in _STATE_VERSIONS:
        return "its position file o.dat is damaged: the server cannot load it"
    return None


def read_log(lines: list[str], store: Path, damage: Damage) -> None:
    """Add what the server's startup warnings say to ``damage``."""
    root = str(streams_dir(store))
    for line in lines:
        for pattern in _LOG_PATTERNS:
            match = pattern.search(line)
            if match is None:
                continue
            found = match.groupdict()
            why = found["why"].strip()
            stream, consumer = found.get("stream"), found.get("consumer")
            path = found.get("path") or ""
            if stream is None and path.startswith(root):
                parts = path[len(root) :].strip("/").split("/")
                stream = parts[0]
                if len(parts) >= 3 and parts[1] == "obs":
                    consumer = parts[2]
            if stream is None:
                break
            if consumer is not None:
                damage.consumers.setdefault((stream, consumer), f"the server said: {why}")
            elif pattern is _FILESTORE:
                if not _REBUILT_INDEX.search(why):
                    damage.repaired.setdefault(stream, []).append(why)
            else:
                damage.streams.setdefault(stream, f"the server said: {why}")
            break


async def report(damage: Damage, store: Path, api: JsApi, log: logging.Logger) -> None:
    """Log a warning per damaged topic or durable, with what was lost and the fix."""
    for stream, why in damage.streams.items():
        log.warning(
            "store %s: stream %r was not loaded: %s. Its messages are still on disk "
            "(%s); declare_topic() its topic (or publish to it) to serve them again "
            "(limits not declared again are reset to jetkit's defaults)",
            store,
            stream,
            why,
            streams_dir(store) / stream,
        )
    for (stream, consumer), why in damage.consumers.items():
        if stream in damage.streams:
            continue
        fix = (
            ""
            if _STARTS_OVER in why
            else "; subscribe with recreate=True to start it over (its position is lost), "
            "or delete_consumer() it"
        )
        log.warning("store %s: durable %r of stream %r: %s%s", store, consumer, stream, why, fix)
    for stream, notes in damage.repaired.items():
        lost = await _lost(api, stream)
        log.warning(
            "store %s: nats-server found damaged files of stream %r and rebuilt it, "
            "dropping what it could not read (%s): %s",
            store,
            stream,
            "; ".join(notes),
            lost or "see the server log",
        )


async def _lost(api: JsApi, stream: str) -> str:
    """What the server says it lost in ``stream`` (once, right after loading it)."""
    try:
        info = await api.call(f"STREAM.INFO.{stream}", {"deleted_details": True})
    except JetkitError:
        return ""
    state = info.get("state", {})
    lost = state.get("lost") or {}
    # the server lists what it lost among the gaps it keeps track of, which also hold
    # messages removed on purpose (re-driven dead letters, delivered schedules, expired
    # or deleted messages): the two cannot be told apart here, so the count says so
    missing = list(lost.get("msgs") or []) or list(state.get("deleted") or [])
    parts = [
        f"{state.get('messages', 0)} messages left (seq {state.get('first_seq', 0)} to "
        f"{state.get('last_seq', 0)})"
    ]
    if missing:
        parts.append(
            f"{len(missing)} lost or missing (seq {_ranges(missing)}; this includes any "
            "removed on purpose earlier: re-driven dead letters, delivered schedules, "
            "expired or deleted messages)"
        )
    if lost.get("bytes"):
        parts.append(f"{lost['bytes']} bytes lost")
    return ", ".join(parts)


def _ranges(seqs: list[int], most: int = 5) -> str:
    """``[1, 2, 3, 7]`` -> ``'1-3, 7'`` (the first few runs)."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs[:most])
    return text + (", ..." if len(runs) > most else "")


def remove_consumer_state(store: Path, stream: str, consumer: str) -> bool:
    """Delete a durable's directory that the server could not load; True if removed."""
    target = consumer_dir(store, stream, consumer)
    root = streams_dir(store).resolve()
    if not target.is_dir() or root not in target.resolve().parents:
        return False
    shutil.rmtree(target, ignore_errors=True)
    return not target.exists()

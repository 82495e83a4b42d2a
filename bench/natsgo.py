"""The reference client, nats.go, as a baseline: built from Debian's packages when Go is found.

``bench/natsgo/runner.go`` is compiled once per source, Go and nats.go version into
``~/.cache/jetkit-bench/natsgo-<hash>/runner`` (or under ``$XDG_CACHE_HOME``) with
``GO111MODULE=off`` and a GOPATH that holds ``github.com/nats-io/nats.go``: Debian's
``golang-github-nats-io-go-nats-dev`` puts it in ``/usr/share/gocode`` (``$JETKIT_BENCH_GOPATH``
names another). It is then run once per measurement like the Python peers (the spec on
stdin, one JSON line out; see ``bench/peer_runner.py``). Without ``go`` or nats.go's source
(or with ``--no-go``) the nats.go rows are skipped with a note saying how to get them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .peers import cache_dir

SOURCE = Path(__file__).resolve().parent / "natsgo" / "runner.go"
NATS_GO = "nats.go"
DEBIAN_GOPATH = "/usr/share/gocode"
HOW = (
    "install Go and nats.go's source (Debian: apt-get install golang-go "
    "golang-github-nats-io-go-nats-dev) for the nats.go rows"
)


def _gopath() -> str | None:
    """A GOPATH holding nats.go's source, or None."""
    candidates = [os.environ.get("JETKIT_BENCH_GOPATH", ""), DEBIAN_GOPATH]
    for path in candidates:
        if path and (Path(path) / "src" / "github.com" / "nats-io" / "nats.go").is_dir():
            return path
    return None


def _go_env(gopath: str, cache: Path) -> dict[str, str]:
    return {**os.environ, "GO111MODULE": "off", "GOPATH": gopath, "GOCACHE": str(cache)}


def build(go: str, gopath: str) -> Path:
    """The runner binary for this source, Go and nats.go (built on first use); raises."""
    go_version = subprocess.run(
        [go, "version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    nats_source = Path(gopath) / "src" / "github.com" / "nats-io" / "nats.go" / "nats.go"
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), go_version.encode(), nats_source.read_bytes()):
        digest.update(part)
    home = cache_dir() / f"natsgo-{digest.hexdigest()[:16]}"
    binary = home / "runner"
    if binary.exists():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    building = home / f"runner.tmp-{os.getpid()}"
    try:
        subprocess.run(
            [go, "build", "-o", str(building), str(SOURCE)],
            env=_go_env(gopath, home / "gocache"),
            check=True,
            capture_output=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        os.replace(building, binary)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip()[-400:]
        raise RuntimeError(f"go build failed: {tail}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            building.unlink()
    shutil.rmtree(home / "gocache", ignore_errors=True)
    return binary


class GoPeer:
    """Runs the built nats.go runner, one subprocess per run."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.versions: dict[str, str] = {}

    def check(self) -> None:
        out = subprocess.run(
            [str(self.binary), "--versions"],
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        self.versions = json.loads(out.stdout)

    async def run(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One run: ``spec`` in on stdin, the JSON result out; the child is always reaped."""
        proc = await asyncio.create_subprocess_exec(
            str(self.binary),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(json.dumps(spec).encode()), timeout)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"nats.go run failed: {' | '.join(lines[-3:])[-400:]}")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result


def setup(disabled: bool, log: Any = print) -> tuple[GoPeer | None, str]:
    """The nats.go runner, or None and the note that says why not (never raises)."""
    if disabled:
        return None, "nats.go baseline disabled (--no-go)"
    go = shutil.which("go")
    if go is None:
        return None, f"no go on the PATH: {HOW}"
    gopath = _gopath()
    if gopath is None:
        return None, f"nats.go's source not found in {DEBIAN_GOPATH} or $JETKIT_BENCH_GOPATH: {HOW}"
    try:
        binary = build(go, gopath)
        peer = GoPeer(binary)
        peer.check()
    except Exception as exc:
        return None, f"the nats.go runner could not be built or run ({exc}); nats.go rows skipped"
    log(f"nats.go runner: {binary}")
    return peer, ""

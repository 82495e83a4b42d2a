"""Peer baselines: natsio and nats-core + nats-jetstream, which need Python >= 3.13.

The bench finds such an interpreter (``--peer-python PATH``, else ``python3.13`` /
``python3.14`` on the PATH, else pyenv's 3.13+ versions), makes a venv with it once
(cached in ``~/.cache/jetkit-bench/peer-venv-<version>``, or under ``$XDG_CACHE_HOME``),
pip-installs the peers there and runs ``bench/peer_runner.py`` in it, one subprocess per
run. Without such an interpreter (or with ``--no-peers``) the peer rows are skipped with
a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).resolve().parent / "peer_runner.py"
# nats-core 0.2 imports nkeys unconditionally but declares it only as its "nkeys" extra
REQUIREMENTS = ("natsio", "nats-core[nkeys]", "nats-jetstream")
MARKER = "jetkit-bench-peers.json"
MIN_VERSION = (3, 13)
NATSIO, NATS_CORE, NATS_JETSTREAM = "natsio", "nats-core", "nats-jetstream"
# jetkit itself with Stream.open(metrics_port=0): its ratio is the cost of metrics
METRICS_ON = "jetkit+metrics"
# jetkit with Stream.open(tracing=...): every span built and batched by the SDK, then
# dropped (bench.env.dropping_provider): its ratio is the cost of tracing
TRACING_ON = "jetkit+tracing"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jetkit-bench"


def python_version(exe: str) -> tuple[int, int, int] | None:
    """The version of the interpreter ``exe``, or None if it does not run."""
    try:
        out = subprocess.run(
            [exe, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", out.stdout.strip())
    if out.returncode != 0 or match is None:
        return None
    major, minor, micro = (int(g) for g in match.groups())
    return major, minor, micro


def _pyenv_pythons() -> list[str]:
    """pyenv's installed CPython 3.13+ interpreters, lowest version first."""
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return []
    try:
        out = subprocess.run(
            [pyenv, "versions", "--bare"],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        ).stdout
        root = subprocess.run(
            [pyenv, "root"], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for name in out.split():
        match = re.fullmatch(r"3\.(\d+)\.(\d+)", name)
        if match and (3, int(match.group(1))) >= MIN_VERSION:
            found.append(((int(match.group(1)), int(match.group(2))), name))
    return [str(Path(root) / "versions" / name / "bin" / "python") for _, name in sorted(found)]


def find_python(explicit: str | None) -> tuple[str | None, str]:
    """A Python >= 3.13 for the peers, or None and why not."""
    wanted = ".".join(map(str, MIN_VERSION))
    if explicit:
        version = python_version(explicit)
        if version is None:
            return None, f"--peer-python {explicit} does not run"
        if version[:2] < MIN_VERSION:
            found = f"{version[0]}.{version[1]}"
            return None, f"--peer-python {explicit} is Python {found}, not >= {wanted}"
        return explicit, ""
    candidates = [shutil.which(f"python3.{minor}") for minor in (13, 14, 15)]
    candidates += _pyenv_pythons()
    if sys.version_info[:2] >= MIN_VERSION:
        candidates.append(sys.executable)
    for exe in candidates:
        if exe is None:
            continue
        version = python_version(exe)
        if version is not None and version[:2] >= MIN_VERSION:
            return exe, ""
    return None, f"no Python >= {wanted} found (pass --peer-python PATH); peer rows skipped"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(python: str, log: Any = print) -> Path:
    """The peer venv for ``python`` (made and pip-installed on first use); raises on failure."""
    version = python_version(python)
    assert version is not None
    venv = cache_dir() / f"peer-venv-{'.'.join(map(str, version))}"
    marker = venv / MARKER
    if marker.exists() and _venv_python(venv).exists():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(marker.read_text()).get("requirements") == list(REQUIREMENTS):
                return venv
    log(f"making the peer venv {venv} (once): pip install {' '.join(REQUIREMENTS)}")
    venv.parent.mkdir(parents=True, exist_ok=True)
    building = venv.with_name(f"{venv.name}.tmp-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    try:
        subprocess.run(
            [python, "-m", "venv", str(building)],
            check=True,
            timeout=300,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        subprocess.run(
            [str(_venv_python(building)), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
            check=True,
            timeout=900,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        (building / MARKER).write_text(json.dumps({"requirements": list(REQUIREMENTS)}) + "\n")
        shutil.rmtree(venv, ignore_errors=True)
        os.replace(building, venv)  # a venv runs from anywhere through its bin/python
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip()[-400:]
        raise RuntimeError(f"{' '.join(map(str, exc.cmd[:4]))} ... failed: {tail}") from exc
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return venv


class Peers:
    """Runs ``bench/peer_runner.py`` in the peer venv, one subprocess per run."""

    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self.python = str(_venv_python(venv))
        self.versions: dict[str, str] = {}

    def check(self) -> None:
        """Import the peers once and read their versions (raises if they do not import)."""
        code = "import natsio, nats.client, nats.jetstream"
        subprocess.run(
            [self.python, "-c", code],
            check=True,
            timeout=60,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        out = subprocess.run(
            [self.python, str(RUNNER), "--versions"],
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
            self.python,
            str(RUNNER),
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
            raise RuntimeError(f"peer run failed: {' | '.join(lines[-3:])[-400:]}")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result


def setup(explicit: str | None, disabled: bool, log: Any = print) -> tuple[Peers | None, str]:
    """The peers to run, or None and the note that says why not (never raises)."""
    if disabled:
        return None, "peer baselines disabled (--no-peers)"
    python, note = find_python(explicit)
    if python is None:
        return None, note
    try:
        peers = Peers(ensure_venv(python, log))
        peers.check()
    except Exception as exc:
        return None, f"peer venv for {python} unusable ({exc}); peer rows skipped"
    return peers, ""

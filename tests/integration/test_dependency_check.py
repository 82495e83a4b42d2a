"""An unsupported nats-py is refused at Stream.open, and the server it started is
stopped again (the check runs before connecting: nothing half-open is left)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client

import jetkit as jk
from jetkit import _connection
from jetkit._store import process_alive, read_attach_info


class Reshaped(Client):
    """A nats-py release that renamed the outgoing buffer."""

    def __init__(self) -> None:
        super().__init__()
        del self._pending


async def test_an_unsupported_nats_py_is_one_clear_error_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_connection, "Client", Reshaped)
    with pytest.raises(jk.DependencyError, match="no _pending") as info:
        await jk.Stream.open(store_dir=tmp_path)
    assert "pip install 'nats-py" in str(info.value)
    server = read_attach_info(tmp_path)
    assert server is None or not process_alive(server.get("pid"))  # stopped again

"""Bad input to the request reply surface, gathered here (made table-driven in the next commit)."""

from __future__ import annotations

import pytest

import jetkit as jk


async def test_request_bad_input(core: jk.Stream) -> None:
    with pytest.raises(jk.InvalidTopicError):
        await core.request("a b", b"x")
    with pytest.raises(jk.PayloadTooLargeError):
        await core.request("a.b", b"x" * (core.max_payload + 1))

"""jetkit's pytest plugin (entry point ``pytest11``): a real server for your tests.

``jetkit_server`` (session): one embedded server on a temporary store, run by a
private thread (``jetkit.testing.BackgroundServer``), so it works whatever event-loop
scope your tests use; started only when a test asks for it.

``jetkit_stream`` (per test, async; needs pytest-asyncio): a ``jk.Stream`` attached
to that server with ``default_mode=JETSTREAM``, closed after the test; then every
topic (stream) and consumer the test created is deleted, so each test starts from an
empty server.

Nothing starts until a test asks for a fixture, so the plugin costs test suites that
do not use it only the import of jetkit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import jetkit as jk
    from jetkit.testing import BackgroundServer


def _async_fixture(fn: Callable[..., Any]) -> Any:
    """``fn`` as a pytest-asyncio fixture (it then runs in the test's event loop), or,
    without pytest-asyncio, a fixture that fails saying what to install."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover  (pytest-asyncio is in jetkit's test extra)

        @pytest.fixture(name=fn.__name__)
        def missing() -> None:
            pytest.fail(
                f"the {fn.__name__} fixture is async and needs pytest-asyncio: "
                "pip install pytest-asyncio, and set asyncio_mode = 'auto' (or mark the "
                "tests with @pytest.mark.asyncio)"
            )

        return missing
    return pytest_asyncio.fixture(fn)


@pytest.fixture(scope="session")
def jetkit_server() -> Iterator[BackgroundServer]:
    """One embedded jetkit server for the whole session (a temporary store).

    ``store_dir``, ``url``, ``connect_info()`` (credentials for another client) and
    ``open(**options)`` (a ``jk.Stream`` attached to it, JETSTREAM by default).
    """
    from jetkit.testing import BackgroundServer

    with BackgroundServer() as server:
        yield server


@_async_fixture
async def jetkit_stream(jetkit_server: BackgroundServer) -> AsyncIterator[jk.Stream]:
    """A ``jk.Stream`` on ``jetkit_server`` (default mode JETSTREAM) for one test.

    Closed after the test (its subscriptions drain for up to 5 s); then the topics and
    consumers the test created are deleted.
    """
    from jetkit.testing import _remove_new, _snapshot

    s = await jetkit_server.open(drain_timeout=5)
    try:
        before = await _snapshot(s)
    except BaseException:
        await s.close()
        raise
    try:
        yield s
    finally:
        await s.close()
        async with jetkit_server.open() as cleaner:
            await _remove_new(cleaner, before)

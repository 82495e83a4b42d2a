"""``jetkit ui`` in a real headless Chromium (Debian's ``chromium``, driven by
Playwright without a browser of its own): the overview's lag updates without a reload,
and the DLQ page shows a dead letter's error. Skipped when Chromium is not installed
(``.ci/run`` installs it when it can)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import jetkit as jk
from conftest import stop_process
from jetkit._retry import H_CONSUMER, H_DELIVERIES, H_ERROR, H_SEQ, H_TOPIC
from jetkit.testing import Collector

CHROMIUM = os.environ.get("JETKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (apt-get install "
        "chromium; .ci/run does when run as root) or set JETKIT_CHROMIUM",
        allow_module_level=True,
    )
playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

pytestmark = pytest.mark.slow

# Chromium as root in a container: no sandbox, no GPU, nothing fetched in the background
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
URL = re.compile(r"^http://127\.0\.0\.1:\d+/\?token=\S+$")


@pytest.fixture(scope="module")
def console(js: jk.Stream, store: Path) -> Iterator[str]:
    """A ``jetkit ui`` process attached to the session's store; its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jetkit", "ui", "--no-open", "--store-dir", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert URL.match(url), url
        yield url
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    async with playwright.async_playwright() as p:
        # launch() gives Chromium a fresh temporary profile (--user-data-dir) itself
        home = tmp_path_factory.mktemp("chromium-home")
        b = await p.chromium.launch(
            executable_path=CHROMIUM, args=ARGS, env={**os.environ, "HOME": str(home)}
        )
        yield b
        await b.close()


async def test_the_overview_shows_lag_as_it_grows_without_a_reload(
    js: jk.Stream, console: str, browser: object, topic: str
) -> None:
    await js.declare_topic(topic)
    sub = await js.subscribe(topic, Collector(), durable="lagging", ack=jk.AckPolicy.MANUAL)
    await sub.stop()  # the durable stays and falls behind
    page = await browser.new_page()  # type: ignore[attr-defined]
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await page.goto(console)
    lag = f'#consumers tr[data-topic="{topic}"][data-consumer="lagging"] td.lag'
    await page.wait_for_selector(lag, timeout=30_000)
    assert await page.text_content(lag) == "0"
    await page.evaluate("window.jetkitTestMarker = 'same page'")
    for i in range(4):
        await js.publish(topic, f"order-{i}".encode())
    # the page's own script fetches its live part and swaps it in
    await playwright.expect(page.locator(lag)).to_have_text("4", timeout=30_000)
    assert await page.evaluate("window.jetkitTestMarker") == "same page"  # not reloaded
    assert "live" in (await page.text_content("#live-state") or "")
    assert dialogs == []
    await page.close()


async def test_the_dlq_page_shows_a_dead_letters_error_and_redrives_it(
    js: jk.Stream, console: str, browser: object, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    await js.declare_topic(topic)  # where the letter goes back to
    error = 'ValueError: card <b>declined</b> "><img src=x onerror=alert(1)>'
    await js.publish(
        dlq,
        b"<script>alert(1)</script>",
        headers={
            H_TOPIC: topic,
            H_SEQ: "7",
            H_DELIVERIES: "3",
            H_CONSUMER: "billing",
            H_ERROR: error,
        },
    )
    page = await browser.new_page()  # type: ignore[attr-defined]
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await page.goto(console)  # the token sets the cookie
    await page.goto(console.split("/?")[0] + f"/dlq/{quote(dlq, safe='')}")
    row = "#letters tr[data-seq]"
    await page.wait_for_selector(row, timeout=30_000)
    assert await page.text_content(f"{row} td.error") == error
    cells = [c.strip() for c in await page.locator(f"{row} td").all_text_contents()]
    assert cells[1:5] == [topic, "7", "3", "billing"]
    assert await page.locator(f"{row} img, {row} b, {row} script").count() == 0

    # re-drive it from the page: the button asks, the next one does it
    await page.click(f"{row} button")
    await page.click("#confirm")
    await playwright.expect(page.locator("#result")).to_contain_text("re-drove 1 dead letter")
    assert await js.dead_letters(dlq) == []
    assert (await js.last_message(topic)).data == b"<script>alert(1)</script>"  # type: ignore[union-attr]
    assert dialogs == []
    await page.close()

"""``jetkit ui``: every route over HTTP (the app in-process, through httpx), the token,
Host and cross-site checks, escaping of hostile input, re-drive through the UI, and the
command itself in a subprocess."""

from __future__ import annotations

import asyncio
import html
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from markupsafe import escape

import jetkit as jk
from conftest import stop_process, wait_until, wait_until_async
from jetkit._files import INFO_FILE
from jetkit._retry import H_CONSUMER, H_DELIVERIES, H_ERROR, H_REDRIVES, H_SEQ, H_TOPIC
from jetkit.testing import Collector
from jetkit.ui import _app
from jetkit.ui._app import create_app
from jetkit.ui._guard import cookie_name, csrf_token
from jetkit.ui._state import Sampler

PORT = 8765  # the port the in-process app believes it serves (nothing listens on it)
TOKEN = "s3cret-token-for-tests"
BASE = f"http://127.0.0.1:{PORT}"
CSRF = csrf_token(TOKEN)
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
HOSTILE_TOPIC = "t.<script<img_src=x_onerror=alert(1)&amp"


def client(stream: jk.Stream, *, cookie: str | None = TOKEN, **kw: str) -> httpx.AsyncClient:
    app = create_app(Sampler(stream), TOKEN, PORT)
    cookies = {cookie_name(PORT): cookie} if cookie is not None else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=kw.get("base", BASE), cookies=cookies
    )


@pytest.fixture
async def ui(js: jk.Stream) -> AsyncIterator[httpx.AsyncClient]:
    async with client(js) as c:
        yield c


def letter_headers(topic: str, seq: int, error: str = "RuntimeError: boom") -> dict[str, str]:
    return {
        H_TOPIC: topic,
        H_SEQ: str(seq),
        H_DELIVERIES: "3",
        H_CONSUMER: "proc",
        H_ERROR: error,
    }


def clean(body: str) -> None:
    """No hostile markup came through unescaped."""
    for raw in (SCRIPT, IMG, "<img", "<script<"):
        assert raw not in body


# -- the token, Host and cross-site checks -------------------------------------------------

ROUTES = [
    ("GET", "/"),
    ("GET", "/?part=live"),
    ("GET", "/topics/some.topic"),
    ("GET", "/topics/some.topic?part=live"),
    ("GET", "/dlq/some.topic"),
    ("GET", "/publish"),
    ("GET", "/static/console.js"),
    ("GET", "/static/console.css"),
    ("GET", "/no-such-page"),
    ("POST", "/redrive"),
    ("POST", "/publish"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_needs_the_token(js: jk.Stream, method: str, path: str) -> None:
    # an empty topic: a POST that passes the checks changes nothing
    data = {"csrf_token": CSRF, "topic": ""} if method == "POST" else None
    async with client(js, cookie=None) as c:
        r = await c.request(method, path, data=data)
        assert r.status_code == 401 and "token" in r.text
    async with client(js, cookie="wrong") as c:
        assert (await c.request(method, path, data=data)).status_code == 403
    async with client(js, cookie=None) as c:
        sep = "&" if "?" in path else "?"
        assert (await c.request(method, f"{path}{sep}token=wrong", data=data)).status_code == 403
    async with client(js) as c:
        r = await c.request(method, path, data=data)
        assert r.status_code not in (401, 403), r.text
        assert "default-src 'none'" in r.headers["content-security-policy"]


async def test_the_token_in_the_url_sets_the_cookie_and_is_dropped(js: jk.Stream) -> None:
    async with client(js, cookie=None) as c:
        r = await c.get(f"/topics/a.b?part=live&token={TOKEN}")
        assert r.status_code == 303
        assert r.headers["location"] == "/topics/a.b?part=live"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{cookie_name(PORT)}={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        r = await c.get("/")  # the client keeps the cookie, as a browser does
        assert r.status_code == 200 and "<h2>topics</h2>" in r.text


async def test_other_sites_cookies_do_not_hide_the_token(js: jk.Stream) -> None:
    # browsers send 127.0.0.1's cookies of every port: another local app's may be JSON,
    # which SimpleCookie gives up on, with the console's after it
    name = cookie_name(PORT)
    async with client(js, cookie=None) as c:
        for header in (
            f'grafana={{"a":1}}; {name}={TOKEN}',
            f"a=b c; {name}={TOKEN}",
            f"{name}=stale; {name}={TOKEN}",
            f'{name}="{TOKEN}"',
        ):
            r = await c.get("/", headers={"Cookie": header})
            assert r.status_code == 200, header
        r = await c.get("/", headers={"Cookie": f'grafana={{"a":1}}; {name}=wrong'})
        assert r.status_code == 403
        r = await c.get("/", headers={"Cookie": f"x{name}={TOKEN}; {name}x={TOKEN}"})
        assert r.status_code == 401


async def test_the_token_redirect_stays_on_the_console_and_on_the_page(js: jk.Stream) -> None:
    async with client(js, cookie=None) as c:
        for path, location in (
            ("//evil.example/", "/evil.example/"),
            ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
            ("/\\evil.example", "/evil.example"),
            ("/topics/a%3Fb", "/topics/a%3Fb"),  # a topic named a?b is not a query
            ("/topics/a%23b", "/topics/a%23b"),
            ("/topics/caf%C3%A9", "/topics/caf%C3%A9"),
        ):
            r = await c.get(f"{BASE}{path}?token={TOKEN}&part=live")
            assert r.status_code == 303, path
            assert r.headers["location"] == f"{location}?part=live", path


async def test_a_one_visit_token_opens_the_console_once(js: jk.Stream) -> None:
    app = create_app(Sampler(js), TOKEN, PORT, once=["one-visit"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        assert (await c.post("/publish?token=one-visit")).status_code == 403
        r = await c.get("/topics/x?token=one-visit")
        assert r.status_code == 303 and r.headers["location"] == "/topics/x"
        assert r.headers["set-cookie"].startswith(f"{cookie_name(PORT)}={TOKEN};")
        assert (await c.get("/")).status_code == 200  # the cookie holds the real token
        # reopened from the history: the cookie lets it through, without it no more
        assert (await c.get("/?token=one-visit")).status_code == 303
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        assert (await c.get("/?token=one-visit")).status_code == 403
        assert (await c.get(f"/?token={TOKEN}")).status_code == 303  # the printed one stays


async def test_another_host_is_refused(js: jk.Stream) -> None:
    async with client(js, base=f"http://evil.example:{PORT}") as c:
        r = await c.get("/")
        assert r.status_code == 403 and "Host" in r.text
    async with client(js, base=f"http://127.0.0.1:{PORT + 1}") as c:
        assert (await c.get("/")).status_code == 403
    async with client(js, base=f"http://localhost:{PORT}") as c:
        assert (await c.get("/")).status_code == 200


async def test_cross_site_posts_are_refused(ui: httpx.AsyncClient, topic: str) -> None:
    form = {"csrf_token": CSRF, "topic": topic, "payload": "x"}
    r = await ui.post("/publish", data=form, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = await ui.post("/publish", data=form, headers={"Referer": "http://evil.example/page"})
    assert r.status_code == 403
    r = await ui.post("/publish", data=form, headers={"Origin": "null"})  # a sandboxed page
    assert r.status_code == 403
    r = await ui.post("/publish", data={**form, "csrf_token": "forged"})
    assert r.status_code == 403
    r = await ui.post("/publish", data={"topic": topic, "payload": "x"})
    assert r.status_code == 403
    r = await ui.post("/publish", data=form, headers={"Origin": f"http://localhost:{PORT}"})
    assert r.status_code == 200 and "published" in r.text  # what a browser sends
    r = await ui.get("/publish", params={"topic": topic})
    assert r.status_code == 200
    with pytest.raises(AssertionError):
        clean("<img")  # the check itself sees raw markup


# -- pages ---------------------------------------------------------------------------------


async def test_overview_shows_topics_consumers_and_lag(
    js: jk.Stream, ui: httpx.AsyncClient, topic: str
) -> None:
    await js.declare_topic(topic)
    sub = await js.subscribe(topic, Collector(), durable="lagger", ack=jk.AckPolicy.MANUAL)
    await sub.stop()  # the durable stays, and lags behind what follows
    for i in range(3):
        await js.publish(topic, f"m{i}".encode())
    for path in ("/", "/?part=live"):
        r = await ui.get(path)
        assert r.status_code == 200
        row = re.search(
            rf'<tr data-topic="{re.escape(topic)}" data-consumer="lagger">(.*?)</tr>', r.text, re.S
        )
        assert row is not None, r.text
        assert re.search(r'class="n lag hot">3<', row.group(1))
        assert f'href="/topics/{quote(topic, safe="")}"' in r.text
    assert "<html" not in (await ui.get("/?part=live")).text  # the live part only
    assert 'class="health up"' in r.text


async def test_overview_links_only_to_topics_and_finds_every_dlq(
    js: jk.Stream, ui: httpx.AsyncClient, topic: str
) -> None:
    # a scheduled publish adds jetkit's own $JK.SCHED subject to the topic's stream
    await js.declare_topic(topic)
    await js.publish(topic, b"later", deliver_after=3600)
    sub = await js.subscribe(topic, Collector(), durable="whole", ack=jk.AckPolicy.MANUAL)
    await sub.stop()
    # a DLQ whose newest message is not a dead letter (sent from the publish form, say)
    dlq = f"{topic}.dlq"
    await js.publish(dlq, b"letter", headers=letter_headers(topic, 1))
    await js.publish(dlq, b"not a letter")
    r = await ui.get("/?part=live")
    assert "$JK" not in r.text and "%24JK" not in r.text
    assert f'<tr data-topic="{topic}" data-consumer="whole">' in r.text
    assert f'<a class="dlq" href="/dlq/{quote(dlq, safe="")}">' in r.text
    assert f'href="/dlq/{quote(topic, safe="")}"' not in r.text


async def test_topic_page_shows_messages_headers_consumers_and_chart(
    js: jk.Stream, ui: httpx.AsyncClient, topic: str
) -> None:
    await js.declare_topic(topic)
    await js.subscribe(topic, Collector(), durable="reader", ack=jk.AckPolicy.MANUAL)
    await js.publish(topic, b'{"b": [1, 2], "a": "x"}', headers={"trace": "t-1"})
    await js.publish(topic, b"\xff\xfe binary")
    await js.publish(topic, b"y" * 10_000)
    r = await ui.get(f"/topics/{quote(topic, safe='')}")
    assert r.status_code == 200
    text = html.unescape(r.text)
    assert '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "x"\n}' in text  # pretty-printed
    assert "<dt>trace</dt><dd>t-1</dd>" in text
    assert "\\xff\\xfe binary" in text and "binary</p>" in text
    assert "y" * 4096 in text and "y" * 4097 not in text and "of 10000 bytes" in text
    assert text.index("#3 ") < text.index("#2 ") < text.index("#1 ")  # newest first
    assert 'data-consumer="reader"' in text and "<polyline" in text
    live = await ui.get(f"/topics/{quote(topic, safe='')}?part=live")
    assert "<polyline" in live.text and "recent messages" not in live.text


async def test_topic_page_shows_the_last_messages_only(
    js: jk.Stream, ui: httpx.AsyncClient, topic: str
) -> None:
    await js.publish_many(topic, [f"m{i}".encode() for i in range(1, 31)])
    text = (await ui.get(f"/topics/{quote(topic, safe='')}")).text
    shown = [int(n) for n in re.findall(r'<p class="meta">#(\d+) ', text)]
    assert shown == list(range(30, 10, -1))  # the newest 20, newest first


async def test_unknown_pages_and_topics_are_404(ui: httpx.AsyncClient, topic: str) -> None:
    for path in (
        f"/topics/{topic}.never",
        f"/dlq/{topic}.never",
        "/topics/a%20b",  # not a valid topic
        "/topics/",
        "/nothing/here",
    ):
        r = await ui.get(path)
        assert r.status_code == 404, path
        assert "not found" in r.text
    assert (await ui.get("/redrive")).status_code == 405


async def test_hostile_payload_headers_topic_and_error_are_escaped(
    js: jk.Stream, ui: httpx.AsyncClient, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    await js.declare_topic(HOSTILE_TOPIC)
    await js.subscribe(HOSTILE_TOPIC, Collector(), durable="proc", ack=jk.AckPolicy.MANUAL)
    await js.publish(HOSTILE_TOPIC, f"{SCRIPT}{IMG}".encode(), headers={"x'&": SCRIPT + IMG})
    await js.publish(
        dlq,
        SCRIPT.encode(),
        headers={**letter_headers(HOSTILE_TOPIC, 1, error=f"ValueError: {IMG}"), "h": SCRIPT},
    )
    await js.publish(topic, IMG.encode(), headers={"x": IMG})
    pages = [
        "/",
        f"/topics/{quote(HOSTILE_TOPIC, safe='')}",
        f"/topics/{quote(topic, safe='')}",
        f"/dlq/{quote(dlq, safe='')}",
        f"/publish?topic={quote(HOSTILE_TOPIC, safe='')}",
    ]
    for path in pages:
        r = await ui.get(path)
        assert r.status_code == 200, path
        clean(r.text)
    r = await ui.get(f"/dlq/{quote(dlq, safe='')}")
    assert escape(f"ValueError: {IMG}") in r.text
    assert escape(SCRIPT) in r.text
    r = await ui.post("/redrive", data={"csrf_token": CSRF, "topic": dlq})  # the confirmation
    clean(r.text)
    assert escape(IMG) in r.text
    r = await ui.post("/publish", data={"csrf_token": CSRF, "topic": IMG, "payload": SCRIPT})
    assert r.status_code == 400 and "whitespace" in r.text
    clean(r.text)


async def test_redrive_through_the_ui_loses_nothing(
    js: jk.Stream, ui: httpx.AsyncClient, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    calls = Collector(fail=lambda msg: msg.headers.get(H_REDRIVES) is None)
    sub = await js.subscribe(
        topic, calls, durable="proc", ack=jk.AckPolicy.MANUAL, max_deliver=1, dlq=dlq
    )
    sent = [f"order-{i}".encode() for i in range(5)]
    for data in sent:
        await js.publish(topic, data)
    await wait_until(lambda: sub.stats.dead_lettered == 5)
    page = await ui.get(f"/dlq/{quote(dlq, safe='')}")
    assert page.text.count("<tr data-seq=") == 5
    assert "SimulatedFailure: Collector failed delivery 1" in page.text

    # one, then the rest; each POST without confirm=yes only asks
    one = (await js.dead_letters(dlq))[0].seq
    asked = await ui.post("/redrive", data={"csrf_token": CSRF, "topic": dlq, "seq": str(one)})
    assert asked.status_code == 200 and 'name="confirm" value="yes"' in asked.text
    assert "1 dead letter(s) will be published again" in asked.text
    assert len(await js.dead_letters(dlq)) == 5
    done = await ui.post(
        "/redrive", data={"csrf_token": CSRF, "topic": dlq, "seq": str(one), "confirm": "yes"}
    )
    assert "re-drove 1 dead letter(s)" in done.text
    asked = await ui.post("/redrive", data={"csrf_token": CSRF, "topic": dlq})
    assert "4 dead letter(s) will be published again" in asked.text
    done = await ui.post("/redrive", data={"csrf_token": CSRF, "topic": dlq, "confirm": "yes"})
    assert "re-drove 4 dead letter(s)" in done.text

    await calls.wait(10)  # 5 failed first deliveries, then the 5 re-driven ones
    redriven = [m.data for m in calls.messages if m.headers.get(H_REDRIVES) == "1"]
    assert sorted(redriven) == sorted(sent)
    assert await js.dead_letters(dlq) == []
    assert "no dead letters" in (await ui.get(f"/dlq/{quote(dlq, safe='')}")).text
    for bad in ("x", "²", "-1"):
        r = await ui.post("/redrive", data={"csrf_token": CSRF, "topic": dlq, "seq": bad})
        assert r.status_code == 400
    r = await ui.post("/redrive", data={"csrf_token": CSRF, "topic": f"{dlq}.none"})
    assert r.status_code == 404


async def test_a_dlq_page_reads_a_bounded_part_of_a_topic(
    js: jk.Stream, ui: httpx.AsyncClient, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /dlq/ of a big topic that is no DLQ read every message to find 500 letters (20 s
    # for 100,000 messages, again at each reload)
    monkeypatch.setattr(_app, "SCAN", 30)
    await js.publish(topic, b"first", headers=letter_headers(f"{topic}.orig", 1))
    await asyncio.gather(*(js.publish(topic, b"other") for _ in range(40)))
    await js.publish(topic, b"beyond", headers=letter_headers(f"{topic}.orig", 2))
    r = await ui.get(f"/dlq/{quote(topic, safe='')}")
    assert r.text.count("<tr data-seq=") == 1
    assert "reads at most 500 dead letters and 30 messages" in r.text
    asked = await ui.post("/redrive", data={"csrf_token": CSRF, "topic": topic})
    assert "1 or more dead letter(s) will be published again" in asked.text


async def test_redrive_all_redrives_what_was_confirmed(
    js: jk.Stream, ui: httpx.AsyncClient, topic: str
) -> None:
    dlq = f"{topic}.dlq"
    await js.declare_topic(topic)
    for i in range(3):
        await js.publish(dlq, f"seen{i}".encode(), headers=letter_headers(topic, i + 1))
    asked = await ui.post("/redrive", data={"csrf_token": CSRF, "topic": dlq})
    assert "3 dead letter(s) will be published again" in asked.text
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', asked.text))
    await js.publish(dlq, b"unseen", headers=letter_headers(topic, 9))  # after the question
    done = await ui.post("/redrive", data=form)  # the button: the page's form as it is
    assert "re-drove 3 dead letter(s)" in done.text and "kept 1" in done.text
    assert [x.data for x in await js.dead_letters(dlq)] == [b"unseen"]
    r = await ui.post("/redrive", data={**form, "upto": "x"})
    assert r.status_code == 400 and "upto is not a number" in r.text


async def test_the_publish_form_publishes_with_headers_and_shows_errors_on_the_page(
    core: jk.Stream, js: jk.Stream, ui: httpx.AsyncClient, topic: str
) -> None:
    form = await ui.get("/publish", params={"topic": topic})
    assert f'value="{topic}"' in form.text and f'value="{CSRF}"' in form.text
    await js.declare_topic(topic)
    got = Collector()
    await js.subscribe(topic, got, start_at=jk.StartAt.ALL)
    r = await ui.post(
        "/publish",
        data={
            "csrf_token": CSRF,
            "topic": topic,
            "payload": '{"k": "é"}',
            "headers": "a=1\n\nb=two=2\n",
        },
    )
    assert r.status_code == 200 and "stored in" in r.text and "at seq 1" in r.text
    [msg] = await got.wait(1)
    assert msg.data == '{"k": "é"}'.encode()
    assert (msg.headers["a"], msg.headers["b"]) == ("1", "two=2")

    bad = {"csrf_token": CSRF, "topic": topic, "payload": "x", "headers": "no-equals"}
    r = await ui.post("/publish", data=bad)
    assert r.status_code == 400 and "KEY=VALUE" in r.text and 'id="error"' in r.text
    assert "--header" not in r.text  # the CLI's option means nothing on the page
    r = await ui.post("/publish", data={"csrf_token": CSRF, "topic": "", "payload": "x"})
    assert r.status_code == 400 and "topic is empty" in r.text
    async with client(core) as c:  # a Stream whose topics are core unless stored
        r = await c.post("/publish", data={"csrf_token": CSRF, "topic": f"{topic}.core"})
        assert r.status_code == 200 and "core topic" in r.text
    big = {"csrf_token": CSRF, "topic": topic, "payload": "x" * (js.max_payload + 1)}
    r = await ui.post("/publish", data=big)
    assert r.status_code == 400 and "max_payload" in r.text


async def test_the_console_keeps_working_when_the_server_goes(tmp_path: Path) -> None:
    owner = await jk.Stream.open(store_dir=tmp_path)
    info = owner.connect_info()
    s = await jk.Stream.open(
        servers=info["servers"], user=info.get("user"), password=info.get("password")
    )
    try:
        await s.publish("here.before", b"x")
        async with client(s) as c:
            assert 'class="health up"' in (await c.get("/")).text
            await owner.close()
            await wait_until(lambda: not s.connected)

            async def down() -> bool:
                r = await c.get("/")
                assert r.status_code == 200
                return 'class="health down"' in r.text

            await wait_until_async(down)  # at once, or with the next sample
            r = await c.get("/topics/here.before")
            assert r.status_code == 503
    finally:
        await s.close()
        await owner.close()


# -- the command ---------------------------------------------------------------------------

URL = re.compile(rb"^http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{20,})\n$")


def get(port: int, path: str, cookie: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def start_ui(*args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jetkit", "ui", "--no-open", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_command_prints_one_url_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    async def make_store() -> None:
        async with jk.Stream.open(store_dir=tmp_path) as s:
            await s.declare_topic("made.here", mode=jk.TopicMode.JETSTREAM)

    asyncio.run(make_store())
    proc = start_ui("--store-dir", tmp_path, "--port", "0")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        match = URL.match(line)
        assert match, line
        port, token = int(match.group(1)), match.group(2).decode()
        assert get(port, "/").status == 401
        first = get(port, f"/?token={token}")
        assert first.status == 303
        cookie = first.getheader("set-cookie", "").split(";")[0]
        assert get(port, "/", cookie).status == 200
        assert get(port, "/topics/made.here", cookie).status == 200
        assert get(port, "/static/console.js", cookie).status == 200
        # what other pages (a WebSocket) and other local users (garbage) can send does
        # not write to the terminal; a request after them proves they were handled
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
        assert conn.getresponse().status == 401
        conn.close()
        with socket.create_connection(("127.0.0.1", port)) as garbage:
            garbage.sendall(b"\x00\xff nonsense\r\n\r\n")
            assert garbage.recv(100).startswith(b"HTTP/1.1 400")
        assert get(port, "/", cookie).status == 200
        server = json.loads((tmp_path / INFO_FILE).read_text())  # the UI's own nats-server
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        assert proc.stdout.read() == b""  # one line, nothing else
        assert proc.stderr.read() == b""
        with pytest.raises(ProcessLookupError):
            os.kill(int(server["pid"]), 0)  # its nats-server went with it
    finally:
        stop_process(proc)


@pytest.mark.slow
def test_the_browser_is_not_given_the_printed_token(tmp_path: Path) -> None:
    # the browser's command line is readable by every local user (ps): it gets a URL
    # good for one visit ($BROWSER is what Python's webbrowser runs)
    (tmp_path / "jetstream").mkdir()
    opened = tmp_path / "opened"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o700)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jetkit", "ui", "--store-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "BROWSER": str(browser)},
    )
    try:
        assert proc.stdout is not None
        match = URL.match(proc.stdout.readline())
        assert match
        port, token = int(match.group(1)), match.group(2).decode()
        asyncio.run(wait_until(lambda: opened.exists() and opened.read_bytes().endswith(b"\n")))
        once = URL.match(opened.read_bytes())
        assert once and int(once.group(1)) == port
        assert token not in opened.read_text()
        path = f"/?token={once.group(2).decode()}"
        first = get(port, path)
        assert first.status == 303
        assert first.getheader("set-cookie", "").startswith(f"{cookie_name(port)}={token};")
        assert get(port, path).status == 403  # spent
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop_process(proc)


@pytest.mark.slow
def test_stopping_while_a_request_runs_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "jetstream").mkdir()  # a store (empty): the console starts its server
    proc = start_ui("--store-dir", tmp_path)
    running = socket.socket()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        match = URL.match(proc.stdout.readline())
        assert match
        port, token = int(match.group(1)), match.group(2).decode()
        cookie = f"{cookie_name(port)}={token}"
        # a POST whose form never ends: its request runs until the console stops it, as
        # a long re-drive would
        running.connect(("127.0.0.1", port))
        running.sendall(
            f"POST /redrive HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n"
            "\r\ncsrf_token=".encode()
        )
        assert get(port, "/", cookie).status == 200  # sent after it: it is running
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        err = proc.stderr.read().decode()
        assert "Traceback" not in err and "ERROR" not in err, err
        assert "stopped while a request still ran" in err
        assert len(err.splitlines()) == 1, err
    finally:
        running.close()
        stop_process(proc)


@pytest.mark.slow
def test_the_command_refuses_a_taken_port_and_a_missing_store(tmp_path: Path, store: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_ui("--store-dir", store, "--port", str(port))
        try:
            assert proc.wait(60) == 2
            assert proc.stdout is not None and proc.stderr is not None
            err = proc.stderr.read().decode()
            assert err.startswith("error: ") and err.count("\n") == 1 and f"port {port}" in err
            assert proc.stdout.read() == b""
        finally:
            stop_process(proc)
    proc = start_ui("--store-dir", tmp_path / "none")
    try:
        assert proc.wait(60) == 2
        assert proc.stderr is not None and b"no jetkit store" in proc.stderr.read()
    finally:
        stop_process(proc)


def test_without_the_extra_the_command_says_what_to_install() -> None:
    code = "import sys; sys.modules['uvicorn'] = None; from jetkit.cli import main; main(['ui'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.count("\n") == 1 and 'pip install "jetkit[ui]"' in err, err


def test_the_library_and_the_other_commands_do_not_load_the_console() -> None:
    code = (
        "import sys, jetkit, jetkit.cli, jetkit.sync;"
        "loaded = [m for m in ('starlette', 'uvicorn', 'jinja2', 'jetkit.ui') if m in sys.modules];"
        "print(loaded)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.stdout == b"[]\n", result.stderr.decode()
    result = subprocess.run(
        [sys.executable, "-m", "jetkit", "ui", "--help"], capture_output=True, timeout=60
    )
    assert result.returncode == 0 and b"--no-open" in result.stdout


async def test_the_sampler_keeps_a_bounded_lag_history(js: jk.Stream, topic: str) -> None:
    await js.declare_topic(topic)
    sub = await js.subscribe(topic, Collector(), durable="hist", ack=jk.AckPolicy.MANUAL)
    sampler = Sampler(js)
    first = await sampler.fresh()
    assert await sampler.fresh(max_age=3600) is first  # fresh enough: not asked again
    second = await sampler.fresh(max_age=0)
    assert second is not first and second.up
    [key] = [k for k in sampler.history if k[1] == "hist"]
    assert len(sampler.history[key]) == 2

    async def gone() -> bool:
        await sampler.fresh(max_age=0)
        return key not in sampler.history

    await sub.stop()
    await js.delete_consumer(topic, "hist")
    await wait_until_async(gone)

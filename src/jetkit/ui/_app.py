"""The console's routes (Starlette), drawn with Jinja2 templates (autoescaped).

Pages: ``/`` (health, topics, consumers), ``/topics/{topic}``, ``/dlq/{topic}``,
``/publish``; ``POST /redrive`` (a confirmation page first, then ``Stream.redrive``)
and ``POST /publish``. A page's live part is the same URL with ``?part=live``: the
console's script fetches it every few seconds and swaps it in. ``_guard`` checks every
request before these run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import jetkit as jk

from .._tools import BadInput, parse_headers, published, use_if_stored
from .._top import count, rate, size
from . import _view
from ._guard import Guard, csrf_token, same
from ._state import WINDOW, Sampler, Snapshot

HERE = Path(__file__).parent
RECENT = 20  # messages shown on a topic page
DEAD_LETTERS = 500  # dead letters listed on a DLQ page
SCAN = 5000  # messages a DLQ page reads at most to find them
MAX_FORM = 16 * 2**20  # bytes of a POSTed form (a payload is at most the server's max_payload)
REFUSED = "missing or wrong CSRF token (or a form too large): submit the console's own form"


class Console:
    """The console's state and pages for one Stream."""

    def __init__(self, sampler: Sampler, token: str) -> None:
        self.sampler = sampler
        self.stream = sampler.stream
        self.csrf = csrf_token(token)
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(q=lambda s: quote(str(s), safe=""), count=count, size=size)
        self.env.filters["rate"] = rate
        self.env.globals.update(csrf=self.csrf, refresh_ms=int(sampler.interval * 1000))

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(**context), status_code=status)

    def not_found(self, what: str) -> HTMLResponse:
        return self.page("error.html", 404, title="not found", message=what)

    async def form(self, request: Request) -> dict[str, str] | None:
        """The POSTed form (urlencoded, what the console's forms send), or None if it is
        too large or its CSRF field is missing or wrong."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                return None
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        given = form.get("csrf_token")
        return form if given is not None and same(given, self.csrf) else None

    # -- pages ---------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        snap = await self.sampler.fresh()
        live = request.query_params.get("part") == "live"
        return self.page("_overview_live.html" if live else "overview.html", **self._overview(snap))

    def _overview(self, snap: Snapshot) -> dict[str, Any]:
        top = self.sampler.top
        subjects = {t.name: _view.topics_of(t.subjects) for t in snap.topics}
        topics = [
            {
                "info": t,
                "subjects": subjects[t.name],
                "rate": top.rate(("topic", t.name)),
                "dlq": t.name in snap.dead_letter_topics,
            }
            for t in sorted(snap.topics, key=lambda t: subjects[t.name])
        ]
        consumers = [
            {
                "info": c,
                # a consumer of a whole stream links to its first topic
                "topic": c.filter_subject or subjects.get(c.stream, [c.stream])[0],
                "rate": top.rate(("consumer", c.stream, c.name)),
            }
            for c in sorted(snap.consumers, key=lambda c: (subjects.get(c.stream, []), c.name))
        ]
        return {"snap": snap, "topics": topics, "consumers": consumers, "title": "overview"}

    async def topic(self, request: Request) -> Response:
        name = request.path_params["topic"]
        try:
            info = await self.stream.topic_info(name)
            consumers = await self.stream.consumers(name)
            messages = (
                [] if request.query_params.get("part") == "live" else await self._recent(info, name)
            )
        except (jk.NotFoundError, jk.InvalidTopicError):
            return self.not_found(f"no stored topic {name!r}")
        except jk.JetkitError as exc:
            return self.page("error.html", 503, title="server unavailable", message=str(exc))
        snap = await self.sampler.fresh()  # the chart's newest point
        now = time.time()
        context = {
            "title": name,
            "topic": name,
            "info": info,
            "consumers": consumers,
            "messages": messages,
            "chart": _view.chart(self.sampler.lag_series(consumers), now, WINDOW),
            "is_dlq": info.name in snap.dead_letter_topics,
        }
        live = request.query_params.get("part") == "live"
        return self.page("_topic_live.html" if live else "topic.html", **context)

    async def _recent(self, info: jk.TopicInfo, topic: str) -> list[dict[str, Any]]:
        """The newest messages on ``topic`` among the stream's last ``RECENT``, newest first."""
        first = max(1, info.first_seq, info.last_seq - RECENT + 1)
        found = [
            {"msg": m, "payload": _view.payload(m.data)}
            async for m in self.stream.read_stored(topic, first_seq=first, limit=RECENT)
            if m.seq is not None and m.seq <= info.last_seq  # (not those stored since)
        ]
        return found[::-1]

    async def dlq(self, request: Request) -> Response:
        name = request.path_params["topic"]
        try:
            info = await self.stream.topic_info(name)
            found = await self._letters(name)
        except (jk.NotFoundError, jk.InvalidTopicError):
            return self.not_found(f"no stored topic {name!r}")
        except jk.JetkitError as exc:
            return self.page("error.html", 503, title="server unavailable", message=str(exc))
        return self.page(
            "dlq.html",
            title=f"dead letters: {name}",
            topic=name,
            info=info,
            letters=[{"letter": x, "payload": _view.payload(x.data, 1024)} for x in found.letters],
            limit=DEAD_LETTERS,
            cut=found.next_seq is not None,
            scan=SCAN,
        )

    async def _letters(self, topic: str) -> jk.DeadLetterScan:
        """The first ``DEAD_LETTERS`` dead letters among the topic's first ``SCAN``
        messages (``next_seq`` says whether messages were left unread): a page must not
        read a whole topic of other messages (``Stream.dead_letters`` would, to find its
        limit)."""
        return await self.stream.scan_dead_letters(topic, limit=DEAD_LETTERS, scan=SCAN)

    async def redrive(self, request: Request) -> Response:
        """A first POST shows what would be re-driven; the second (``confirm=yes``)
        re-drives it through ``Stream.redrive``."""
        form = await self.form(request)
        if form is None:
            return self.page("error.html", 403, title="refused", message=REFUSED)
        name = form.get("topic", "")
        numbers: dict[str, int | None] = {}
        for field in ("seq", "upto"):
            text = form.get(field, "")
            if text and not (text.isascii() and text.isdigit()):
                return self.page(
                    "error.html", 400, title="bad request", message=f"{field} is not a number"
                )
            numbers[field] = int(text) if text else None
        seq, upto = numbers["seq"], numbers["upto"]
        try:
            if form.get("confirm") != "yes":
                # what "all" means is fixed now: letters arriving after this page was
                # shown are not re-driven by its button (they were not confirmed)
                found = await self._letters(name)
                chosen = [x for x in found.letters if seq is None or x.seq == seq]
                return self.page(
                    "confirm.html",
                    title="re-drive?",
                    topic=name,
                    seq=seq,
                    upto=found.last_seq,
                    letters=chosen,
                    more=seq is None and found.next_seq is not None,
                )

            def where(letter: jk.DeadLetter) -> bool:
                return (seq is None or letter.seq == seq) and (upto is None or letter.seq <= upto)

            result = await self.stream.redrive(name, where=where)
        except (jk.NotFoundError, jk.InvalidTopicError):
            return self.not_found(f"no stored topic {name!r}")
        except jk.JetkitError as exc:
            return self.page("error.html", 400, title="re-drive failed", message=str(exc))
        return self.page("redriven.html", title="re-driven", topic=name, result=result)

    async def publish_form(self, request: Request) -> Response:
        return self.page(
            "publish.html",
            title="publish",
            topic=request.query_params.get("topic", ""),
            payload="",
            headers="",
            error=None,
            done=None,
        )

    async def publish(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return self.page("error.html", 403, title="refused", message=REFUSED)
        topic = form.get("topic", "").strip()
        payload = form.get("payload", "")
        header_text = form.get("headers", "")
        context: dict[str, Any] = {
            "title": "publish",
            "topic": topic,
            "payload": payload,
            "headers": header_text,
            "error": None,
            "done": None,
        }
        try:
            lines = [line.strip() for line in header_text.splitlines() if line.strip()]
            headers = parse_headers(lines)
            await use_if_stored(self.stream, topic)
            ack = await self.stream.publish(topic, payload.encode(), headers=headers or None)
        except BadInput as exc:
            context["error"] = f"headers: {exc}"
            return self.page("publish.html", 400, **context)
        except jk.JetkitError as exc:
            context["error"] = str(exc)
            return self.page("publish.html", 400, **context)
        context["done"] = published(topic, ack)
        return self.page("publish.html", **context)


def create_app(sampler: Sampler, token: str, port: int, once: Iterable[str] = ()) -> Guard:
    """The console as an ASGI app, every request checked by ``Guard`` (``once``: tokens
    that open it once, then no longer)."""
    console = Console(sampler, token)
    routes = [
        Route("/", console.overview),
        Route("/topics/{topic:path}", console.topic),
        Route("/dlq/{topic:path}", console.dlq),
        Route("/redrive", console.redrive, methods=["POST"]),
        Route("/publish", console.publish_form, methods=["GET"]),
        Route("/publish", console.publish, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return console.not_found(f"no page at {request.url.path}")

    app = Starlette(routes=routes, exception_handlers={404: not_found})
    return Guard(app, token, port, once)

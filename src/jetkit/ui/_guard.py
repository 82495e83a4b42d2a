"""Who may use the console: requests that prove they come from whoever ran ``jetkit ui``.

Every request, static files included, passes three checks before any route runs:

- its ``Host`` is ``127.0.0.1:PORT`` or ``localhost:PORT`` (a page of another site
  whose name was re-pointed at 127.0.0.1, DNS rebinding, gets 403);
- it carries the token: ``?token=...`` (the URL printed at start; answered with a
  redirect to the same page without it and a cookie holding it) or that cookie.
  No token: 401; a wrong one: 403. Compared in constant time. The browser opened at
  start gets a URL with a token good for one GET instead (its command line is
  readable by every local user);
- a POST (the only requests that change anything) whose ``Origin`` or ``Referer`` is
  another site's gets 403; the routes also require the form's CSRF field
  (``csrf_token``), so a cross-site form cannot re-drive or publish.

The cookie is HttpOnly, SameSite=Strict, Path=/, and named after the port (browsers
share cookies between the ports of one host, so two consoles keep theirs apart).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {
    # the pages load nothing but the console's own files; no page may frame them
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # not no-referrer: under it a browser sends "Origin: null" with its own form POSTs
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def cookie_name(port: int) -> str:
    return f"jetkit-ui-{port}"


def csrf_token(token: str) -> str:
    """The value the console's forms carry: derived from the token, so only a page the
    token opened knows it."""
    return hmac.new(token.encode(), b"jetkit-ui-csrf", hashlib.sha256).hexdigest()


def same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class Guard:
    """ASGI middleware applying the checks of the module docstring."""

    def __init__(self, app: ASGIApp, token: str, port: int, once: Iterable[str] = ()) -> None:
        self.app = app
        self.token = token
        self.port = port
        # tokens good for one GET each (the URL given to the browser: see ``spend``)
        self.once = set(once)
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.origins = {f"http://{h}" for h in self.hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            return
        refused = self._refused(scope)
        if refused is not None:
            await refused(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, secured)

    def _refused(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        if headers.get("host", "") not in self.hosts:
            return _refuse(403, "unexpected Host header: open the console at 127.0.0.1")
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
        given = [v for k, v in query if k == "token"]
        values = _cookie_values(headers.getlist("cookie"), cookie_name(self.port))
        # all compared, in constant time each: a stale cookie does not hide the right one
        has_cookie = bool([v for v in values if same(v, self.token)])
        get = scope["method"] == "GET"
        if given:
            token_ok = same(given[-1], self.token)
            if token_ok and not get:
                return None
            # a spent one-visit URL, reopened from the history, with the cookie: fine
            if get and (token_ok or self.spend(given[-1]) or has_cookie):
                return self._with_cookie(scope, query)
            if not has_cookie:
                return _refuse(403, "wrong token: open the URL that jetkit ui printed")
        elif not values:
            return _refuse(401, "no token: open the URL that jetkit ui printed (with ?token=)")
        elif not has_cookie:
            return _refuse(403, "wrong token: open the URL that jetkit ui printed")
        if not get and scope["method"] != "HEAD" and not self._same_origin(headers):
            return _refuse(403, "cross-site request refused")
        return None

    def _with_cookie(self, scope: Scope, query: list[tuple[str, str]]) -> Response:
        """A redirect to the same page without the token, setting the cookie."""
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        target = _same_site_path(scope) + (f"?{rest}" if rest else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            cookie_name(self.port), self.token, httponly=True, samesite="strict", path="/"
        )
        for k, v in SECURITY_HEADERS.items():
            response.headers[k] = v
        return response

    def spend(self, given: str) -> bool:
        """Whether ``given`` is a one-GET token, which it then no longer is. The URL
        opened in the browser carries one: a browser's command line is readable by
        every local user (``ps``), so what it shows must be useless once opened."""
        for once in list(self.once):
            if same(given, once):
                self.once.discard(once)
                return True
        return False

    def _same_origin(self, headers: Headers) -> bool:
        """A POST's Origin (or, without one, its Referer) is the console itself; a
        request with neither (not sent by a browser) relies on the CSRF field."""
        origin = headers.get("origin")
        if origin is None:
            referer = headers.get("referer")
            if referer is None:
                return True
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        return origin in self.origins


def _cookie_values(lines: list[str], name: str) -> list[str]:
    """The values of the cookies called ``name``, read as browsers write them: other
    sites' cookies on 127.0.0.1 (any port's) may be anything, and ``SimpleCookie``
    stops reading at the first one it finds malformed (``a={"json": 1}``), which
    would hide the console's own."""
    found = []
    for line in lines:
        for part in line.split(";"):
            key, sep, value = part.partition("=")
            if sep and key.strip() == name:
                found.append(value.strip().strip('"'))
    return found


def _same_site_path(scope: Scope) -> str:
    """The request's path as it was sent (still percent-encoded: a topic named ``a?b``
    stays one path segment), starting with exactly one ``/``: ``//evil.example/`` would
    be another site to a browser."""
    raw = scope.get("raw_path")
    # (some servers' raw_path holds the query too)
    path = raw.split(b"?")[0].decode("latin-1") if raw else quote(scope["path"])
    return "/" + path.lstrip("/\\")


def _refuse(status: int, text: str) -> Response:
    response = PlainTextResponse(text + "\n", status_code=status)
    for k, v in SECURITY_HEADERS.items():
        response.headers[k] = v
    return response

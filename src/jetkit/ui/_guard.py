"""Who may use the console: requests that prove they come from whoever ran ``jetkit ui``.

Every request, static files included, passes three checks before any route runs:

- its ``Host`` is ``127.0.0.1:PORT`` or ``localhost:PORT`` (a page of another site
  whose name was re-pointed at 127.0.0.1, DNS rebinding, gets 403);
- it carries the token: ``?token=...`` (the URL printed at start; answered with a
  redirect to the same page without it and a cookie holding it) or that cookie.
  No token: 401; a wrong one: 403. Compared in constant time;
- a POST (the only requests that change anything) whose ``Origin`` or ``Referer`` is
  another site's gets 403; the routes also require the form's CSRF field
  (``csrf_token``), so a cross-site form cannot re-drive or publish.

The cookie is HttpOnly, SameSite=Strict, Path=/, and named after the port (browsers
share cookies between the ports of one host, so two consoles keep theirs apart).
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

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

    def __init__(self, app: ASGIApp, token: str, port: int) -> None:
        self.app = app
        self.token = token
        self.port = port
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
        if given:
            if not same(given[-1], self.token):
                return _refuse(403, "wrong token: open the URL that jetkit ui printed")
            if scope["method"] != "GET":
                return None
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            target = scope["path"] + (f"?{rest}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(
                cookie_name(self.port),
                self.token,
                httponly=True,
                samesite="strict",
                path="/",
            )
            for k, v in SECURITY_HEADERS.items():
                response.headers[k] = v
            return response
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no cookie
            cookie = SimpleCookie()
        morsel = cookie.get(cookie_name(self.port))
        if morsel is None:
            return _refuse(401, "no token: open the URL that jetkit ui printed (with ?token=)")
        if not same(morsel.value, self.token):
            return _refuse(403, "wrong token: open the URL that jetkit ui printed")
        if scope["method"] not in ("GET", "HEAD") and not self._same_origin(headers):
            return _refuse(403, "cross-site request refused")
        return None

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


def _refuse(status: int, text: str) -> Response:
    response = PlainTextResponse(text + "\n", status_code=status)
    for k, v in SECURITY_HEADERS.items():
        response.headers[k] = v
    return response

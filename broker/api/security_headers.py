"""Security headers on every answer the broker gives, not only the web pages: API JSON, errors, /openapi.json,
/healthz and /metrics (a JSON error rendered by a browser must not be framed, sniffed or cached).

The approvals pages set their own, stricter-for-pages Content-Security-Policy; this middleware only adds a
header an answer does not carry already.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# An API answer is data, never a document: it may load nothing and be framed by nobody.
API_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Tokens, grants and audit events must not sit in a shared cache; the static assets may.
_NO_STORE = {"Cache-Control": "no-store"}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in (API_HEADERS if cacheable else {**API_HEADERS, **_NO_STORE}).items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)

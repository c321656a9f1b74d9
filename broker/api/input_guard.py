"""Refuse control characters in URL paths and query strings before any route sees them (a NUL in an id
would otherwise reach PostgreSQL, which rejects it with an error, not an answer)."""

from __future__ import annotations

import json
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from broker.api.schemas import CONTROL_CHARACTERS


class ControlCharacterGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            query = unquote(scope.get("query_string", b"").decode("latin-1"))
            if CONTROL_CHARACTERS.search(path) or CONTROL_CHARACTERS.search(query):
                body = json.dumps({"error": "invalid_input",
                                   "message": "the address holds control characters; nothing was done"}).encode()
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

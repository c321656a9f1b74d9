"""Fixtures for the CLI tests: a client state directory, a fixed clock, and a tiny in-process broker."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from cli.context import Context
from cli.state import ClientState, Session

NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
SERVER = "http://broker.test"

Responder = Callable[[Any, dict[str, list[str]]], tuple[int, Any]]


class TinyBroker:
    """A WSGI app answering the routes a test registers, recording every call; served by httpx.WSGITransport."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Responder] = {}
        self.calls: list[dict[str, Any]] = []

    def on(self, method: str, path: str, answer: Responder | tuple[int, Any]) -> None:
        self.routes[(method, "/api/v1" + path)] = answer if callable(answer) else (lambda _b, _q: answer)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        body = json.loads(raw) if raw else None
        query = parse_qs(environ.get("QUERY_STRING", ""))
        self.calls.append(
            {"method": method, "path": path, "body": body, "query": query,
             "authorization": environ.get("HTTP_AUTHORIZATION")}
        )
        responder = self.routes.get((method, path))
        if responder is None:
            status, payload = 404, {"error": "not_found", "message": f"no route {method} {path}"}
        else:
            status, payload = responder(body, query)
        if status == 204:
            start_response("204 No Content", [])
            return [b""]
        if isinstance(payload, bytes):
            start_response(f"{status} X", [("Content-Type", "text/plain")])
            return [payload]
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [json.dumps(payload).encode()]


@pytest.fixture
def broker() -> TinyBroker:
    return TinyBroker()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "gatepass-home"


@pytest.fixture
def ctx(home: Path, broker: TinyBroker) -> Context:
    return Context(
        environ={"GATEPASS_HOME": str(home), "GATEPASS_SERVER": SERVER},
        state=ClientState(home),
        out=io.StringIO(),
        err=io.StringIO(),
        clock=lambda: NOW,
        sleep=lambda _seconds: None,
        transport=httpx.WSGITransport(app=broker),
    )


@pytest.fixture
def logged_in(ctx: Context) -> Session:
    session = Session(server=SERVER, username="vendor1", token="tok-secret-123",
                      expires_at=NOW + dt.timedelta(hours=1))
    ctx.state.save_session(session)
    return session

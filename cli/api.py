"""A small synchronous client for the broker's user API (``/api/v1``); refusals become ``ClientError``s."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

# httpx's __init__ imports its optional command-line tool, httpx._main (click, pygments and rich; without rich it
# fails, after paying for the other two): about a third of httpx's import time, on every command that talks to the
# broker, for a tool the CLI never uses. A None entry in sys.modules makes that import fail at once, which httpx
# expects: it catches the ImportError and leaves a stub httpx.main. Only while httpx is not imported yet, so nothing
# else in this process can have asked for the tool.
if "httpx" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]

import httpx

from cli.errors import ApiError, NotLoggedIn, ServerUnreachable
from cli.state import login_hint

API_PREFIX = "/api/v1"
TIMEOUT_SECONDS = 15.0


class ApiClient:
    """Talks to one broker, with or without a bearer token; every method returns the decoded JSON body."""

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        username: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server
        self.username = username
        headers = {"Accept": "application/json", "User-Agent": "gatepass-cli"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=server + API_PREFIX, headers=headers, timeout=TIMEOUT_SECONDS, transport=transport
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self._send("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._send("POST", path, body=body)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self._send("PUT", path, body=body)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        try:
            response = self._http.request(method, path, params=params, json=body)
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(
                f"the broker at {self.server} did not answer in {TIMEOUT_SECONDS:.0f} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise ServerUnreachable(f"cannot reach the broker at {self.server}: {exc}") from exc
        if response.is_success:
            if response.status_code == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError as exc:
                raise ServerUnreachable(
                    f"the broker at {self.server} answered {method} {path} with something that is not JSON"
                ) from exc
        raise self._refusal(response)

    def _refusal(self, response: httpx.Response) -> Exception:
        code, message = _error_body(response)
        if response.status_code == 401 and code == "not_authenticated":
            return NotLoggedIn(
                f"your session on {self.server} has expired or was revoked ({message}): "
                f"{login_hint(self.server, self.username)}"
            )
        if message is None:
            reason = response.reason_phrase or "error"
            message = f"the broker at {self.server} answered HTTP {response.status_code} ({reason})"
        return ApiError(
            message, status_code=response.status_code, code=code or f"http_{response.status_code}"
        )


def _error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    """Read ``{"error", "message"}`` (docs/API.md), or FastAPI's ``{"detail"}`` should one slip through."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code = body.get("error")
    message = body.get("message")
    if isinstance(message, str) and message:
        return (code if isinstance(code, str) else None), message
    detail = body.get("detail")
    if isinstance(detail, str):
        return None, detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        if parts:
            return None, "the broker refused the input: " + "; ".join(parts)
    return None, None

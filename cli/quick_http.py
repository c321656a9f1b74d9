"""One JSON call to the broker on the standard library alone, for the commands that must act at once.

`gatepass revoke` is what a supervisor types when access must end now (issue 14: revoke -> ssh exits in
<= 120 ms). Importing httpx and building its client (with its SSL context) cost more than the whole revoke
took on the broker and the gateway: about 100 ms of a 265 ms median, and several times that on a busy
machine. ``http.client`` is a fraction of that. The answers are read as ``cli.api.ApiClient`` reads them
(docs/API.md ``{"error", "message"}``) and the same errors are raised; TLS trusts what httpx trusts
(``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else certifi's bundle). With a proxy configured in the environment
(which httpx would honour) ``usable`` says no and the caller uses ``ApiClient``.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cli.errors import ApiError, NotLoggedIn, ServerUnreachable
from cli.state import login_hint

API_PREFIX = "/api/v1"
TIMEOUT_SECONDS = 15.0
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def usable(server: str, environ: Mapping[str, str]) -> bool:
    """Whether this module reaches ``server`` as httpx would (plain http(s), no proxy in the environment)."""
    if urlsplit(server).scheme not in ("http", "https"):
        return False
    return not any(environ.get(name) or environ.get(name.upper()) for name in _PROXY_VARIABLES)


def post(server: str, path: str, body: Mapping[str, Any], *, token: str, username: str | None) -> Any:
    """POST ``body`` as JSON to ``server``/api/v1``path``; the decoded answer, or the refusal as an exception."""
    parts = urlsplit(server)
    host = parts.hostname or ""
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(host, parts.port, timeout=TIMEOUT_SECONDS, context=_tls_context())
    else:
        connection = http.client.HTTPConnection(host, parts.port, timeout=TIMEOUT_SECONDS)
    headers = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": "gatepass-cli",
               "Authorization": f"Bearer {token}"}
    try:
        connection.request("POST", parts.path.rstrip("/") + API_PREFIX + path, body=json.dumps(dict(body)),
                           headers=headers)
        response = connection.getresponse()
        content = response.read()
    except TimeoutError as exc:
        raise ServerUnreachable(f"the broker at {server} did not answer in {TIMEOUT_SECONDS:.0f} s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise ServerUnreachable(f"cannot reach the broker at {server}: {exc}") from exc
    finally:
        connection.close()
    decoded = _json(content)
    if 200 <= response.status < 300:
        if response.status == 204 or not content:
            return None
        if decoded is _NOT_JSON:
            raise ServerUnreachable(f"the broker at {server} answered POST {path} with something that is not JSON")
        return decoded
    code, message = _error_body(decoded)
    if response.status == 401 and code == "not_authenticated":
        raise NotLoggedIn(f"your session on {server} has expired or was revoked ({message}): "
                          f"{login_hint(server, username)}")
    if message is None:
        message = f"the broker at {server} answered HTTP {response.status} ({response.reason or 'error'})"
    raise ApiError(message, status_code=response.status, code=code or f"http_{response.status}")


_NOT_JSON = object()


def _json(content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except ValueError:
        return _NOT_JSON


def _error_body(body: Any) -> tuple[str | None, str | None]:
    """``{"error", "message"}`` (docs/API.md), or FastAPI's ``{"detail": "..."}`` should one slip through."""
    if not isinstance(body, dict):
        return None, None
    code = body.get("error") if isinstance(body.get("error"), str) else None
    message = body.get("message")
    if isinstance(message, str) and message:
        return code, message
    detail = body.get("detail")
    return None, detail if isinstance(detail, str) else None


def _tls_context() -> ssl.SSLContext:
    # What httpx trusts by default (its create_ssl_context): the environment's bundle, else certifi's.
    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())

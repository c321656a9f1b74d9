"""One JSON call to the broker on the standard library alone, for the commands that must act at once.

`gatepass ssh` looks up its grant and then becomes ssh (issue 14: at most 0.6 of ProxyJump's set-up);
`gatepass revoke` is what a supervisor types when access must end now (issue 14: revoke -> ssh exits in
<= 120 ms). Importing httpx and building its client (with its SSL context) cost more than the whole revoke
took on the broker and the gateway: about 100 ms of a 265 ms median, and several times that on a busy
machine; even ``http.client`` (it imports the email package) costs 15-35 ms. One HTTP/1.1 request with
``Connection: close`` on a plain socket is all this needs (RFC 9112: the answer is framed by Content-Length,
by chunks, or by the close). The answers are read as ``cli.api.ApiClient`` reads them
(docs/API.md ``{"error", "message"}``) and the same errors are raised; TLS trusts what httpx trusts
(``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else certifi's bundle). With a proxy configured in the environment
(which httpx would honour) ``usable`` says no and the caller uses ``ApiClient``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from cli.errors import ApiError, NotLoggedIn, ServerUnreachable
from cli.state import login_hint

if TYPE_CHECKING:
    import ssl

API_PREFIX = "/api/v1"
TIMEOUT_SECONDS = 15.0
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a grant object is a few KiB; anything far larger is not the broker


def usable(server: str, environ: Mapping[str, str]) -> bool:
    """Whether this module reaches ``server`` as httpx would (plain http(s), no proxy in the environment)."""
    if urlsplit(server).scheme not in ("http", "https"):
        return False
    return not any(environ.get(name) or environ.get(name.upper()) for name in _PROXY_VARIABLES)


def post(server: str, path: str, body: Mapping[str, Any], *, token: str, username: str | None) -> Any:
    """POST ``body`` as JSON to ``server``/api/v1``path``; the decoded answer, or the refusal as an exception."""
    return _call("POST", server, path, json.dumps(dict(body)).encode(), token=token, username=username)


def get(server: str, path: str, params: Mapping[str, str], *, token: str, username: str | None) -> Any:
    """GET ``server``/api/v1``path`` with ``params`` as the query (`gatepass ssh` finding its grant before it
    becomes ssh); the decoded answer, or the refusal as an exception."""
    query = f"?{urlencode(dict(params))}" if params else ""
    return _call("GET", server, path + query, None, token=token, username=username)


def _call(method: str, server: str, path: str, payload: bytes | None, *, token: str, username: str | None) -> Any:
    parts = urlsplit(server)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    authority = parts.netloc.rpartition("@")[2]
    body_headers = "" if payload is None else \
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    head = (f"{method} {parts.path.rstrip('/')}{API_PREFIX}{path} HTTP/1.1\r\nHost: {authority}\r\n"
            f"Accept: application/json\r\n{body_headers}User-Agent: gatepass-cli\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n")
    what = f"{method} {path.partition('?')[0]}"
    try:
        sock = socket.create_connection((host, port), timeout=TIMEOUT_SECONDS)
        try:
            if parts.scheme == "https":
                sock = _tls_context().wrap_socket(sock, server_hostname=host)
            sock.sendall(head.encode() + (payload or b""))
            raw = _read_all(sock)
        finally:
            sock.close()
    except TimeoutError as exc:
        raise ServerUnreachable(f"the broker at {server} did not answer in {TIMEOUT_SECONDS:.0f} s") from exc
    except OSError as exc:
        raise ServerUnreachable(f"cannot reach the broker at {server}: {exc}") from exc
    answer = _parse(raw)
    if answer is None:
        raise ServerUnreachable(f"the broker at {server} answered {what} with something that is not HTTP")
    status, content = answer
    decoded = _json(content)
    if 200 <= status < 300:
        if status == 204 or not content:
            return None
        if decoded is _NOT_JSON:
            raise ServerUnreachable(f"the broker at {server} answered {what} with something that is not JSON")
        return decoded
    code, message = _error_body(decoded)
    if status == 401 and code == "not_authenticated":
        raise NotLoggedIn(f"your session on {server} has expired or was revoked ({message}): "
                          f"{login_hint(server, username)}")
    if message is None:
        # The standard phrase, as httpx gives it (not the server's own reason text).
        message = f"the broker at {server} answered HTTP {status} ({_phrase(status)})"
    raise ApiError(message, status_code=status, code=code or f"http_{status}")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (the request said ``Connection: close``)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            break
    return b"".join(chunks)


def _parse(raw: bytes) -> tuple[int, bytes] | None:
    """(status, body) of one HTTP/1.1 answer, or None if it is not one."""
    head, separator, rest = raw.partition(b"\r\n\r\n")
    if not separator:
        return None
    lines = head.decode("latin-1").split("\r\n")
    version, _, status_and_reason = lines[0].partition(" ")
    status_text = status_and_reason.partition(" ")[0]
    if not version.startswith("HTTP/1.") or not status_text.isdigit():
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(rest)
        if body is None:
            return None
    elif (length := headers.get("content-length", "")).isdigit():
        body = rest[: int(length)]
        if len(body) < int(length):
            return None  # cut short
    else:
        body = rest
    return int(status_text), body


def _unchunk(data: bytes) -> bytes | None:
    body = bytearray()
    while True:
        size_line, separator, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError:
            return None
        if not separator or size < 0:
            return None
        if size == 0:
            return bytes(body)
        if len(data) < size + 2:
            return None
        body += data[:size]
        data = data[size + 2:]


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
    import ssl

    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())

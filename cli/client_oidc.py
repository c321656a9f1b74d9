"""`gatepass login --oidc`: sign in with the company account. The broker starts the authorization request for a
redirect to this machine (http://127.0.0.1:<free port>/callback, RFC 8252 §7.3); the person signs in at the plant's
identity provider in their browser, which comes back here with a code; the broker exchanges it, checks the ID
token and answers a session token, as a password sign-in does."""

from __future__ import annotations

import contextlib
import hmac
import http.server
import threading
import time
import webbrowser
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cli.context import Context
from cli.errors import ClientError, ServerUnreachable

CALLBACK_PATH = "/callback"
# Long enough to type a password and find the phone; the broker's pending sign-in lives ten minutes.
WAIT_SECONDS = 300.0
_DONE_PAGE = (b"<!doctype html><meta charset=utf-8><title>Gatepass</title><p>Gatepass has your company sign-in. "
              b"Go back to your terminal; you can close this window.</p>")


@dataclass
class _Answer:
    code: str | None = None
    error: str | None = None


class _Listener(http.server.HTTPServer):
    """One loopback listener on a port the kernel picks, waiting for the provider's redirect with our state."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Callback)
        self.expected_state = ""  # set from the broker's answer before the first request is served
        self.answer = _Answer()
        self.arrived = threading.Event()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{CALLBACK_PATH}"


class _Callback(http.server.BaseHTTPRequestHandler):
    server: _Listener

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        # Any page the browser has open can send a request to this port: only the provider's redirect carrying the
        # state of this sign-in counts (RFC 6749 §10.12); anything else is answered 404 and the wait goes on.
        state = query.get("state", "")
        if (parts.path != CALLBACK_PATH or not self.server.expected_state
                or not hmac.compare_digest(state.encode(), self.server.expected_state.encode())):
            self.send_error(404)
            return
        if "error" in query:
            self.server.answer.error = query["error"][:80]
        else:
            self.server.answer.code = query.get("code", "")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(_DONE_PAGE)
        self.server.arrived.set()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request line carries the sign-in's code, which has no place on the terminal."""


def company_sign_in(ctx: Context, server: str, *, open_browser: bool) -> dict[str, Any]:
    """The broker's answer to a finished company sign-in: ``{"token", "expires_at", "identity", "mfa"}``."""
    listener = _Listener()
    thread: threading.Thread | None = None
    try:
        with ctx.anonymous_api(server) as api:
            started = api.post("/auth/oidc/start", {"redirect_uri": listener.redirect_uri})
        try:
            url, state, pending = str(started["authorization_url"]), str(started["state"]), str(started["pending"])
        except (KeyError, TypeError) as exc:
            raise ServerUnreachable(f"the broker at {server} answered the company sign-in with an unexpected "
                                    "body") from exc
        listener.expected_state = state
        thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="gatepass-oidc-callback", daemon=True)
        thread.start()
        ctx.note("gatepass: sign in with your company account in your browser; if it does not open, open this "
                 f"address:\n{url}")
        if open_browser:
            with contextlib.suppress(webbrowser.Error):
                webbrowser.open(url)
        deadline = time.monotonic() + WAIT_SECONDS
        while not listener.arrived.wait(0.2):
            if time.monotonic() > deadline:
                raise ClientError(f"no company sign-in arrived within {int(WAIT_SECONDS // 60)} minutes; run "
                                  "`gatepass login --oidc` again")
        answer = listener.answer
        if answer.error is not None or not answer.code:
            raise ClientError(f"the company sign-in did not complete ({answer.error or 'no code'}); run "
                              "`gatepass login --oidc` again")
        with ctx.anonymous_api(server) as api:
            finished: dict[str, Any] = api.post("/auth/oidc/finish",
                                                {"pending": pending, "code": answer.code, "state": state})
    finally:
        if thread is not None:
            listener.shutdown()
        listener.server_close()
    if finished.get("mfa") is False:
        ctx.note("gatepass: your company sign-in did not report a second factor: you can look, but approving, "
                 "denying, granting access and lockdown will be refused until you sign in with one.")
    return finished

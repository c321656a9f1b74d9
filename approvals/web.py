"""The web pages' plumbing: templates with autoescaping, security headers, the session cookie, CSRF checks,
one database transaction per page, and domain errors shown as pages that say what was refused and why."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from approvals.notifier import NotifierSettings
from approvals.use_notice import SilentObserversNotice
from broker.api.errors import answer_for
from broker.api.state import BrokerState
from broker.audit.refusals import Refusal, unrecorded_refusal
from broker.audit.siem_escaping import visible
from broker.audit.trail import Action
from broker.db import unit_of_work
from broker.errors import BrokerError, Forbidden, InvalidInput, NotAuthenticated
from broker.identity import authentication, web_sessions
from broker.inventory.supervision_policy import effective_supervision
from broker.models import Identity
from broker.sources import client_address
from broker.vocabulary import IdentityKind

SESSION_COOKIE = "gatepass_session"
SIGNIN_COOKIE = "gatepass_signin"
MAX_FIELD = 20_000
# Control characters other than tab and newlines never belong in a form (a NUL would reach PostgreSQL).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

DEFAULT_USE_NOTICE = (
    "This system is for authorised use only. Remote access to plant equipment is granted per machine and "
    "time window, and every action is recorded and may be reviewed. Unauthorised use is prohibited and may "
    "be reported. By signing in you accept these conditions."
)

# No inline script or style anywhere: everything comes from /static (the CSP forbids the rest).
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                           "object-src 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # Pages show who is at the plant right now: never cache them (also not in a shared proxy).
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}


@dataclass(frozen=True)
class WebSettings:
    # IEC 62443-3-3 SR 1.12 "system use notification": shown before sign-in, worded per deployment.
    use_notice: str = DEFAULT_USE_NOTICE


@dataclass(frozen=True)
class Web:
    state: BrokerState
    settings: WebSettings
    csrf_key: bytes
    templates: jinja2.Environment
    notifier: NotifierSettings
    silent_observers: SilentObserversNotice


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("approvals", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = format_time
    env.filters["duration"] = format_seconds
    # Text from the trail and from recordings as typed: autoescaping covers HTML, this covers control
    # characters (ESC, BEL, U+2028 ... shown as \x1b, \x07, \u2028), DESIGN invariant 10.
    env.filters["visible"] = visible
    # Whether an asset's sessions wait for a supervisor: its own policy, else its site's (issue 13).
    env.filters["supervised"] = lambda asset: effective_supervision(asset).required
    return env


def format_time(value: dt.datetime | None) -> str:
    return "—" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_seconds(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def web_of(request: Request) -> Web:
    web: Web = request.app.state.approvals
    return web


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def render(web: Web, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    html = web.templates.get_template(template).render(**context)
    response = HTMLResponse(html, status_code=status)
    secure(response)
    return response


def redirect(location: str) -> Response:
    return secure(RedirectResponse(location, status_code=303))


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def client_host(request: Request) -> str | None:
    """The socket's peer, or the client a trusted proxy names (GATEPASS_TRUSTED_PROXIES): the same rule as the
    API's (broker.sources), so throttles and the audit trail see one source whichever door was used."""
    return client_address(request, web_of(request).state.settings)


def error_page(web: Web, status: int, message: str, *, viewer: Viewer | None = None) -> HTMLResponse:
    titles = {400: "That did not work", 401: "Please sign in", 403: "Refused", 404: "Not found",
              409: "Not possible right now", 423: "Account locked"}
    return render(web, "error.html", status=status, title=titles.get(status, "Refused"), message=message,
                  viewer=viewer)


@dataclass(frozen=True)
class Viewer:
    """The signed-in person as the templates see them (plain values: no database object leaves its session)."""

    username: str
    roles: frozenset[str]
    csrf: str

    def has(self, role: str) -> bool:
        return role in self.roles


def viewer_of(identity: Identity, csrf: str) -> Viewer:
    return Viewer(username=identity.username, roles=frozenset(a.role for a in identity.roles), csrf=csrf)


Work = Callable[[Session, Identity, Viewer, dt.datetime], Response]


async def signed_in(request: Request, work: Work) -> Response:
    """Run ``work`` in one transaction for the signed-in person; send strangers to the sign-in page."""
    web = web_of(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return redirect("/sign-in")
    csrf = web_sessions.csrf_token(web.csrf_key, token)
    actor: list[str] = []  # who was signed in, for the refusal's audit event (the transaction is gone by then)

    def run() -> Response:
        with unit_of_work(web.state.sessions) as session:
            web.state.refusals.gate(session, client_address(request, web.state.settings))
            now = web.state.settings.clock.now()
            identity = authentication.authenticate_token(session, now=now, token=token)
            actor.append(identity.username)
            if identity.kind != IdentityKind.HUMAN:
                # A service's or AI agent's credential in the session cookie: the pages are for people
                # (DESIGN invariant 5), whatever token reached them.
                raise Forbidden("the web pages are for people; a service account or AI agent uses the API")
            return work(session, identity, viewer_of(identity, csrf), now)

    try:
        return await run_in_threadpool(run)
    except NotAuthenticated:
        response = redirect("/sign-in")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
    except (BrokerError, IntegrityError, DataError) as error:
        if isinstance(error, BrokerError) and unrecorded_refusal(error):
            # A page or action refused to a signed-in person (a vendor opening the review pages, a supervisor
            # ending another site's session, approving twice): in the trail, like the API's (broker.refusals).
            await run_in_threadpool(web.state.refusals.record, Refusal(
                action=Action.WEB_REFUSED, reason=error.message, actor=actor[0] if actor else None,
                source=client_address(request, web.state.settings), subject=request.url.path[:128],
                details={"method": request.method, "status": error.status_code}))
        answer = answer_for(error)
        return error_page(web, answer.status, answer.message)


async def read_form(request: Request) -> dict[str, str]:
    """The posted fields as strings; anything else (files, huge values) is bad input, not a crash."""
    try:
        form = await request.form(max_files=0, max_fields=100)
    except Exception as error:  # a malformed body is the client's mistake: answer 400, never 500
        raise InvalidInput("the form could not be read; reload the page and try again") from error
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise InvalidInput(f"the field '{name[:40]}' must be text")
        if _CONTROL.search(value):
            raise InvalidInput(f"the field '{name[:40]}' holds control characters; nothing was done")
        if len(value) > MAX_FIELD:
            raise InvalidInput(f"the field '{name[:40]}' is too long")
        if name in fields:
            fields[name] += "," + value  # repeated fields (checkbox groups) come back comma-joined
        else:
            fields[name] = value
    return fields


async def posted(request: Request, work: Callable[[Session, Identity, Viewer, dt.datetime, dict[str, str]],
                                                  Response]) -> Response:
    """A form post: its CSRF token must match the session's (else 403, audited, nothing changed)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    form = await checked_form(request, token, session_token=token)
    if isinstance(form, Response):
        return form

    def run(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime) -> Response:
        return work(session, identity, viewer, now, form)

    return await signed_in(request, run)


async def checked_form(request: Request, csrf_context: str | None, *,
                       session_token: str = "") -> dict[str, str] | Response:
    """The posted form if its CSRF token matches ``csrf_context`` (None: there is nothing it could match);
    otherwise the page to answer with: 400 for an unreadable form, 403 (audited) for a forgery."""
    web = web_of(request)
    try:
        form = await read_form(request)
    except InvalidInput as error:
        return error_page(web, 400, error.message)
    if csrf_context is None or not web_sessions.csrf_matches(web.csrf_key, csrf_context, form.get("csrf")):
        return await refuse_forgery(request, session_token)
    return form


async def refuse_forgery(request: Request, token: str) -> Response:
    web = web_of(request)

    def record() -> None:
        with unit_of_work(web.state.sessions) as session:
            now = web.state.settings.clock.now()
            actor = None
            if token:
                try:
                    actor = authentication.authenticate_token(session, now=now, token=token).username
                except NotAuthenticated:
                    actor = None
            web_sessions.record_csrf_refusal(session, now=now, actor=actor, path=request.url.path,
                                             source=client_host(request))

    await run_in_threadpool(record)
    return error_page(web, 403, "This form was refused: it did not carry this session's security token "
                      "(it may come from another site, or the page is out of date). Nothing was changed; "
                      "reload the page and try again.")


Handler = Callable[[Request], Awaitable[Response]]


def text(form: Mapping[str, str], name: str, *, label: str, required: bool = True, limit: int = 1000) -> str:
    value = form.get(name, "").strip()
    if required and not value:
        raise InvalidInput(f"{label} is required")
    if len(value) > limit:
        raise InvalidInput(f"{label} is too long ({len(value)} characters, at most {limit})")
    return value


def parse_ports(value: str) -> list[int]:
    ports = []
    for part in value.replace(" ", ",").split(","):
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise InvalidInput(f"'{part[:10]}' is not a TCP port: give numbers from 1 to 65535, e.g. 502, 4840")
        ports.append(int(part))
    return ports

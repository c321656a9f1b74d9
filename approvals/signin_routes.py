"""Sign-in (password + one-time code, after the system use notice) and sign-out."""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from approvals.web import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Viewer,
    client_host,
    error_page,
    is_https,
    posted,
    read_form,
    redirect,
    refuse_forgery,
    render,
    signed_in,
    web_of,
)
from broker import authentication, web_sessions
from broker.db import unit_of_work
from broker.errors import BrokerError, InvalidInput, NotAuthenticated
from broker.models import Identity

router = APIRouter(include_in_schema=False)

SIGNIN_NONCE_TTL = 1800


def home_for(roles: frozenset[str]) -> str:
    if "supervisor" in roles:
        return "/approvals"
    if "vendor" in roles:
        return "/vendor"
    if "security" in roles or "admin" in roles:
        return "/review"
    return "/account"


@router.get("/")
async def home(request: Request) -> Response:
    def work(_session: Session, _identity: Identity, viewer: Viewer, _now: dt.datetime) -> Response:
        return redirect(home_for(viewer.roles))

    return await signed_in(request, work)


@router.get("/account")
async def account(request: Request) -> Response:
    def work(_session: Session, _identity: Identity, viewer: Viewer, _now: dt.datetime) -> Response:
        return render(web_of(request), "account.html", viewer=viewer, title="Your account")

    return await signed_in(request, work)


def _sign_in_page(request: Request, *, status: int = 200, message: str | None = None,
                  username: str = "") -> Response:
    """The form carries a token bound to a random per-attempt cookie: a forged cross-site sign-in (login
    CSRF, which would sign the victim into the attacker's account) has neither."""
    web = web_of(request)
    nonce = secrets.token_urlsafe(24)
    response = render(web, "sign_in.html", status=status, viewer=None, title="Sign in",
                      notice=web.settings.use_notice, message=message, username=username,
                      csrf=web_sessions.csrf_token(web.csrf_key, "sign-in:" + nonce))
    response.set_cookie(SIGNIN_COOKIE, nonce, max_age=SIGNIN_NONCE_TTL, path="/", httponly=True,
                        samesite="strict", secure=is_https(request))
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return _sign_in_page(request)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    web = web_of(request)
    try:
        form = await read_form(request)
    except InvalidInput as error:
        return error_page(web, 400, error.message)
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    if not nonce or not web_sessions.csrf_matches(web.csrf_key, "sign-in:" + nonce, form.get("csrf")):
        return await refuse_forgery(request, "")
    username = form.get("username", "").strip()
    password = form.get("password", "")
    code = form.get("code", "").strip()
    if not username or not password or not code:
        return _sign_in_page(request, status=400, username=username[:64],
                             message="Enter your username, password and the one-time code from your authenticator.")

    def run() -> tuple[authentication.IssuedToken, frozenset[str]]:
        with unit_of_work(web.state.sessions) as session:
            issued = authentication.login(
                session, vault=web.state.vault, now=web.state.settings.clock.now(), policy=web.state.login_policy,
                username=username[:64], password=password, code=code, source=client_host(request))
            return issued, frozenset(a.role for a in issued.identity.roles)

    try:
        issued, roles = await run_in_threadpool(run)
    except BrokerError as error:
        return _sign_in_page(request, status=error.status_code, message=error.message, username=username[:64])
    response = redirect(home_for(roles))
    max_age = int((issued.expires_at - web.state.settings.clock.now()).total_seconds())
    # HttpOnly: page scripts never see the token; SameSite=Strict: other sites' forms do not carry it.
    response.set_cookie(SESSION_COOKIE, issued.token, max_age=max(max_age, 1), path="/", httponly=True,
                        samesite="strict", secure=is_https(request))
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE, "")

    def work(session: Session, _identity: Identity, _viewer: Viewer, now: dt.datetime,
             _form: dict[str, str]) -> Response:
        # Already signed out or expired: the cookie goes either way.
        with contextlib.suppress(NotAuthenticated):
            authentication.logout(session, now=now, token=token)
        response = redirect("/sign-in")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return await posted(request, work)

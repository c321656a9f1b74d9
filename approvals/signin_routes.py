"""Sign-in (password + one-time code, after the system use notice), TOTP enrolment with a QR code for a
new or reset secret, and sign-out."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import secrets

import segno
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from approvals.web import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Viewer,
    checked_form,
    client_host,
    is_https,
    posted,
    redirect,
    render,
    signed_in,
    web_of,
)
from broker.db import unit_of_work
from broker.errors import BrokerError, InvalidLoginName, LoginThrottled, NotAuthenticated
from broker.identity import authentication, totp, web_sessions
from broker.models import Identity

router = APIRouter(include_in_schema=False)

SIGNIN_NONCE_TTL = 1800
# The pending enrolment state (password verified, new TOTP secret not yet proven) lives this long.
ENROLMENT_TTL = dt.timedelta(minutes=10)
ENROL_COOKIE = "gatepass_enrol"
ENROL_PATH = "/sign-in/enrol"


def enrolment_key(csrf_key: bytes) -> bytes:
    """A key of its own for the signed pending state (HMAC as a PRF with a label, as in HKDF-Expand, RFC 5869
    §2.3): a CSRF token can never pass for a pending enrolment, nor the other way round."""
    return hmac.new(csrf_key, b"gatepass web totp-enrolment key v1", hashlib.sha256).digest()


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


def sign_in_page(request: Request, *, status: int = 200, message: str | None = None,
                 username: str = "", retry_after: int | None = None) -> Response:
    """The form carries a token bound to a random per-attempt cookie: a forged cross-site sign-in (login
    CSRF, which would sign the victim into the attacker's account) has neither."""
    web = web_of(request)
    nonce = secrets.token_urlsafe(24)
    response = render(web, "sign_in.html", status=status, viewer=None, title="Sign in",
                      notice=web.settings.use_notice, silent_observers=web.silent_observers.line(), message=message,
                      username=username,
                      csrf=web_sessions.csrf_token(web.csrf_key, "sign-in:" + nonce),
                      company_sign_in=web.state.settings.oidc is not None)
    response.set_cookie(SIGNIN_COOKIE, nonce, max_age=SIGNIN_NONCE_TTL, path="/", httponly=True,
                        samesite="strict", secure=is_https(request))
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return sign_in_page(request)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    web = web_of(request)
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    form = await checked_form(request, "sign-in:" + nonce if nonce else None)
    if isinstance(form, Response):
        refused = await _refused_user_name(request, nonce) if form.status_code == 400 else None
        return refused or form
    username = form.get("username", "").strip()
    password = form.get("password", "")
    code = form.get("code", "").strip()
    enrolment_code = form.get("enrolment_code", "").strip()
    if not username or not password:
        return sign_in_page(request, status=400, username=username[:64],
                            message="Enter your username, password and the one-time code from your authenticator.")

    def run() -> tuple[authentication.IssuedToken | authentication.PendingEnrolment, frozenset[str]]:
        with unit_of_work(web.state.sessions) as session:
            result = authentication.web_login(
                session, vault=web.state.vault, now=web.state.settings.clock.now(), policy=web.state.login_policy,
                username=username[:64], password=password, code=code, enrolment_code=enrolment_code[:32] or None,
                source=client_host(request), enrolment_key=enrolment_key(web.csrf_key), enrolment_ttl=ENROLMENT_TTL)
            if isinstance(result, authentication.PendingEnrolment):
                return result, frozenset()
            return result, frozenset(a.role for a in result.identity.roles)

    try:
        result, roles = await run_in_threadpool(run)
    except LoginThrottled as error:
        return sign_in_page(request, status=error.status_code, message=_sentence(error.message),
                            username=username[:64], retry_after=error.retry_after)
    except InvalidLoginName as error:
        return sign_in_page(request, status=error.status_code, message=_sentence(error.message))
    except BrokerError as error:
        return sign_in_page(request, status=error.status_code, message=error.message, username=username[:64])
    if isinstance(result, authentication.PendingEnrolment):
        return _to_enrolment(request, result.token)
    return signed_in_response(request, result, roles)


async def _refused_user_name(request: Request, nonce: str) -> Response | None:
    """The form reader refuses control characters in any field before a sign-in runs; one in the user name (a
    forged log line, a pasted escape sequence) is also a refused sign-in for the trail, audited by the domain with
    the name escaped — if the form is genuine (its CSRF token matches), so another site cannot write the trail."""
    web = web_of(request)
    try:
        raw = await request.form()  # what read_form already parsed (Starlette keeps it), not a second parse
    except Exception:  # a body that could not be read at all: the form reader's own 400 stands
        return None
    username, csrf = raw.get("username"), raw.get("csrf")
    if (not isinstance(username, str) or not isinstance(csrf, str) or not nonce
            or not web_sessions.csrf_matches(web.csrf_key, "sign-in:" + nonce, csrf)):
        return None

    def run() -> None:
        with unit_of_work(web.state.sessions) as session:
            authentication.refuse_control_characters(
                session, now=web.state.settings.clock.now(), policy=web.state.login_policy,
                username=username[:64], source=client_host(request))

    try:
        await run_in_threadpool(run)
    except LoginThrottled as error:
        return sign_in_page(request, status=error.status_code, message=_sentence(error.message),
                            retry_after=error.retry_after)
    except InvalidLoginName as error:
        return sign_in_page(request, status=error.status_code, message=_sentence(error.message))
    return None  # no control character in the user name: the form reader's own 400 stands


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + "."


def _to_enrolment(request: Request, token: str) -> Response:
    """The pending state goes in an HttpOnly, SameSite=Strict cookie scoped to the enrolment page: never in
    a URL (it would reach logs and the Referer), and page scripts cannot read it."""
    response = redirect(ENROL_PATH)
    response.set_cookie(ENROL_COOKIE, token, max_age=int(ENROLMENT_TTL.total_seconds()), path=ENROL_PATH,
                        httponly=True, samesite="strict", secure=is_https(request))
    return response


def signed_in_response(request: Request, issued: authentication.IssuedToken, roles: frozenset[str], *,
                       response: Response | None = None) -> Response:
    """``response`` (by default a redirect to the person's home page) with the new session's cookie."""
    web = web_of(request)
    response = response or redirect(home_for(roles))
    max_age = int((issued.expires_at - web.state.settings.clock.now()).total_seconds())
    # HttpOnly: page scripts never see the token; SameSite=Strict: other sites' forms do not carry it.
    response.set_cookie(SESSION_COOKIE, issued.token, max_age=max(max_age, 1), path="/", httponly=True,
                        samesite="strict", secure=is_https(request))
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    response.delete_cookie(ENROL_COOKIE, path=ENROL_PATH)
    return response


def qr_code_data_uri(uri: str) -> str:
    """The otpauth:// URI as an SVG QR code in a data: URI (the CSP allows img-src data:, no inline script)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, border=4))


def _enrolment_gone(request: Request, message: str, *, status: int = 401) -> Response:
    response = sign_in_page(request, status=status, message=message)
    response.delete_cookie(ENROL_COOKIE, path=ENROL_PATH)
    return response


@router.get(ENROL_PATH)
async def enrolment_form(request: Request) -> Response:
    web = web_of(request)
    token = request.cookies.get(ENROL_COOKIE, "")
    if not token:
        return redirect("/sign-in")

    def run() -> authentication.PendingEnrolment:
        with unit_of_work(web.state.sessions) as session:
            return authentication.open_enrolment(session, vault=web.state.vault, key=enrolment_key(web.csrf_key),
                                                 token=token, now=web.state.settings.clock.now())

    try:
        pending = await run_in_threadpool(run)
    except NotAuthenticated as error:
        return _enrolment_gone(request, "Sign-in needed: " + error.message + ".")
    retry = request.query_params.get("retry") == "1"
    uri = totp.provisioning_uri(pending.secret, username=pending.username)
    # The secret in groups of four, as authenticator apps ask for it when typed in by hand.
    grouped = " ".join(pending.secret[i:i + 4] for i in range(0, len(pending.secret), 4))
    return render(web, "enrol.html", status=200, viewer=None, title="Set up your one-time codes",
                  username=pending.username, qr=qr_code_data_uri(uri), secret=grouped,
                  expires_at=pending.expires_at, csrf=web_sessions.csrf_token(web.csrf_key, "enrol:" + token),
                  message=("That code did not match. Check the time on your phone and enter the newest code."
                           if retry else None))


@router.post(ENROL_PATH)
async def enrol(request: Request) -> Response:
    web = web_of(request)
    token = request.cookies.get(ENROL_COOKIE, "")
    form = await checked_form(request, "enrol:" + token if token else None)
    if isinstance(form, Response):
        return form
    code = form.get("code", "").strip()

    def run() -> tuple[authentication.IssuedToken, frozenset[str]]:
        with unit_of_work(web.state.sessions) as session:
            issued = authentication.complete_enrolment(
                session, vault=web.state.vault, now=web.state.settings.clock.now(), policy=web.state.login_policy,
                key=enrolment_key(web.csrf_key), token=token, code=code, source=client_host(request))
            return issued, frozenset(a.role for a in issued.identity.roles)

    try:
        issued, roles = await run_in_threadpool(run)
    except authentication.EnrolmentCodeRefused as error:
        if error.retry_token is None:
            return _enrolment_gone(request, _sentence(error.message))
        response = redirect(ENROL_PATH + "?retry=1")
        response.set_cookie(ENROL_COOKIE, error.retry_token, max_age=int(ENROLMENT_TTL.total_seconds()),
                            path=ENROL_PATH, httponly=True, samesite="strict", secure=is_https(request))
        return response
    except NotAuthenticated as error:
        return _enrolment_gone(request, "Sign-in needed: " + error.message + ".")
    except LoginThrottled as error:
        response = _enrolment_gone(request, _sentence(error.message), status=error.status_code)
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    except BrokerError as error:
        return _enrolment_gone(request, _sentence(error.message))
    return signed_in_response(request, issued, roles)


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

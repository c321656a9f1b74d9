"""Sign-in with the company account (OpenID Connect, authorization code with PKCE): /sign-in/oidc sends the browser
to the plant's identity provider, /sign-in/oidc/callback takes its answer and signs the person in."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from approvals.signin_routes import home_for, sign_in_page, signed_in_response
from approvals.web import client_host, error_page, is_https, redirect, render, web_of
from broker.db import unit_of_work
from broker.errors import BrokerError
from broker.identity import oidc
from broker.identity.oidc_provider import PENDING_TTL, RelyingParty

router = APIRouter(include_in_schema=False)

START_PATH = "/sign-in/oidc"
CALLBACK_PATH = "/sign-in/oidc/callback"
# The pending sign-in (sealed state, nonce and PKCE verifier), sent back only to the callback. SameSite=Lax, not
# Strict: the provider's redirect back is a cross-site navigation, and a Strict cookie would not come with it.
PENDING_COOKIE = "gatepass_oidc"
NOT_SET_UP = ("Sign-in with a company account is not set up on this broker: sign in with your Gatepass username, "
              "password and one-time code.")


def _relying_party(request: Request) -> RelyingParty | None:
    return web_of(request).state.oidc


def callback_url(request: Request, relying_party: RelyingParty) -> str:
    """The redirect URI registered at the provider: under GATEPASS_PUBLIC_URL when set (behind a TLS proxy the
    browser's address is not the one this process sees), else the address the browser used."""
    base = relying_party.settings.public_url or str(request.base_url).rstrip("/")
    return base + CALLBACK_PATH


@router.get(START_PATH)
async def start(request: Request) -> Response:
    web = web_of(request)
    relying_party = _relying_party(request)
    if relying_party is None:
        return error_page(web, 404, NOT_SET_UP)
    redirect_uri = callback_url(request, relying_party)
    try:
        pending = await run_in_threadpool(lambda: relying_party.begin(
            vault=web.state.vault, now=web.state.settings.clock.now(), redirect_uri=redirect_uri, purpose="web"))
    except BrokerError as error:
        return sign_in_page(request, status=error.status_code, message=_sentence(error.message))
    response = redirect(pending.authorization_url)
    response.set_cookie(PENDING_COOKIE, pending.sealed, max_age=int(PENDING_TTL.total_seconds()), path=CALLBACK_PATH,
                        httponly=True, samesite="lax", secure=is_https(request))
    return response


@router.get(CALLBACK_PATH)
async def callback(request: Request) -> Response:
    web = web_of(request)
    relying_party = _relying_party(request)
    if relying_party is None:
        return error_page(web, 404, NOT_SET_UP)
    query = request.query_params
    sealed = request.cookies.get(PENDING_COOKIE, "")

    def run() -> tuple[oidc.CompanySignIn, frozenset[str]]:
        with unit_of_work(web.state.sessions) as session:
            now = web.state.settings.clock.now()
            if "error" in query:  # RFC 6749 §4.1.2.1: the person cancelled, or the provider refused them
                oidc.refuse_answer(session, now=now, error=query["error"], source=client_host(request))
            signed = oidc.sign_in(session, relying_party=relying_party, vault=web.state.vault, now=now,
                                  policy=web.state.login_policy, sealed=sealed[:4096], purpose="web",
                                  code=query.get("code", "")[:2048], state=query.get("state", "")[:256],
                                  source=client_host(request))
            return signed, frozenset(a.role for a in signed.issued.identity.roles)

    try:
        signed, roles = await run_in_threadpool(run)
    except BrokerError as error:
        response = sign_in_page(request, status=error.status_code, message=_sentence(error.message))
        response.delete_cookie(PENDING_COOKIE, path=CALLBACK_PATH)
        return response
    # The provider's redirect made this a cross-site navigation: a redirect from here would still be part of it,
    # and the browser would not send the new SameSite=Strict session cookie with it. A page of our own that moves
    # on by itself starts a navigation from this site, which does.
    page = render(web, "oidc_signed_in.html", viewer=None, title="Signed in", next_url=home_for(roles),
                  username=signed.issued.identity.username, mfa=signed.mfa)
    response = signed_in_response(request, signed.issued, roles, response=page)
    response.delete_cookie(PENDING_COOKIE, path=CALLBACK_PATH)
    return response


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")

"""Company sign-in for the command line (`gatepass login --oidc`): the broker starts the authorization request for
a loopback redirect URI on the person's own machine (RFC 8252 §7.3) and, with the code the CLI caught there,
finishes it like the web's (broker.identity.oidc)."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from pydantic import Field

from broker.api.deps import NowDep, SessionDep, StateDep
from broker.api.schemas import Body
from broker.api.state import BrokerState
from broker.api.views import identity_view
from broker.errors import InvalidInput, NotFound
from broker.identity import oidc
from broker.identity.oidc_provider import RelyingParty
from broker.sources import client_address

router = APIRouter(tags=["auth"])


class OidcStartIn(Body):
    redirect_uri: str = Field(min_length=1, max_length=200)


class OidcFinishIn(Body):
    pending: str = Field(min_length=1, max_length=4096)
    code: str = Field(min_length=1, max_length=2048)
    state: str = Field(min_length=1, max_length=256)


def _relying_party(state: BrokerState) -> RelyingParty:
    if state.oidc is None:
        raise NotFound("sign-in with a company account is not set up on this broker: sign in with `gatepass login` "
                       "and your username, password and one-time code")
    return state.oidc


def loopback_redirect(uri: str) -> str:
    """RFC 8252 §7.3 and §8.3: a native app's redirect is http to a loopback IP literal (not "localhost", which a
    resolver could send elsewhere), on any port. Anything else would send the person's code off their machine."""
    parts = urlsplit(uri)
    try:
        loopback = parts.hostname is not None and ipaddress.ip_address(parts.hostname).is_loopback
        port = parts.port
    except ValueError:
        loopback, port = False, None
    if parts.scheme != "http" or not loopback or port is None or parts.query or parts.fragment or parts.username:
        raise InvalidInput("the redirect URI must be http://127.0.0.1:PORT/… (or http://[::1]:PORT/…) on your own "
                           "machine, where `gatepass login --oidc` listens (RFC 8252)")
    return uri


@router.post("/auth/oidc/start")
def start(body: OidcStartIn, state: StateDep, now: NowDep) -> dict[str, Any]:
    relying_party = _relying_party(state)
    pending = relying_party.begin(vault=state.vault, now=now, redirect_uri=loopback_redirect(body.redirect_uri),
                                  purpose="cli")
    return {"authorization_url": pending.authorization_url, "state": pending.state, "pending": pending.sealed}


@router.post("/auth/oidc/finish")
def finish(body: OidcFinishIn, request: Request, state: StateDep, session: SessionDep,
           now: NowDep) -> dict[str, Any]:
    signed = oidc.sign_in(session, relying_party=_relying_party(state), vault=state.vault, now=now,
                          policy=state.login_policy, sealed=body.pending, purpose="cli", code=body.code,
                          state=body.state, source=client_address(request, state.settings))
    issued = signed.issued
    return {"token": issued.token, "expires_at": issued.expires_at.isoformat(), "mfa": signed.mfa,
            "identity": identity_view(issued.identity)}

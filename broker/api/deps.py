"""FastAPI dependencies: one transaction per request (committed by the framework, not by views), the
signed-in identity and the calling gateway."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from broker.api.errors import from_gateway
from broker.api.state import BrokerState
from broker.db import unit_of_work
from broker.errors import NotAuthenticated
from broker.identity import authentication
from broker.inventory import gateways
from broker.models import Gateway, Identity
from broker.sources import client_address


def get_state(request: Request) -> BrokerState:
    state: BrokerState = request.app.state.broker
    return state


StateDep = Annotated[BrokerState, Depends(get_state)]


def get_db(request: Request, state: StateDep) -> Iterator[Session]:
    # unit_of_work commits when the endpoint returns and rolls back on error (keeping audited refusals, up to the
    # source's cap per minute).
    if from_gateway(request):
        # The gateways' reports are the busiest writers: they share commits (each still in its own savepoint,
        # each caller answered once its commit is durable). No refusal cap: a gateway speaks for many vendors
        # from one address and caps its own reports.
        with state.group.unit() as session:
            yield session
        return
    with unit_of_work(state.sessions) as session:
        state.refusals.gate(session, client_address(request, state.settings))
        yield session


# scope="function": the commit happens before the response is sent, so a failed commit is the response.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]


def get_now(state: StateDep) -> dt.datetime:
    return state.settings.clock.now()


NowDep = Annotated[dt.datetime, Depends(get_now)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("not signed in: send 'Authorization: Bearer <token>' from `gatepass login`")
    return token.strip()


TokenDep = Annotated[str, Depends(bearer_token)]


def current_identity(request: Request, session: SessionDep, now: NowDep, token: TokenDep) -> Identity:
    if token.startswith("gpg_"):
        raise NotAuthenticated("a gateway credential cannot be used on the user API")
    identity = authentication.authenticate_token(session, now=now, token=token)
    # Who asked, for the audit event of a refusal (broker.api.errors): the transaction is gone by then.
    request.state.actor = identity.username
    return identity


CurrentIdentity = Annotated[Identity, Depends(current_identity)]


def require_gateway_token(token: str) -> str:
    """``token`` if it is a gateway credential's form; the gateway API refuses user tokens before any lookup."""
    if not token.startswith("gpg_"):
        raise NotAuthenticated("the gateway API accepts only gateway credentials, not user tokens")
    return token


def gateway_in_own_transaction(state: BrokerState, token: str) -> tuple[int, str]:
    """(id, name) of the gateway holding ``token``, looked up in a transaction of its own: for the calls that hold
    none while they run (a held event stream, a streamed upload), which also check again later."""
    with unit_of_work(state.sessions) as session:
        gateway = gateways.authenticate_gateway(session, token)
        return gateway.id, gateway.name


def current_gateway(request: Request, session: SessionDep, token: TokenDep) -> Gateway:
    gateway = gateways.authenticate_gateway(session, require_gateway_token(token))
    request.state.actor = f"gateway:{gateway.name}"
    return gateway


CurrentGateway = Annotated[Gateway, Depends(current_gateway)]

"""Workloads: a service or AI identity's machine joins with a key it made, and renews its credential with it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from broker.api.deps import NowDep, SessionDep, StateDep, TokenDep
from broker.api.schemas import Body
from broker.api.views import identity_view
from broker.identity import workloads
from broker.sources import client_address

router = APIRouter(tags=["workloads"])


class JoinIn(Body):
    token: str = Field(min_length=1, max_length=128)
    public_key: str = Field(min_length=1, max_length=1024)
    signature: str = Field(min_length=1, max_length=256)


class RenewIn(Body):
    # Bounded so that no value reaches the database or the clock arithmetic that neither can hold.
    counter: int = Field(ge=1, le=2**62)
    timestamp: int = Field(ge=0, le=2**40)
    signature: str = Field(min_length=1, max_length=256)
    public_key: str | None = Field(default=None, max_length=1024)


def _credential_view(credential: workloads.Credential) -> dict[str, Any]:
    return {"token": credential.token, "issued_at": credential.issued_at.isoformat(),
            "expires_at": credential.expires_at.isoformat(), "identity": identity_view(credential.identity),
            "instance": workloads.instance_record(credential.instance)}


@router.post("/workloads/join", status_code=201)
def join(body: JoinIn, request: Request, state: StateDep, session: SessionDep, now: NowDep) -> dict[str, Any]:
    return _credential_view(workloads.join(session, now=now, token=body.token, public_key=body.public_key,
                                           signature=body.signature, source=client_address(request, state.settings)))


@router.post("/workloads/renew")
def renew(body: RenewIn, request: Request, state: StateDep, session: SessionDep, now: NowDep,
          token: TokenDep) -> dict[str, Any]:
    return _credential_view(workloads.renew(
        session, now=now, events=state.hub, token=token, counter=body.counter, timestamp=body.timestamp,
        signature=body.signature, public_key=body.public_key, source=client_address(request, state.settings)))

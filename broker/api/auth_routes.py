"""Sign-in, sign-out and who-am-I."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from broker import authentication
from broker.api.deps import CurrentIdentity, NowDep, SessionDep, StateDep, TokenDep
from broker.api.schemas import LoginIn
from broker.api.views import identity_view

router = APIRouter(tags=["auth"])


@router.post("/auth/login")
def login(body: LoginIn, request: Request, state: StateDep, session: SessionDep, now: NowDep) -> dict[str, Any]:
    issued = authentication.login(
        session, vault=state.vault, now=now, policy=state.login_policy, username=body.username,
        password=body.password, code=body.totp, source=request.client.host if request.client else None,
    )
    return {"token": issued.token, "expires_at": issued.expires_at.isoformat(),
            "identity": identity_view(issued.identity)}


@router.post("/auth/logout", status_code=204)
def logout(session: SessionDep, now: NowDep, token: TokenDep) -> Response:
    authentication.logout(session, now=now, token=token)
    return Response(status_code=204)


@router.get("/me")
def me(identity: CurrentIdentity) -> dict[str, Any]:
    return identity_view(identity)

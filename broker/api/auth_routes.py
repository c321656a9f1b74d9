"""Sign-in, sign-out and who-am-I."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from broker.api.deps import CurrentIdentity, NowDep, SessionDep, StateDep, TokenDep
from broker.api.errors import error_response
from broker.api.schemas import LoginIn
from broker.api.views import identity_view
from broker.errors import LoginThrottled
from broker.identity import authentication
from broker.sources import client_address

router = APIRouter(tags=["auth"])


@router.post("/auth/login", response_model=None)
def login(body: LoginIn, request: Request, state: StateDep, session: SessionDep,
          now: NowDep) -> dict[str, Any] | JSONResponse:
    try:
        issued = authentication.login(
            session, vault=state.vault, now=now, policy=state.login_policy, username=body.username,
            password=body.password, code=body.totp, enrolment_code=body.enrolment_code,
            source=client_address(request, state.settings))
    except LoginThrottled as throttled:
        # Answered here, not raised: the throttle's audit event commits with the request's transaction, and the
        # client learns when to try again (RFC 6585 §4, RFC 9110 §10.2.3).
        response = error_response(throttled.status_code, throttled.code, throttled.message)
        response.headers["Retry-After"] = str(throttled.retry_after)
        return response
    return {"token": issued.token, "expires_at": issued.expires_at.isoformat(),
            "identity": identity_view(issued.identity)}


@router.post("/auth/logout", status_code=204)
def logout(session: SessionDep, now: NowDep, token: TokenDep) -> Response:
    authentication.logout(session, now=now, token=token)
    return Response(status_code=204)


@router.get("/me")
def me(identity: CurrentIdentity) -> dict[str, Any]:
    return identity_view(identity)

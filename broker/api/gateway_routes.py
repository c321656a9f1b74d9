"""The gateway API: how gateways learn about grants, report sessions, and hear revocations at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from broker.api.deps import (
    CurrentGateway,
    NowDep,
    SessionDep,
    StateDep,
    bearer_token,
    gateway_in_own_transaction,
    require_gateway_token,
)
from broker.api.schemas import (
    AuthorizeIn,
    Body,
    GrantsStatusIn,
    LoginRefusalIn,
    RefusalIn,
    RegisterIn,
    SessionEndIn,
    SessionEventIn,
    SessionStartIn,
)
from broker.errors import NotAuthenticated
from broker.inventory import gateways, report_receipts, session_starts
from broker.recordings import intake
from broker.recordings.store import recordings_dir

router = APIRouter(prefix="/gateway", tags=["gateway"])

KEEPALIVE_SECONDS = 15.0
# The key a gateway gives each report, the same on every sending (broker.inventory.report_receipts).
ReportKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def _already_recorded(session: SessionDep, gateway: CurrentGateway, key: str | None, now: NowDep, report: str,
                      body: Body) -> bool:
    """Whether this report was recorded before (sent again after its answer was lost): then it is answered as the
    first sending was, and nothing is recorded again."""
    return not report_receipts.first_delivery(session, gateway_id=gateway.id, key=report_receipts.checked_key(key),
                                              report=report, body=body.model_dump(mode="json"), now=now)


def _replayed() -> Response:
    return Response(status_code=204, headers={report_receipts.REPLAYED_HEADER: "true"})


@router.post("/register")
def register(body: RegisterIn, gateway: CurrentGateway, session: SessionDep, now: NowDep) -> dict[str, Any]:
    user_ca = gateways.register(session, now=now, gateway=gateway, ssh_host=body.ssh_host, ssh_port=body.ssh_port,
                                host_key=body.host_key, kept_ends=body.kept_ends)
    return {"user_ca": user_ca, "gateway": gateway.name}


@router.post("/authorize")
def authorize(body: AuthorizeIn, gateway: CurrentGateway, state: StateDep, session: SessionDep,
              now: NowDep) -> dict[str, Any]:
    return gateways.authorize(session, vault=state.vault, now=now, gateway=gateway, grant_id=body.grant_id,
                              serial=body.serial, asset_name=body.asset, peer=body.peer)


@router.post("/grants/status")
def grants_status(body: GrantsStatusIn, _gateway: CurrentGateway, session: SessionDep,
                  now: NowDep) -> dict[str, Any]:
    return {"grants": gateways.grants_status(session, now=now, grant_ids=body.grant_ids)}


@router.post("/sessions", status_code=201)
def start_session(body: SessionStartIn, gateway: CurrentGateway, session: SessionDep,
                  now: NowDep) -> dict[str, str]:
    record = gateways.start_session(session, now=now, gateway=gateway, grant_id=body.grant_id, kind=body.kind,
                                    peer=body.peer, command=body.command, port=body.port)
    return {"session_id": record.id}


class SessionStartBatchIn(Body):
    starts: list[SessionStartIn] = Field(min_length=1, max_length=session_starts.MAX_STARTS_PER_CALL)


@router.post("/sessions/batch")
def start_sessions(body: SessionStartBatchIn, gateway: CurrentGateway, session: SessionDep,
                   now: NowDep) -> dict[str, list[dict[str, Any]]]:
    """The starts a gateway had waiting, in one transaction; each answered as ``POST /sessions`` would answer
    it alone: ``{"session_id"}``, or ``{"status", "error", "message"}`` for a start refused on its own."""
    outcomes = session_starts.start_sessions(session, now=now, gateway=gateway, starts=[
        session_starts.StartRequest(grant_id=start.grant_id, kind=start.kind, peer=start.peer,
                                    command=start.command, port=start.port) for start in body.starts])
    return {"results": [{"session_id": outcome.session_id} if outcome.error is None else
                        {"status": outcome.error.status_code, "error": outcome.error.code,
                         "message": outcome.error.message} for outcome in outcomes]}


@router.post("/sessions/{session_id}/end", status_code=204)
def end_session(session_id: str, body: SessionEndIn, gateway: CurrentGateway, session: SessionDep,
                now: NowDep, key: ReportKey = None) -> Response:
    if _already_recorded(session, gateway, key, now, f"/gateway/sessions/{session_id}/end", body):
        return _replayed()
    gateways.end_session(session, now=now, gateway=gateway, session_id=session_id, reason=body.reason,
                         bytes_in=body.bytes_in, bytes_out=body.bytes_out, detail=body.detail,
                         recording=body.recording.model_dump() if body.recording else None,
                         stop=body.stop.model_dump() if body.stop else None, ended_at=body.ended_at)
    return Response(status_code=204)


@router.post("/sessions/{session_id}/events", status_code=204)
def session_event(session_id: str, body: SessionEventIn, gateway: CurrentGateway, session: SessionDep,
                  now: NowDep, key: ReportKey = None) -> Response:
    if _already_recorded(session, gateway, key, now, f"/gateway/sessions/{session_id}/events", body):
        return _replayed()
    gateways.record_session_event(session, now=now, gateway=gateway, session_id=session_id, kind=body.kind,
                                  detail=dict(body.detail))
    return Response(status_code=204)


@router.post("/login-refusals", status_code=204)
def login_refusal(body: LoginRefusalIn, gateway: CurrentGateway, state: StateDep, session: SessionDep,
                  now: NowDep, key: ReportKey = None) -> Response:
    if _already_recorded(session, gateway, key, now, "/gateway/login-refusals", body):
        return _replayed()
    # In this request's transaction: it holds the write lock already (SQLite BEGIN IMMEDIATE).
    state.refusals.record_in(session, gateways.login_refusal(
        gateway=gateway, peer=body.peer, username=body.username, more=body.more,
        attempts=[attempt.model_dump() for attempt in body.attempts]))
    return Response(status_code=204)


@router.post("/refusals", status_code=204)
def refusal(body: RefusalIn, gateway: CurrentGateway, session: SessionDep, now: NowDep,
            key: ReportKey = None) -> Response:
    if _already_recorded(session, gateway, key, now, "/gateway/refusals", body):
        return _replayed()
    gateways.record_refusal(session, now=now, gateway=gateway, grant_id=body.grant_id, kind=body.kind,
                            reason=body.reason, host=body.host, port=body.port)
    return Response(status_code=204)


@router.put("/recordings/{name}")
async def upload_recording(name: str, request: Request, state: StateDep) -> dict[str, Any]:
    """A separate gateway's copy of a session's recording, streamed: stored only if it is the reported file
    (broker.recordings.intake). No transaction is held while the body arrives."""
    token = require_gateway_token(bearer_token(request))
    gateway_id, gateway_name = await run_in_threadpool(gateway_in_own_transaction, state, token)
    uploader = intake.Uploader(gateway_id=gateway_id, name=gateway_name)
    request.state.actor = uploader.actor
    stored = await intake.receive(state.sessions, directory=recordings_dir(state.settings),
                                  clock=state.settings.clock.now, uploader=uploader, name=name, body=request.stream())
    return stored.as_dict()


@router.get("/events")
async def events(request: Request, state: StateDep) -> StreamingResponse:
    """Server-sent events, held open by each gateway: grant revocations and moved end times arrive here
    the moment they commit (no polling)."""
    token = require_gateway_token(bearer_token(request))
    await run_in_threadpool(gateway_in_own_transaction, state, token)
    queue = state.hub.subscribe()

    async def stream() -> AsyncIterator[bytes]:
        try:
            hello = {"server_time": state.settings.clock.now().isoformat()}
            yield f"event: hello\ndata: {json.dumps(hello)}\n\n".encode()
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_SECONDS)
                except TimeoutError:
                    try:  # a gateway retired since it connected hears nothing more
                        await run_in_threadpool(gateway_in_own_transaction, state, token)
                    except NotAuthenticated:
                        return
                    yield b": keepalive\n\n"
                    continue
                yield f"event: grant\ndata: {json.dumps(event.as_dict())}\n\n".encode()
        finally:
            state.hub.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

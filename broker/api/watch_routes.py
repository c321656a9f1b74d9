"""Live supervision over HTTP: the gateways' live link (control down, frames up) and the observers' streams.

Gateway side (gateway token, then a per-feed capability; docs in broker/live/__init__.py):
  ``GET  /gateway/live``                      server-sent events: watch, unwatch, notice, end
  ``POST /gateway/live/{session_id}/frames``  a watched session's output, answered ``{"watching": bool}``
Observer side (a person's token; supervisors of the site, security reviewers):
  ``GET  /sessions/{session_id}/watch``       server-sent events: hello, frames, dropped, ended
  ``POST /sessions/{session_id}/messages``    a line on the vendor's terminal
  ``POST /sessions/{session_id}/end``         end it with a reason (the grant is revoked)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat
from starlette.concurrency import run_in_threadpool

from broker.api.deps import (
    CurrentIdentity,
    NowDep,
    SessionDep,
    StateDep,
    bearer_token,
    gateway_in_own_transaction,
    require_gateway_token,
)
from broker.api.schemas import Body
from broker.api.state import BrokerState
from broker.audit.refusals import Refusal
from broker.audit.trail import Action
from broker.db import unit_of_work
from broker.errors import BrokerError, Forbidden, NotAuthenticated
from broker.identity import authentication
from broker.live import supervision
from broker.live.hub import LiveHub, Observer
from broker.live.supervision import WatchTarget
from broker.sources import client_address

router = APIRouter(tags=["live"])

KEEPALIVE_SECONDS = 15.0
# A watch is an authorisation that lasts: it is asked again this often (the observer signed out or was suspended,
# lost the site, or the session ended without its gateway saying so) and the stream ends when it no longer holds.
RECHECK_SECONDS = 10.0
# One call carries at most this many frames (the gateway batches what piled up while the last call was out).
MAX_FRAMES_PER_CALL = 1024
FEED_HEADER = "X-Gatepass-Feed"
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
# Leave-audits still being written when their stream was cancelled (a closed tab): held so they finish.
_pending: set[asyncio.Task[None]] = set()


def hub_of(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.live
    return hub


def sse(event: str, data: Any) -> bytes:
    # json.dumps escapes every control character (and ensure_ascii the rest): one event is one data line.
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


# -- the gateway's live link --------------------------------------------------------------------


@router.get("/gateway/live")
async def gateway_live(request: Request, state: StateDep) -> StreamingResponse:
    """Held open by each gateway: which of its sessions somebody watches, and what to tell or do to them."""
    token = require_gateway_token(bearer_token(request))
    gateway_id, _ = await run_in_threadpool(gateway_in_own_transaction, state, token)
    hub = hub_of(request)
    link = hub.connect(gateway_id)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield sse("hello", {})
            while True:
                try:
                    event, data = await asyncio.wait_for(link.queue.get(), timeout=KEEPALIVE_SECONDS)
                except TimeoutError:
                    try:  # a gateway retired since it connected is sent nothing more
                        await run_in_threadpool(gateway_in_own_transaction, state, token)
                    except NotAuthenticated:
                        return
                    yield b": keepalive\n\n"
                    continue
                yield sse(event, data)
        finally:
            hub.disconnect(link)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


class FramesIn(BaseModel):
    # Not schemas.Body: terminal output is full of control characters (escape sequences) by nature; it is
    # JSON-escaped on the way to observers and drawn by the player, never interpreted as markup.
    model_config = ConfigDict(extra="forbid")
    # Finite seconds: a NaN or Infinity would pass on to observers as JSON that a browser's JSON.parse rejects.
    frames: list[tuple[FiniteFloat, str, str]] = Field(default_factory=list, max_length=MAX_FRAMES_PER_CALL)
    dropped: int = Field(default=0, ge=0)
    ended: bool = False


@router.post("/gateway/live/{session_id}/frames")
async def gateway_frames(session_id: str, body: FramesIn, request: Request, state: StateDep) -> JSONResponse:
    """A watched session's output. No database: the feed's token (handed to the gateway on its authenticated
    live stream) is the credential, so a frame costs a dictionary lookup, not a query."""
    watching = hub_of(request).frames(session_id=session_id[:16], token=request.headers.get(FEED_HEADER, ""),
                                      frames=[list(frame) for frame in body.frames], dropped=body.dropped,
                                      ended=body.ended)
    if watching is None:
        # The same refusal whether or not anybody watches the session (LiveHub.frames): a vendor must not learn
        # from it that a site's silent observer is watching.
        await run_in_threadpool(state.refusals.record, Refusal(
            action=Action.API_REFUSED, reason="live frames without the token of the session's watch",
            source=client_address(request, state.settings), subject=request.url.path[:128],
            details={"method": "POST", "status": 403}))
        raise Forbidden(f"live frames for session {session_id[:16]} need the feed token the broker gave its gateway")
    return JSONResponse({"watching": watching})


# -- observers --------------------------------------------------------------------------------------


def observe(request: Request, state: BrokerState, target: WatchTarget, token: str) -> StreamingResponse:
    """The observer's stream: ``hello``, then ``frames`` as they come, ``dropped`` when this observer fell
    behind (the oldest frames went), ``ended`` when the session is over or the observer may no longer watch
    (``token`` is asked again every RECHECK_SECONDS). Joining and leaving tell the vendor."""
    hub = hub_of(request)
    observer = Observer(username=target.observer, label=target.label, supervises=target.supervises)

    async def stream() -> AsyncIterator[bytes]:
        # Joined only once the stream runs, and left in its `finally`: a response that is never streamed (the
        # client went away before its first byte) must leave no observer behind — a supervisor's watch that never
        # leaves would keep a supervised session released with nobody watching.
        others = [o.label for o in hub.observers(target.session_id)]
        hub.join(session_id=target.session_id, gateway_id=target.gateway_id, observer=observer)
        if target.announced:  # else the site allows silent observers, and each session there said so at its start
            hub.tell(target.gateway_id, "notice", {"session_id": target.session_id,
                                                   "text": f"gatepass: {target.label} is watching this session"})
        started = time.monotonic()
        lost = 0
        try:
            yield sse("hello", {"session_id": target.session_id, "vendor": target.vendor, "asset": target.asset,
                                "site": target.site, "kind": target.kind, "command": target.command,
                                "port": target.port, "terminal": target.terminal,
                                "observer": target.label, "also_watching": others, "announced": target.announced,
                                "gateway_connected": hub.gateway_connected(target.gateway_id)})
            recheck_at = time.monotonic() + RECHECK_SECONDS
            while True:
                if time.monotonic() >= recheck_at:
                    why = await _refused_now(state, token, target)
                    if why is not None:
                        yield sse("ended", {"why": why})
                        return
                    recheck_at = time.monotonic() + RECHECK_SECONDS
                wait = min(KEEPALIVE_SECONDS, max(0.0, recheck_at - time.monotonic()))
                if not await observer.wait(wait):
                    if wait >= KEEPALIVE_SECONDS:
                        yield b": keepalive\n\n"
                    continue
                frames, dropped = observer.take()
                if dropped:
                    lost += dropped
                    yield sse("dropped", {"frames": dropped})
                if frames:
                    yield sse("frames", frames)
                if observer.ended is not None:
                    yield sse("ended", {"why": observer.ended})
                    return
        finally:
            # Also on a cancelled stream (the page closed): nothing here may await.
            hub.leave(session_id=target.session_id, observer=observer)
            if observer.ended is None and target.announced:
                hub.tell(target.gateway_id, "notice", {
                    "session_id": target.session_id, "text": f"gatepass: {target.label} stopped watching"})
            seconds, dropped_total = time.monotonic() - started, lost + observer.dropped
            task = asyncio.get_running_loop().create_task(_audit_leave(state, target, seconds, dropped_total))
            _pending.add(task)
            task.add_done_callback(_pending.discard)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


async def _refused_now(state: BrokerState, token: str, target: WatchTarget) -> str | None:
    """None while the token's person may still watch the session as they joined; else why not (a refusal the
    domain audits)."""

    def check() -> None:
        with unit_of_work(state.sessions) as session:
            now = state.settings.clock.now()
            identity = authentication.authenticate_token(session, now=now, token=token)
            supervision.recheck(session, now=now, viewer=identity, target=target)

    try:
        await run_in_threadpool(check)
    except BrokerError as error:
        return error.message
    return None


async def _audit_leave(state: BrokerState, target: WatchTarget, seconds: float, dropped: int) -> None:
    def write() -> None:
        with unit_of_work(state.sessions) as session:
            supervision.leave(session, now=state.settings.clock.now(), target=target, seconds=seconds,
                              dropped=dropped)

    await run_in_threadpool(write)


async def join_with_token(request: Request, state: BrokerState, token: str, session_id: str, *,
                          via: str) -> WatchTarget:
    """Authenticate a person's token and join them to ``session_id`` (audited), in one transaction."""

    def run() -> WatchTarget:
        with unit_of_work(state.sessions) as session:
            now = state.settings.clock.now()
            identity = authentication.authenticate_token(session, now=now, token=token)
            request.state.actor = identity.username  # for the audit of a refusal the domain did not record
            return supervision.join(session, now=now, viewer=identity, session_id=session_id, via=via)

    return await run_in_threadpool(run)


@router.get("/sessions/{session_id}/watch")
async def watch(session_id: str, request: Request, state: StateDep) -> StreamingResponse:
    """Follow a live session (``gatepass watch``): read-only, audited, announced on the vendor's terminal."""
    token = bearer_token(request)
    if token.startswith("gpg_"):
        raise NotAuthenticated("a gateway credential cannot be used on the user API")
    target = await join_with_token(request, state, token, session_id, via="api")
    return observe(request, state, target, token)


def deliver_to(hub: LiveHub, event: str) -> Callable[[int, str, str], None]:
    """A thread-safe ``(gateway_id, session_id, line)`` callback telling the gateway ``event`` with that line."""
    return lambda gateway_id, session_id, line: hub.tell_threadsafe(gateway_id, event,
                                                                    {"session_id": session_id, "text": line})


class MessageIn(Body):
    text: str = Field(max_length=supervision.MAX_MESSAGE * 2)


class EndIn(Body):
    reason: str = Field(max_length=supervision.MAX_REASON * 2)


@router.post("/sessions/{session_id}/messages")
def send_message(session_id: str, body: MessageIn, request: Request, identity: CurrentIdentity,
                 session: SessionDep, now: NowDep) -> dict[str, str]:
    line = supervision.send_message(session, now=now, viewer=identity, session_id=session_id, text=body.text,
                                    deliver=deliver_to(hub_of(request), "notice"))
    return {"session_id": session_id[:16], "line": line}


@router.post("/sessions/{session_id}/end")
def end_session(session_id: str, body: EndIn, request: Request, identity: CurrentIdentity, state: StateDep,
                session: SessionDep, now: NowDep) -> dict[str, str]:
    line = supervision.end_session(session, now=now, events=state.hub, viewer=identity, session_id=session_id,
                                   reason=body.reason, cut=deliver_to(hub_of(request), "end"))
    return {"session_id": session_id[:16], "line": line}


"""The watch view: a supervisor (or security reviewer) follows a live session in the browser, sends the vendor a
message or ends the session. The feed is broker.api.watch_routes' observer stream, signed in by the page's cookie."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from approvals.web import SESSION_COOKIE, Viewer, posted, redirect, render, signed_in, text, web_of
from broker.api.watch_routes import deliver_to, hub_of, observe
from broker.identity.identities import has_role
from broker.live import supervision
from broker.live.supervision import WatchTarget
from broker.models import Identity

router = APIRouter(include_in_schema=False)


@router.get("/approvals/sessions/{session_id}/watch")
async def watch_page(request: Request, session_id: str) -> Response:
    def work(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime) -> Response:
        target = supervision.find_watchable(session, now=now, viewer=identity, session_id=session_id)
        return render(web_of(request), "watch.html", title=f"Watching {target.vendor} on {target.asset}",
                      viewer=viewer, target=target, sent=request.query_params.get("sent") == "1")

    return await signed_in(request, work)


@router.get("/approvals/sessions/{session_id}/watch/feed")
async def watch_feed(request: Request, session_id: str) -> Response:
    """Server-sent events for watch.js; joining is audited and announced on the vendor's terminal."""
    joined: list[WatchTarget] = []

    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime) -> Response:
        joined.append(supervision.join(session, now=now, viewer=identity, session_id=session_id, via="web"))
        return Response(status_code=204)

    answer = await signed_in(request, work)
    if not joined:
        return answer  # the sign-in page, or the refusal (audited); EventSource gives up on either
    return observe(request, web_of(request).state, joined[0], request.cookies.get(SESSION_COOKIE, ""))


@router.post("/approvals/sessions/{session_id}/message")
async def send_message(request: Request, session_id: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        supervision.send_message(session, now=now, viewer=identity, session_id=session_id,
                                 text=text(form, "text", label="The message", limit=supervision.MAX_MESSAGE),
                                 deliver=deliver_to(hub_of(request), "notice"))
        return redirect(f"/approvals/sessions/{session_id[:16]}/watch?sent=1")

    return await posted(request, work)


@router.post("/approvals/sessions/{session_id}/end")
async def end_session(request: Request, session_id: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        supervision.end_session(session, now=now, events=web_of(request).state.hub, viewer=identity,
                                session_id=session_id,
                                reason=text(form, "reason", label="The reason", limit=supervision.MAX_REASON),
                                cut=deliver_to(hub_of(request), "end"))
        # A supervisor goes back to their list; a security reviewer to the session's review page.
        return redirect("/approvals?done=ended" if has_role(identity, "supervisor")
                        else f"/review/sessions/{session_id[:16]}")

    return await posted(request, work)

"""Supervisor pages: the approval queue for their own sites, pending extensions, live sessions with
`End session`, and the plant lockdown; the lists refresh every 2 s from /approvals/live (static/app.js)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from approvals.web import Viewer, parse_ports, posted, redirect, render, secure, signed_in, text, web_of
from broker.access import extensions, oversight, quick_grants, workflow
from broker.containment import lockdown
from broker.errors import Forbidden
from broker.identity.identities import has_role
from broker.models import Identity
from broker.respond import playbooks
from broker.watch import flags

router = APIRouter(include_in_schema=False)

DONE_MESSAGES = {
    "approved": "Approval recorded.",
    "denied": "Request denied; the vendor sees your comment.",
    "ended": "Access ended: the gateway cuts the live sessions within a second.",
    "locked": "Plant locked down: every open grant was revoked and new access is refused until lifted.",
    "lifted": "Lockdown lifted: requests and approvals are possible again.",
    "granted": "Access granted: the vendor sees the connection commands on their page now.",
    "granted-first": "Your approval is recorded; this asset needs a second approver before access is granted.",
    "extended": "Extension approved (or your approval recorded): live sessions keep running until the new end.",
    "extension-denied": "Extension denied; the vendor sees your comment.",
    "playbook": "Playbook run: every step is in the audit trail under its run id; live sessions end within a second.",
}


def _require_supervisor(identity: Identity) -> None:
    if not has_role(identity, "supervisor"):
        raise Forbidden("this page is for plant supervisors; your account has no supervisor role")


def _lists(session: Session, identity: Identity, viewer: Viewer,
           now: dt.datetime) -> dict[str, Any]:
    live = oversight.live_sessions(session, supervisor=identity, now=now)
    return {
        "viewer": viewer,
        "queue": oversight.pending_queue(session, supervisor=identity, now=now),
        "extensions": extensions.pending_for_approver(session, approver=identity, now=now),
        "sessions": live,
        # Open flags next to the live session they are about (the watcher raises them within a second or two).
        "session_flags": flags.flags_by_session(session, [s.id for s in live]),
        "grants": oversight.open_grants(session, supervisor=identity, now=now),
        "sites": oversight.sites_for(session, identity, "supervisor"),
        "playbooks": [p for p in playbooks.list_playbooks(session) if p.needs_site],
        "assets": oversight.requestable_assets(session, vendor=identity, role="supervisor"),
        "now": now,
    }


@router.get("/approvals")
async def approvals_page(request: Request) -> Response:
    done = DONE_MESSAGES.get(request.query_params.get("done", ""))

    def work(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime) -> Response:
        _require_supervisor(identity)
        return render(web_of(request), "approvals.html", title="Approvals", done=done,
                      **_lists(session, identity, viewer, now))

    return await signed_in(request, work)


@router.get("/approvals/live")
async def approvals_live(request: Request) -> Response:
    """The queue, pending-extension, live-session and site fragments, rendered on the server (autoescaped)
    for app.js to swap in."""

    def work(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime) -> Response:
        _require_supervisor(identity)
        context = _lists(session, identity, viewer, now)
        templates = web_of(request).templates
        parts = {name: templates.get_template(f"_{name}.html").render(**context)
                 for name in ("queue", "extensions", "sessions", "sites")}
        version = hashlib.sha256("\x00".join(parts.values()).encode()).hexdigest()[:16]
        return secure(JSONResponse({"version": version, **parts}))

    return await signed_in(request, work)


@router.post("/approvals/requests/{request_id}/approve")
async def approve(request: Request, request_id: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        shorter = text(form, "shorten_to", label="The shorter window", required=False, limit=16) or None
        comment = text(form, "comment", label="The comment", required=False) or None
        workflow.approve(session, vault=web_of(request).state.vault, now=now, approver=identity,
                       request_id=request_id[:32], comment=comment, shorten_to=shorter)
        return redirect("/approvals?done=approved")

    return await posted(request, work)


@router.post("/approvals/requests/{request_id}/deny")
async def deny(request: Request, request_id: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        comment = text(form, "comment", label="A comment telling the vendor why the request is denied")
        workflow.deny(session, now=now, approver=identity, request_id=request_id[:32], comment=comment)
        return redirect("/approvals?done=denied")

    return await posted(request, work)


@router.post("/approvals/grant-now")
async def grant_now(request: Request) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        _require_supervisor(identity)
        made = quick_grants.grant_now(
            session, vault=web_of(request).state.vault, now=now,
            decide_within=web_of(request).state.settings.decide_within, approver=identity,
            vendor_name=text(form, "vendor", label="The vendor's username", limit=64),
            asset_name=text(form, "asset", label="The asset", limit=64),
            duration=text(form, "duration", label="The duration (e.g. 2h)", limit=16),
            reason=text(form, "reason", label="The reason"), ssh=form.get("ssh") == "on",
            ports=parse_ports(form.get("ports", "")), read_only=form.get("read_only") == "on")
        return redirect("/approvals?done=" + ("granted" if made.status == "approved" else "granted-first"))

    return await posted(request, work)


@router.post("/approvals/grants/{grant_id}/end")
async def end_access(request: Request, grant_id: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        reason = (text(form, "reason", label="The reason", required=False)
                  or f"ended from the web by {identity.username}")
        workflow.revoke_grant(session, now=now, events=web_of(request).state.hub, actor=identity,
                            grant_id=grant_id[:32], reason=reason)
        return redirect("/approvals?done=ended")

    return await posted(request, work)


@router.post("/approvals/sites/{site_name}/lockdown")
async def lock_down(request: Request, site_name: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        reason = text(form, "reason", label="The reason", required=False) or "locked down from the approvals page"
        lockdown.lock_down_site(session, now=now, events=web_of(request).state.hub, actor=identity,
                                   site_name=site_name[:64], reason=reason)
        return redirect("/approvals?done=locked")

    return await posted(request, work)


@router.post("/approvals/sites/{site_name}/lift")
async def lift(request: Request, site_name: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             _form: dict[str, str]) -> Response:
        lockdown.lift_lockdown(session, now=now, actor=identity, site_name=site_name[:64])
        return redirect("/approvals?done=lifted")

    return await posted(request, work)


@router.post("/approvals/extensions/{extension_id}/approve")
async def approve_extension(request: Request, extension_id: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        comment = text(form, "comment", label="The comment", required=False) or None
        extensions.approve_extension(session, vault=web_of(request).state.vault, now=now,
                                     events=web_of(request).state.hub, approver=identity,
                                     extension_id=extension_id[:32], comment=comment)
        return redirect("/approvals?done=extended")

    return await posted(request, work)


@router.post("/approvals/extensions/{extension_id}/deny")
async def deny_extension(request: Request, extension_id: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        comment = text(form, "comment", label="A comment telling the vendor why the extension is denied")
        extensions.deny_extension(session, now=now, approver=identity, extension_id=extension_id[:32],
                                  comment=comment)
        return redirect("/approvals?done=extension-denied")

    return await posted(request, work)

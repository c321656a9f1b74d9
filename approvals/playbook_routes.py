"""Playbooks on the web: a site's supervisors run one from their approvals page, security from the review
pages (with the runs and drills and their time to contain). The same rule as the API decides who may."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from approvals.web import Viewer, posted, redirect, render, signed_in, text, web_of
from broker.access import oversight
from broker.errors import Forbidden
from broker.models import Identity
from broker.respond import playbooks, reports, runner

router = APIRouter(include_in_schema=False)

BACK = {"/approvals": "/approvals?done=playbook", "/review/playbooks": "/review/playbooks?done=1"}


@router.post("/playbooks/run")
async def run_playbook(request: Request) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        playbook = playbooks.get_playbook(session, text(form, "playbook", label="The playbook", limit=64))
        site = (form.get("site") or "").strip()[:64] or None
        username = (form.get("identity") or "").strip()[:64] or None
        runner.check_authority(session, now=now, person=identity, playbook=playbook, site_name=site,
                               username=username)
        runner.run(session, now=now, vault=web_of(request).state.vault, events=web_of(request).state.hub,
                   actor=identity.username, playbook=playbook, site_name=site, username=username,
                   reason=text(form, "reason", label="Why you run it"), commit=session.commit)
        return redirect(BACK.get(form.get("back", ""), "/review/playbooks?done=1"))

    return await posted(request, work)


@router.get("/review/playbooks")
async def playbooks_page(request: Request) -> Response:
    done = request.query_params.get("done") == "1"

    def work(session: Session, identity: Identity, viewer: Viewer, _now: dt.datetime) -> Response:
        if not oversight.may_review(identity):
            raise Forbidden("the review pages are for security reviewers and admins; your account has neither role")
        return render(web_of(request), "review_playbooks.html", title="Playbooks", viewer=viewer,
                      playbooks=playbooks.list_playbooks(session), runs=reports.recent_runs(session),
                      step_text=playbooks.STEP_TEXT, done=done)

    return await signed_in(request, work)

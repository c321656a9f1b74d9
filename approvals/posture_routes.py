"""The posture report as a page with charts (inline SVG, no script) and as a downloadable JSON file, for
security and admins; each figure beside the previous period's."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from approvals.web import Viewer, render, secure, signed_in, web_of
from broker.access import oversight
from broker.errors import Forbidden, InvalidInput
from broker.models import Identity
from broker.watch import posture

router = APIRouter(include_in_schema=False)
BAR_WIDTH = 320


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    previous: float
    width: int
    previous_width: int


def bars(current: dict[str, Any], previous: dict[str, Any]) -> list[Bar]:
    """One bar per label, this period and the previous one scaled to the same maximum."""
    labels = sorted(set(current) | set(previous))
    top = max([float(v) for v in [*current.values(), *previous.values()]] or [1.0]) or 1.0
    return [Bar(label, float(current.get(label, 0)), float(previous.get(label, 0)),
                round(BAR_WIDTH * float(current.get(label, 0)) / top),
                round(BAR_WIDTH * float(previous.get(label, 0)) / top)) for label in labels]


def _days(request: Request) -> int:
    raw = request.query_params.get("days", "30")
    if not raw.isdigit() or not 1 <= int(raw) <= posture.MAX_DAYS:
        raise InvalidInput(f"the period is 1 to {posture.MAX_DAYS} days, not '{raw[:10]}'")
    return int(raw)


def _charts(report: posture.Report) -> list[tuple[str, list[Bar]]]:
    now, before = report.current, report.previous
    kinds = {kind: sum(states.values()) for kind, states in now.identities_by_kind.items()}
    gone = {kind: states.get("owner gone", 0) + states.get("no owner", 0)
            for kind, states in now.identities_by_kind.items() if kind != "human"}
    return [
        ("Identities by kind (now)", bars(kinds, kinds)),
        ("Service and AI identities without an active owner (now)", bars(gone, gone)),
        ("Grants per site", bars(now.grants_by_site, before.grants_by_site)),
        ("Mean grant length per site (hours)", bars(now.mean_grant_hours_by_site, before.mean_grant_hours_by_site)),
        ("Flags by signal", bars(now.flags_by_signal, before.flags_by_signal)),
        ("Flags by outcome", bars(now.flags_by_outcome, before.flags_by_outcome)),
        ("Sessions", bars({"all": now.sessions, "outside maintenance windows": now.sessions_outside_windows},
                          {"all": before.sessions, "outside maintenance windows": before.sessions_outside_windows})),
        ("Playbooks", bars({"runs": now.playbook_runs, "drills": now.drills},
                           {"runs": before.playbook_runs, "drills": before.drills})),
    ]


@router.get("/review/posture")
async def posture_page(request: Request) -> Response:
    def work(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime) -> Response:
        if not oversight.may_review(identity):
            raise Forbidden("the review pages are for security reviewers and admins; your account has neither role")
        report = posture.posture(session, now=now, days=_days(request))
        return render(web_of(request), "review_posture.html", title="Posture", viewer=viewer, report=report,
                      charts=_charts(report), bar_width=BAR_WIDTH)

    return await signed_in(request, work)


@router.get("/review/posture.json")
async def posture_download(request: Request) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime) -> Response:
        if not oversight.may_review(identity):
            raise Forbidden("the review pages are for security reviewers and admins; your account has neither role")
        report = posture.posture(session, now=now, days=_days(request))
        return secure(Response(posture.as_json(report), media_type="application/json",
                               headers={"Content-Disposition": 'attachment; filename="gatepass-posture.json"'}))

    return await signed_in(request, work)

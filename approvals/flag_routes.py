"""Flags on the web: the list with each flag's signals (security and admins: all; supervisors: their sites),
and a reviewer's decision — benign (it then feeds the baseline) or confirmed."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from approvals.web import Viewer, posted, redirect, render, signed_in, text, web_of
from broker.models import Identity
from broker.watch import flags

router = APIRouter(include_in_schema=False)
STATUSES = ("open", "benign", "confirmed", "all")


@router.get("/flags")
async def flags_page(request: Request) -> Response:
    status = request.query_params.get("status", "open")
    status = status if status in STATUSES else "open"
    done = request.query_params.get("done")

    def work(session: Session, identity: Identity, viewer: Viewer, _now: dt.datetime) -> Response:
        found = flags.visible_flags(session, viewer=identity, status=None if status == "all" else status)
        return render(web_of(request), "flags.html", title="Flags", viewer=viewer, flags=found, shown_status=status,
                      statuses=STATUSES, done=done if done in ("benign", "confirmed") else None)

    return await signed_in(request, work)


@router.post("/flags/{flag_id}/decide")
async def decide(request: Request, flag_id: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        verdict = text(form, "verdict", label="The decision (benign or confirmed)", limit=12)
        flags.decide(session, now=now, reviewer=identity, flag_id=flag_id[:32], verdict=verdict,
                     comment=text(form, "comment", label="Why"))
        return redirect(f"/flags?done={verdict}")

    return await posted(request, work)

"""Security reviewer pages: read-only, filterable views of requests, grants, sessions and the audit trail,
with the verification status of the audit hash chain."""

from __future__ import annotations

import datetime as dt
import json

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from approvals.web import Viewer, render, signed_in, web_of
from broker import audit, oversight
from broker.errors import Forbidden, InvalidInput
from broker.models import Identity

router = APIRouter(include_in_schema=False)

FILTER_FIELDS = ("identity", "site", "asset", "since", "until", "action")


def _time(value: str, label: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{label} '{value[:40]}' is not a date: write it like 2026-11-27 or "
                           "2026-11-27T14:00") from None
    # Dates typed into the form are UTC, like everything the broker stores.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _details(canonical: str) -> list[tuple[str, str]]:
    """An event's details as ``key, JSON value`` pairs (null/false as JSON, not Python, spells them)."""
    loaded = json.loads(canonical)
    if not isinstance(loaded, dict):
        return [("details", canonical)]
    return [(key, value if isinstance(value, str) else json.dumps(value)) for key, value in sorted(loaded.items())]


def parse_filter(params: dict[str, str]) -> oversight.ReviewFilter:
    values = {name: params.get(name, "").strip()[:128] for name in FILTER_FIELDS}
    return oversight.ReviewFilter(
        identity=values["identity"] or None, site=values["site"] or None, asset=values["asset"] or None,
        since=_time(values["since"], "From"), until=_time(values["until"], "Until"),
        action=values["action"] or None)


@router.get("/review")
async def review_page(request: Request) -> Response:
    params = {k: v for k, v in request.query_params.items() if k in FILTER_FIELDS}

    def work(session: Session, identity: Identity, viewer: Viewer, _now: dt.datetime) -> Response:
        if not oversight.may_review(identity):
            raise Forbidden("the review pages are for security reviewers and admins; your account has neither role")
        flt = parse_filter(params)
        # verify_chain empties the session as it walks: run it first, then read the listings afresh.
        chain = audit.verify_chain(session)
        context: dict[str, object] = {
            "requests": oversight.review_requests(session, flt),
            "grants": oversight.review_grants(session, flt),
            "sessions": oversight.review_sessions(session, flt),
            "events": [(event, _details(event.details)) for event in oversight.review_events(session, flt)],
        }
        return render(web_of(request), "review.html", title="Security review", viewer=viewer, filters=params,
                      chain=chain, limit=oversight.REVIEW_LIMIT, listings=context)

    return await signed_in(request, work)

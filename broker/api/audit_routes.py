"""Read access to the audit trail for security reviewers and admins."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from broker.api.deps import CurrentIdentity, SessionDep
from broker.audit import trail
from broker.audit.siem_escaping import json_text
from broker.errors import Forbidden, InvalidInput
from broker.identity.identities import has_role

router = APIRouter(tags=["audit"])


class AsciiJSONResponse(JSONResponse):
    """JSON in plain ASCII: the trail keeps text as it was reported, and a lone surrogate (a file name a gateway
    reported in a session event's detail) has no UTF-8 at all: FastAPI's encoder would fail the whole page with
    a 500 and stall every export at that event. ASCII JSON escapes carry it, and every control, exactly."""

    def render(self, content: Any) -> bytes:
        return json_text(content, ascii_only=True).encode("ascii")


@router.get("/audit/events", response_model=list[dict[str, Any]], response_class=AsciiJSONResponse)
def list_events(identity: CurrentIdentity, session: SessionDep, since: dt.datetime | None = None,
                after_seq: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
                limit: Annotated[int, Query(ge=1, le=5000)] = 1000) -> AsciiJSONResponse:
    if not (has_role(identity, "security") or has_role(identity, "admin")):
        raise Forbidden("only security reviewers and admins can read the audit trail")
    if since is not None:
        since = _as_utc(since)
    return AsciiJSONResponse([e.as_dict() for e in trail.list_events(session, since=since, after_seq=after_seq,
                                                                     limit=limit)])


def _as_utc(moment: dt.datetime) -> dt.datetime:
    try:
        return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidInput(f"'since' {moment.isoformat()} is outside the range of dates the trail can hold") from None

"""Flags over the API: what the caller may see (supervisors: their sites; security and admins: all), and a
reviewer's decision (benign feeds the baseline, confirmed never does)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from broker.api.deps import CurrentIdentity, NowDep, SessionDep
from broker.api.schemas import Body
from broker.watch import flags

router = APIRouter(tags=["flags"])


class DecisionIn(Body):
    comment: str


@router.get("/flags")
def list_flags(identity: CurrentIdentity, session: SessionDep,
               status: Annotated[Literal["open", "benign", "confirmed", "all"], Query()] = "open",
               ) -> list[dict[str, Any]]:
    found = flags.visible_flags(session, viewer=identity, status=None if status == "all" else status)
    return [flags.shown(flag) for flag in found]


@router.post("/flags/{flag_id}/{verdict}")
def decide(flag_id: str, verdict: Literal["benign", "confirmed"], body: DecisionIn, identity: CurrentIdentity,
           session: SessionDep, now: NowDep) -> dict[str, Any]:
    return flags.shown(flags.decide(session, now=now, reviewer=identity, flag_id=flag_id, verdict=verdict,
                                    comment=body.comment))

"""Evidence holds over the API: a session recording's retention and holds, and security's hold and release (security
and admins only; others refused and audited)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from broker.api.deps import CurrentIdentity, NowDep, SessionDep, StateDep
from broker.api.schemas import Body
from broker.recordings import holds

router = APIRouter(tags=["recordings"])


class ReasonIn(Body):
    reason: str = Field(max_length=holds.MAX_REASON)


def _actor(identity: Any) -> holds.Actor:
    return holds.Actor(name=identity.username, person=identity)


@router.get("/recordings/{session_id}")
def evidence_state(session_id: str, identity: CurrentIdentity, session: SessionDep, now: NowDep,
                   state: StateDep) -> dict[str, Any]:
    return holds.evidence_state(session, now=now, actor=_actor(identity), session_id=session_id,
                                default_days=state.settings.recording_retention_days)


@router.post("/recordings/{session_id}/hold")
def hold(session_id: str, body: ReasonIn, identity: CurrentIdentity, session: SessionDep, now: NowDep,
         state: StateDep) -> dict[str, Any]:
    holds.hold(session, now=now, actor=_actor(identity), session_id=session_id, reason=body.reason)
    return holds.evidence_state(session, now=now, actor=_actor(identity), session_id=session_id,
                                default_days=state.settings.recording_retention_days)


@router.post("/recordings/{session_id}/release")
def release(session_id: str, body: ReasonIn, identity: CurrentIdentity, session: SessionDep, now: NowDep,
            state: StateDep) -> dict[str, Any]:
    holds.release(session, now=now, actor=_actor(identity), session_id=session_id, reason=body.reason)
    return holds.evidence_state(session, now=now, actor=_actor(identity), session_id=session_id,
                                default_days=state.settings.recording_retention_days)


@router.post("/runs/{run_id}/release")
def release_run(run_id: str, body: ReasonIn, identity: CurrentIdentity, session: SessionDep,
                now: NowDep) -> dict[str, Any]:
    released = holds.release_run(session, now=now, actor=_actor(identity), run_id=run_id, reason=body.reason)
    return {"run": run_id, "released": released}

"""Plant-local containment over the API: lock a site down, lift it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from broker.api.deps import CurrentIdentity, NowDep, SessionDep, StateDep
from broker.api.schemas import LockdownIn
from broker.containment import lockdown

router = APIRouter(tags=["sites"])


@router.post("/sites/{site_name}/lockdown")
def lock_down(site_name: str, body: LockdownIn, identity: CurrentIdentity, state: StateDep, session: SessionDep,
              now: NowDep) -> dict[str, Any]:
    revoked = lockdown.lock_down_site(session, now=now, events=state.hub, actor=identity, site_name=site_name,
                                         reason=body.reason)
    return {"site": site_name, "locked_down": True, "revoked_grants": revoked}


@router.post("/sites/{site_name}/lift")
def lift(site_name: str, identity: CurrentIdentity, session: SessionDep, now: NowDep) -> dict[str, Any]:
    lockdown.lift_lockdown(session, now=now, actor=identity, site_name=site_name)
    return {"site": site_name, "locked_down": False}

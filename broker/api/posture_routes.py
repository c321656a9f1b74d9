"""The posture report over the API (security and admins): this period's figures beside the previous period's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from broker.api.deps import CurrentIdentity, NowDep, SessionDep
from broker.errors import Forbidden
from broker.identity.identities import has_role
from broker.vocabulary import Role
from broker.watch import posture

router = APIRouter(tags=["posture"])


@router.get("/posture")
def posture_report(identity: CurrentIdentity, session: SessionDep, now: NowDep,
                   days: Annotated[int, Query(ge=1, le=posture.MAX_DAYS)] = 30) -> dict[str, Any]:
    if not (has_role(identity, Role.SECURITY) or has_role(identity, Role.ADMIN)):
        raise Forbidden("only security reviewers and admins can read the posture report")
    return posture.posture(session, now=now, days=days).as_dict()

"""Identities over the API: the inventory with its flags (security and admins), lifecycle changes (suspend,
resume, retire), and access reviews (what the caller must review, the decision, and the report)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from broker.api.deps import CurrentIdentity, NowDep, SessionDep, StateDep
from broker.api.schemas import Body
from broker.errors import Forbidden
from broker.identity import attestation, inventory, lifecycle
from broker.identity.identities import has_role
from broker.models import Identity
from broker.vocabulary import Role

router = APIRouter(tags=["identities"])


class ReasonIn(Body):
    reason: str


class AttestIn(Body):
    outcome: Literal["keep", "revoke"]
    comment: str


def _reviewer_of_inventory(identity: Identity) -> None:
    if not (has_role(identity, Role.SECURITY) or has_role(identity, Role.ADMIN)):
        raise Forbidden("only security reviewers and admins can see the identity inventory")


@router.get("/identities", response_model=None)
def list_identities(identity: CurrentIdentity, session: SessionDep, now: NowDep,
                    kind: Annotated[str | None, Query(max_length=16)] = None,
                    flag: Annotated[str | None, Query(max_length=40)] = None,
                    status: Annotated[str | None, Query(max_length=16)] = None,
                    format: Annotated[Literal["json", "csv"], Query()] = "json",
                    ) -> Any:
    _reviewer_of_inventory(identity)
    records = inventory.list_identities(session, now=now, kind=kind, flag=flag, status=status)
    if format == "csv":
        return PlainTextResponse(inventory.as_csv(records), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="identities.csv"'})
    return [record.as_dict() for record in records]


@router.get("/identities/{username}")
def show_identity(username: str, identity: CurrentIdentity, session: SessionDep, now: NowDep) -> dict[str, Any]:
    _reviewer_of_inventory(identity)
    return inventory.show_identity(session, now=now, username=username).as_dict()


# Before the lifecycle verbs: a path's first match wins.
@router.post("/identities/{username}/attest")
def attest(username: str, body: AttestIn, identity: CurrentIdentity, session: SessionDep, now: NowDep,
           state: StateDep) -> dict[str, Any]:
    record = attestation.attest(session, now=now, events=state.hub, reviewer=identity, username=username,
                                outcome=body.outcome, comment=body.comment)
    reviewed = inventory.show_identity(session, now=now, username=username)
    return {"identity": username, "outcome": record.outcome, "decided_at": record.decided_at.isoformat(),
            "status": reviewed.status, "attestation_due_at": reviewed.attestation_due_at}


@router.post("/identities/{username}/{verb}")
def change_state(username: str, verb: Literal["suspend", "resume", "retire"], body: ReasonIn,
                 identity: CurrentIdentity, session: SessionDep, now: NowDep, state: StateDep) -> dict[str, Any]:
    lifecycle.check_authority(session, now=now, person=identity, username=username, verb=verb)
    if verb == "suspend":
        done = lifecycle.suspend(session, now=now, events=state.hub, actor=identity.username, username=username,
                                 reason=body.reason)
    elif verb == "retire":
        done = lifecycle.retire(session, now=now, events=state.hub, actor=identity.username, username=username,
                                reason=body.reason)
    else:
        done = lifecycle.resume(session, now=now, actor=identity.username, username=username, reason=body.reason)
    return {"username": done.username, "was": done.was, "status": done.now, "grants_revoked": done.grants_revoked}


@router.get("/reviews")
def my_reviews(identity: CurrentIdentity, session: SessionDep, now: NowDep,
               all: bool = False) -> list[dict[str, Any]]:
    return [review.as_dict() for review in attestation.pending_reviews(session, now=now, reviewer=identity,
                                                                        everything=all)]


@router.get("/reviews/report")
def review_report(identity: CurrentIdentity, session: SessionDep) -> list[dict[str, Any]]:
    _reviewer_of_inventory(identity)
    return attestation.report(session)

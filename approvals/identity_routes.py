"""Identity pages: the inventory with its flags and filters for security and admins (/identities, with a CSV
export and the kill switch), and the access reviews each person owes (/reviews: keep or revoke)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from approvals.web import Viewer, posted, redirect, render, secure, signed_in, text, web_of
from broker.errors import Forbidden
from broker.identity import attestation, inventory, lifecycle
from broker.identity.identities import has_role
from broker.models import Identity
from broker.vocabulary import IdentityKind, IdentityStatus, Role

router = APIRouter(include_in_schema=False)

FILTERS = ("kind", "flag", "status")
DONE = {"suspended": "Suspended: its grants ended and its live sessions were cut.",
        "kept": "Kept: the next review is due one period from now.",
        "revoked": "Revoked: the identity is suspended, its grants ended and its sessions were cut."}


def _inventory_reader(identity: Identity) -> None:
    if not (has_role(identity, Role.SECURITY) or has_role(identity, Role.ADMIN)):
        raise Forbidden("the identity inventory is for security reviewers and admins; your account has neither role")


def _filters(request: Request) -> dict[str, str | None]:
    return {name: (request.query_params.get(name) or "").strip()[:40] or None for name in FILTERS}


@router.get("/identities")
async def identities_page(request: Request) -> Response:
    chosen = _filters(request)
    done = DONE.get(request.query_params.get("done", ""))

    def work(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime) -> Response:
        _inventory_reader(identity)
        records = inventory.list_identities(session, now=now, **chosen)
        return render(web_of(request), "identities.html", title="Identities", viewer=viewer, records=records,
                      filters={k: v or "" for k, v in chosen.items()}, done=done,
                      kinds=[str(k) for k in IdentityKind], statuses=[str(s) for s in IdentityStatus],
                      flags=[(str(f), inventory.FLAG_TEXT[f]) for f in inventory.Flag],
                      flag_text={str(f): text for f, text in inventory.FLAG_TEXT.items()})

    return await signed_in(request, work)


@router.get("/identities.csv")
async def identities_csv(request: Request) -> Response:
    chosen = _filters(request)

    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime) -> Response:
        _inventory_reader(identity)
        body = inventory.as_csv(inventory.list_identities(session, now=now, **chosen))
        return secure(Response(body, media_type="text/csv; charset=utf-8",
                               headers={"Content-Disposition": 'attachment; filename="identities.csv"'}))

    return await signed_in(request, work)


@router.post("/identities/{username}/suspend")
async def suspend(request: Request, username: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        lifecycle.check_authority(session, now=now, person=identity, username=username[:64], verb="suspend")
        lifecycle.suspend(session, now=now, events=web_of(request).state.hub, actor=identity.username,
                          username=username[:64], reason=text(form, "reason", label="The reason"))
        return redirect("/identities?done=suspended")

    return await posted(request, work)


@router.get("/reviews")
async def reviews_page(request: Request) -> Response:
    done = DONE.get(request.query_params.get("done", ""))
    everything = request.query_params.get("all") == "1"

    def work(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime) -> Response:
        reviews = attestation.pending_reviews(session, now=now, reviewer=identity, everything=everything)
        return render(web_of(request), "access_reviews.html", title="Access reviews", viewer=viewer, reviews=reviews,
                      everything=everything, done=done)

    return await signed_in(request, work)


@router.post("/reviews/{username}")
async def attest(request: Request, username: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             form: dict[str, str]) -> Response:
        outcome = text(form, "outcome", label="The decision (keep or revoke)", limit=8)
        attestation.attest(session, now=now, events=web_of(request).state.hub, reviewer=identity,
                           username=username[:64], outcome=outcome,
                           comment=text(form, "comment", label="A comment saying what you checked"))
        return redirect("/reviews?done=" + ("kept" if outcome == "keep" else "revoked"))

    return await posted(request, work)

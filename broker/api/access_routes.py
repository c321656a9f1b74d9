"""Access requests and grants for vendors, supervisors and security."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from broker.access import workflow
from broker.api.deps import CurrentIdentity, NowDep, SessionDep, StateDep
from broker.api.schemas import ApproveIn, DenyIn, RequestIn, RevokeIn
from broker.api.views import grant_view, request_view
from broker.inventory.gateways import GatewayDirectory, current_gateway

router = APIRouter(tags=["access"])


@router.post("/requests", status_code=201)
def create_request(body: RequestIn, identity: CurrentIdentity, state: StateDep, session: SessionDep,
                   now: NowDep) -> dict[str, Any]:
    request = workflow.create_request(
        session, now=now, decide_within=state.settings.decide_within, requester=identity, asset_name=body.asset,
        duration=body.duration, reason=body.reason, ssh=body.ssh, ports=body.ports, read_only=body.read_only,
        start=body.start,
        public_key=body.public_key, vault=state.vault,
    )
    return request_view(request, now)


@router.get("/requests")
def list_requests(identity: CurrentIdentity, session: SessionDep, now: NowDep,
                  pending: bool = False) -> list[dict[str, Any]]:
    return [request_view(r, now)
            for r in workflow.visible_requests(session, now=now, viewer=identity, pending_only=pending)]


@router.get("/requests/{request_id}")
def get_request(request_id: str, identity: CurrentIdentity, session: SessionDep, now: NowDep) -> dict[str, Any]:
    return request_view(workflow.get_request(session, now=now, viewer=identity, request_id=request_id), now)


@router.post("/requests/{request_id}/approve")
def approve(request_id: str, identity: CurrentIdentity, state: StateDep, session: SessionDep, now: NowDep,
            body: ApproveIn | None = None) -> dict[str, Any]:
    body = body or ApproveIn()
    request = workflow.approve(session, vault=state.vault, now=now, approver=identity, request_id=request_id,
                             comment=body.comment, shorten_to=body.shorten_to)
    return request_view(request, now)


@router.post("/requests/{request_id}/deny")
def deny(request_id: str, body: DenyIn, identity: CurrentIdentity, session: SessionDep,
         now: NowDep) -> dict[str, Any]:
    return request_view(workflow.deny(session, now=now, approver=identity, request_id=request_id,
                                    comment=body.comment), now)


@router.post("/requests/{request_id}/cancel")
def cancel(request_id: str, identity: CurrentIdentity, session: SessionDep, now: NowDep) -> dict[str, Any]:
    return request_view(workflow.cancel(session, now=now, requester=identity, request_id=request_id), now)


@router.get("/grants")
def list_grants(identity: CurrentIdentity, session: SessionDep, now: NowDep, asset: str | None = None,
                usable: bool = False) -> list[dict[str, Any]]:
    grants = workflow.visible_grants(session, viewer=identity, asset_name=asset, usable_only=usable, now=now)
    directory = GatewayDirectory(session)  # the gateway each grant's site is reached through, read once
    return [grant_view(g, now, viewer=identity, gateway=directory.for_site(g.asset.site)) for g in grants]


@router.get("/grants/{grant_id}")
def get_grant(grant_id: str, identity: CurrentIdentity, session: SessionDep, now: NowDep) -> dict[str, Any]:
    grant = workflow.get_grant(session, viewer=identity, grant_id=grant_id)
    return grant_view(grant, now, viewer=identity, gateway=current_gateway(session, grant.asset.site))


@router.post("/grants/{grant_id}/revoke")
def revoke(grant_id: str, identity: CurrentIdentity, state: StateDep, session: SessionDep, now: NowDep,
           body: RevokeIn | None = None) -> dict[str, Any]:
    grant = workflow.revoke_grant(session, now=now, events=state.hub, actor=identity, grant_id=grant_id,
                                reason=(body or RevokeIn()).reason)
    return grant_view(grant, now, viewer=identity, gateway=current_gateway(session, grant.asset.site))

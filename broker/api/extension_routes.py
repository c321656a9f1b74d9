"""Grant extensions: the grantee asks for more time on an active grant; the site's approvers decide."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from broker.access import extensions
from broker.api.deps import CurrentIdentity, NowDep, SessionDep, StateDep
from broker.api.schemas import DenyIn, ExtendIn, ExtensionApproveIn
from broker.api.views import extension_view

router = APIRouter(tags=["extensions"])


@router.post("/grants/{grant_id}/extend", status_code=201)
def extend(grant_id: str, body: ExtendIn, identity: CurrentIdentity, session: SessionDep,
           now: NowDep) -> dict[str, Any]:
    extension = extensions.request_extension(session, now=now, requester=identity, grant_id=grant_id,
                                             duration=body.duration, reason=body.reason)
    return extension_view(extension, now)


@router.get("/extensions")
def list_extensions(identity: CurrentIdentity, session: SessionDep, now: NowDep,
                    pending: bool = False) -> list[dict[str, Any]]:
    extensions.lapse_stale(session, now=now)
    return [extension_view(e, now)
            for e in extensions.visible_extensions(session, viewer=identity, pending_only=pending)]


@router.post("/extensions/{extension_id}/approve")
def approve(extension_id: str, identity: CurrentIdentity, state: StateDep, session: SessionDep, now: NowDep,
            body: ExtensionApproveIn | None = None) -> dict[str, Any]:
    extension = extensions.approve_extension(session, vault=state.vault, now=now, events=state.hub,
                                             approver=identity, extension_id=extension_id,
                                             comment=(body or ExtensionApproveIn()).comment)
    return extension_view(extension, now)


@router.post("/extensions/{extension_id}/deny")
def deny(extension_id: str, body: DenyIn, identity: CurrentIdentity, session: SessionDep,
         now: NowDep) -> dict[str, Any]:
    return extension_view(extensions.deny_extension(session, now=now, approver=identity,
                                                    extension_id=extension_id, comment=body.comment), now)

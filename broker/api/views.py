"""Shape domain objects into the JSON the API promises (docs/API.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from broker.access.rules import grant_status
from broker.inventory.supervision_policy import effective_supervision
from broker.models import AccessRequest, Gateway, Grant, GrantExtension, Identity
from broker.vocabulary import Verdict


def identity_view(identity: Identity) -> dict[str, Any]:
    return {
        "username": identity.username,
        "kind": identity.kind,
        "roles": sorted({assignment.role for assignment in identity.roles}),
        "organisation": identity.organisation,
        "sites": sorted({a.site.name for a in identity.roles if a.site is not None}),
    }


def grant_summary(grant: Grant, now: dt.datetime) -> dict[str, Any]:
    return {"id": grant.id, "starts_at": grant.starts_at.isoformat(), "ends_at": grant.ends_at.isoformat(),
            "status": grant_status(grant, now)}


def request_view(request: AccessRequest, now: dt.datetime) -> dict[str, Any]:
    denial = next((d for d in request.decisions if d.verdict == "deny"), None)
    return {
        "id": request.id,
        "status": request.status,
        "asset": request.asset.name,
        "site": request.asset.site.name,
        "requester": request.requester.username,
        "organisation": request.requester.organisation,
        "ssh": request.ssh,
        "ports": list(request.ports),
        "read_only": request.read_only,
        "duration_seconds": request.duration_seconds,
        "start": request.start_at.isoformat() if request.start_at else None,
        "reason": request.reason,
        "created_at": request.created_at.isoformat(),
        "decide_by": request.decide_by.isoformat(),
        "approvals_required": request.approvals_required,
        "approvals": [
            {"approver": d.approver.username, "comment": d.comment, "decided_at": d.decided_at.isoformat()}
            for d in request.decisions if d.verdict == Verdict.APPROVE
        ],
        "denial": {"approver": denial.approver.username, "comment": denial.comment,
                   "decided_at": denial.decided_at.isoformat()} if denial else None,
        "grant": grant_summary(request.grant, now) if request.grant else None,
    }


def grant_view(grant: Grant, now: dt.datetime, *, viewer: Identity, gateway: Gateway | None) -> dict[str, Any]:
    return {
        **grant_summary(grant, now),
        "request_id": grant.request_id,
        "asset": grant.asset.name,
        "site": grant.asset.site.name,
        "identity": grant.identity.username,
        "ssh": grant.ssh,
        "ports": list(grant.ports),
        "read_only": grant.read_only,
        # Sessions to this asset wait until a supervisor of its site watches (issue 13): the CLI says so up front.
        "supervision_required": effective_supervision(grant.asset).required,
        "revoked_by": grant.revoked_by,
        "revoke_reason": grant.revoke_reason,
        # The certificate is the grantee's credential: only they receive it.
        "certificate": grant.certificate if grant.identity_id == viewer.id else None,
        "gateway": {"host": gateway.ssh_host, "port": gateway.ssh_port, "host_key": gateway.host_key}
        if gateway else None,
    }


def extension_view(extension: GrantExtension, now: dt.datetime) -> dict[str, Any]:
    grant = extension.grant
    return {
        "id": extension.id,
        "status": extension.status,
        "grant": grant_summary(grant, now),
        "asset": grant.asset.name,
        "site": grant.asset.site.name,
        "requester": extension.requester.username,
        "organisation": extension.requester.organisation,
        "duration_seconds": extension.duration_seconds,
        "reason": extension.reason,
        "created_at": extension.created_at.isoformat(),
        "previous_ends_at": extension.previous_ends_at.isoformat(),
        "new_ends_at": extension.new_ends_at.isoformat() if extension.new_ends_at else None,
        "approvals_required": extension.approvals_required,
        "approvals": [{"approver": d.approver.username, "comment": d.comment, "decided_at": d.decided_at.isoformat()}
                      for d in extension.decisions if d.verdict == Verdict.APPROVE],
        "denial": next(({"approver": d.approver.username, "comment": d.comment,
                         "decided_at": d.decided_at.isoformat()}
                        for d in extension.decisions if d.verdict == "deny"), None),
        "decided_at": extension.decided_at.isoformat() if extension.decided_at else None,
    }

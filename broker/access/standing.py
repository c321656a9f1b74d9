"""Standing access for automation, still bounded: the plant approves once that a service identity may reach one
asset (SSH and/or ports, read-only or not) within weekly windows until an end date at most 90 days ahead; each
use is still a request of its own, granted at once with a short-lived grant (at most an hour: the workload
credential's lifetime) and audited like any session (``access:standing_policy:used``).

A request the policy does not cover (another asset, more services, outside a window, a start later on) stays an
ordinary request for the plant to decide.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.access.approval import MAX_REASON
from broker.access.workflow import READ_ONLY_PROTOCOL_PORTS, _create_grant
from broker.audit import trail
from broker.audit.trail import Action
from broker.containment.lockdown import revoke_grants
from broker.errors import Conflict, InvalidInput, NotFound
from broker.identity.identities import get_identity, why_unusable
from broker.ids import new_id
from broker.inventory.gateway_events import EventPublisher
from broker.inventory.sites import check_maintenance_windows, get_asset, parse_maintenance_window
from broker.keys.vault import Vault
from broker.models import AccessRequest, Grant, StandingPolicy
from broker.vocabulary import IdentityKind, RequestStatus

MAX_TERM = dt.timedelta(days=90)
# The longest one use may last whatever the request asks: the workload credential's default lifetime.
MAX_USE = dt.timedelta(hours=1)


def _windows(specs: list[str]) -> list[str]:
    try:
        return check_maintenance_windows(specs)
    except InvalidInput as exc:
        raise InvalidInput(exc.message.replace("maintenance window", "window")) from None


def approve_policy(session: Session, *, now: dt.datetime, actor: str, username: str, asset_name: str, ssh: bool,
                   ports: list[int], read_only: bool, windows: list[str], ends_at: dt.datetime) -> StandingPolicy:
    """Record the plant's one approval (``actor``: who approved it, audited). Only an active service identity in
    scope at the asset's site, only services the asset offers, and an end at most 90 days ahead."""
    identity = get_identity(session, username)
    asset = get_asset(session, asset_name)
    site = asset.site
    if identity.kind != IdentityKind.SERVICE:
        raise InvalidInput(f"'{username}' is a {identity.kind} identity: standing access is for service identities "
                           "(people request each time; AI agents act on their sponsor's delegation)")
    unusable = why_unusable(identity, now)
    if unusable:
        raise Conflict(f"{unusable}: it cannot be given standing access")
    if not any(assignment.site_id in (None, site.id) for assignment in identity.roles):
        raise InvalidInput(f"'{username}' is not in scope at site {site.name}")
    ports = sorted(set(ports))
    if not ssh and not ports:
        raise InvalidInput("name at least one service: --ssh or a --port")
    if ssh and asset.ssh_port is None:
        raise InvalidInput(f"{asset.name} offers no SSH service")
    not_offered = [port for port in ports if port not in asset.tcp_ports]
    if not_offered:
        offered = ", ".join(map(str, asset.tcp_ports)) or "none"
        raise InvalidInput(f"port {not_offered[0]} is not a service of {asset.name} (TCP ports it offers: {offered})")
    if read_only and (ssh or any(port not in READ_ONLY_PROTOCOL_PORTS for port in ports)):
        raise InvalidInput("read-only access is only available for Modbus/TCP (port 502), without SSH")
    if ends_at.tzinfo is None:
        raise InvalidInput("the end date needs a timezone offset")
    if ends_at <= now:
        raise InvalidInput(f"the end date {ends_at:%Y-%m-%d %H:%M} UTC has already passed")
    if ends_at - now > MAX_TERM:
        raise InvalidInput(f"standing access is approved for at most 90 days at a time (until "
                           f"{now + MAX_TERM:%Y-%m-%d}); approve it again before then")
    policy = StandingPolicy(id=new_id("stp"), identity_id=identity.id, asset_id=asset.id, ssh=ssh, ports=ports,
                            read_only=read_only, windows=_windows(windows), ends_at=ends_at, approved_by=actor,
                            created_at=now)
    session.add(policy)
    trail.record(session, now=now, action=Action.STANDING_POLICY_APPROVED, actor=actor, subject=policy.id,
                 site=site.name, details={"identity": username, "asset": asset.name, "ssh": ssh, "ports": ports,
                                          "read_only": read_only, "windows": policy.windows,
                                          "ends_at": ends_at.isoformat()})
    return policy


def revoke_policy(session: Session, *, now: dt.datetime, events: EventPublisher, actor: str, policy_id: str,
                  reason: str | None) -> StandingPolicy:
    """End a standing policy now, and every open grant that is a use of it (its sessions cut within a second)."""
    policy = session.get(StandingPolicy, policy_id, with_for_update=True)
    if policy is None:
        raise NotFound(f"there is no standing policy {policy_id}")
    if policy.revoked_at is not None:
        raise Conflict(f"standing policy {policy_id} was already revoked by {policy.revoked_by}")
    why = (reason or "").strip()
    if len(why) > MAX_REASON:
        raise InvalidInput(f"the reason is too long ({len(why)} characters, at most {MAX_REASON})")
    policy.revoked_at, policy.revoked_by = now, actor
    site = policy.asset.site.name
    trail.record(session, now=now, action=Action.STANDING_POLICY_REVOKED, actor=actor, subject=policy.id, site=site,
                 details={"identity": policy.identity.username, "asset": policy.asset.name, "reason": why or None})
    uses = list(session.scalars(select(Grant).where(Grant.standing_policy_id == policy.id,
                                                    Grant.revoked_at.is_(None), Grant.ends_at > now)))
    revoke_grants(session, now=now, events=events, grants=uses, actor=actor, reason="revoked",
                  why=f"standing policy {policy.id} was revoked: {why or 'no reason given'}")
    return policy


def policies(session: Session, *, username: str | None = None) -> list[StandingPolicy]:
    query = select(StandingPolicy).order_by(StandingPolicy.created_at)
    if username is not None:
        query = query.where(StandingPolicy.identity_id == get_identity(session, username).id)
    return list(session.scalars(query))


@dataclass(frozen=True)
class Cover:
    """A policy that covers a request now, and when the current window closes (None: no windows)."""

    policy: StandingPolicy
    window_ends: dt.datetime | None


def current_window_end(specs: list[str], now: dt.datetime) -> dt.datetime | None:
    """The end of the window ``now`` is in (the latest, if several overlap); None when not in any."""
    ends = []
    for spec in specs:
        window = parse_maintenance_window(spec)
        for begins, finishes in window.occurrences(now.date() - dt.timedelta(days=1), now.date()):
            if begins <= now < finishes:
                ends.append(finishes)
    return max(ends) if ends else None


def covering(session: Session, *, now: dt.datetime, request: AccessRequest) -> Cover | None:
    """The requester's standing policy that covers this request now, if any: same asset, services within it,
    active, and ``now`` inside one of its windows (a request for later is always decided by the plant)."""
    if request.start_at is not None or request.requester.kind != IdentityKind.SERVICE:
        return None
    candidates = session.scalars(select(StandingPolicy).where(
        StandingPolicy.identity_id == request.requester_id, StandingPolicy.asset_id == request.asset_id,
        StandingPolicy.revoked_at.is_(None), StandingPolicy.ends_at > now).order_by(StandingPolicy.created_at))
    for policy in candidates:
        if request.ssh and not policy.ssh:
            continue
        if any(port not in policy.ports for port in request.ports):
            continue
        if policy.read_only and not request.read_only:
            continue
        if not policy.windows:
            return Cover(policy, None)
        window_ends = current_window_end(policy.windows, now)
        if window_ends is not None:
            return Cover(policy, window_ends)
    return None


def use_if_covered(session: Session, *, vault: Vault, now: dt.datetime, request: AccessRequest) -> Grant | None:
    """Grant a new request at once when a standing policy covers it: a short-lived grant (at most an hour, the
    site's workload credential lifetime, the policy's end and the window's end), audited as a use of the policy.
    Returns None (the request stays pending for the plant) when none does."""
    if request.status != RequestStatus.PENDING:
        return None
    session.flush()  # the new request's row first: its requester and asset load from it, and the grant refers to it
    cover = covering(session, now=now, request=request)
    if cover is None:
        return None
    policy, site = cover.policy, request.asset.site
    ends = [now + MAX_USE, now + dt.timedelta(seconds=site.workload_credential_seconds), policy.ends_at]
    if cover.window_ends is not None:
        ends.append(cover.window_ends)
    request.status, request.decided_at, request.approvals_required = RequestStatus.APPROVED, now, 0
    grant = _create_grant(session, vault=vault, now=now, request=request, shorten_to=min(ends) - now)
    grant.standing_policy_id = policy.id
    details: dict[str, Any] = {"policy": policy.id, "request": request.id, "grant": grant.id,
                               "asset": request.asset.name, "ends_at": grant.ends_at.isoformat(),
                               "approved_by": policy.approved_by}
    trail.record(session, now=now, action=Action.STANDING_POLICY_USED, actor=request.requester.username,
                 subject=policy.id, site=site.name, details=details)
    return grant


def policy_view(policy: StandingPolicy, now: dt.datetime) -> dict[str, Any]:
    status = "revoked" if policy.revoked_at else "ended" if policy.ends_at <= now else "active"
    return {"id": policy.id, "identity": policy.identity.username, "asset": policy.asset.name,
            "site": policy.asset.site.name, "ssh": policy.ssh, "ports": list(policy.ports),
            "read_only": policy.read_only, "windows": list(policy.windows), "ends_at": policy.ends_at.isoformat(),
            "approved_by": policy.approved_by, "created_at": policy.created_at.isoformat(), "status": status,
            "revoked_by": policy.revoked_by}


"""Access requests and grants: ask, decide, grant (with its certificate), revoke, expire."""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from broker.access.approval import (
    MAX_REASON,
    REQUEST,
    approvals_so_far,
    check_may_decide,
    clean_comment,
    denial_comment,
    is_approved,
)
from broker.access.rules import grant_status, grant_window
from broker.audit import trail
from broker.audit.trail import Action
from broker.containment.lockdown import revoke_delegated
from broker.durations import format_duration, parse_duration
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound, audited
from broker.identity.identities import has_role, may_act_for_site, site_ids_for_role
from broker.identity.usage import touch
from broker.ids import new_id
from broker.inventory.gateway_events import EventPublisher, announce
from broker.inventory.sites import approvals_needed, get_asset
from broker.keys.authorities import CertificateSpec, issue_user_certificate, load_signing_key, new_serial
from broker.keys.vault import Vault
from broker.models import AccessRequest, Asset, Decision, Grant, Identity
from broker.vocabulary import GrantChangeStatus, IdentityKind, RequestStatus, Verdict

T = TypeVar("T")

# Ports whose protocol the gateway filters for read-only grants: Modbus/TCP (IANA port 502).
READ_ONLY_PROTOCOL_PORTS = frozenset({502})
# How far ahead a window may be booked.
MAX_LEAD = dt.timedelta(days=30)
# Tolerate a start a little in the past (a clock behind the broker's, a slow typist).
START_SLACK = dt.timedelta(minutes=5)
MIN_RSA_BITS = 2048
ALLOWED_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


def read_only_mode_refusal(site: str) -> str:
    return (f"site {site} is in read-only mode: only read-only protocol access (Modbus reads, --read-only "
            "--port 502) is allowed until the plant switches it back")


def create_request(
    session: Session, *, now: dt.datetime, decide_within: dt.timedelta, requester: Identity, asset_name: str,
    duration: str, reason: str, ssh: bool, ports: list[int], start: dt.datetime | None, public_key: str,
    read_only: bool = False, vault: Vault | None = None,
) -> AccessRequest:
    """A new request for the plant to decide; with ``vault``, one that a service identity's standing policy covers
    is granted at once (broker.access.standing)."""
    asset = get_asset(session, asset_name)
    site = asset.site
    if requester.kind == IdentityKind.AI_AGENT:
        raise _refuse(session, now, requester, asset, Action.REQUEST_REFUSED,
                      "an AI agent does not ask the plant for access itself: its sponsor delegates part of one of "
                      "their grants to it (`gatepass delegate`)")
    if not has_role(requester, "vendor"):
        raise _refuse(session, now, requester, asset, Action.REQUEST_REFUSED,
                      "only vendor accounts request access; ask your administrator for the vendor role")
    if not may_act_for_site(requester, "vendor", site.id):
        raise _refuse(session, now, requester, asset, Action.REQUEST_REFUSED,
                      f"your account may request access only at its own sites, not at {site.name}")
    if site.locked_down:
        raise _refuse(session, now, requester, asset, Action.REQUEST_REFUSED,
                      f"site {site.name} is locked down: no new access until the plant lifts the lockdown")
    if site.read_only_mode and (ssh or not read_only):
        raise _refuse(session, now, requester, asset, Action.REQUEST_REFUSED, read_only_mode_refusal(site.name))
    window = parse_duration(duration)
    if window > dt.timedelta(seconds=site.max_window_seconds):
        raise InvalidInput(f"a window of {duration} is longer than {site.name} allows "
                           f"(at most {format_duration(dt.timedelta(seconds=site.max_window_seconds))})")
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("a reason is required: tell the plant what the access is for")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"the reason is too long ({len(reason)} characters, at most {MAX_REASON})")
    ports = sorted(set(ports))
    if not ssh and not ports:
        raise InvalidInput("ask for at least one service: SSH or a TCP port")
    if read_only:
        # The gateway can only enforce read-only where it understands the protocol (gateway/protocols.py).
        unfiltered = [p for p in ports if p not in READ_ONLY_PROTOCOL_PORTS]
        if not ports or unfiltered:
            raise InvalidInput("read-only access is only available for Modbus/TCP (port 502)"
                               + (f", not port {unfiltered[0]}" if unfiltered else ": add --port 502"))
        if ssh:
            raise InvalidInput("read-only cannot cover SSH (a shell can change anything): request SSH separately")
    if ssh and asset.ssh_port is None:
        raise InvalidInput(f"{asset.name} offers no SSH service")
    not_offered = [p for p in ports if p not in asset.tcp_ports]
    if not_offered:
        offered = ", ".join(map(str, asset.tcp_ports)) or "none"
        raise InvalidInput(f"port {not_offered[0]} is not a service of {asset.name} (TCP ports it offers: {offered})")
    if start is not None:
        if start.tzinfo is None:
            raise InvalidInput("the start time needs a timezone offset, e.g. 2026-11-27T14:00:00+00:00")
        if start < now - START_SLACK:
            raise InvalidInput(f"the start time {start.isoformat()} is in the past")
        if start > now + MAX_LEAD:
            raise InvalidInput("the start time is more than 30 days ahead")
    key = _check_public_key(public_key)

    decide_by = now + decide_within
    if start is not None:
        decide_by = min(decide_by, start + window)
    request = AccessRequest(
        id=new_id("req"), requester_id=requester.id, asset_id=asset.id, ssh=ssh, ports=ports, read_only=read_only,
        duration_seconds=int(window.total_seconds()), start_at=start, reason=reason, public_key=key,
        status=RequestStatus.PENDING, approvals_required=approvals_needed(asset), created_at=now, decide_by=decide_by,
    )
    session.add(request)
    trail.record(session, now=now, action=Action.REQUEST_CREATED, actor=requester.username, subject=request.id,
                 site=site.name, details={"asset": asset.name, "ssh": ssh, "ports": ports, "read_only": read_only,
                                          "duration": format_duration(window), "reason": reason})
    if vault is not None:
        from broker.access import standing  # imported here: standing builds on this module

        standing.use_if_covered(session, vault=vault, now=now, request=request)
    return request


def _check_public_key(text: str) -> str:
    """Accept one OpenSSH public key line (``type base64 [comment]``) and nothing else: asyncssh would
    also read a private key and derive its public half, and a private key must never reach the broker."""
    parts = (text or "").strip().split()
    if len(parts) >= 2 and parts[0] == "ssh-dss":
        raise InvalidInput("DSA SSH keys are not accepted (1024-bit only, deprecated by OpenSSH): make an Ed25519 "
                           "key with `ssh-keygen -t ed25519` and send its .pub file")
    if "\n" in (text or "").strip() or len(parts) < 2 or parts[0] not in ALLOWED_KEY_TYPES:
        raise InvalidInput("the SSH public key must be one line like \"ssh-ed25519 AAAA… comment\" (the .pub "
                           "file; never send a private key)")
    try:
        key = asyncssh.import_public_key(f"{parts[0]} {parts[1]}")
    except (asyncssh.KeyImportError, ValueError):
        raise InvalidInput("the SSH public key is not an OpenSSH public key (\"ssh-ed25519 AAAA…\")") from None
    if key.algorithm.decode() not in ALLOWED_KEY_TYPES:
        raise InvalidInput(f"SSH keys of type {key.algorithm.decode()} are not accepted: use ssh-ed25519")
    if parts[0] == "ssh-rsa":
        bits = _rsa_bits(f"{parts[0]} {parts[1]}")
        if bits < MIN_RSA_BITS:
            # NIST SP 800-131A: RSA below 2048 bits is disallowed for signatures.
            raise InvalidInput(f"this RSA key has {bits} bits; at least {MIN_RSA_BITS} are required (better: an "
                               "Ed25519 key from `ssh-keygen -t ed25519`)")
    return key.export_public_key("openssh").decode().strip()


def _rsa_bits(line: str) -> int:
    public = serialization.load_ssh_public_key(line.encode())
    return public.key_size if isinstance(public, rsa.RSAPublicKey) else 0


def _refuse(session: Session, now: dt.datetime, actor: Identity, asset: Asset, action: Action,
            why: str, subject: str | None = None) -> Forbidden:
    """Audit a security-relevant refusal and return the error to raise (its audit event is kept)."""
    trail.record(session, now=now, action=action, outcome="refused", actor=actor.username,
                 subject=subject or asset.name, site=asset.site.name, details={"reason": why})
    return audited(Forbidden(why))


def expire_overdue(session: Session, *, now: dt.datetime) -> None:
    """Undecided requests past their decide-by time expire (lazily, whenever requests are read or decided)."""
    overdue = session.scalars(
        select(AccessRequest).where(AccessRequest.status == RequestStatus.PENDING, AccessRequest.decide_by <= now)
    ).all()
    for request in overdue:
        request.status = RequestStatus.EXPIRED
        request.decided_at = now
        trail.record(session, now=now, action=Action.REQUEST_EXPIRED, subject=request.id,
                     site=request.asset.site.name, details={"decide_by": request.decide_by.isoformat()})


def restrict_to_viewer(query: Select[T], *, viewer: Identity, owner: InstrumentedAttribute[int]) -> Select[T]:
    """Who sees what (the query must join Asset): security and admins everything; a supervisor what happens at
    their sites; everyone what they own (``owner`` names the owning identity's column)."""
    if has_role(viewer, "security") or has_role(viewer, "admin"):
        return query
    sites = site_ids_for_role(viewer, "supervisor")
    if None in sites:
        return query
    site_ids = [s for s in sites if s is not None]
    return query.where(or_(owner == viewer.id, Asset.site_id.in_(site_ids)) if site_ids else owner == viewer.id)


def visible_requests(session: Session, *, now: dt.datetime, viewer: Identity,
                     pending_only: bool) -> list[AccessRequest]:
    """The requests ``viewer`` may see, newest first; overdue ones have expired first (never shown as pending)."""
    expire_overdue(session, now=now)
    query = select(AccessRequest).join(Asset)
    query = restrict_to_viewer(query, viewer=viewer, owner=AccessRequest.requester_id)
    if pending_only:
        query = query.where(AccessRequest.status == RequestStatus.PENDING)
    return list(session.scalars(query.order_by(AccessRequest.created_at.desc()).limit(500)))


def can_view_request(viewer: Identity, request: AccessRequest) -> bool:
    return (
        request.requester_id == viewer.id
        or has_role(viewer, "security") or has_role(viewer, "admin")
        or may_act_for_site(viewer, "supervisor", request.asset.site_id)
    )


def get_request(session: Session, *, now: dt.datetime, viewer: Identity, request_id: str) -> AccessRequest:
    expire_overdue(session, now=now)
    request = session.get(AccessRequest, request_id)
    if request is None or not can_view_request(viewer, request):
        raise NotFound(f"there is no request {request_id} that you can see")
    return request


def _decidable(session: Session, *, now: dt.datetime, approver: Identity, request_id: str,
               verb: str) -> AccessRequest:
    """Load a request and check that ``approver`` may decide it now (the one approval rule)."""
    expire_overdue(session, now=now)
    # Lock the row: two approvers deciding at the same moment must see each other's approval
    # (PostgreSQL row lock; SQLite transactions are already serialised by BEGIN IMMEDIATE).
    request = session.get(AccessRequest, request_id, with_for_update=True)
    if request is None:
        raise NotFound(f"there is no request {request_id}")
    check_may_decide(session, now=now, approver=approver, ballot=request, site=request.asset.site,
                     asset_name=request.asset.name, verb=verb, wording=REQUEST, refused=Action.DECISION_REFUSED)
    return request


def approve(
    session: Session, *, vault: Vault, now: dt.datetime, approver: Identity, request_id: str,
    comment: str | None, shorten_to: str | None = None,
) -> AccessRequest:
    shorter = parse_duration(shorten_to) if shorten_to is not None else None
    request = _decidable(session, now=now, approver=approver, request_id=request_id, verb="approve")
    request.decisions.append(Decision(approver_id=approver.id, approver=approver, verdict=Verdict.APPROVE,
                                      comment=clean_comment(comment), decided_at=now))
    site = request.asset.site.name
    trail.record(session, now=now, action=Action.REQUEST_APPROVAL, actor=approver.username, subject=request.id,
                 site=site, details={"approvals": approvals_so_far(request),
                                     "required": request.approvals_required, "comment": comment})
    if is_approved(request):
        request.status, request.decided_at = RequestStatus.APPROVED, now
        trail.record(session, now=now, action=Action.REQUEST_APPROVED, actor=approver.username,
                     subject=request.id, site=site)
        _create_grant(session, vault=vault, now=now, request=request, shorten_to=shorter)
    return request


def deny(session: Session, *, now: dt.datetime, approver: Identity, request_id: str, comment: str) -> AccessRequest:
    # Authority first, so an outsider's attempt is audited whatever the comment says.
    request = _decidable(session, now=now, approver=approver, request_id=request_id, verb="deny")
    comment = denial_comment(comment)
    request.decisions.append(Decision(approver_id=approver.id, approver=approver, verdict=Verdict.DENY,
                                      comment=comment, decided_at=now))
    request.status = RequestStatus.DENIED
    request.decided_at = now
    trail.record(session, now=now, action=Action.REQUEST_DENIED, actor=approver.username, subject=request.id,
                 site=request.asset.site.name, details={"comment": comment})
    return request


def cancel(session: Session, *, now: dt.datetime, requester: Identity, request_id: str) -> AccessRequest:
    request = get_request(session, now=now, viewer=requester, request_id=request_id)
    if request.requester_id != requester.id:
        raise Forbidden(f"only the requester can cancel request {request_id}")
    if request.status != "pending":
        raise Conflict(f"request {request_id} is already {request.status}; only pending requests can be cancelled")
    request.status = RequestStatus.CANCELLED
    request.decided_at = now
    trail.record(session, now=now, action=Action.REQUEST_CANCELLED, actor=requester.username, subject=request.id,
                 site=request.asset.site.name)
    return request


def _create_grant(session: Session, *, vault: Vault, now: dt.datetime, request: AccessRequest,
                  shorten_to: dt.timedelta | None) -> Grant:
    starts_at, ends_at = grant_window(request, now=now, shorten_to=shorten_to)
    requester, asset = request.requester, request.asset
    grant = Grant(
        id=new_id("grt"), request_id=request.id, identity_id=requester.id, asset_id=asset.id, ssh=request.ssh,
        ports=list(request.ports), read_only=request.read_only, starts_at=starts_at, ends_at=ends_at,
        serial=new_serial(), certificate="",
        created_at=now,
    )
    spec = CertificateSpec(
        grant_id=grant.id, username=requester.username, asset=asset.name, serial=grant.serial,
        starts_at=starts_at, ends_at=ends_at,
        # DESIGN invariant 5: no interactive shell for service and AI-agent identities.
        allow_pty=request.ssh and requester.kind == IdentityKind.HUMAN,
        allow_port_forwarding=bool(request.ports),
    )
    grant.certificate = issue_user_certificate(load_signing_key(session, vault=vault), request.public_key, spec)
    request.grant = grant
    session.add(grant)
    touch(requester, now)
    site = asset.site.name
    trail.record(session, now=now, action=Action.GRANT_CREATED, actor=requester.username, subject=grant.id,
                 site=site, details={"request": request.id, "asset": asset.name, "ssh": grant.ssh,
                                     "ports": grant.ports, "read_only": grant.read_only,
                                     "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()})
    trail.record(session, now=now, action=Action.CERTIFICATE_ISSUED, actor=requester.username, subject=grant.id,
                 site=site, details={"serial": grant.serial, "principals": [asset.name],
                                     "valid_before": ends_at.isoformat(), "permit_pty": spec.allow_pty,
                                     "permit_port_forwarding": spec.allow_port_forwarding})
    return grant


def visible_grants(session: Session, *, viewer: Identity, asset_name: str | None, usable_only: bool,
                   now: dt.datetime) -> list[Grant]:
    query = select(Grant).join(Asset)
    query = restrict_to_viewer(query, viewer=viewer, owner=Grant.identity_id)
    if asset_name:
        query = query.where(Asset.name == asset_name)
    if usable_only:
        query = query.where(Grant.revoked_at.is_(None), Grant.ends_at > now)
    return list(session.scalars(query.order_by(Grant.ends_at.desc()).limit(500)))


def get_grant(session: Session, *, viewer: Identity, grant_id: str) -> Grant:
    grant = session.get(Grant, grant_id)
    if grant is None or not _can_view_grant(viewer, grant):
        raise NotFound(f"there is no grant {grant_id} that you can see")
    return grant


def _can_view_grant(viewer: Identity, grant: Grant) -> bool:
    return (grant.identity_id == viewer.id or has_role(viewer, "security") or has_role(viewer, "admin")
            or may_act_for_site(viewer, "supervisor", grant.asset.site_id))


def revoke_grant(
    session: Session, *, now: dt.datetime, events: EventPublisher, actor: Identity, grant_id: str,
    reason: str | None,
) -> Grant:
    grant = get_grant(session, viewer=actor, grant_id=grant_id)
    allowed = (grant.identity_id == actor.id or has_role(actor, "security") or has_role(actor, "admin")
               or may_act_for_site(actor, "supervisor", grant.asset.site_id))
    if not allowed:
        raise _refuse(session, now, actor, grant.asset, Action.REVOKE_REFUSED,
                      f"only the grantee, approvers of {grant.asset.site.name}, security or an admin can revoke "
                      f"grant {grant_id}", subject=grant_id)
    status = grant_status(grant, now)
    if status in ("revoked", "expired"):
        raise Conflict(f"grant {grant_id} is already {status}")
    reason = clean_comment(reason)
    grant.revoked_at, grant.revoked_by, grant.revoke_reason = now, actor.username, reason
    trail.record(session, now=now, action=Action.GRANT_REVOKED, actor=actor.username, subject=grant.id,
                 site=grant.asset.site.name, details={"reason": reason, "was": status})
    announce(session, now=now, events=events, grant=grant, status=GrantChangeStatus.REVOKED, reason="revoked")
    # An AI agent's grant delegated from this one ends with it (broker.access.delegation).
    revoke_delegated(session, now=now, events=events, grant=grant, actor=actor.username,
                     why=f"grant {grant.id}, which it was delegated from, was revoked by {actor.username}")
    return grant

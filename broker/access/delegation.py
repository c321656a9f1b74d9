"""AI-agent delegation: a human sponsor gives their AI agent a grant that is a subset of their own live grant
(same asset, same or fewer services, a window inside theirs, read-only and a list of exact commands by default),
and that ends when theirs ends or is revoked.

Every widening is refused with the reason and audited (``access:delegation:refused``); what was delegated is
audited as ``access:grant:delegated`` with the agent and the sponsor, and every gateway event of the delegated
grant names the sponsor beside the agent (``delegation_details``).
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.access.approval import MAX_REASON
from broker.access.rules import grant_status
from broker.access.workflow import READ_ONLY_PROTOCOL_PORTS, _check_public_key, get_grant
from broker.audit import trail
from broker.audit.trail import Action
from broker.durations import format_duration, parse_duration
from broker.errors import Forbidden, InvalidInput, audited
from broker.identity.identities import why_unusable
from broker.ids import new_id
from broker.keys.authorities import CertificateSpec, issue_user_certificate, load_signing_key, new_serial
from broker.keys.vault import Vault
from broker.models import AccessRequest, Grant, Identity, WorkloadInstance
from broker.vocabulary import GrantStatus, IdentityKind, InstanceStatus, RequestStatus

# What one delegation may list: enough for an agent's toolbox, small enough to read in an audit event.
MAX_COMMANDS = 32
MAX_ARGUMENTS = 64
MAX_ARGUMENT_LENGTH = 1024


@dataclass(frozen=True)
class Delegation:
    """What a sponsor asks to give their agent. ``ssh`` and ``ports`` None: SSH if the parent grant has it,
    else the parent's ports. ``commands`` are argv lists, matched exactly by the gateway."""

    agent: str
    duration: str
    ssh: bool | None = None
    ports: list[int] | None = None
    allow_writes: bool = False
    commands: list[list[str]] = field(default_factory=list)
    public_key: str | None = None
    reason: str | None = None


def delegate(session: Session, *, vault: Vault, now: dt.datetime, sponsor: Identity, grant_id: str,
             ask: Delegation) -> Grant:
    """Give ``ask.agent`` a subset of the sponsor's live grant ``grant_id``; refuse (audited) anything wider.
    Nothing is changed before every check has passed (a Forbidden keeps only its audit event)."""
    parent = get_grant(session, viewer=sponsor, grant_id=grant_id)
    # Lock the parent: a revocation at the same moment must not miss the grant delegated from it.
    session.refresh(parent, with_for_update=True)
    site = parent.asset.site
    agent = session.scalar(select(Identity).where(Identity.username == ask.agent))

    def refuse(why: str) -> Forbidden:
        trail.record(session, now=now, action=Action.DELEGATION_REFUSED, outcome="refused", actor=sponsor.username,
                     subject=parent.id, site=site.name,
                     details={"reason": why, "agent": ask.agent, "sponsor": sponsor.username,
                              "asset": parent.asset.name})
        return audited(Forbidden(why))

    if parent.identity_id != sponsor.id:
        raise refuse(f"only the grantee ({parent.identity.username}) can delegate grant {parent.id}")
    if parent.parent_grant_id is not None:
        raise refuse(f"grant {parent.id} is itself delegated: an AI agent's grant cannot be delegated further")
    status = grant_status(parent, now)
    if status != GrantStatus.ACTIVE:
        raise refuse(f"grant {parent.id} is {status}: only an active grant can be delegated")
    if site.locked_down:
        raise refuse(f"site {site.name} is locked down: nothing can be delegated until the plant lifts it")
    if agent is None or agent.kind != IdentityKind.AI_AGENT:
        raise refuse(f"'{ask.agent}' is not an AI agent: grants are delegated only to AI-agent identities")
    if agent.sponsor_id != sponsor.id:
        raise refuse(f"{sponsor.username} is not the sponsor of the AI agent '{agent.username}': only its own "
                     "sponsor may delegate to it")
    unusable = why_unusable(agent, now)
    if unusable:
        raise refuse(f"{unusable}: it cannot be given a grant")
    if not any(assignment.site_id in (None, site.id) for assignment in agent.roles):
        raise refuse(f"the AI agent '{agent.username}' is not in scope at site {site.name}")

    window = parse_duration(ask.duration)
    ends_at = now + window
    ssh, ports = _services(parent, ask)
    commands = _commands(ask.commands)
    reason = _reason(ask.reason)
    if ends_at > parent.ends_at:
        raise refuse(f"a window of {format_duration(window)} would end at {ends_at:%Y-%m-%d %H:%M:%S} UTC, after "
                     f"grant {parent.id} ends ({parent.ends_at:%Y-%m-%d %H:%M:%S} UTC): an agent's grant is never "
                     f"longer than its sponsor's (at most {_left(parent, now)} now)")
    if ssh and not parent.ssh:
        raise refuse(f"grant {parent.id} does not cover SSH, so it cannot give SSH to {agent.username}")
    wider = [port for port in ports if port not in parent.ports]
    if wider:
        granted = ", ".join(map(str, parent.ports)) or "none"
        raise refuse(f"port {wider[0]} is not part of grant {parent.id} (its ports: {granted}): an agent's grant "
                     "has the same or fewer ports")
    if ask.allow_writes and parent.read_only:
        raise refuse(f"grant {parent.id} is read-only, so it cannot give {agent.username} writes")
    if ask.allow_writes and not site.agent_writes:
        raise refuse(f"site {site.name} does not let AI agents write (its policy: agent writes off): the grant "
                     f"stays read-only unless the plant turns it on (`gatepass admin site set {site.name} "
                     "--agent-writes on`)")
    read_only = not ask.allow_writes
    unfiltered = [port for port in ports if port not in READ_ONLY_PROTOCOL_PORTS]
    if read_only and unfiltered:
        raise refuse(f"an AI agent's grant is read-only and the gateway can hold only Modbus/TCP (502) to reads: "
                     f"port {unfiltered[0]} cannot be delegated read-only")
    if commands and not ssh:
        raise InvalidInput("commands run over SSH: delegate SSH as well (--ssh), or list no --command")
    if not ssh and not ports:
        raise InvalidInput("delegate at least one service: SSH or a TCP port of the grant")
    key = _agent_key(session, agent=agent, given=ask.public_key, refuse=refuse)

    scope = _scope(ssh=ssh, ports=ports, read_only=read_only, commands=commands)
    request = AccessRequest(
        id=new_id("req"), requester_id=agent.id, asset_id=parent.asset_id, ssh=ssh, ports=ports,
        read_only=read_only, duration_seconds=int(window.total_seconds()), start_at=None,
        reason=f"delegated by {sponsor.username} from {parent.id}: {reason or scope}", public_key=key,
        status=RequestStatus.APPROVED, approvals_required=0, created_at=now, decide_by=now, decided_at=now,
    )
    grant = Grant(
        id=new_id("grt"), request_id=request.id, identity_id=agent.id, asset_id=parent.asset_id, ssh=ssh,
        ports=ports, read_only=read_only, starts_at=now, ends_at=ends_at, serial=new_serial(), certificate="",
        created_at=now, parent_grant_id=parent.id, allowed_commands=commands,
    )
    spec = CertificateSpec(grant_id=grant.id, username=agent.username, asset=parent.asset.name, serial=grant.serial,
                           starts_at=now, ends_at=ends_at, allow_pty=False, allow_port_forwarding=bool(ports))
    grant.certificate = issue_user_certificate(load_signing_key(session, vault=vault), key, spec)
    request.grant = grant
    session.add(request)
    session.add(grant)
    details: dict[str, Any] = {
        "agent": agent.username, "sponsor": sponsor.username, "parent_grant": parent.id, "request": request.id,
        "asset": parent.asset.name, "ssh": ssh, "ports": ports, "read_only": read_only, "commands": commands,
        "starts_at": now.isoformat(), "ends_at": ends_at.isoformat(), "reason": reason,
    }
    trail.record(session, now=now, action=Action.GRANT_DELEGATED, actor=sponsor.username, subject=grant.id,
                 site=site.name, details=details)
    trail.record(session, now=now, action=Action.CERTIFICATE_ISSUED, actor=agent.username, subject=grant.id,
                 site=site.name, details={"serial": grant.serial, "principals": [parent.asset.name],
                                          "valid_before": ends_at.isoformat(), "permit_pty": False,
                                          "permit_port_forwarding": spec.allow_port_forwarding,
                                          "sponsor": sponsor.username})
    return grant


def _services(parent: Grant, ask: Delegation) -> tuple[bool, list[int]]:
    """SSH and ports asked for; neither given means SSH if the parent has it, else the parent's ports."""
    if ask.ssh is None and ask.ports is None:
        return parent.ssh, [] if parent.ssh else sorted(parent.ports)
    return bool(ask.ssh), sorted(set(ask.ports or []))


def _commands(commands: list[list[str]]) -> list[list[str]]:
    """The argv lists, checked and without repeats; the gateway compares a client's parsed command to each."""
    if len(commands) > MAX_COMMANDS:
        raise InvalidInput(f"at most {MAX_COMMANDS} commands can be delegated at once ({len(commands)} given)")
    kept: list[list[str]] = []
    for argv in commands:
        if not argv or not argv[0].strip():
            raise InvalidInput("a delegated command cannot be empty: give the program and its arguments")
        if len(argv) > MAX_ARGUMENTS:
            raise InvalidInput(f"the command {shlex.join(argv[:3])} … has {len(argv)} arguments (at most "
                               f"{MAX_ARGUMENTS})")
        if any(len(arg) > MAX_ARGUMENT_LENGTH or "\x00" in arg for arg in argv):
            raise InvalidInput(f"an argument of {argv[0][:60]} is longer than {MAX_ARGUMENT_LENGTH} characters or "
                               "holds a NUL")
        if argv not in kept:
            kept.append(list(argv))
    return kept


def _reason(reason: str | None) -> str | None:
    cleaned = (reason or "").strip()
    if len(cleaned) > MAX_REASON:
        raise InvalidInput(f"the reason is too long ({len(cleaned)} characters, at most {MAX_REASON})")
    return cleaned or None


def _left(parent: Grant, now: dt.datetime) -> str:
    return format_duration(dt.timedelta(seconds=max(0, int((parent.ends_at - now).total_seconds()))))


def _scope(*, ssh: bool, ports: list[int], read_only: bool, commands: list[list[str]]) -> str:
    """What was delegated, in one line for the request's reason (shown in histories)."""
    parts = ["read-only" if read_only else "with writes"]
    if ssh:
        parts.append("exec of " + ", ".join(shlex.join(argv) for argv in commands) if commands else "no commands")
    if ports:
        parts.append("ports " + ", ".join(map(str, ports)))
    return "; ".join(parts)


def _agent_key(session: Session, *, agent: Identity, given: str | None,
               refuse: Callable[[str], Forbidden]) -> str:
    """The public key the certificate is issued for: the agent's joined machine (its newest active instance),
    or a key given with the delegation, which must then be one of the agent's own if it has joined."""
    instances = session.scalars(select(WorkloadInstance).where(
        WorkloadInstance.identity_id == agent.id, WorkloadInstance.status == InstanceStatus.ACTIVE,
    ).order_by(WorkloadInstance.created_at.desc())).all()
    joined = [_check_public_key(instance.public_key) for instance in instances]
    if given is not None:
        key = _check_public_key(given)
        if joined and key not in joined:
            raise refuse(f"the key given is not the key of any machine '{agent.username}' joined from")
        return key
    if not joined:
        raise InvalidInput(f"the AI agent '{agent.username}' has not joined from its machine yet, so it has no key: "
                           "run `gatepass join` there, or give its public key (--key)")
    return joined[0]


def sponsor_of(session: Session, grant: Grant) -> Identity | None:
    """The sponsor behind a delegated grant (the holder of the grant it was delegated from), else None."""
    if grant.parent_grant_id is None:
        return None
    parent = session.get(Grant, grant.parent_grant_id)
    return parent.identity if parent is not None else None


def delegation_details(session: Session, grant: Grant) -> dict[str, Any]:
    """What every audit event of a delegated grant carries beside the agent (its actor): the sponsor and the
    grant it came from. Empty for any other grant, so their events read as before."""
    sponsor = sponsor_of(session, grant)
    if sponsor is None:
        return {}
    return {"sponsor": sponsor.username, "parent_grant": grant.parent_grant_id}


def delegation_refusal(session: Session, grant: Grant, now: dt.datetime) -> str | None:
    """Why a delegated grant may not be used now although it is itself active (defence in depth: revoking the
    parent revokes it too), or None: the parent must be active and the sponsor able to act."""
    if grant.parent_grant_id is None:
        return None
    parent = session.get(Grant, grant.parent_grant_id)
    if parent is None:
        return "the grant it was delegated from does not exist"
    status = grant_status(parent, now)
    if status != GrantStatus.ACTIVE:
        return f"the grant it was delegated from ({parent.id}) is {status}"
    unusable = why_unusable(parent.identity, now)
    return f"its sponsor cannot act: {unusable}" if unusable else None

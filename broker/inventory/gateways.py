"""Gateways as the broker sees them: their credentials, registration, and the decisions they ask for."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.access.delegation import delegation_details, delegation_refusal
from broker.access.rules import grant_status
from broker.audit import trail
from broker.audit.refusals import Refusal
from broker.audit.trail import Action
from broker.errors import Conflict, Forbidden, GatewayRetired, InvalidInput, NotAuthenticated, NotFound, audited
from broker.identity.authentication import token_digest
from broker.identity.identities import check_name, why_unusable
from broker.identity.usage import touch
from broker.ids import new_id
from broker.inventory.sites import credential_purpose, normalise_public_key
from broker.inventory.supervision_policy import effective_supervision
from broker.keys.authorities import public_key as ca_public_key
from broker.keys.vault import Vault
from broker.models import AccessSession, Gateway, Grant, Site
from broker.recordings.store import RECORDING_NAME
from broker.vocabulary import CredentialKind, GrantStatus, IdentityKind, SessionKind, Transfers

SESSION_KINDS = tuple(SessionKind)
# A session end reported this much after the session ended says when it ended (the gateway kept the report).
LATE_REPORT = dt.timedelta(seconds=5)
END_REASONS = ("client_closed", "expired", "revoked", "idle", "lockdown", "gateway_lost", "error")


def create_gateway(session: Session, *, now: dt.datetime, actor: str, name: str, sites: Sequence[str] = ()) -> str:
    """Create a gateway credential and return the token (shown once; only its hash is kept). With ``sites``, the
    gateway serves those sites' assets only: it is handed no credential of another site's (least privilege: a
    plant's gateway, or its stolen credential, reaches that plant alone)."""
    check_name(name, what="gateway")
    if session.scalar(select(Gateway).where(Gateway.name == name)) is not None:
        raise Conflict(f"a gateway named '{name}' already exists")
    served = []
    for site_name in dict.fromkeys(sites):
        site = session.scalar(select(Site).where(Site.name == site_name))
        if site is None:
            raise NotFound(f"there is no site {site_name[:64]}")
        served.append(site)
    token = "gpg_" + secrets.token_urlsafe(32)
    session.add(Gateway(name=name, token_hash=token_digest(token), created_at=now, sites=served))
    trail.record(session, now=now, action=Action.GATEWAY_CREATED, actor=actor, subject=name,
                 details={"sites": sorted(site.name for site in served) or "all"})
    return token


def authenticate_gateway(session: Session, token: str) -> Gateway:
    gateway = session.scalar(select(Gateway).where(Gateway.token_hash == token_digest(token)))
    if gateway is None:
        raise NotAuthenticated("this gateway credential is not known to the broker")
    if gateway.retired_at is not None:
        raise GatewayRetired(f"gateway {gateway.name} was retired on {gateway.retired_at:%Y-%m-%d %H:%M} UTC: "
                               "its credential is no longer accepted")
    return gateway


def serves(gateway: Gateway, site: Site) -> bool:
    """Whether ``gateway`` may reach ``site``'s assets: one scoped to sites serves those only."""
    return not gateway.sites or any(served.id == site.id for served in gateway.sites)


def scope_refusal(gateway: Gateway, site: Site) -> str | None:
    if serves(gateway, site):
        return None
    return (f"gateway {gateway.name} serves {', '.join(s.name for s in gateway.sites)} only, not site {site.name}: "
            "use that site's gateway")


def register(session: Session, *, now: dt.datetime, gateway: Gateway, ssh_host: str, ssh_port: int,
             host_key: str, kept_ends: list[str] | None = None) -> str:
    """A gateway (re)starting: where clients reach it. With ``kept_ends`` (what a gateway from this version sends:
    the sessions whose end it still has to report) every other session still open on it is ended, ``gateway_lost``:
    a gateway that starts carries none, so those went with an earlier run that stopped without reporting them (a
    crash, a power cut) and would otherwise stay open in the trail for ever."""
    if not 1 <= ssh_port <= 65535:
        raise InvalidInput(f"SSH port {ssh_port} is out of range")
    gateway.ssh_host, gateway.ssh_port = ssh_host, ssh_port
    gateway.host_key = normalise_public_key(host_key, what="gateway host key")
    gateway.registered_at = now
    details: dict[str, Any] = {"ssh": f"{ssh_host}:{ssh_port}"}
    if kept_ends is not None:
        details["sessions_ended"] = end_open_sessions(
            session, now=now, gateway=gateway, keep=set(kept_ends), ended_by=f"gateway:{gateway.name}",
            detail=f"gateway {gateway.name} restarted without it: it stopped before reporting the session's end (a "
            "crash or a power cut); ended at the restart")
    trail.record(session, now=now, action=Action.GATEWAY_REGISTERED, actor=f"gateway:{gateway.name}",
                 subject=gateway.name, details=details)
    return ca_public_key(session)


def end_open_sessions(session: Session, *, now: dt.datetime, gateway: Gateway, detail: str, ended_by: str,
                      keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """End every session still open on ``gateway`` (but ``keep``), ``gateway_lost``, one ``gateway:session:ended``
    each, oldest first; their ids."""
    ended = []
    for record in session.scalars(select(AccessSession).where(AccessSession.gateway_id == gateway.id,
                                                              AccessSession.ended_at.is_(None))
                                  .order_by(AccessSession.started_at)):
        if record.id in keep:
            continue
        record.ended_at, record.end_reason = max(now, record.started_at), "gateway_lost"
        record_session_end(session, record, now=now, detail=detail, more={"ended_by": ended_by})
        ended.append(record.id)
    return ended


class GatewayDirectory:
    """The registered gateways, read once, and which one clients should use for a site's assets."""

    def __init__(self, session: Session) -> None:
        self._registered = session.scalars(select(Gateway).where(Gateway.registered_at.is_not(None),
                                                                 Gateway.retired_at.is_(None))
                                           .order_by(Gateway.registered_at.desc())).all()

    def for_site(self, site: Site | None) -> Gateway | None:
        """The most recently registered gateway scoped to ``site``, else the most recently registered one that
        serves every site; never a retired one. Without ``site``: the most recently registered one serving every
        site, else any."""
        if site is not None:
            scoped = [gateway for gateway in self._registered if gateway.sites and serves(gateway, site)]
            if scoped:
                return scoped[0]
        unscoped = [gateway for gateway in self._registered if not gateway.sites]
        if unscoped:
            return unscoped[0]
        return self._registered[0] if self._registered and site is None else None


def current_gateway(session: Session, site: Site | None = None) -> Gateway | None:
    """The gateway clients should use for ``site``'s assets (``GatewayDirectory.for_site``)."""
    return GatewayDirectory(session).for_site(site)


def authorize(
    session: Session, *, vault: Vault, now: dt.datetime, gateway: Gateway, grant_id: str, serial: int,
    asset_name: str, peer: str | None,
) -> dict[str, Any]:
    """Decide whether a certificate-holding client may reach its asset now, and hand the gateway what it
    needs to connect on the vendor's behalf. Every refusal is audited with its reason."""
    grant = session.get(Grant, grant_id)

    def refuse(why: str) -> Forbidden:
        trail.record(session, now=now, action=Action.GATEWAY_REFUSED, outcome="refused",
                     actor=grant.identity.username if grant else None, subject=grant_id,
                     site=grant.asset.site.name if grant else None,
                     details={"reason": why, "asset": asset_name, "peer": peer, "gateway": gateway.name,
                              **(delegation_details(session, grant) if grant else {})})
        return audited(Forbidden(why))

    if grant is None or grant.serial != serial:
        raise refuse("the certificate does not belong to any grant issued by this broker")
    asset = grant.asset
    if asset.name != asset_name:
        raise refuse(f"this grant is for {asset.name}, not {asset_name}")
    out_of_scope = scope_refusal(gateway, asset.site)
    if out_of_scope:
        raise refuse(out_of_scope)
    status = grant_status(grant, now)
    if status == "scheduled":
        raise refuse(f"the grant for {asset.name} starts at {grant.starts_at:%Y-%m-%d %H:%M} UTC, not yet")
    if status == "revoked":
        raise refuse(f"the grant for {asset.name} was revoked")
    if status == "expired":
        raise refuse(f"the grant for {asset.name} ended at {grant.ends_at:%Y-%m-%d %H:%M} UTC")
    unusable = why_unusable(grant.identity, now)
    if unusable:
        raise refuse(unusable)
    if asset.site.locked_down:
        raise refuse(f"site {asset.site.name} is locked down")
    ended = delegation_refusal(session, grant, now)
    if ended:
        raise refuse(f"this delegated grant can no longer be used: {ended}")
    target = None
    if grant.ssh:
        if asset.ssh_port is None or asset.credential_ciphertext is None or asset.host_key is None:
            raise refuse(f"{asset.name} has no SSH credential or pinned host key in the inventory")
        secret = vault.open(asset.credential_ciphertext, purpose=credential_purpose(asset.name)).decode()
        target = {
            "host": asset.host, "ssh_port": asset.ssh_port, "username": asset.ssh_user,
            "password": secret if asset.credential_kind == CredentialKind.PASSWORD else None,
            "private_key": secret if asset.credential_kind == CredentialKind.PRIVATE_KEY else None,
            "host_key": asset.host_key,
        }
    delegated = delegation_details(session, grant)
    trail.record(session, now=now, action=Action.GATEWAY_AUTHORIZED, actor=grant.identity.username,
                 subject=grant.id, site=asset.site.name, details={"asset": asset.name, "peer": peer,
                                                                  "gateway": gateway.name, **delegated})
    # An AI agent writes nothing (no Modbus writes, no uploads) unless its grant allows writes and the site's
    # policy lets agents write: both are checked again here, so turning the policy off holds at the next login.
    is_agent = grant.identity.kind == IdentityKind.AI_AGENT
    agent_reads_only = is_agent and (grant.read_only or not asset.site.agent_writes)
    return {
        "grant_id": grant.id, "identity": grant.identity.username, "identity_kind": grant.identity.kind,
        "asset": asset.name, "site": asset.site.name, "starts_at": grant.starts_at.isoformat(),
        "ends_at": grant.ends_at.isoformat(), "ssh": grant.ssh,
        "interactive": grant.identity.kind == IdentityKind.HUMAN,
        "ports": list(grant.ports), "read_only": grant.read_only or agent_reads_only, "asset_host": asset.host,
        "target": target,
        # The site's recording and transfer policy, enforced by the gateway for this connection.
        "record_input": asset.site.record_input,
        "transfers": Transfers.DOWNLOAD_ONLY if agent_reads_only else asset.site.transfers,
        # Exec only of these argv lists, compared exactly with the client's parsed command (an AI agent's
        # delegation; an AI agent's grant that lists none runs no command); null: no such limit.
        "allowed_commands": [] if grant.allowed_commands is None and is_agent else grant.allowed_commands,
        # How long a cut command has between TERM and KILL on the target (site policy, milliseconds).
        "cut_grace_ms": asset.site.cut_grace_ms,
        # Issue 13: sessions wait for a supervisor of the site to watch (gateway/supervised.py holds them): the
        # asset's own policy, else its site's (broker.inventory.supervision_policy).
        "supervision_required": effective_supervision(asset).required,
        "supervision_grace_ms": asset.site.supervision_grace_seconds * 1000,
        "silent_observers": asset.site.silent_observers,
        # Download-only sites: input a command without a PTY may take before the gateway cuts it (an upload).
        "exec_upload_limit": asset.site.exec_upload_limit,
        # Client environment variables the asset accepts, by exact name (none unless the admin listed them).
        "passed_env": list(asset.passed_env or []),
    }


def grants_status(session: Session, *, now: dt.datetime, grant_ids: list[str]) -> dict[str, dict[str, str | None]]:
    if len(grant_ids) > 10_000:
        raise InvalidInput("ask for at most 10,000 grants at a time")
    rows = session.scalars(select(Grant).where(Grant.id.in_(grant_ids))).all() if grant_ids else []
    result = {}
    for grant in rows:
        status, reason = grant_status(grant, now), None
        if status == GrantStatus.REVOKED:
            reason = "revoked"
        if status == GrantStatus.ACTIVE and grant.asset.site.locked_down:
            status, reason = GrantStatus.REVOKED, "lockdown"
        if status == GrantStatus.ACTIVE and why_unusable(grant.identity, now):
            status, reason = GrantStatus.REVOKED, "identity_disabled"
        result[grant.id] = {"status": status, "ends_at": grant.ends_at.isoformat(), "reason": reason}
    return result


def start_session(session: Session, *, now: dt.datetime, gateway: Gateway, grant_id: str, kind: str,
                  peer: str | None, command: str | None, port: int | None) -> AccessSession:
    if kind not in SESSION_KINDS:
        raise InvalidInput(f"session kind '{kind}' is not one of {', '.join(SESSION_KINDS)}")
    grant = session.get(Grant, grant_id)
    if grant is None:
        raise NotFound(f"there is no grant {grant_id}")
    why = scope_refusal(gateway, grant.asset.site) or _session_refusal(grant, now=now, kind=kind, port=port) \
        or delegation_refusal(session, grant, now)
    delegated = delegation_details(session, grant)
    if why is not None:
        trail.record(session, now=now, action=Action.GATEWAY_REFUSED, outcome="refused",
                     actor=grant.identity.username, subject=grant.id, site=grant.asset.site.name,
                     details={"reason": why, "kind": kind, "port": port, "gateway": gateway.name, **delegated})
        raise audited(Forbidden(why))
    record = AccessSession(id=new_id("ses"), grant_id=grant.id, gateway_id=gateway.id, kind=kind, peer=peer,
                           command=command, port=port, started_at=now, bytes_in=0, bytes_out=0)
    session.add(record)
    touch(grant.identity, now)
    trail.record(session, now=now, action=Action.SESSION_STARTED, actor=grant.identity.username, subject=record.id,
                 site=grant.asset.site.name, details={"grant": grant.id, "asset": grant.asset.name, "kind": kind,
                                                      "command": command, "port": port, "peer": peer,
                                                      "gateway": gateway.name, **delegated})
    return record


def _session_refusal(grant: Grant, *, now: dt.datetime, kind: str, port: int | None) -> str | None:
    """Why no session of this kind may start under this grant now (defence in depth: the gateway checks
    the same before it asks), or None."""
    asset = grant.asset
    status = grant_status(grant, now)
    if status != "active":
        return f"the grant for {asset.name} is {status}"
    if asset.site.locked_down:
        return f"site {asset.site.name} is locked down"
    unusable = why_unusable(grant.identity, now)
    if unusable:
        return unusable
    if kind == SessionKind.TCP:
        if port is None or port not in grant.ports:
            granted = ", ".join(map(str, grant.ports)) or "none"
            return f"port {port} of {asset.name} is not part of this grant (granted: {granted})"
    elif not grant.ssh:
        return f"the grant for {asset.name} covers TCP ports only, not SSH {kind} sessions"
    elif kind == SessionKind.SHELL and grant.identity.kind != IdentityKind.HUMAN:
        return f"{grant.identity.kind} identities never get an interactive shell"
    return None


def end_session(session: Session, *, now: dt.datetime, gateway: Gateway, session_id: str, reason: str,
                bytes_in: int, bytes_out: int, detail: str | None,
                recording: dict[str, Any] | None = None, stop: dict[str, Any] | None = None,
                ended_at: dt.datetime | None = None) -> AccessSession:
    """Close a session record. ``recording`` ({"name", "sha256", "bytes"}) is what the gateway stored; its
    hash goes into the session-end audit event, so editing the file later is detectable. ``stop`` is how the
    gateway stopped a cut session's command on the target (signals, the target's answer, the sweep).
    ``ended_at`` is when it ended on the gateway (a report kept through an outage comes later), taken within the
    session's start and now: a gateway's clock may not put an end in the future or before the start."""
    if reason not in END_REASONS:
        raise InvalidInput(f"end reason '{reason}' is not one of {', '.join(END_REASONS)}")
    if bytes_in < 0 or bytes_out < 0:
        raise InvalidInput("byte counts cannot be negative")
    record = session.get(AccessSession, session_id)
    if record is None or record.gateway_id != gateway.id:
        raise NotFound(f"there is no session {session_id} on this gateway")
    if record.ended_at is not None:
        raise Conflict(f"session {session_id} already ended ({record.end_reason})")
    try:
        ended = now if ended_at is None else min(max(ended_at.astimezone(dt.UTC), record.started_at), now)
    except (OverflowError, ValueError):  # year 1 or 9999 shifted past the calendar's ends by its zone
        raise InvalidInput(f"the session's end time {ended_at} is out of range") from None
    record.ended_at, record.end_reason = ended, reason
    record.bytes_in, record.bytes_out = bytes_in, bytes_out
    if recording is not None:
        if not RECORDING_NAME.fullmatch(recording["name"]) or not recording["name"].startswith(record.id):
            raise InvalidInput(f"recording name {recording['name']!r} does not belong to session {session_id}")
        record.recording_name = recording["name"]
        record.recording_sha256 = recording["sha256"]
        record.recording_bytes = recording["bytes"]
        record.recording_on_gateway = bool(recording.get("uploads"))
    more: dict[str, Any] = {}
    if now - ended > LATE_REPORT:  # kept by the gateway while the broker could not be reached
        more["ended_at"] = ended.isoformat()
        more["reported_after_seconds"] = round((now - ended).total_seconds())
    if recording is not None:
        more["recording"] = {"name": recording["name"], "sha256": recording["sha256"], "bytes": recording["bytes"]}
        if recording.get("uploads"):  # still on the gateway's disk: verify expects it to arrive (and when)
            more["recording"]["uploads"] = True
    if stop is not None:
        more["stop"] = stop
    record_session_end(session, record, now=now, detail=detail, more=more)
    return record


def record_session_end(session: Session, record: AccessSession, *, now: dt.datetime, detail: str | None,
                       more: dict[str, Any]) -> None:
    """The ``gateway:session:ended`` event of ``record``, already ended (by its gateway's report, or by the
    gateway's retirement): what every session end says, and ``more``."""
    assert record.ended_at is not None  # noqa: S101 - the caller ended it
    grant = record.grant
    details: dict[str, Any] = {
        "grant": grant.id, "asset": grant.asset.name, "kind": record.kind, "reason": record.end_reason,
        "bytes_in": record.bytes_in, "bytes_out": record.bytes_out, "detail": detail,
        "duration_seconds": round((record.ended_at - record.started_at).total_seconds(), 3),
        **more, **delegation_details(session, grant),
    }
    trail.record(session, now=now, action=Action.SESSION_ENDED, actor=grant.identity.username, subject=record.id,
                 site=grant.asset.site.name, details=details)


# What a gateway refuses on its own, before any session exists (it knows the grant, not a session).
REFUSAL_KINDS = ("forward", "remote_forward", "subsystem", "exec")


def login_refusal(*, gateway: Gateway, peer: str, username: str, attempts: list[dict[str, Any]],
                  more: int) -> Refusal:
    """A login the gateway refused before any grant was authorised (a certificate for another asset, expired or
    from another CA, a plain key, a login name that is no asset, `ssh -R` before authorisation): the refusal to
    record (broker.refusals caps it per source). The actor is named only when every certificate that named one
    was signed by this broker's CA (the gateway checks that): a foreign certificate's key id is anyone's word."""
    named = {str(a["identity"]) for a in attempts if a.get("identity")}
    reasons = "; ".join(dict.fromkeys(str(a["reason"]) for a in attempts))
    why = f"login as {username or '(none)'} refused: {reasons}"[:600]
    return Refusal(action=Action.GATEWAY_AUTH_REFUSED, reason=why,
                   actor=next(iter(named)) if len(named) == 1 else None, source=peer, subject=username or None,
                   details={"gateway": gateway.name, "attempts": attempts, "more_attempts": more})


def record_refusal(session: Session, *, now: dt.datetime, gateway: Gateway, grant_id: str, kind: str, reason: str,
                   host: str | None, port: int | None) -> None:
    """A request the gateway refused itself under a grant it had authorized (a forward to a port or host the
    grant does not cover, `ssh -R`): security-relevant, so audited like the broker's own refusals."""
    if kind not in REFUSAL_KINDS:
        raise InvalidInput(f"refusal kind '{kind}' is not one of {', '.join(REFUSAL_KINDS)}")
    grant = session.get(Grant, grant_id)
    if grant is None:
        raise NotFound(f"there is no grant {grant_id}")
    trail.record(session, now=now, action=Action.GATEWAY_REFUSED, outcome="refused", actor=grant.identity.username,
                 subject=grant.id, site=grant.asset.site.name,
                 details={"reason": reason, "kind": kind, "asset": grant.asset.name, "host": host, "port": port,
                          "gateway": gateway.name, **delegation_details(session, grant)})


# What a gateway may report about a live session; each maps to one stable audit code and its outcome.
SESSION_EVENT_ACTIONS = {
    "modbus_write_refused": (Action.MODBUS_WRITE_REFUSED, "refused"),
    # What a Modbus/TCP connection asked, at its end: "functions" ("3:12,6:2"), "registers" ("3:0-9;6:40").
    "modbus_activity": (Action.MODBUS_ACTIVITY, "ok"),
    # A file opened over SFTP/scp and closed again: path, mode, bytes read/written, SHA-256 of what was written.
    "file_transferred": (Action.FILE_TRANSFERRED, "ok"),
    # A rename, removal, directory or attribute change on the target.
    "file_changed": (Action.FILE_CHANGED, "ok"),
    # A transfer the site's policy does not allow (download-only), answered by the gateway itself.
    "file_refused": (Action.FILE_REFUSED, "refused"),
    # The gateway could not write the session's recording; the session was ended (fail closed).
    "recording_failed": (Action.RECORDING_FAILED, "error"),
}


def record_session_event(session: Session, *, now: dt.datetime, gateway: Gateway, session_id: str, kind: str,
                         detail: dict[str, Any]) -> None:
    """A protocol-level event inside a live session (e.g. a Modbus write refused on a read-only grant)."""
    known = SESSION_EVENT_ACTIONS.get(kind)
    if known is None:
        raise InvalidInput(f"session event '{kind}' is not one of {', '.join(SESSION_EVENT_ACTIONS)}")
    record = session.get(AccessSession, session_id)
    if record is None or record.gateway_id != gateway.id:
        raise NotFound(f"there is no session {session_id} on this gateway")
    action, outcome = known
    grant = record.grant
    trail.record(session, now=now, action=action, outcome=outcome, actor=grant.identity.username,
                 subject=record.id, site=grant.asset.site.name,
                 details={"grant": grant.id, "asset": grant.asset.name, "port": record.port, **detail,
                          **delegation_details(session, grant)})

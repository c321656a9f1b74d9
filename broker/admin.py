"""Operator commands on the data directory (``gatepass admin …``, ``audit verify``): same domain functions,
run locally like an operator on the control-plane host, each in one audited transaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from broker.audit import trail
from broker.containment import lockdown
from broker.db import make_engine, make_session_factory, read_only_unit, unit_of_work
from broker.identity import attestation, identities, inventory, lifecycle
from broker.identity.identities import NewCredentials, NewFactor
from broker.inventory import asset_credentials, asset_listing, asset_rotation, gateway_lifecycle, gateways, sites
from broker.inventory.gateway_events import NullPublisher
from broker.inventory.target_access import TARGET_TIMEOUT
from broker.keys.vault import Vault
from broker.recordings import store, verification
from broker.settings import Settings

T = TypeVar("T")


def operator_name() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@contextmanager
def local_session(settings: Settings, *, read_only: bool = False) -> Iterator[Session]:
    if not settings.master_key_path.exists():
        raise FileNotFoundError(f"{settings.data_dir} is not a Gatepass data directory: run `gatepass init` first")
    engine = make_engine(settings.effective_database_url)
    unit = read_only_unit if read_only else unit_of_work
    try:
        with unit(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def run(settings: Settings, action: Callable[[Session, Vault], T]) -> T:
    vault = Vault.from_key_file(settings.master_key_path)
    with local_session(settings) as session:
        return action(session, vault)


def add_site(settings: Settings, *, name: str, approvals_required: int, max_window: str,
             maintenance_windows: list[str] | None = None, record_input: bool = True,
             transfers: str = "both", exec_upload_limit: int = sites.DEFAULT_EXEC_UPLOAD_LIMIT,
             cut_grace: str = "2s", supervise_high_criticality: bool = True) -> None:
    run(settings, lambda session, _vault: sites.create_site(
        session, now=settings.clock.now(), actor=operator_name(), name=name,
        approvals_required=approvals_required, max_window=max_window, maintenance_windows=maintenance_windows,
        record_input=record_input, transfers=transfers, exec_upload_limit=exec_upload_limit, cut_grace=cut_grace,
        supervise_high_criticality=supervise_high_criticality))


def update_site(settings: Settings, *, name: str, **policy: Any) -> dict[str, dict[str, Any]]:
    """Change a site's policy (``sites.update_site``); returns what changed, old and new."""
    return run(settings, lambda session, _vault: sites.update_site(
        session, now=settings.clock.now(), actor=operator_name(), name=name, **policy))


def add_asset(settings: Settings, **fields: object) -> None:
    run(settings, lambda session, vault: sites.create_asset(
        session, vault=vault, now=settings.clock.now(), actor=operator_name(), **fields))  # type: ignore[arg-type]


def update_asset(settings: Settings, *, name: str, **policy: Any) -> dict[str, dict[str, Any]]:
    """Change an asset's policy (``sites.update_asset``); returns what changed, old and new."""
    return run(settings, lambda session, _vault: sites.update_asset(
        session, now=settings.clock.now(), actor=operator_name(), name=name, **policy))


def list_assets(settings: Settings, *, site: str | None = None) -> list[dict[str, Any]]:
    """The assets with the supervision policy in force for each (``asset_listing.list_assets``)."""
    with local_session(settings, read_only=True) as session:
        return asset_listing.list_assets(session, site=site)


def show_asset(settings: Settings, *, name: str) -> dict[str, Any]:
    with local_session(settings, read_only=True) as session:
        return asset_listing.show_asset(session, name=name)


def scan_asset(settings: Settings, *, name: str, pin: bool,
               timeout: float = TARGET_TIMEOUT) -> asset_credentials.ScanResult:
    """The host key ``name`` presents to this machine now, against the pinned one; ``pin`` pins it if it differs."""
    return asyncio.run(asset_credentials.scan_host_key(
        units=lambda: local_session(settings), clock=settings.clock, actor=operator_name(), name=name, pin=pin,
        timeout=timeout))


def rotate_asset_credential(settings: Settings, *, name: str, ssh_private_key: str | None = None,
                            ssh_password: str | None = None,
                            authorized_keys: str = asset_credentials.DEFAULT_AUTHORIZED_KEYS,
                            timeout: float = TARGET_TIMEOUT) -> asset_credentials.Rotation:
    """A new credential for ``name``, proven to log in from this machine before the vault holds it (the one given,
    or, with neither given, a key Gatepass generates and swaps into ``authorized_keys``)."""
    supplied = None
    if ssh_private_key is not None or ssh_password is not None:
        supplied = asset_credentials.supplied_credential(private_key=ssh_private_key, password=ssh_password)
    vault = Vault.from_key_file(settings.master_key_path)
    with rotation_lock(settings, name):
        return asyncio.run(asset_rotation.rotate_credential(
            units=lambda: local_session(settings), vault=vault, clock=settings.clock, actor=operator_name(),
            name=name, supplied=supplied, authorized_keys=authorized_keys, timeout=timeout))


@contextmanager
def rotation_lock(settings: Settings, name: str) -> Iterator[None]:
    """One rotation of ``name`` at a time, or a refusal. Two at once each rewrite authorized_keys from what they
    read: one can drop the other's new line after that key was vaulted, leaving the vault a key the machine refuses.
    A lock file in the data directory (admins on this host) and, on PostgreSQL, an advisory lock (admins on other
    hosts); both go with the process, so an interrupted rotation leaves none behind."""
    import fcntl
    import hashlib

    from sqlalchemy import text

    from broker.errors import Conflict

    busy = Conflict(f"another rotation of {name}'s credential is running: two at once could each undo the other's "
                    "change to the machine; let it finish, then run this one again if it is still needed")
    digest = hashlib.sha256(f"gatepass:asset-rotation:{name}".encode()).digest()
    locks = settings.data_dir / "locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    with (locks / f"rotate-{digest[:8].hex()}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        if not settings.effective_database_url.startswith("postgresql"):
            yield
            return
        engine = make_engine(settings.effective_database_url)
        try:
            with engine.connect() as connection:
                key = int.from_bytes(digest[:8], "big", signed=True)
                taken = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
                connection.commit()  # the lock is the session's: no transaction stays open meanwhile
                if not taken:
                    raise busy
                yield
        finally:
            engine.dispose()


def add_user(settings: Settings, **fields: object) -> NewCredentials | None:
    return run(settings, lambda session, vault: identities.create_identity(
        session, vault=vault, now=settings.clock.now(), actor=operator_name(),
        enrolment_code_ttl=settings.enrolment_code_ttl, **fields))  # type: ignore[arg-type]


def set_user_email(settings: Settings, *, name: str, email: str | None) -> None:
    run(settings, lambda session, _vault: identities.set_email(
        session, now=settings.clock.now(), actor=operator_name(), username=name, email=email))


def reset_totp(settings: Settings, *, name: str) -> NewFactor:
    """A new, unconfirmed TOTP secret and enrolment code for ``name`` (their tokens and web sessions are
    revoked); returned once."""
    return run(settings, lambda session, vault: identities.reset_totp(
        session, vault=vault, now=settings.clock.now(), actor=operator_name(), username=name,
        enrolment_code_ttl=settings.enrolment_code_ttl))


def add_gateway(settings: Settings, *, name: str, sites: list[str] | None = None) -> str:
    return run(settings, lambda session, _vault: gateways.create_gateway(
        session, now=settings.clock.now(), actor=operator_name(), name=name, sites=sites or ()))


def list_gateways(settings: Settings) -> list[gateway_lifecycle.GatewayRow]:
    with local_session(settings, read_only=True) as session:
        return gateway_lifecycle.list_gateways(session)


def retire_gateway(settings: Settings, *, name: str, reason: str) -> list[str]:
    return run(settings, lambda session, _vault: gateway_lifecycle.retire_gateway(
        session, now=settings.clock.now(), actor=operator_name(), name=name, reason=reason))


@dataclass(frozen=True)
class AuditVerification:
    """`gatepass audit verify`: the hash chain, and every session recording against its reported hash."""

    chain: trail.VerifyResult
    recordings: verification.RecordingsCheck

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.recordings.ok


def verify_audit(settings: Settings, *, anchors: tuple[trail.Anchor, ...] = (),
                 recordings_dir: Path | None = None) -> AuditVerification:
    """The chain, and the recordings in ``recordings_dir`` (default: where `gatepass serve` keeps them)."""
    with local_session(settings, read_only=True) as session:
        # Recordings first: verify_chain empties the session as it walks.
        checked = verification.verify_recordings(session, recordings_dir or store.recordings_dir(settings),
                                                 now=settings.clock.now())
        return AuditVerification(chain=trail.verify_chain(session, anchors=anchors), recordings=checked)


def lock_down_site(settings: Settings, *, name: str, reason: str | None) -> list[str]:
    # The running brokers relay the outbox row to their gateways: sessions end within a second.
    return run(settings, lambda session, _vault: lockdown.lock_down_site(
        session, now=settings.clock.now(), events=NullPublisher(), actor=lockdown.LocalOperator(operator_name()),
        site_name=name, reason=reason))


def lift_lockdown(settings: Settings, *, name: str) -> None:
    run(settings, lambda session, _vault: lockdown.lift_lockdown(
        session, now=settings.clock.now(), actor=lockdown.LocalOperator(operator_name()), site_name=name))


def set_user_disabled(settings: Settings, *, name: str, disabled: bool) -> list[str]:
    return run(settings, lambda session, _vault: lifecycle.set_disabled(
        session, now=settings.clock.now(), events=NullPublisher(), actor=operator_name(), username=name,
        disabled=disabled))


# --- identities (issue 11): the inventory, its lifecycle, the review report ------------------------------------


def list_identities(settings: Settings, *, kind: str | None = None, flag: str | None = None,
                    status: str | None = None) -> list[inventory.IdentityRecord]:
    with local_session(settings, read_only=True) as session:
        return inventory.list_identities(session, now=settings.clock.now(), kind=kind, flag=flag, status=status)


def show_identity(settings: Settings, *, name: str) -> inventory.IdentityRecord:
    with local_session(settings, read_only=True) as session:
        return inventory.show_identity(session, now=settings.clock.now(), username=name)


def change_identity_state(settings: Settings, *, name: str, verb: str, reason: str | None) -> lifecycle.Transition:
    """suspend | resume | retire, by the local operator (trusted like the host's administrator)."""
    def act(session: Session, _vault: Vault) -> lifecycle.Transition:
        now, actor = settings.clock.now(), operator_name()
        if verb == "suspend":
            return lifecycle.suspend(session, now=now, events=NullPublisher(), actor=actor, username=name,
                                     reason=reason)
        if verb == "retire":
            return lifecycle.retire(session, now=now, events=NullPublisher(), actor=actor, username=name,
                                    reason=reason)
        return lifecycle.resume(session, now=now, actor=actor, username=name, reason=reason)
    return run(settings, act)


def set_identity(settings: Settings, *, name: str, owner: str | None = None,
                 expires_at: dt.datetime | None = None, clear_expiry: bool = False) -> None:
    def act(session: Session, _vault: Vault) -> None:
        now, actor = settings.clock.now(), operator_name()
        if owner is not None:
            lifecycle.set_owner(session, now=now, actor=actor, username=name, owner=owner)
        if expires_at is not None or clear_expiry:
            lifecycle.set_end_date(session, now=now, actor=actor, username=name, expires_at=expires_at)
    run(settings, act)


def review_report(settings: Settings) -> list[dict[str, Any]]:
    with local_session(settings, read_only=True) as session:
        return attestation.report(session)


def sweep_identities(settings: Settings) -> list[str]:
    """What the broker's periodic sweep does, run now: expiries, orphans past their grace, overdue reviews."""
    def act(session: Session, _vault: Vault) -> list[str]:
        now = settings.clock.now()
        changed = [f"{t.username}: {t.was} -> {t.now}" for t in
                   lifecycle.sweep(session, now=now, events=NullPublisher())]
        changed += [f"{name}: review overdue -> suspended" for name in
                    attestation.sweep_overdue(session, now=now, events=NullPublisher())]
        return changed
    return run(settings, act)


def edit_playbook(settings: Settings, *, name: str, steps: list[str], description: str | None) -> int:
    """A new version of a playbook (``respond.playbooks.edit_playbook``); returns its number."""
    from broker.respond import playbooks

    return run(settings, lambda session, _vault: playbooks.edit_playbook(
        session, now=settings.clock.now(), actor=operator_name(), name=name, steps=steps,
        description=description).version)

"""SQLAlchemy models: the schema and its constraints, no rules (those live in the domain modules)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from broker.db import Base, UTCDateTime
from broker.vocabulary import (
    AttestationOutcome,
    CredentialKind,
    Criticality,
    ExtensionStatus,
    FlagSeverity,
    FlagStatus,
    GrantChangeStatus,
    IdentityKind,
    IdentityStatus,
    InstanceStatus,
    NotificationChannel,
    NotificationStatus,
    OverdueAttestation,
    RequestStatus,
    Role,
    SessionKind,
    ThrottleScope,
    Transfers,
    Verdict,
    one_of,
)


class Site(Base):
    __tablename__ = "sites"
    __table_args__ = (
        one_of("sites", "transfers", Transfers),
        one_of("sites", "attestation_overdue", OverdueAttestation),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    approvals_required: Mapped[int] = mapped_column(Integer, default=1)
    max_window_seconds: Mapped[int] = mapped_column(Integer, default=8 * 3600)
    locked_down: Mapped[bool] = mapped_column(Boolean, default=False)
    # Record what vendors type as well as what they see (asciicast "i" events); on by default.
    record_input: Mapped[bool] = mapped_column(Boolean, default=True)
    # "both" or "download_only": whether SFTP/scp may write to the site's machines.
    transfers: Mapped[str] = mapped_column(String(16), default="both")
    # ["Sat 06:00-14:00", ...] in UTC: when the plant expects maintenance work; requests outside are flagged.
    maintenance_windows: Mapped[list[str]] = mapped_column(JSON, default=list)
    # On a download-only site, the most a non-interactive exec may carry from the client (bytes) before it is cut.
    exec_upload_limit: Mapped[int] = mapped_column(Integer, default=65536)
    # On a cut, how long the gateway waits after asking the target to TERM a command before it sends KILL.
    cut_grace_ms: Mapped[int] = mapped_column(Integer, default=2000)
    # Identity governance (issue 11): how often each identity using the site is re-confirmed, what happens when
    # that is overdue, how long an identity may outlive its owner's departure, how old a credential may grow,
    # how long a service or AI identity's key-bound credential lives, and whether AI agents may ever write.
    attestation_days: Mapped[int] = mapped_column(Integer, default=90)
    attestation_overdue: Mapped[str] = mapped_column(String(8), default="suspend")
    owner_grace_days: Mapped[int] = mapped_column(Integer, default=7)
    credential_max_age_days: Mapped[int] = mapped_column(Integer, default=365)
    workload_credential_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    agent_writes: Mapped[bool] = mapped_column(Boolean, default=False)
    # A site kept for rehearsals: a drill may really run a playbook here (`playbook drill --execute-on-drill-site`).
    drill_site: Mapped[bool] = mapped_column(Boolean, default=False)
    # Read-only mode (a playbook step): only read-only protocol grants (Modbus reads) are requested or approved.
    read_only_mode: Mapped[bool] = mapped_column(Boolean, default=False)
    # Watch (issue 12): how long baselines learn before their flags may act, and the playbook a flag of at
    # least ``auto_response_severity`` runs by itself (None: never; the default).
    learning_days: Mapped[int] = mapped_column(Integer, default=14)
    auto_response: Mapped[str | None] = mapped_column(String(64), nullable=True)
    auto_response_severity: Mapped[str] = mapped_column(String(8), default="high")
    # Retention of session recordings (issue 12): days after a session's end before its recording may be purged;
    # None follows the broker's default (settings), 0 keeps them forever. A recording on hold is never purged.
    recording_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Supervised sessions (issue 13): every session waits until a supervisor of the site watches it; when the last
    # one leaves, input is held and the session is cut after the grace.
    supervision_required: Mapped[bool] = mapped_column(Boolean, default=False)
    supervision_grace_seconds: Mapped[int] = mapped_column(Integer, default=60)
    # Observers watch without the vendor's terminal saying so; then every session there starts by saying that they
    # may (off by default: no silent observers).
    silent_observers: Mapped[bool] = mapped_column(Boolean, default=False)
    # High-criticality assets are supervised unless the asset says otherwise (issue 13): on for sites made from
    # migration 0018 on, off for the sites that existed before it (an upgrade must not start holding sessions).
    supervise_high_criticality: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    assets: Mapped[list[Asset]] = relationship(back_populates="site")


class Asset(Base):
    __tablename__ = "assets"
    __table_args__ = (
        one_of("assets", "criticality", Criticality),
        one_of("assets", "credential_kind", CredentialKind, nullable=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Globally unique: the SSH login name at the gateway is the asset name.
    name: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    host: Mapped[str] = mapped_column(String(255))
    criticality: Mapped[str] = mapped_column(String(8), default="low")
    ssh_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ssh_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    credential_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    credential_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    host_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    tcp_ports: Mapped[list[int]] = mapped_column(JSON, default=list)
    # Client environment variables (exact names) the gateway passes to this asset; none by default.
    passed_env: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The asset's own supervision policy (issue 13): True required, False optional, None follows its site
    # (broker.inventory.supervision_policy decides what is in force).
    supervision_required: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    site: Mapped[Site] = relationship(back_populates="assets")


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = (
        one_of("identities", "kind", IdentityKind),
        one_of("identities", "status", IdentityStatus),
        UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_identities_oidc_subject"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="human")
    organisation: Mapped[str | None] = mapped_column(String(128), nullable=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id"), nullable=True)
    purpose: Mapped[str | None] = mapped_column(Text, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The lifecycle (vocabulary.IdentityStatus) and its last transition: who, when, why.
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status_changed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The human an AI agent acts for: it only ever holds subsets of this person's grants.
    sponsor_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id"), nullable=True)
    # The last sign-in, grant or session: "unused for 90 days" is computed from it.
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the password/TOTP (or, for services and AI agents, the newest key) was set: the credential's age.
    credential_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attestation_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Since when the owner is gone (suspended, retired, expired): after the site's grace, this one is suspended.
    owner_lost_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    totp_secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # RFC 6238 §5.2: a one-time code is accepted once; we keep the last time step that was used.
    totp_last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Where notifications for this approver go (requests at their sites).
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    # None while a newly issued (or reset) TOTP secret has not been confirmed with a code.
    totp_confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The one-time enrolment code (SHA-256 only) that must come with the password before an unconfirmed
    # second factor is shown or bound: a password alone never is (DESIGN invariant 4).
    enrolment_code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    enrolment_code_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Staff who sign in with their company account (OpenID Connect): the provider and its subject for them, the
    # one link (a name or an address can be given to someone else at the provider, `sub` never is: Core §5.7).
    oidc_issuer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    roles: Mapped[list[RoleAssignment]] = relationship(back_populates="identity", cascade="all, delete-orphan")


class SignInThrottle(Base):
    """Failed sign-ins counted per source address, per (account, source) and per account across sources; kept in
    the database so that every broker replica throttles alike."""

    __tablename__ = "sign_in_throttles"
    __table_args__ = (UniqueConstraint("scope", "key"), one_of("sign_in_throttles", "scope", ThrottleScope),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(255))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    blocked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Indexed: every failure forgets the rows nobody failed on for a day (a spray of made-up names adds many).
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class RoleAssignment(Base):
    """A role, optionally scoped to one site (a supervisor approves for the sites they are assigned)."""

    __tablename__ = "role_assignments"
    __table_args__ = (UniqueConstraint("identity_id", "role", "site_id"), one_of("role_assignments", "role", Role),)

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    role: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), nullable=True)

    identity: Mapped[Identity] = relationship(back_populates="roles")
    site: Mapped[Site | None] = relationship()


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Only the SHA-256 of the bearer token is stored: a database leak does not leak live sessions.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    # A service or AI identity's short-lived credential names the machine (key) it was issued to.
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("workload_instances.id"), nullable=True)
    # A company sign-in whose provider reported no second factor: this session may look, not decide
    # (broker.identity.assurance). Password and one-time code are two factors, so local sign-ins never are.
    without_mfa: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    identity: Mapped[Identity] = relationship()


class JoinToken(Base):
    """A single-use invitation for a service or AI identity to join from its machine (`gatepass join`)."""

    __tablename__ = "join_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    # SHA-256 only: the token is shown once, to the admin who made it.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    identity: Mapped[Identity] = relationship()


class WorkloadInstance(Base):
    """One machine of a service or AI identity: the public key it made at join (the private key never leaves
    that machine) and the counter of its renewals, so a second copy of its credential shows itself."""

    __tablename__ = "workload_instances"
    __table_args__ = (one_of("workload_instances", "status", InstanceStatus),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    renewals: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_renewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    locked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    identity: Mapped[Identity] = relationship()


class Attestation(Base):
    """One access review of one identity: kept, or revoked, by whom, why, and when."""

    __tablename__ = "attestations"
    __table_args__ = (one_of("attestations", "outcome", AttestationOutcome),)

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    outcome: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    identity: Mapped[Identity] = relationship(foreign_keys=[identity_id])
    reviewer: Mapped[Identity] = relationship(foreign_keys=[reviewer_id])


class StandingPolicy(Base):
    """Standing access for automation, still bounded: approved once by the site for one identity and asset,
    each use still a short-lived grant, audited like a human session, and part of the identity's review."""

    __tablename__ = "standing_policies"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"))
    ssh: Mapped[bool] = mapped_column(Boolean)
    ports: Mapped[list[int]] = mapped_column(JSON, default=list)
    read_only: Mapped[bool] = mapped_column(Boolean, default=True)
    # ["Mon-Fri 06:00-18:00", ...] in UTC; empty means at any time.
    windows: Mapped[list[str]] = mapped_column(JSON, default=list)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    approved_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)

    identity: Mapped[Identity] = relationship()
    asset: Mapped[Asset] = relationship()


class AccessRequest(Base):
    __tablename__ = "access_requests"
    __table_args__ = (one_of("access_requests", "status", RequestStatus),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"))
    ssh: Mapped[bool] = mapped_column(Boolean)
    ports: Mapped[list[int]] = mapped_column(JSON, default=list)
    # Protocol-aware restriction of the TCP ports (Modbus/TCP: reads pass, writes are refused by the gateway).
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    duration_seconds: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    public_key: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    approvals_required: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    decide_by: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    requester: Mapped[Identity] = relationship()
    asset: Mapped[Asset] = relationship()
    decisions: Mapped[list[Decision]] = relationship(
        back_populates="request", order_by="Decision.id", cascade="all, delete-orphan"
    )
    grant: Mapped[Grant | None] = relationship(back_populates="request")


class Decision(Base):
    """One approver's approval or denial; the unique constraint makes 'two distinct approvers' a schema fact."""

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("request_id", "approver_id"), one_of("decisions", "verdict", Verdict),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id"))
    approver_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    verdict: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    request: Mapped[AccessRequest] = relationship(back_populates="decisions")
    approver: Mapped[Identity] = relationship()


class Grant(Base):
    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id"), unique=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"))
    ssh: Mapped[bool] = mapped_column(Boolean)
    ports: Mapped[list[int]] = mapped_column(JSON, default=list)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    serial: Mapped[int] = mapped_column(BigInteger, unique=True)
    certificate: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # An AI agent's grant is delegated from its sponsor's live grant: never wider, and it ends with it.
    parent_grant_id: Mapped[str | None] = mapped_column(ForeignKey("grants.id"), nullable=True, index=True)
    # Exec only of these argv lists (exact, parsed; an AI agent's delegation); None means no such limit.
    allowed_commands: Mapped[list[list[str]] | None] = mapped_column(JSON, nullable=True)
    # The standing policy this grant is one use of (automation), if any.
    standing_policy_id: Mapped[str | None] = mapped_column(ForeignKey("standing_policies.id"), nullable=True)

    request: Mapped[AccessRequest] = relationship(back_populates="grant")
    identity: Mapped[Identity] = relationship()
    asset: Mapped[Asset] = relationship()


class Gateway(Base):
    __tablename__ = "gateways"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    ssh_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ssh_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    host_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    registered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # The sites whose assets this gateway may reach (and be handed credentials for); none: every site (the embedded
    # gateway of `gatepass serve`, and gateways made before sites could be named).
    sites: Mapped[list[Site]] = relationship(secondary="gateway_sites", order_by="Site.name")
    # `gatepass admin gateway retire`: its credential is refused from then on, its open sessions were ended.
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class GatewaySite(Base):
    """A site a gateway serves (``gatepass admin gateway add NAME --site SITE``)."""

    __tablename__ = "gateway_sites"

    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)


class GatewayReportReceipt(Base):
    """A gateway report already recorded, by the key the gateway gave it (``Idempotency-Key``): the same report sent
    again after its answer was lost is answered without being recorded twice (broker.inventory.report_receipts)."""

    __tablename__ = "gateway_report_receipts"
    __table_args__ = (Index("ix_gateway_report_receipts_received_at", "received_at"),)

    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # SHA-256 of the report the key came with: the key again with another report does not suppress that one.
    digest: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AccessSession(Base):
    """A live connection under a grant, as reported by the gateway that carries it."""

    __tablename__ = "sessions"
    __table_args__ = (
        one_of("sessions", "kind", SessionKind),
        # The notifier's look for sessions that started lately (a watch link each, issue 13), every second.
        Index("ix_sessions_started_at", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"))
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id"))
    kind: Mapped[str] = mapped_column(String(8))
    peer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    command: Mapped[str | None] = mapped_column(Text, nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    # The recording the gateway stored for this session (asciicast v2 under DATA/recordings) and the
    # SHA-256 it reported at the end; `gatepass audit verify` checks the file against it.
    recording_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    recording_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recording_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The file is still on a separate gateway's disk (`gatepass gateway`), which uploads it once the session ended
    # (PUT /gateway/recordings/{name}); cleared when it arrived here whole (broker.recordings.intake).
    recording_on_gateway: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the retention purge deleted the recording file (its name and hash stay: the trail says what existed).
    recording_purged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    grant: Mapped[Grant] = relationship()
    gateway: Mapped[Gateway] = relationship()


class Authority(Base):
    """A certificate authority key pair; the private half is sealed by the vault's master key."""

    __tablename__ = "authorities"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    public_key: Mapped[str] = mapped_column(Text)
    private_key_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """Append-only and hash-chained: each row carries the hash of the one before (database triggers
    refuse UPDATE and DELETE; `gatepass audit verify` detects what gets past them)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    subject: Mapped[str | None] = mapped_column(String(128), nullable=True)
    site: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[str] = mapped_column(Text)  # canonical JSON, hashed as stored
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def as_dict(self) -> dict[str, Any]:
        import json

        return {
            "seq": self.seq,
            "occurred_at": self.occurred_at.isoformat(),
            "action": self.action,
            "outcome": self.outcome,
            "actor": self.actor,
            "subject": self.subject,
            "site": self.site,
            "details": json.loads(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


class AuditHead(Base):
    """One row: the chain's last sequence number and hash. Updating it first takes the write lock that
    serialises appends (a row lock on PostgreSQL, the database lock on SQLite)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class GrantChange(Base):
    """Outbox of grant changes that gateways must hear about (revoked, lockdown, identity disabled, moved end).

    Written in the same transaction as the change; every broker process relays new rows to the gateways
    connected to it, so a change made by another replica or by `gatepass admin` reaches them too.
    """

    __tablename__ = "grant_changes"
    __table_args__ = (one_of("grant_changes", "status", GrantChangeStatus),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"))
    status: Mapped[str] = mapped_column(String(16))
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(String(32))


class GrantExtension(Base):
    """The grantee's ask to move an active grant's end; approved by the site's approvers like a request."""

    __tablename__ = "grant_extensions"
    __table_args__ = (one_of("grant_extensions", "status", ExtensionStatus),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    duration_seconds: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    approvals_required: Mapped[int] = mapped_column(Integer)
    previous_ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    new_ends_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    grant: Mapped[Grant] = relationship()
    requester: Mapped[Identity] = relationship()
    decisions: Mapped[list[ExtensionDecision]] = relationship(
        back_populates="extension", order_by="ExtensionDecision.id", cascade="all, delete-orphan"
    )


class ExtensionDecision(Base):
    """One approver's approval or denial of an extension: the same shape, and the same rule, as a Decision."""

    __tablename__ = "extension_decisions"
    __table_args__ = (
        UniqueConstraint("extension_id", "approver_id"),
        one_of("extension_decisions", "verdict", Verdict),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    extension_id: Mapped[str] = mapped_column(ForeignKey("grant_extensions.id"))
    approver_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    verdict: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    extension: Mapped[GrantExtension] = relationship(back_populates="decisions")
    approver: Mapped[Identity] = relationship()


class SiemCursor(Base):
    """How far the audit trail has been delivered to one SIEM destination. The trail itself is the durable
    queue; the lease keeps two broker replicas from forwarding the same events."""

    __tablename__ = "siem_cursors"

    destination: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


NOTIFICATION_SUBJECT = ("(CASE WHEN request_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN identity_id IS NULL THEN 0 "
                        "ELSE 1 END) + (CASE WHEN run_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN session_id IS NULL "
                        "THEN 0 ELSE 1 END) = 1")


class Notification(Base):
    """One message to one target (webhook or e-mail) about one request: the outbox the relay delivers."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("request_id", "channel", "target", name="uq_notifications_request_channel_target"),
        # The relay's query: what is due now.
        Index("ix_notifications_due", "status", "next_attempt_at"),
        one_of("notifications", "channel", NotificationChannel),
        one_of("notifications", "status", NotificationStatus),
        # A review reminder: one per identity, due date and target (issue 11).
        UniqueConstraint("identity_id", "review_due_at", "channel", "target",
                         name="uq_notifications_review_channel_target"),
        UniqueConstraint("run_id", "channel", "target", name="uq_notifications_run_channel_target"),
        # A session that started, with the link to watch it (issue 13): one per session and target.
        UniqueConstraint("session_id", "channel", "target", name="uq_notifications_session_channel_target"),
        # About one thing: a request, an identity's review, a playbook run, or a session's start.
        CheckConstraint(NOTIFICATION_SUBJECT, name="ck_notifications_subject"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str | None] = mapped_column(String(16), ForeignKey("access_requests.id"), nullable=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id"), nullable=True)
    review_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A playbook run's message: its id, and the subject and text written when it ran (issue 12).
    run_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(16), ForeignKey("sessions.id"), nullable=True)
    message_subject: Mapped[str | None] = mapped_column(String(200), nullable=True)
    message_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    channel: Mapped[str] = mapped_column(String(8))  # webhook | email
    target: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(8))  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class PlaybookVersion(Base):
    """An edited version of a playbook (the built-in ones live in broker/respond/playbooks.py); the newest wins."""

    __tablename__ = "playbook_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    steps: Mapped[list[str]] = mapped_column(JSON)
    edited_by: Mapped[str] = mapped_column(String(64))
    edited_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Baseline(Base):
    """What one identity usually does at one site (site None: what it does outside any site, e.g. sign-ins), as
    the JSON profile broker/watch/profile.py keeps up to date."""

    __tablename__ = "baselines"
    __table_args__ = (UniqueConstraint("identity_id", "site_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    observations: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Flag(Base):
    """An identity behaving unlike itself (or an always-high event), with the signals that fired and what they
    were compared with; open until a reviewer marks it benign or confirmed."""

    __tablename__ = "flags"
    __table_args__ = (one_of("flags", "severity", FlagSeverity), one_of("flags", "status", FlagStatus))

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    severity: Mapped[str] = mapped_column(String(8))
    signals: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    summary: Mapped[str] = mapped_column(Text)
    # Raised while the site's baselines still learn: shown, never acted on.
    learning: Mapped[bool] = mapped_column(Boolean, default=False)
    # What was observed, kept out of the baseline until a reviewer calls it benign.
    observations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(12), default="open")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)

    identity: Mapped[Identity] = relationship()
    site: Mapped[Site | None] = relationship()


class WatchCursor(Base):
    """How far the watcher has read the audit trail; the lease keeps two broker replicas from both reading."""

    __tablename__ = "watch_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())



class EvidenceHold(Base):
    """A session's recording kept as evidence, past any retention: by a playbook run (its id) or by hand; held
    while ``released_at`` is None. Rows are never deleted: a release is recorded on the row (and in the trail)."""

    __tablename__ = "evidence_holds"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    run_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    held_by: Mapped[str] = mapped_column(String(64))
    held_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    released_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    release_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

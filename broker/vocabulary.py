"""The closed sets of values the broker stores: one ``StrEnum`` each, and the database ``CHECK`` that holds it.

A StrEnum member is a ``str``, so rows, JSON and comparisons with plain text keep working; what changes is
that code names a value instead of spelling it, and the database refuses a value outside the set whoever
writes it. Migration 0010 adds the same CHECK constraints (written out there: migrations never import app
code); ``tests/test_migrations.py`` holds the two together.

Left free on purpose: a session's end reason and an audit event's outcome. The first is the gateway's to name
(a new gateway may report a new reason); the second sits in the append-only, hash-chained table, which SQLite
could only constrain by rebuilding it (and so dropping its append-only triggers).
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import CheckConstraint


class IdentityKind(StrEnum):
    HUMAN = "human"
    SERVICE = "service"
    AI_AGENT = "ai_agent"


class IdentityStatus(StrEnum):
    """active → suspended ⇄ active → retired (final; the name is never reused); expired once its end date passed."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    RETIRED = "retired"
    EXPIRED = "expired"


class InstanceStatus(StrEnum):
    """One machine's key-bound credential of a service or AI identity; locked on its own when copied."""

    ACTIVE = "active"
    LOCKED = "locked"


class AttestationOutcome(StrEnum):
    KEEP = "keep"
    REVOKE = "revoke"


class OverdueAttestation(StrEnum):
    """What a site does with an identity whose review is overdue."""

    SUSPEND = "suspend"
    FLAG = "flag"


class FlagSeverity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class FlagStatus(StrEnum):
    """A reviewer marks a flag benign (it then feeds the baseline) or confirmed (it never does)."""

    OPEN = "open"
    BENIGN = "benign"
    CONFIRMED = "confirmed"


class Role(StrEnum):
    VENDOR = "vendor"
    SUPERVISOR = "supervisor"
    SECURITY = "security"
    ADMIN = "admin"


class Criticality(StrEnum):
    LOW = "low"
    HIGH = "high"


class Transfers(StrEnum):
    """What SFTP and scp may do at a site."""

    BOTH = "both"
    DOWNLOAD_ONLY = "download_only"


class CredentialKind(StrEnum):
    """What the gateway injects at an asset."""

    PASSWORD = "password"  # noqa: S105 (the kind of credential, not one)
    PRIVATE_KEY = "private_key"


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class ExtensionStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    # The grant ended or was revoked before anyone decided.
    LAPSED = "lapsed"


class Verdict(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class GrantStatus(StrEnum):
    """Computed from a grant's times and revocation (``access.rules.grant_status``), never stored."""

    SCHEDULED = "scheduled"
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class SessionKind(StrEnum):
    SHELL = "shell"
    EXEC = "exec"
    SFTP = "sftp"
    TCP = "tcp"


class GrantChangeStatus(StrEnum):
    """What the outbox tells gateways a grant now is."""

    ACTIVE = "active"
    REVOKED = "revoked"


class NotificationChannel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


class NotificationStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class ThrottleScope(StrEnum):
    """What a sign-in throttle counts: one address, one account from one address, or one account everywhere."""

    SOURCE = "source"
    ACCOUNT_SOURCE = "account_source"
    ACCOUNT = "account"


def one_of(table: str, column: str, values: type[StrEnum], *, nullable: bool = False) -> CheckConstraint:
    """``CHECK (column IN (...))`` named ``ck_<table>_<column>``, the name migration 0010 gives it."""
    listed = ", ".join(f"'{value.value}'" for value in values)
    condition = f"{column} IN ({listed})"
    if nullable:
        condition = f"{column} IS NULL OR {condition}"
    return CheckConstraint(condition, name=f"ck_{table}_{column}")

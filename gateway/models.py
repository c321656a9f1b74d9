"""Typed shapes of the gateway API answers (docs/API.md), parsed strictly from JSON."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.errors import BrokerProtocolError

# Session end reasons the broker accepts (docs/API.md, POST /gateway/sessions/{id}/end).
END_REASONS = frozenset({"client_closed", "expired", "revoked", "idle", "lockdown", "gateway_lost", "error"})


def _field(obj: Mapping[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    value = obj.get(name)
    if value is None and optional:
        return None
    # bool is an int subclass: an int field must not accept true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BrokerProtocolError(f"the broker's answer has no valid {name!r} field")
    return value


def parse_time(value: Any, name: str = "time") -> datetime:
    """ISO 8601 with an offset, normalised to UTC; naive times are a contract violation."""
    if not isinstance(value, str):
        raise BrokerProtocolError(f"the broker's answer has no valid {name!r} field")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BrokerProtocolError(f"the broker sent an unreadable {name!r}: {value!r}") from None
    if parsed.tzinfo is None:
        raise BrokerProtocolError(f"the broker sent {name!r} without a UTC offset")
    return parsed.astimezone(UTC)


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BrokerProtocolError(f"the broker's {what} is not a JSON object")
    return value


@dataclass(frozen=True)
class Registration:
    user_ca: str
    gateway: str

    @classmethod
    def from_json(cls, data: Any) -> Registration:
        obj = _object(data, "registration answer")
        return cls(user_ca=_field(obj, "user_ca", str), gateway=_field(obj, "gateway", str))


@dataclass(frozen=True)
class Target:
    """Where and as whom the gateway logs in; the credential is excluded from repr."""

    host: str
    ssh_port: int
    username: str
    password: str | None = field(repr=False)
    private_key: str | None = field(repr=False)
    host_key: str | None

    @classmethod
    def from_json(cls, data: Any) -> Target:
        obj = _object(data, "target")
        return cls(
            host=_field(obj, "host", str),
            ssh_port=_field(obj, "ssh_port", int),
            username=_field(obj, "username", str),
            password=_field(obj, "password", str, optional=True),
            private_key=_field(obj, "private_key", str, optional=True),
            host_key=_field(obj, "host_key", str, optional=True),
        )


# How long a cut command has between TERM and KILL when the broker does not say (Site.cut_grace_ms).
DEFAULT_CUT_GRACE = 2.0
MAX_CUT_GRACE_MS = 30_000


# Seconds a supervised session goes on, input held, after its last supervisor left (Site.supervision_grace_seconds).
DEFAULT_SUPERVISION_GRACE = 60.0


def _supervision_grace(value: Any) -> float:
    if value is None:
        return DEFAULT_SUPERVISION_GRACE
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 3_600_000:
        raise BrokerProtocolError("the broker's authorization has an invalid 'supervision_grace_ms'")
    return value / 1000


def _cut_grace(value: Any) -> float:
    if value is None:
        return DEFAULT_CUT_GRACE
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CUT_GRACE_MS:
        raise BrokerProtocolError("the broker's authorization has an invalid 'cut_grace_ms'")
    return value / 1000


# What a command without a PTY may take from the client on a download-only site when the broker does not say.
DEFAULT_EXEC_UPLOAD_LIMIT = 65536
# An environment variable's name as the broker allows it (broker/inventory.py checks the same pattern).
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def _upload_limit(value: Any) -> int:
    if value is None:
        return DEFAULT_EXEC_UPLOAD_LIMIT
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BrokerProtocolError("the broker's authorization has an invalid 'exec_upload_limit'")
    return value


def _env_names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(n, str) and ENV_NAME.fullmatch(n) for n in value):
        raise BrokerProtocolError("the broker's authorization has an invalid 'passed_env'")
    return tuple(value)


def _allowed_commands(value: Any, identity_kind: str) -> tuple[tuple[str, ...], ...] | None:
    """The argv lists an exec must match exactly (an AI agent's delegation), or None for no such limit. Deny by
    default: an AI agent's authorization that lists none (an older broker) runs no command."""
    if value is None:
        return () if identity_kind == "ai_agent" else None
    if not isinstance(value, list) or not all(
        isinstance(argv, list) and argv and all(isinstance(arg, str) for arg in argv) for argv in value
    ):
        raise BrokerProtocolError("the broker's authorization has invalid 'allowed_commands'")
    return tuple(tuple(argv) for argv in value)


@dataclass(frozen=True)
class Authorization:
    grant_id: str
    identity: str
    identity_kind: str
    asset: str
    site: str
    starts_at: datetime
    ends_at: datetime
    ssh: bool
    interactive: bool
    ports: tuple[int, ...]
    target: Target | None
    # Beyond docs/API.md: the broker also sends the asset's inventory address, needed for TCP
    # forwarding on grants without SSH (whose "target" is null).
    asset_host: str | None = None
    # TCP ports only: requests are filtered by protocol (gateway/protocols.py); writes are refused.
    read_only: bool = False
    # The site's policy: record what the vendor types (on unless the broker says off), and whether
    # SFTP/scp may write to the target (download-only unless the broker says "both": deny by default).
    record_input: bool = True
    download_only: bool = True
    # Download-only sites: the most bytes a command without a PTY may take from the client before the session
    # is cut (an upload by other means: `cat > FILE`, rsync, dd). An older broker does not send it: 64 KiB.
    exec_upload_limit: int = DEFAULT_EXEC_UPLOAD_LIMIT
    # Client environment variables the asset lets through to the target, by exact name; none unless listed.
    passed_env: tuple[str, ...] = ()
    # Seconds a cut command has between TERM and KILL (site policy "cut grace"; gateway/stopping.py).
    cut_grace: float = DEFAULT_CUT_GRACE
    # Exec only of these argv lists, compared exactly (gateway/command_policy.py); None: any command.
    allowed_commands: tuple[tuple[str, ...], ...] | None = None
    # Issue 13: shell/exec sessions wait until a supervisor of the site watches (gateway/observers.py); when the
    # last one leaves, input is held and the session is cut after the grace (seconds).
    supervision_required: bool = False
    supervision_grace: float = DEFAULT_SUPERVISION_GRACE
    # Observers may watch without being announced: the session says so at its start (the vendor is told the policy).
    silent_observers: bool = False

    @classmethod
    def from_json(cls, data: Any) -> Authorization:
        obj = _object(data, "authorization")
        ports = _field(obj, "ports", list, optional=True) or []
        if not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
            raise BrokerProtocolError("the broker's authorization has invalid 'ports'")
        target = obj.get("target")
        identity_kind = _field(obj, "identity_kind", str)
        return cls(
            grant_id=_field(obj, "grant_id", str),
            identity=_field(obj, "identity", str),
            identity_kind=identity_kind,
            asset=_field(obj, "asset", str),
            site=_field(obj, "site", str),
            starts_at=parse_time(obj.get("starts_at"), "starts_at"),
            ends_at=parse_time(obj.get("ends_at"), "ends_at"),
            ssh=_field(obj, "ssh", bool),
            # Deny by default: a missing flag means no shell (invariant 5).
            interactive=obj.get("interactive") is True,
            ports=tuple(ports),
            target=None if target is None else Target.from_json(target),
            asset_host=_field(obj, "asset_host", str, optional=True),
            read_only=bool(_field(obj, "read_only", bool, optional=True)),
            record_input=obj.get("record_input") is not False,
            download_only=obj.get("transfers") != "both",
            exec_upload_limit=_upload_limit(obj.get("exec_upload_limit")),
            passed_env=_env_names(obj.get("passed_env")),
            cut_grace=_cut_grace(obj.get("cut_grace_ms")),
            allowed_commands=_allowed_commands(obj.get("allowed_commands"), identity_kind),
            supervision_required=obj.get("supervision_required") is True,
            supervision_grace=_supervision_grace(obj.get("supervision_grace_ms")),
            silent_observers=obj.get("silent_observers") is True,
        )


@dataclass(frozen=True)
class RecordingInfo:
    """A finished recording as reported in the session-end call: its name in the store, hash and size."""

    name: str
    sha256: str
    bytes: int

    def as_json(self) -> dict[str, str | int]:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.bytes}


class PendingRecording:
    """A recording its writer is still finishing (the rest written, fsynced, hashed) while the event loop goes on:
    ``await result()`` gives its RecordingInfo, or raises why it failed (gateway.recording.RecordingFailure).
    A session's end is reported once it is done, so the broker is told the hash of a durable file."""

    def __init__(self, name: str, result: Callable[[], Awaitable[RecordingInfo]]) -> None:
        self.name = name
        self._result = result

    async def result(self) -> RecordingInfo:
        return await self._result()


# What a session's tap says it stored when the session ends.
StoredRecording = RecordingInfo | PendingRecording


@dataclass(frozen=True)
class GrantState:
    """A grant as ``/gateway/grants/status`` or a ``grant`` event describes it."""

    grant_id: str
    status: str
    ends_at: datetime
    reason: str | None = None

    @classmethod
    def from_json(cls, grant_id: str, data: Any) -> GrantState:
        obj = _object(data, "grant status")
        return cls(
            grant_id=grant_id,
            status=_field(obj, "status", str),
            ends_at=parse_time(obj.get("ends_at"), "ends_at"),
            reason=_field(obj, "reason", str, optional=True),
        )


@dataclass(frozen=True)
class BrokerEvent:
    """One server-sent event from ``/gateway/events``: its type and its JSON object."""

    type: str
    data: Mapping[str, Any]

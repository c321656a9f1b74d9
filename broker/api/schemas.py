"""Request bodies of the public API. Bounds live here so bad input is refused before any work is done."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

# Control characters have no business in names, reasons or keys (NUL also breaks PostgreSQL text);
# tab and line breaks stay allowed for free text such as reasons and comments.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and CONTROL_CHARACTERS.search(item):
                raise ValueError("must not contain control characters")
        return value


class LoginIn(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    totp: str = Field(min_length=1, max_length=16)
    # Needed only while the second factor is not yet bound (a new account, or after `reset-totp`).
    enrolment_code: str | None = Field(default=None, max_length=32)

    # Replaces Body's check (same name) for every field but the user name, which is checked (and a refusal
    # audited, the name escaped) at the sign-in door itself: broker.authentication.
    @field_validator("password", "totp", "enrolment_code", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        if isinstance(value, str) and CONTROL_CHARACTERS.search(value):
            raise ValueError("must not contain control characters")
        return value


class RequestIn(Body):
    asset: str = Field(min_length=1, max_length=64)
    duration: str = Field(min_length=1, max_length=16)
    reason: str = Field(max_length=1000)
    ssh: bool = False
    ports: list[int] = Field(default_factory=list, max_length=32)
    read_only: bool = False
    start: dt.datetime | None = None
    public_key: str = Field(min_length=1, max_length=4096)


class ApproveIn(Body):
    comment: str | None = Field(default=None, max_length=1000)
    shorten_to: str | None = Field(default=None, max_length=16)


class DenyIn(Body):
    comment: str = Field(max_length=1000)


class RevokeIn(Body):
    reason: str | None = Field(default=None, max_length=1000)


class RegisterIn(Body):
    ssh_host: str = Field(min_length=1, max_length=255)
    ssh_port: int
    host_key: str = Field(min_length=1, max_length=4096)
    # The sessions whose end the (re)starting gateway still has to report; present: every other session still open
    # on this gateway is ended (the run that carried it is gone). Absent (a gateway from before): nothing is ended.
    kept_ends: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(default=None,
                                                                                      max_length=100_000)


class AuthorizeIn(Body):
    grant_id: str = Field(min_length=1, max_length=16)
    serial: int = Field(ge=0, le=2**64 - 1)
    asset: str = Field(min_length=1, max_length=64)
    peer: str | None = Field(default=None, max_length=64)


class GrantsStatusIn(Body):
    grant_ids: list[str] = Field(max_length=10_000)


class SessionStartIn(Body):
    grant_id: str = Field(min_length=1, max_length=16)
    kind: str = Field(min_length=1, max_length=8)
    peer: str | None = Field(default=None, max_length=64)
    command: str | None = Field(default=None, max_length=4096)
    port: int | None = Field(default=None, ge=1, le=65535)


class LoginAttemptIn(Body):
    kind: Literal["certificate", "key", "login_name", "remote_forward"]
    reason: str = Field(min_length=1, max_length=300)
    fingerprint: str | None = Field(default=None, max_length=100)
    key_id: str | None = Field(default=None, max_length=200)
    identity: str | None = Field(default=None, max_length=64)


class LoginRefusalIn(Body):
    """A login the gateway refused (gateway/login_refusals.py): where from, as which asset, what was offered."""

    peer: str = Field(min_length=1, max_length=64)
    username: str = Field(max_length=128)
    attempts: list[LoginAttemptIn] = Field(min_length=1, max_length=8)
    more: int = Field(default=0, ge=0, le=1_000_000)


class RefusalIn(Body):
    grant_id: str = Field(min_length=1, max_length=16)
    kind: str = Field(min_length=1, max_length=16)
    reason: str = Field(min_length=1, max_length=1000)
    host: str | None = Field(default=None, max_length=255)
    port: int | None = Field(default=None, ge=0, le=65535)


class RecordingIn(Body):
    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0, le=2**63 - 1)
    # A separate gateway keeps the file until it has uploaded it (PUT /gateway/recordings/{name}).
    uploads: bool = Field(default=False, strict=True)


class StopIn(Body):
    """How the gateway stopped a cut session's command on the target (gateway/stopping.py)."""

    signals: list[Literal["TERM", "KILL"]] = Field(max_length=2)
    confirmed: bool = Field(strict=True)
    exit: str | None = Field(default=None, max_length=64)
    grace_ms: int = Field(ge=0, le=30_000)
    swept: dict[Literal["TERM", "KILL"], int] | None = Field(default=None, max_length=2)
    sweep_error: str | None = Field(default=None, max_length=500)

    @field_validator("swept")
    @classmethod
    def _counts(cls, swept: dict[str, int] | None) -> dict[str, int] | None:
        if swept is not None and any(not 0 <= count <= 1_000_000 for count in swept.values()):
            raise ValueError("process counts must be between 0 and 1000000")
        return swept


class SessionEndIn(Body):
    reason: str = Field(min_length=1, max_length=16)
    bytes_in: int = Field(ge=0, le=2**63 - 1)
    bytes_out: int = Field(ge=0, le=2**63 - 1)
    detail: str | None = Field(default=None, max_length=1000)
    recording: RecordingIn | None = None
    stop: StopIn | None = None
    # When the session ended on the gateway: a report kept through an outage arrives later (gateway/report_outbox.py).
    ended_at: AwareDatetime | None = None


class LockdownIn(Body):
    reason: str = Field(min_length=1, max_length=1000)


class SessionEventIn(Body):
    kind: str = Field(min_length=1, max_length=32)
    # Small, flat facts only (function code, unit id, count, a path): this goes into the audit trail as is.
    detail: dict[str, int | str | bool | None] = Field(default_factory=dict, max_length=16)

    @field_validator("detail")
    @classmethod
    def _short_values(cls, detail: dict[str, int | str | bool | None]) -> dict[str, int | str | bool | None]:
        for key, value in detail.items():
            if len(key) > 32 or (isinstance(value, str) and len(value) > 4096):
                raise ValueError("detail keys are at most 32 characters and values at most 4096")
        return detail


class ExtendIn(Body):
    duration: str = Field(min_length=1, max_length=16)
    reason: str = Field(max_length=1000)


class ExtensionApproveIn(Body):
    comment: str | None = Field(default=None, max_length=1000)

"""Request bodies of the public API. Bounds live here so bad input is refused before any work is done."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class SessionEndIn(Body):
    reason: str = Field(min_length=1, max_length=16)
    bytes_in: int = Field(ge=0, le=2**63 - 1)
    bytes_out: int = Field(ge=0, le=2**63 - 1)
    detail: str | None = Field(default=None, max_length=1000)
    recording: RecordingIn | None = None


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

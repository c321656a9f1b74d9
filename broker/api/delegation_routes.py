"""Delegation to AI agents: a sponsor gives their agent a subset of one of their live grants."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field, field_validator

from broker.access import delegation
from broker.api.deps import CurrentIdentity, NowDep, SessionDep, StateDep
from broker.api.schemas import CONTROL_CHARACTERS, Body
from broker.api.views import grant_view
from broker.inventory.gateways import current_gateway

router = APIRouter(tags=["delegation"])


class DelegateIn(Body):
    agent: str = Field(min_length=1, max_length=64)
    duration: str = Field(min_length=1, max_length=16)
    # Both null: SSH if the sponsor's grant has it, else its ports.
    ssh: bool | None = None
    ports: list[int] | None = Field(default=None, max_length=32)
    allow_writes: bool = False
    # Exact argv lists (the CLI splits each --command with shlex); bounds checked again by the domain.
    commands: list[list[str]] = Field(default_factory=list, max_length=delegation.MAX_COMMANDS)
    public_key: str | None = Field(default=None, max_length=4096)
    reason: str | None = Field(default=None, max_length=1000)

    @field_validator("commands")
    @classmethod
    def _plain_arguments(cls, commands: list[list[str]]) -> list[list[str]]:
        for argv in commands:
            if len(argv) > delegation.MAX_ARGUMENTS or any(CONTROL_CHARACTERS.search(arg) for arg in argv):
                raise ValueError(f"a command has at most {delegation.MAX_ARGUMENTS} arguments, without control "
                                 "characters")
        return commands


@router.post("/grants/{grant_id}/delegate", status_code=201)
def delegate(grant_id: str, body: DelegateIn, identity: CurrentIdentity, state: StateDep, session: SessionDep,
             now: NowDep) -> dict[str, Any]:
    grant = delegation.delegate(session, vault=state.vault, now=now, sponsor=identity, grant_id=grant_id,
                                ask=delegation.Delegation(
                                    agent=body.agent, duration=body.duration, ssh=body.ssh, ports=body.ports,
                                    allow_writes=body.allow_writes, commands=body.commands,
                                    public_key=body.public_key, reason=body.reason))
    return {
        **grant_view(grant, now, viewer=identity, gateway=current_gateway(session, grant.asset.site)),
        "parent_grant_id": grant.parent_grant_id,
        "sponsor": identity.username,
        "allowed_commands": grant.allowed_commands,
        # Only the agent's private key makes this certificate usable; the sponsor hands it over when the agent has
        # not joined yet (a key given with the delegation). An agent that joined fetches it with its own token.
        "certificate": grant.certificate,
    }

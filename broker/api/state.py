"""What the broker's web application holds for its whole life: settings, database, vault, event hub."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from broker.audit.refusals import RefusalRecorder
from broker.db import GroupCommit
from broker.identity.authentication import LoginPolicy
from broker.identity.oidc_provider import RelyingParty
from broker.inventory.gateway_events import EventHub
from broker.keys.vault import Vault
from broker.settings import Settings


@dataclass
class BrokerState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    vault: Vault
    hub: EventHub
    # Refusals the domain did not audit itself, written afterwards and capped per source (broker.refusals); it also
    # caps, per source, the ones the domain audits itself (its gate on each request's transaction).
    refusals: RefusalRecorder
    # The gateways' reports (sessions starting and ending, their events) share commits (broker.db.GroupCommit).
    group: GroupCommit

    @property
    def login_policy(self) -> LoginPolicy:
        return LoginPolicy.from_settings(self.settings)

    @cached_property
    def oidc(self) -> RelyingParty | None:
        """The plant's identity provider, if staff sign in with it: one per process, so its keys are cached."""
        return RelyingParty(self.settings.oidc) if self.settings.oidc is not None else None

"""A domain function enforces its own preconditions (issue 10): reads expire overdue requests themselves, and a
lockdown checks the actor's authority over the site itself, whichever route or command calls it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from broker.access import oversight, workflow
from broker.containment import lockdown
from broker.errors import Forbidden
from broker.inventory.gateway_events import NullPublisher
from broker.models import Identity
from tests.fixtures.broker import Plant, new_public_key


def _identity(session: object, username: str) -> Identity:
    return session.scalars(select(Identity).where(Identity.username == username)).one()  # type: ignore[attr-defined]


def test_reads_expire_overdue_requests_themselves(plant: Plant) -> None:
    with plant.session() as session:
        vendor = _identity(session, "vendor1")
        request = workflow.create_request(
            session, now=plant.clock.now(), decide_within=plant.settings.decide_within, requester=vendor,
            asset_name="hmi-01", duration="1h", reason="r", ssh=True, ports=[], start=None, public_key=new_public_key())
        request_id = request.id
    later = plant.clock.now() + plant.settings.decide_within
    with plant.session() as session:
        vendor, supervisor = _identity(session, "vendor1"), _identity(session, "sup-a1")
        assert oversight.pending_queue(session, supervisor=supervisor, now=later) == []
        assert [r.status for r in oversight.own_requests(session, now=later, identity=vendor)] == ["expired"]
        assert workflow.get_request(session, now=later, viewer=vendor, request_id=request_id).status == "expired"
    assert [e["subject"] for e in plant.audit("access:request:expired")] == [request_id]


def test_a_lockdown_checks_the_actors_authority_itself(plant: Plant) -> None:
    plant.ensure("vendor1", "sup-b")
    for who in ("vendor1", "sup-b"):
        with pytest.raises(Forbidden, match="only supervisors of plant-a"), plant.session() as session:
            lockdown.lock_down_site(session, now=plant.clock.now(), events=NullPublisher(),
                                       actor=_identity(session, who), site_name="plant-a", reason="not mine")
    assert plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0] in (False, 0)
    assert [e["actor"] for e in plant.audit("containment:site:refused")] == ["vendor1", "sup-b"]
    with plant.session() as session:
        lockdown.lock_down_site(session, now=plant.clock.now(), events=NullPublisher(),
                                   actor=lockdown.LocalOperator("cli:ops"), site_name="plant-a", reason="drill")
    assert plant.audit("containment:site:locked_down")[-1]["actor"] == "cli:ops"

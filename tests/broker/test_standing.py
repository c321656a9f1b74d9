"""Standing access for automation (issue 11): the plant approves once (`gatepass admin standing add`, at most 90
days, weekly windows); each request the policy covers is granted at once for at most an hour, never past the
window or the policy's end, and audited as a use; anything it does not cover goes to the plant as usual."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select

from broker.access import workflow
from broker.models import AccessRequest, Identity
from tests.broker.conftest import AdminCli
from tests.fixtures.broker import T0, Plant, new_public_key, parse_certificate

SERVICE = "historian"
# T0 is Friday 2026-11-27 08:00 UTC.
UNTIL = "2027-01-15"


@pytest.fixture
def service(plant: Plant) -> str:
    plant.ensure("sup-a1")
    plant.add_user(SERVICE, role="vendor", kind="service", owner="sup-a1", sites=["plant-a"])
    return SERVICE


def _approve(admin_cli: AdminCli, *args: str) -> dict[str, Any]:
    code, out, err = admin_cli("admin", "standing", "add", SERVICE, "--until", UNTIL, "--json", *args)
    assert code == 0, err
    policy: dict[str, Any] = json.loads(out)
    return policy


def _request(plant: Plant, *, asset: str = "hmi-01", duration: str = "4h", ssh: bool = True,
             ports: list[int] | None = None, read_only: bool = False,
             start: dt.datetime | None = None) -> dict[str, Any]:
    """`gatepass request` by the service identity, as the API route runs it (with the vault)."""
    with plant.session() as session:
        requester = session.scalars(select(Identity).where(Identity.username == SERVICE)).one()
        request = workflow.create_request(
            session, now=plant.clock.now(), decide_within=plant.settings.decide_within, requester=requester,
            asset_name=asset, duration=duration, reason="nightly historian export", ssh=ssh, ports=ports or [],
            start=start, public_key=new_public_key(), read_only=read_only, vault=plant.vault)
        return {"id": request.id, "status": request.status,
                "grant": None if request.grant is None else {
                    "id": request.grant.id, "starts_at": request.grant.starts_at, "ends_at": request.grant.ends_at,
                    "policy": request.grant.standing_policy_id, "certificate": request.grant.certificate}}


def test_a_covered_request_is_granted_at_once_for_at_most_an_hour(plant: Plant, service: str,
                                                                   admin_cli: AdminCli) -> None:
    policy = _approve(admin_cli, "--asset", "hmi-01", "--ssh", "--window", "Mon-Fri 06:00-18:00")
    assert (policy["identity"], policy["asset"], policy["ssh"], policy["status"]) == (SERVICE, "hmi-01", True,
                                                                                        "active")

    used = _request(plant, duration="4h")

    assert used["status"] == "approved"
    grant = used["grant"]
    assert grant["policy"] == policy["id"]
    assert (grant["starts_at"], grant["ends_at"]) == (T0, T0 + dt.timedelta(hours=1))
    assert "permit-pty" not in parse_certificate(grant["certificate"]).extensions
    [event] = plant.audit("access:standing_policy:used")
    assert (event["actor"], event["subject"], event["site"]) == (SERVICE, policy["id"], "plant-a")
    assert (event["details"]["grant"], event["details"]["approved_by"]) == (grant["id"], policy["approved_by"])
    [created] = plant.audit("access:grant:created")
    assert created["subject"] == grant["id"]
    [approved] = plant.audit("access:standing_policy:approved")
    assert approved["details"]["windows"] == ["Mon-Fri 06:00-18:00"]
    row = plant.row("SELECT approvals_required, decided_at IS NOT NULL FROM access_requests WHERE id = :id",
                    id=used["id"])
    assert tuple(row) == (0, True)


def test_a_use_ends_with_the_window_and_the_policy(plant: Plant, service: str, admin_cli: AdminCli) -> None:
    _approve(admin_cli, "--asset", "hmi-01", "--ssh", "--window", "Fri 06:00-08:20")
    assert _request(plant)["grant"]["ends_at"] == T0 + dt.timedelta(minutes=20)
    code, _, err = admin_cli("admin", "standing", "add", SERVICE, "--asset", "plc-01", "--port", "502", "--until",
                             (T0 + dt.timedelta(minutes=5)).isoformat())
    assert code == 0, err
    assert _request(plant, asset="plc-01", ssh=False, ports=[502])["grant"]["ends_at"] == T0 + dt.timedelta(minutes=5)
    plant.clock.advance(dt.timedelta(minutes=30))  # the window has closed and the second policy has ended
    assert _request(plant)["status"] == "pending"
    assert _request(plant, asset="plc-01", ssh=False, ports=[502])["status"] == "pending"


@pytest.mark.parametrize(("when", "fields"), [
    (T0 + dt.timedelta(days=1), {}),  # Saturday: outside the window
    (T0 + dt.timedelta(hours=11), {}),  # Friday 19:00
    (T0, {"ports": [502], "ssh": False}),  # a service the policy does not cover
    (T0, {"asset": "hmi-b1"}),  # another asset
    (T0, {"start": T0 + dt.timedelta(hours=2)}),  # a window booked for later: the plant decides
])
def test_what_the_policy_does_not_cover_goes_to_the_plant(plant: Plant, service: str, admin_cli: AdminCli,
                                                          when: dt.datetime, fields: dict[str, Any]) -> None:
    plant.add_role(SERVICE, "vendor", "plant-b")
    _approve(admin_cli, "--asset", "hmi-01", "--ssh", "--window", "Mon-Fri 06:00-18:00")
    plant.clock.set(when)
    assert _request(plant, **fields)["status"] == "pending"
    assert plant.audit("access:standing_policy:used") == []


def test_a_read_only_policy_covers_read_only_requests_only(plant: Plant, service: str, admin_cli: AdminCli) -> None:
    _approve(admin_cli, "--asset", "plc-01", "--port", "502", "--read-only")
    assert _request(plant, asset="plc-01", ssh=False, ports=[502])["status"] == "pending"
    assert _request(plant, asset="plc-01", ssh=False, ports=[502], read_only=True)["status"] == "approved"


def test_revoking_a_policy_ends_its_uses_and_later_requests_go_to_the_plant(plant: Plant, service: str,
                                                                           admin_cli: AdminCli) -> None:
    policy = _approve(admin_cli, "--asset", "hmi-01", "--ssh")
    used = _request(plant)
    code, out, err = admin_cli("admin", "standing", "revoke", policy["id"], "--reason", "export moved to the DMZ")
    assert code == 0, err
    assert plant.row("SELECT revoked_at IS NOT NULL FROM grants WHERE id = :id", id=used["grant"]["id"])[0]
    assert plant.column("SELECT grant_id FROM grant_changes WHERE status = 'revoked'") == [used["grant"]["id"]]
    [revoked] = plant.audit("access:standing_policy:revoked")
    assert revoked["details"]["reason"] == "export moved to the DMZ"
    assert _request(plant)["status"] == "pending"
    code, out, _ = admin_cli("admin", "standing", "list", SERVICE)
    assert out.startswith(f"{policy['id']}  revoked  {SERVICE} -> hmi-01 (ssh) at any time until 2027-01-15T23:59")
    again = admin_cli("admin", "standing", "revoke", policy["id"], "--reason", "twice")
    assert again[0] == 1
    assert "already revoked" in again[2]


@pytest.mark.parametrize(("args", "why"), [
    (("--asset", "hmi-01", "--ssh", "--until", "2027-03-31"), "at most 90 days at a time"),
    (("--asset", "hmi-01", "--port", "9999"), "port 9999 is not a service of hmi-01"),
    (("--asset", "hmi-01", "--ssh", "--read-only"), "read-only access is only available for Modbus/TCP"),
    (("--asset", "plc-01", "--ssh"), "plc-01 offers no SSH service"),
    (("--asset", "hmi-01"), "name at least one service"),
    (("--asset", "hmi-01", "--ssh", "--window", "Funday 06:00-18:00"), "window 'Funday 06:00-18:00': 'funday'"),
    (("--asset", "hmi-b1", "--ssh"), "'historian' is not in scope at site plant-b"),
])
def test_a_policy_wider_than_allowed_is_refused(plant: Plant, service: str, admin_cli: AdminCli,
                                                args: tuple[str, ...], why: str) -> None:
    until = () if "--until" in args else ("--until", UNTIL)
    code, _, err = admin_cli("admin", "standing", "add", SERVICE, *args, *until)
    assert code == 1
    assert why in err
    assert plant.audit("access:standing_policy:approved") == []


@pytest.mark.parametrize("kind", ["human", "ai_agent"])
def test_standing_access_is_for_service_identities_only(plant: Plant, admin_cli: AdminCli, kind: str) -> None:
    plant.ensure("sup-a1")
    plant.add_user("someone", role="vendor", kind=kind, owner="sup-a1" if kind != "human" else None)
    code, _, err = admin_cli("admin", "standing", "add", "someone", "--asset", "hmi-01", "--ssh", "--until", UNTIL)
    assert code == 1
    assert f"'someone' is a {kind} identity: standing access is for service identities" in err
    with plant.session() as session:
        assert session.scalars(select(AccessRequest)).all() == []

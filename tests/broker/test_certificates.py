"""The grant certificate: one SSH user certificate per grant, scoped to its asset, window and services."""

from __future__ import annotations

import datetime as dt

import asyncssh
import pytest
from asyncssh.public_key import SSHOpenSSHCertificate

from tests.fixtures.broker import Api, Plant, new_public_key, parse_certificate

CLOCK_SKEW = dt.timedelta(seconds=30)
NEVER = ("permit-X11-forwarding", "permit-agent-forwarding", "permit-user-rc")


def _key_body(key: asyncssh.SSHKey) -> list[str]:
    """``[type, base64]`` of a public key, without its comment."""
    return key.export_public_key("openssh").decode().split()[:2]


def _ca_public_key(plant: Plant) -> asyncssh.SSHKey:
    return asyncssh.import_public_key(plant.row("SELECT public_key FROM authorities")[0])


def test_the_certificate_names_the_asset_window_grant_and_identity(api: Api, plant: Plant) -> None:
    key = new_public_key()
    grant = api.grant("vendor1", "sup-a1", asset="hmi-01", duration="2h", ssh=True, public_key=key)

    cert = parse_certificate(grant["certificate"])

    assert cert.key_type == "ssh-ed25519-cert-v01@openssh.com"
    assert cert.cert_type == 1  # a user certificate
    assert cert.principals == ["hmi-01"]
    starts_at, ends_at = (dt.datetime.fromisoformat(grant[k]) for k in ("starts_at", "ends_at"))
    assert cert.valid_before == int(ends_at.timestamp())
    assert cert.valid_after == int((starts_at - CLOCK_SKEW).timestamp())
    assert cert.key_id == f"gatepass grant={grant['id']} identity=vendor1"
    serial = plant.row("SELECT serial FROM grants WHERE id = :id", id=grant["id"])[0]
    assert cert.serial == serial
    assert 0 < serial < 2**63
    assert cert.critical_options == {}
    assert set(cert.extensions) == {"permit-pty"}
    # Signed by the broker's user CA, for the key the vendor sent.
    parsed = asyncssh.import_certificate(grant["certificate"])
    assert isinstance(parsed, SSHOpenSSHCertificate)
    assert _key_body(parsed.signing_key) == _key_body(_ca_public_key(plant))
    assert _key_body(parsed.key) == key.split()
    assert parsed.principals == ["hmi-01"]
    # The serial is exactly what the gateway presents to authorize.
    authorized = api.gateway().post("/gateway/authorize", json={"grant_id": grant["id"], "serial": cert.serial,
                                                                 "asset": "hmi-01", "peer": "198.51.100.7:50123"})
    assert authorized.status_code == 200, authorized.text
    [issued] = plant.audit("ca:certificate:issued")
    assert issued["subject"] == grant["id"]
    assert issued["details"]["serial"] == serial


@pytest.mark.parametrize(("asset", "ssh", "ports", "extensions"), [
    ("plc-01", False, [502], {"permit-port-forwarding"}),
    ("hmi-01", True, [502, 4840], {"permit-pty", "permit-port-forwarding"}),
    ("hmi-01", False, [4840], {"permit-port-forwarding"}),
])
def test_extensions_follow_the_granted_services(shared_api: Api, asset: str, ssh: bool, ports: list[int],
                                               extensions: set[str]) -> None:
    grant = shared_api.grant("vendor1", "sup-a1", asset=asset, ssh=ssh, ports=ports)

    cert = parse_certificate(grant["certificate"])

    assert set(cert.extensions) == extensions
    assert not set(cert.extensions) & set(NEVER)
    assert cert.critical_options == {}
    assert grant["ports"] == ports


# An AI agent never requests (its grants are delegated): tests/broker/test_delegation.py checks its certificates.
@pytest.mark.parametrize("kind", ["service"])
def test_non_human_identities_never_get_a_pty_or_an_interactive_session(api: Api, plant: Plant, kind: str) -> None:
    """DESIGN invariant 5: no interactive shell for service accounts and AI agents, even with SSH granted.
    (They cannot sign in to the API with a password, so the request is made through the domain layer.)"""
    name = f"{kind.replace('_', '-')}-maint"
    plant.add_user(name, role="vendor", kind=kind, owner="admin")

    grant_id = plant.request_and_approve(name, "sup-a1", asset="hmi-01", ssh=True, ports=[502])

    certificate, serial = plant.row("SELECT certificate, serial FROM grants WHERE id = :id", id=grant_id)
    cert = parse_certificate(certificate)
    assert cert.key_id == f"gatepass grant={grant_id} identity={name}"
    assert set(cert.extensions) == {"permit-port-forwarding"}
    [issued] = plant.audit("ca:certificate:issued")
    assert issued["details"]["permit_pty"] is False
    authorized = api.gateway().post("/gateway/authorize", json={"grant_id": grant_id, "serial": serial,
                                                                 "asset": "hmi-01"})
    assert authorized.status_code == 200, authorized.text
    assert (authorized.json()["identity_kind"], authorized.json()["interactive"]) == (kind, False)


def test_only_the_grantee_receives_the_certificate(shared_api: Api) -> None:
    grant = shared_api.grant("vendor1", "sup-a1")

    as_supervisor = shared_api.as_user("sup-a1").get(f"/grants/{grant['id']}").json()
    as_security = shared_api.as_user("sec1").get(f"/grants/{grant['id']}").json()

    assert grant["certificate"].startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert as_supervisor["certificate"] is None
    assert as_security["certificate"] is None
    assert shared_api.as_user("vendor2").get(f"/grants/{grant['id']}").status_code == 404


def test_a_scheduled_grant_starts_at_the_requested_time(api: Api, plant: Plant) -> None:
    start = plant.clock.now() + dt.timedelta(hours=2)
    request = api.create_request("vendor1", start=start.isoformat(), duration="1h")

    approved = api.approve("sup-a1", request["id"])

    assert approved.status_code == 200, approved.text
    summary = approved.json()["grant"]
    assert summary["status"] == "scheduled"
    assert dt.datetime.fromisoformat(summary["starts_at"]) == start
    assert dt.datetime.fromisoformat(summary["ends_at"]) == start + dt.timedelta(hours=1)
    grant = api.as_user("vendor1").get(f"/grants/{summary['id']}").json()
    cert = parse_certificate(grant["certificate"])
    assert cert.valid_after == int((start - CLOCK_SKEW).timestamp())
    assert cert.valid_before == int((start + dt.timedelta(hours=1)).timestamp())
    usable = api.as_user("vendor1").get("/grants", params={"usable": "true"}).json()
    assert [g["id"] for g in usable] == [summary["id"]]

    plant.clock.set(start)
    assert api.as_user("vendor1").get(f"/grants/{summary['id']}").json()["status"] == "active"
    plant.clock.set(start + dt.timedelta(hours=1))
    assert api.as_user("vendor1").get(f"/grants/{summary['id']}").json()["status"] == "expired"
    assert api.as_user("vendor1").get("/grants", params={"usable": "true"}).json() == []


def test_every_grant_gets_its_own_serial(shared_api: Api) -> None:
    plant = shared_api.plant
    for _ in range(3):
        shared_api.grant("vendor2", "sup-a2", asset="plc-01", ssh=False, ports=[502])

    serials = plant.column("SELECT serial FROM grants")

    assert len(serials) == len(set(serials)) >= 3


def test_a_scheduled_request_approved_late_still_ends_when_asked(api: Api, plant: Plant) -> None:
    start = plant.clock.now() + dt.timedelta(minutes=10)
    request = api.create_request("vendor1", start=start.isoformat(), duration="1h")
    plant.clock.set(start + dt.timedelta(minutes=20))  # the supervisor decides 20 minutes into the window

    summary = api.approve("sup-a1", request["id"]).json()["grant"]

    assert dt.datetime.fromisoformat(summary["starts_at"]) == plant.clock.now()
    assert dt.datetime.fromisoformat(summary["ends_at"]) == start + dt.timedelta(hours=1)


def test_an_empty_shorten_to_is_refused_not_ignored(api: Api, plant: Plant) -> None:
    request = api.create_request("vendor1", duration="1h")
    response = api.as_user("sup-a1").post(f"/requests/{request['id']}/approve", json={"shorten_to": ""})
    assert response.status_code == 400
    assert plant.count("decisions") == 0

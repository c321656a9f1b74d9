"""AI-agent delegation (issue 11): a sponsor gives their agent a subset of a live grant over the API; anything
wider is refused with the reason and audited; the delegated grant is read-only with listed commands, appears in
histories, names the sponsor in every gateway event, and ends when the sponsor's grant ends or is revoked."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncssh
import httpx
import pytest
from sqlalchemy import select, text

from broker.access import workflow
from broker.errors import Forbidden
from broker.identity import lifecycle
from broker.inventory.gateway_events import NullPublisher
from broker.models import Identity, WorkloadInstance
from tests.broker.conftest import AdminCli
from tests.broker.test_gateway_api import PEER, _serial
from tests.fixtures.broker import Api, Plant, assert_refusal, new_public_key, parse_certificate

AGENT = "agent-7"
LISTED = [["systemctl", "status", "plc-bridge"], ["cat", "/var/log/plc.log"]]


@pytest.fixture
def agent(plant: Plant) -> str:
    """An AI agent sponsored (and owned) by vendor1, in scope at plant-a."""
    plant.ensure("vendor1")
    plant.add_user(AGENT, role="vendor", sites=["plant-a"], kind="ai_agent", owner="vendor1", sponsor="vendor1")
    return AGENT


def _delegate(api: Api, grant_id: str, user: str = "vendor1", **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {"agent": AGENT, "duration": "10m", "commands": LISTED, "public_key": new_public_key()}
    body.update(fields)
    return api.as_user(user).post(f"/grants/{grant_id}/delegate", json=body)


def _delegated(api: Api, grant_id: str, **fields: Any) -> dict[str, Any]:
    response = _delegate(api, grant_id, **fields)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _authorize(api: Api, plant: Plant, grant_id: str) -> httpx.Response:
    return api.gateway().post("/gateway/authorize", json={"grant_id": grant_id, "serial": _serial(plant, grant_id),
                                                          "asset": "hmi-01", "peer": PEER})


def test_a_sponsor_delegates_a_read_only_subset_with_listed_commands(api: Api, plant: Plant, agent: str) -> None:
    parent = api.grant("vendor1", "sup-a1", ssh=True, ports=[502])
    key = new_public_key()

    child = _delegated(api, parent["id"], public_key=key, reason="collect the PLC bridge's status")

    assert (child["identity"], child["asset"], child["parent_grant_id"], child["sponsor"]) == (
        agent, "hmi-01", parent["id"], "vendor1")
    # Neither --ssh nor --port: SSH, as the parent has it; no ports.
    assert (child["ssh"], child["ports"], child["read_only"], child["status"]) == (True, [], True, "active")
    assert child["allowed_commands"] == LISTED
    assert child["ends_at"] == (plant.clock.now() + dt.timedelta(minutes=10)).isoformat()
    cert = parse_certificate(child["certificate"])
    assert cert.key_id == f"gatepass grant={child['id']} identity={agent}"
    assert cert.principals == ["hmi-01"]
    assert set(cert.extensions) == set()  # no PTY, no forwarding: SSH commands only
    assert asyncssh.import_certificate(child["certificate"]).key.export_public_key("openssh").decode().strip() == key
    # It shows in histories like any grant: a request by the agent, approved by nobody, naming sponsor and parent.
    request = api.as_user("sup-a1").get(f"/requests/{child['request_id']}").json()
    assert (request["requester"], request["status"], request["approvals_required"]) == (agent, "approved", 0)
    assert request["reason"] == f"delegated by vendor1 from {parent['id']}: collect the PLC bridge's status"
    [event] = plant.audit("access:grant:delegated")
    assert (event["actor"], event["subject"], event["site"]) == ("vendor1", child["id"], "plant-a")
    assert event["details"] | {"agent": agent, "sponsor": "vendor1", "parent_grant": parent["id"],
                               "commands": LISTED, "read_only": True} == event["details"]
    issued = plant.audit("ca:certificate:issued")[-1]
    assert (issued["actor"], issued["details"]["sponsor"], issued["details"]["permit_pty"]) == (
        agent, "vendor1", False)


def test_without_a_reason_the_history_says_what_was_delegated(api: Api, plant: Plant, agent: str) -> None:
    parent = api.grant("vendor1", "sup-a1", ssh=True, ports=[502])
    child = _delegated(api, parent["id"], ssh=True, ports=[502], commands=[["uptime"]])
    reason = plant.row("SELECT reason FROM access_requests WHERE id = :id", id=child["request_id"])[0]
    assert reason == f"delegated by vendor1 from {parent['id']}: read-only; exec of uptime; ports 502"


@pytest.mark.parametrize(("fields", "why"), [
    ({"duration": "3h"}, "after grant {parent} ends"),
    ({"ssh": True, "ports": [502]}, "port 502 is not part of grant {parent} (its ports: none)"),
    ({"allow_writes": True}, "site plant-a does not let AI agents write"),
    ({"agent": "vendor2"}, "'vendor2' is not an AI agent"),
    ({"agent": "nobody-here"}, "'nobody-here' is not an AI agent"),
])
def test_anything_wider_is_refused_with_the_reason_and_audited(api: Api, plant: Plant, agent: str,
                                                               fields: dict[str, Any], why: str) -> None:
    plant.ensure("vendor2")
    parent = api.grant("vendor1", "sup-a1", duration="2h")  # SSH only
    grants = plant.count("grants")

    body = assert_refusal(_delegate(api, parent["id"], **fields), 403, "forbidden")

    assert why.format(parent=parent["id"]) in body["message"]
    assert plant.count("grants") == grants
    [event] = plant.audit("access:delegation:refused")
    assert (event["actor"], event["subject"], event["outcome"]) == ("vendor1", parent["id"], "refused")
    assert event["details"]["reason"] == body["message"]
    assert event["details"]["sponsor"] == "vendor1"


def test_ssh_is_refused_from_a_grant_without_it_and_ports_must_be_read_only_filtered(
        api: Api, plant: Plant, agent: str) -> None:
    parent = api.grant("vendor1", "sup-a1", ssh=False, ports=[502, 4840])
    no_ssh = assert_refusal(_delegate(api, parent["id"], ssh=True, ports=[502], commands=[]), 403)
    assert f"grant {parent['id']} does not cover SSH" in no_ssh["message"]
    unfiltered = assert_refusal(_delegate(api, parent["id"], ssh=False, ports=[4840], commands=[]), 403)
    assert "port 4840 cannot be delegated read-only" in unfiltered["message"]
    # Neither given: the parent's ports, and 4840 cannot be held to reads.
    assert_refusal(_delegate(api, parent["id"], commands=[]), 403)
    child = _delegated(api, parent["id"], ssh=False, ports=[502], commands=[])
    assert (child["ssh"], child["ports"], child["read_only"]) == (False, [502], True)
    assert len(plant.audit("access:delegation:refused")) == 3


def test_only_the_grantee_delegates_only_to_their_own_usable_agent(api: Api, plant: Plant, agent: str) -> None:
    plant.ensure("vendor2")
    plant.add_user("agent-9", role="vendor", kind="ai_agent", owner="vendor2", sponsor="vendor2")
    parent = api.grant("vendor1", "sup-a1")

    by_supervisor = assert_refusal(_delegate(api, parent["id"], user="sup-a1"), 403)
    assert by_supervisor["message"] == f"only the grantee (vendor1) can delegate grant {parent['id']}"
    assert_refusal(_delegate(api, parent["id"], user="vendor2"), 404, "not_found")
    other = assert_refusal(_delegate(api, parent["id"], agent="agent-9"), 403)
    assert "vendor1 is not the sponsor of the AI agent 'agent-9'" in other["message"]
    with plant.session() as session:
        lifecycle.suspend(session, now=plant.clock.now(), events=NullPublisher(), actor="test", username=agent,
                          reason="testing")
    suspended = assert_refusal(_delegate(api, parent["id"]), 403)
    assert f"the account '{agent}' is" in suspended["message"]


def test_a_delegated_grant_cannot_be_delegated_again_nor_an_ended_one(api: Api, plant: Plant, agent: str) -> None:
    parent = api.grant("vendor1", "sup-a1")
    assert api.as_user("vendor1").post(f"/grants/{parent['id']}/revoke", json={}).status_code == 200
    ended = assert_refusal(_delegate(api, parent["id"]), 403)
    assert f"grant {parent['id']} is revoked: only an active grant can be delegated" == ended["message"]


def test_bad_commands_are_refused_before_anything_happens(api: Api, plant: Plant, agent: str) -> None:
    parent = api.grant("vendor1", "sup-a1")
    assert_refusal(_delegate(api, parent["id"], commands=[[]]), 400)
    assert_refusal(_delegate(api, parent["id"], commands=[["echo", "a\x01b"]]), 400)
    assert_refusal(_delegate(api, parent["id"], commands=[["uptime"]] * 40), 400)
    assert_refusal(_delegate(api, parent["id"], duration="soon"), 400)
    assert plant.audit("access:grant:delegated") == []


def test_the_certificate_goes_to_the_agents_joined_key(api: Api, plant: Plant, agent: str) -> None:
    parent = api.grant("vendor1", "sup-a1")
    no_key = assert_refusal(_delegate(api, parent["id"], public_key=None), 400)
    assert "has not joined from its machine yet" in no_key["message"]
    joined = asyncssh.generate_private_key("ssh-ed25519")
    line = joined.export_public_key("openssh").decode().strip()
    with plant.session() as session:
        agent_id = plant.row("SELECT id FROM identities WHERE username = :u", u=agent)[0]
        session.add(WorkloadInstance(id="wli-00000001", identity_id=agent_id, public_key=line,
                                     fingerprint=joined.get_fingerprint(), status="active", renewals=0,
                                     created_at=plant.clock.now()))

    child = _delegated(api, parent["id"], public_key=None)

    assert asyncssh.import_certificate(child["certificate"]).key.export_public_key("openssh").decode().strip() == line
    stranger = assert_refusal(_delegate(api, parent["id"], public_key=new_public_key()), 403)
    assert f"not the key of any machine '{agent}' joined from" in stranger["message"]


def test_revoking_the_sponsors_grant_or_suspending_the_sponsor_ends_the_agents(
        api: Api, plant: Plant, agent: str) -> None:
    first = api.grant("vendor1", "sup-a1")
    child = _delegated(api, first["id"])

    assert api.as_user("vendor1").post(f"/grants/{first['id']}/revoke", json={"reason": "done"}).status_code == 200

    assert plant.row("SELECT revoked_by FROM grants WHERE id = :id", id=child["id"])[0] == "vendor1"
    revoked = {e["subject"]: e for e in plant.audit("access:grant:revoked")}
    assert set(revoked) == {first["id"], child["id"]}
    assert revoked[child["id"]]["details"]["reason"] == (
        f"grant {first['id']}, which it was delegated from, was revoked by vendor1")
    changes = plant.column("SELECT grant_id || ':' || reason FROM grant_changes WHERE status = 'revoked'")
    # The agent's gateway line says its grant ended with the one it came from.
    assert set(changes) == {f"{first['id']}:revoked", f"{child['id']}:delegation_ended"}

    second = api.grant("vendor1", "sup-a1")
    again = _delegated(api, second["id"])
    with plant.session() as session:
        lifecycle.suspend(session, now=plant.clock.now(), events=NullPublisher(), actor="test", username="vendor1",
                          reason="left the company")
    assert plant.row("SELECT revoked_at IS NOT NULL FROM grants WHERE id = :id", id=again["id"])[0]
    # Not "your identity was suspended" on the agent's screen: its sponsor was.
    assert plant.row("SELECT reason FROM grant_changes WHERE grant_id = :id", id=again["id"])[0] == (
        "delegation_ended")


def test_the_gateway_gets_the_list_download_only_and_reads_only_and_hears_the_sponsor(
        api: Api, plant: Plant, agent: str) -> None:
    parent = api.grant("vendor1", "sup-a1", ssh=True, ports=[502])
    child = _delegated(api, parent["id"], ssh=True, ports=[502])

    answer = _authorize(api, plant, child["id"])

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["identity"], body["identity_kind"], body["interactive"]) == (agent, "ai_agent", False)
    assert (body["allowed_commands"], body["read_only"], body["transfers"]) == (LISTED, True, "download_only")
    assert _authorize(api, plant, parent["id"]).json()["allowed_commands"] is None
    authorized = plant.audit("gateway:connection:authorized")[0]
    assert (authorized["actor"], authorized["details"]["sponsor"]) == (agent, "vendor1")

    gateway = api.gateway()
    started = gateway.post("/gateway/sessions", json={"grant_id": child["id"], "kind": "exec", "peer": PEER,
                                                      "command": "systemctl status plc-bridge"})
    assert started.status_code == 201, started.text
    session_id = started.json()["session_id"]
    assert gateway.post(f"/gateway/sessions/{session_id}/events", json={
        "kind": "file_refused", "detail": {"path": "/tmp/x", "reason": "downloads only"}}).status_code == 204
    assert gateway.post("/gateway/refusals", json={"grant_id": child["id"], "kind": "exec",
                                                   "reason": "`rm -rf /` is not one of them"}).status_code == 204
    assert gateway.post(f"/gateway/sessions/{session_id}/end", json={
        "reason": "client_closed", "bytes_in": 0, "bytes_out": 10, "detail": None}).status_code == 204
    for action in ("gateway:session:started", "gateway:file:refused", "gateway:connection:refused",
                   "gateway:session:ended"):
        [event] = plant.audit(action)
        assert (event["actor"], event["details"]["sponsor"], event["details"]["parent_grant"]) == (
            agent, "vendor1", parent["id"]), action
    # A human's own grant reads as before: no sponsor.
    assert "sponsor" not in plant.audit("gateway:connection:authorized")[1]["details"]


def test_writes_need_the_sites_policy_and_it_is_checked_again_at_each_login(
        api: Api, plant: Plant, agent: str, admin_cli: AdminCli) -> None:
    parent = api.grant("vendor1", "sup-a1", ssh=True, ports=[502])
    assert_refusal(_delegate(api, parent["id"], allow_writes=True), 403)

    code, out, err = admin_cli("admin", "site", "set", "plant-a", "--agent-writes", "on")
    assert code == 0, err
    assert out == "Site plant-a: agent writes off -> on\n"
    child = _delegated(api, parent["id"], ssh=True, ports=[502], allow_writes=True)
    assert child["read_only"] is False
    assert (_authorize(api, plant, child["id"]).json()["read_only"],
            _authorize(api, plant, child["id"]).json()["transfers"]) == (False, "both")

    assert admin_cli("admin", "site", "set", "plant-a", "--agent-writes", "off")[0] == 0
    again = _authorize(api, plant, child["id"]).json()
    assert (again["read_only"], again["transfers"]) == (True, "download_only")
    [updated, _off] = plant.audit("admin:site:updated")
    assert updated["details"] == {"agent_writes": {"old": False, "new": True}}


def test_a_delegated_grant_whose_parent_ended_is_refused_at_the_gateway(api: Api, plant: Plant, agent: str) -> None:
    """Defence in depth: even were the cascade missed (a row revoked by hand), the gateway is refused."""
    parent = api.grant("vendor1", "sup-a1")
    child = _delegated(api, parent["id"])
    with plant.engine.begin() as connection:
        connection.execute(text("UPDATE grants SET revoked_at = created_at WHERE id = :id"), {"id": parent["id"]})

    body = assert_refusal(_authorize(api, plant, child["id"]), 403)

    assert body["message"] == (f"this delegated grant can no longer be used: the grant it was delegated from "
                               f"({parent['id']}) is revoked")
    refused = plant.audit("gateway:connection:refused")[-1]
    assert refused["details"]["sponsor"] == "vendor1"


def test_an_ai_agent_needs_an_active_human_sponsor(admin_cli: AdminCli, plant: Plant) -> None:
    plant.ensure("vendor1")
    base = ("admin", "user", "add", "agent-x", "--role", "vendor", "--kind", "ai_agent", "--owner", "vendor1",
            "--purpose", "reads PLC logs")
    code, _, err = admin_cli(*base)
    assert code == 1
    assert "an AI agent needs a sponsor (--sponsor)" in err
    code, _, err = admin_cli(*base, "--sponsor", "nobody")
    assert (code, "sponsor 'nobody' is not an active human user" in err) == (1, True)
    code, _, err = admin_cli(*base, "--sponsor", "vendor1")
    assert code == 0, err
    sponsor_id, vendor_id = plant.row("SELECT i.sponsor_id, v.id FROM identities i, identities v "
                                      "WHERE i.username = 'agent-x' AND v.username = 'vendor1'")
    assert sponsor_id == vendor_id
    assert plant.audit("admin:identity:created")[-1]["details"]["sponsor"] == "vendor1"


def test_an_ai_agent_never_asks_the_plant_itself(plant: Plant, agent: str) -> None:
    """It acts only on delegation: its own request is refused and audited, even with the vendor role."""
    def ask() -> None:
        with plant.session() as session:
            requester = session.scalars(select(Identity).where(Identity.username == agent)).one()
            workflow.create_request(session, now=plant.clock.now(), decide_within=plant.settings.decide_within,
                                    requester=requester, asset_name="hmi-01", duration="1h", reason="on my own",
                                    ssh=True, ports=[], start=None, public_key=new_public_key())

    with pytest.raises(Forbidden, match="an AI agent does not ask the plant for access itself"):
        ask()
    [refused] = plant.audit("access:request:refused")
    assert (refused["actor"], refused["outcome"]) == (agent, "refused")
    assert plant.count("access_requests") == 0

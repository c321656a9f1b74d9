"""Refusals are in the audit trail (IEC 62443-3-3 SR 2.8, SR 6.2): another vendor's grant, another site's session,
deciding twice or too late — each an event with actor, source and reason, and a flood from one source becomes
one summarising event instead of filling the trail. Against the real broker under uvicorn."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.audit.refusals import DEFAULT_CAP_PER_MINUTE
from tests.fixtures.broker import Api, Plant, assert_refusal


def refusals(plant: Plant, after_seq: int) -> list[dict[str, Any]]:
    return plant.audit("api:request:refused", after_seq=after_seq)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("get", "/grants/{id}", None),
    ("post", "/grants/{id}/revoke", {"reason": "mine now"}),
    ("post", "/grants/{id}/extend", {"duration": "1h", "reason": "more time"}),
])
def test_another_vendor_probing_a_grant_is_audited(api: Api, plant: Plant, method: str, path: str,
                                                   body: dict[str, str] | None) -> None:
    grant = api.grant("vendor1", "sup-a1")
    seq = plant.last_seq()
    client = api.as_user("vendor2")

    url = path.format(id=grant["id"])
    response = client.get(url) if method == "get" else client.post(url, json=body)

    assert response.status_code in (403, 404), response.text
    events = [*refusals(plant, seq), *plant.audit("access:extension:refused", after_seq=seq)]
    assert len(events) == 1, events
    [event] = events
    assert event["actor"] == "vendor2"
    assert event["outcome"] == "refused"
    assert event["details"]["source"] == "127.0.0.1"
    assert event["details"]["reason"]
    if event["action"] == "api:request:refused":
        assert event["subject"] == "/api/v1" + url
        assert event["details"]["status"] == response.status_code


def test_cancelling_another_vendors_request_is_audited(api: Api, plant: Plant) -> None:
    request = api.create_request("vendor1")
    seq = plant.last_seq()

    response = api.as_user("vendor2").post(f"/requests/{request['id']}/cancel")

    assert response.status_code == 404
    [event] = refusals(plant, seq)
    assert (event["actor"], event["details"]["status"]) == ("vendor2", 404)
    assert plant.row("SELECT status FROM access_requests WHERE id = :id", id=request["id"])[0] == "pending"


def test_deciding_a_decided_request_is_audited(api: Api, plant: Plant) -> None:
    request = api.create_request("vendor1")
    assert api.approve("sup-a1", request["id"]).status_code == 200
    seq = plant.last_seq()

    twice = api.approve("sup-a1", request["id"])
    denied_after = api.as_user("sup-a2").post(f"/requests/{request['id']}/deny", json={"comment": "no"})

    assert_refusal(twice, 409, "conflict")
    assert_refusal(denied_after, 409, "conflict")
    events = refusals(plant, seq)
    assert [(e["actor"], e["details"]["status"]) for e in events] == [("sup-a1", 409), ("sup-a2", 409)]
    assert "already approved" in events[0]["details"]["reason"]


def test_a_supervisor_of_another_site_ending_a_session_is_audited(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    seq = plant.last_seq()

    response = api.as_user("sup-b").post(f"/grants/{grant['id']}/revoke", json={"reason": "not mine"})

    assert_refusal(response, 404, "not_found")
    [event] = refusals(plant, seq)
    assert event["actor"] == "sup-b"
    assert plant.row("SELECT revoked_at FROM grants WHERE id = :id", id=grant["id"])[0] is None


def test_a_vendor_reading_the_audit_trail_is_audited_once(api: Api, plant: Plant) -> None:
    seq = plant.last_seq()

    response = api.as_user("vendor1").get("/audit/events")

    assert_refusal(response, 403, "forbidden")
    [event] = refusals(plant, seq)
    assert (event["actor"], event["subject"]) == ("vendor1", "/api/v1/audit/events")


def test_a_revoked_token_presented_again_is_audited_but_no_token_at_all_is_not(api: Api, plant: Plant) -> None:
    token = api.login("vendor1")
    assert api.client(token).post("/auth/logout").status_code in (200, 204)
    seq = plant.last_seq()

    assert api.client(token).get("/me").status_code == 401
    assert api.anonymous.get("/me").status_code == 401

    [event] = refusals(plant, seq)
    assert event["actor"] is None
    assert event["details"]["status"] == 401
    assert token not in str(event)  # the presented credential itself never reaches the trail


def test_a_flood_from_one_source_becomes_one_summary(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    client = api.as_user("vendor2")
    seq = plant.last_seq()
    flood = DEFAULT_CAP_PER_MINUTE + 15

    for _ in range(flood):
        assert client.get(f"/grants/{grant['id']}").status_code == 404

    assert len(refusals(plant, seq)) == DEFAULT_CAP_PER_MINUTE
    assert plant.audit("audit:refusals:summarised", after_seq=seq) == []
    # The minute is over: the next refusal from the source first writes the summary of the one before.
    plant.clock.advance(dt.timedelta(seconds=61))
    assert client.get(f"/grants/{grant['id']}").status_code == 404

    [summary] = plant.audit("audit:refusals:summarised", after_seq=seq)
    assert summary["details"]["source"] == "127.0.0.1"
    assert summary["details"]["refusals"] == 15
    assert summary["details"]["by_action"] == {"api:request:refused": 15}
    assert len(refusals(plant, seq)) == DEFAULT_CAP_PER_MINUTE + 1


def test_a_login_the_gateway_refused_is_audited_with_the_client_as_source(api: Api, plant: Plant) -> None:
    seq = plant.last_seq()
    attempt = {"kind": "certificate", "reason": "certificate is for hmi-01, not plc-01",
               "fingerprint": "SHA256:abc", "key_id": "gatepass grant=grt-1 identity=vendor1", "identity": "vendor1"}

    answer = api.gateway().post("/gateway/login-refusals", json={"peer": "192.0.2.7", "username": "plc-01",
                                                                  "attempts": [attempt], "more": 0})

    assert answer.status_code == 204, answer.text
    [event] = plant.audit("gateway:auth:refused", after_seq=seq)
    assert (event["actor"], event["subject"], event["outcome"]) == ("vendor1", "plc-01", "refused")
    assert event["details"]["source"] == "192.0.2.7"
    assert event["details"]["attempts"] == [attempt]
    assert "certificate is for hmi-01, not plc-01" in event["details"]["reason"]
    # Only a gateway may report one; a user token is refused (and that refusal is itself audited).
    assert api.as_user("vendor1").post("/gateway/login-refusals", json={
        "peer": "192.0.2.7", "username": "x", "attempts": [attempt]}).status_code == 401
    assert len(plant.audit("gateway:auth:refused", after_seq=seq)) == 1


def test_a_flood_of_refusals_the_domain_audits_itself_is_capped_too(api: Api, plant: Plant) -> None:
    """A vendor running a containment playbook is refused with its own audit event (in the refused request's
    transaction); hammered, those share the source's cap and the rest become one summary."""
    client = api.as_user("vendor1")
    seq = plant.last_seq()
    flood = DEFAULT_CAP_PER_MINUTE + 7
    body = {"site": "plant-a", "reason": "I think there is ransomware"}
    for _ in range(flood):
        answer = client.post("/playbooks/ransomware-suspected/run", json=body)
        assert answer.status_code == 403
        assert "may run ransomware-suspected" in answer.json()["message"]

    assert len(plant.audit("respond:playbook:refused", after_seq=seq)) == DEFAULT_CAP_PER_MINUTE
    plant.clock.advance(dt.timedelta(seconds=61))
    assert client.post("/playbooks/ransomware-suspected/run", json=body).status_code == 403

    [summary] = plant.audit("audit:refusals:summarised", after_seq=seq)
    assert summary["details"]["refusals"] == 7
    assert summary["details"]["by_action"] == {"forbidden (audited by the domain)": 7}
    assert len(plant.audit("respond:playbook:refused", after_seq=seq)) == DEFAULT_CAP_PER_MINUTE + 1
    # Nothing of the refused runs happened.
    assert plant.audit("respond:playbook:run", after_seq=seq) == []


def test_what_the_gateway_refused_for_many_vendors_is_never_summarised_away(api: Api, plant: Plant) -> None:
    """The gateway speaks for every vendor from one address (and caps its own reports per client connection):
    each refusal it reports stays in the trail one by one."""
    grant = api.grant("vendor1", "sup-a1")
    seq = plant.last_seq()
    flood = DEFAULT_CAP_PER_MINUTE + 5
    for _ in range(flood):
        answer = api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "tcp",
                                                               "peer": "10.0.0.5:50000", "port": 3389})
        assert answer.status_code == 403
    assert len(plant.audit("gateway:connection:refused", after_seq=seq)) == flood
    assert plant.audit("audit:refusals:summarised", after_seq=seq) == []

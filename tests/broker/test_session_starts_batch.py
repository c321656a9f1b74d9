"""`POST /gateway/sessions/batch`: the starts a gateway had waiting, in one call and one transaction, each
decided, recorded and audited exactly as a call of its own (issue 14, 1,000 tunnel connections at once)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.inventory.session_starts import MAX_STARTS_PER_CALL
from tests.fixtures.broker import Api, Plant, assert_refusal

PEER = "198.51.100.7:50123"


def _start(grant_id: str, port: int = 502) -> dict[str, Any]:
    return {"grant_id": grant_id, "kind": "tcp", "peer": PEER, "command": None, "port": port}


def test_every_start_in_a_call_is_its_own_session_with_its_own_audit_event(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1", asset="plc-01", ssh=False, ports=[502])

    response = api.gateway().post("/gateway/sessions/batch", json={"starts": [_start(grant["id"])] * 5})

    assert response.status_code == 200, response.text
    ids = [result["session_id"] for result in response.json()["results"]]
    assert len(set(ids)) == 5
    assert all(session_id.startswith("ses-") for session_id in ids)
    assert plant.count("sessions") == 5
    events = plant.audit("gateway:session:started")
    assert [event["subject"] for event in events] == ids
    assert {(event["actor"], event["details"]["grant"], event["details"]["port"]) for event in events} == {
        ("vendor1", grant["id"], 502)}


def test_a_refused_start_is_refused_and_audited_alone_and_the_others_are_recorded(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1", asset="plc-01", ssh=False, ports=[502])
    revoked = api.grant("vendor1", "sup-a1", asset="plc-01", ssh=False, ports=[502])
    api.as_user("vendor1").post(f"/grants/{revoked['id']}/revoke")
    starts = [_start(grant["id"]), _start(revoked["id"]), _start(grant["id"], port=4840),
              _start("grt-00000000"), _start(grant["id"])]

    response = api.gateway().post("/gateway/sessions/batch", json={"starts": starts})

    assert response.status_code == 200, response.text
    first, refused, other_port, unknown, last = response.json()["results"]
    assert (refused["status"], refused["error"]) == (403, "forbidden")
    assert "revoked" in refused["message"]
    assert (other_port["status"], other_port["error"]) == (403, "forbidden")
    assert "port 4840" in other_port["message"]
    assert (unknown["status"], unknown["error"]) == (404, "not_found")
    assert plant.count("sessions") == 2
    assert [event["subject"] for event in plant.audit("gateway:session:started")] == [
        first["session_id"], last["session_id"]]
    # As on POST /gateway/sessions: a refusal of a known grant is audited (the unknown one is not anyone's).
    refusals = plant.audit("gateway:connection:refused")
    assert [event["subject"] for event in refusals] == [revoked["id"], grant["id"]]
    assert "port 4840" in refusals[1]["details"]["reason"]


def test_a_batch_answers_like_single_calls(api: Api, plant: Plant) -> None:
    """The refusal a start gets in a batch is the one it gets alone (the gateway shows it to the vendor)."""
    revoked = api.grant("vendor1", "sup-a1", asset="plc-01", ssh=False, ports=[502])
    api.as_user("vendor1").post(f"/grants/{revoked['id']}/revoke")
    gateway = api.gateway()

    alone = gateway.post("/gateway/sessions", json=_start(revoked["id"]))
    [batched] = gateway.post("/gateway/sessions/batch", json={"starts": [_start(revoked["id"])]}).json()["results"]

    answer = assert_refusal(alone, 403, "forbidden")
    assert (batched["status"], batched["error"], batched["message"]) == (403, answer["error"], answer["message"])
    assert plant.count("sessions") == 0


@pytest.mark.parametrize("body", [
    {"starts": []},
    {"starts": [_start("grt-1")] * (MAX_STARTS_PER_CALL + 1)},
    {"starts": [{"grant_id": "grt-1", "kind": "tcp", "port": 0}]},
    {"starts": [{"grant_id": "grt-1", "kind": "tcp", "extra": 1}]},
    {},
], ids=["empty", "too many", "bad port", "unknown field", "no starts"])
def test_a_malformed_batch_is_refused_whole_and_records_nothing(shared_api: Api, body: dict[str, Any]) -> None:
    plant = shared_api.plant
    before, seq = plant.count("sessions"), plant.last_seq()

    response = shared_api.gateway().post("/gateway/sessions/batch", json=body)

    assert_refusal(response, 400, "invalid_input")
    assert plant.count("sessions") == before
    assert plant.audit(after_seq=seq) == []


def test_only_a_gateway_may_report_starts(api: Api) -> None:
    grant = api.grant("vendor1", "sup-a1", asset="plc-01", ssh=False, ports=[502])

    response = api.as_user("vendor1").post("/gateway/sessions/batch", json={"starts": [_start(grant["id"])]})

    assert_refusal(response, 401, "not_authenticated")


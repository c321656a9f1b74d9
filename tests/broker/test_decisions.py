"""Who decides a request, and what a decision does (DESIGN invariant 3)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.fixtures.broker import Api, Plant, assert_refusal


def _request_state(plant: Plant, request_id: str) -> tuple[str, int, int]:
    """(status, decisions, grants) for one request, read from the database."""
    status = plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0]
    decisions = plant.count("decisions", f"WHERE request_id = '{request_id}'")
    grants = plant.count("grants", f"WHERE request_id = '{request_id}'")
    return status, decisions, grants


def test_a_site_approver_approves_and_the_grant_starts_now(api: Api, plant: Plant) -> None:
    request = api.create_request("vendor1", duration="2h")
    now = plant.clock.now()

    response = api.approve("sup-a1", request["id"], comment="go ahead")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "approved"
    assert [(a["approver"], a["comment"]) for a in body["approvals"]] == [("sup-a1", "go ahead")]
    grant = body["grant"]
    assert grant["id"].startswith("grt-")
    assert grant["status"] == "active"
    assert dt.datetime.fromisoformat(grant["starts_at"]) == now
    assert dt.datetime.fromisoformat(grant["ends_at"]) == now + dt.timedelta(hours=2)
    assert _request_state(plant, request["id"]) == ("approved", 1, 1)
    actions = [e["action"] for e in plant.audit() if e["subject"] in (request["id"], grant["id"])]
    assert actions == ["access:request:created", "access:request:approval", "access:request:approved",
                       "access:grant:created", "ca:certificate:issued"]


@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_a_requester_never_decides_their_own_request(api: Api, plant: Plant, verb: str) -> None:
    plant.ensure("sup-a1")
    plant.add_role("sup-a1", "vendor")  # an approver of plant-a who is also a vendor there
    request = api.create_request("sup-a1")

    response = api.as_user("sup-a1").post(f"/requests/{request['id']}/{verb}", json={"comment": "mine"})

    body = assert_refusal(response, 403, "forbidden")
    assert "own request" in body["message"]
    assert _request_state(plant, request["id"]) == ("pending", 0, 0)
    [event] = plant.audit("access:decision:refused")
    assert (event["actor"], event["subject"], event["outcome"]) == ("sup-a1", request["id"], "refused")


@pytest.mark.parametrize("decider", ["sup-b", "vendor2", "sec1", "admin"])
@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_only_approvers_of_the_assets_site_decide(shared_api: Api, decider: str, verb: str) -> None:
    plant = shared_api.plant
    request = shared_api.create_request("vendor1")

    response = shared_api.as_user(decider).post(f"/requests/{request['id']}/{verb}",
                                                json={"comment": "not mine to decide"})

    body = assert_refusal(response, 403, "forbidden")
    assert "plant-a" in body["message"]
    assert _request_state(plant, request["id"]) == ("pending", 0, 0)
    [event] = [e for e in plant.audit("access:decision:refused") if e["subject"] == request["id"]]
    assert (event["actor"], event["site"], event["outcome"]) == (decider, "plant-a", "refused")


@pytest.mark.parametrize("why", ["site setting", "high criticality"])
def test_two_approvals_need_two_distinct_approvers(api: Api, plant: Plant, why: str) -> None:
    if why == "site setting":
        plant.add_site("plant-c", approvals_required=2)
        plant.add_asset("hmi-c1", site="plant-c", ssh="password")
        plant.add_user("sup-c1", role="supervisor", sites=["plant-c"])
        plant.add_user("sup-c2", role="supervisor", sites=["plant-c"])
        asset, first, second = "hmi-c1", "sup-c1", "sup-c2"
    else:
        asset, first, second = "rtu-01", "sup-a1", "sup-a2"  # plant-a needs one approval; rtu-01 is critical
    request = api.create_request("vendor1", asset=asset)
    assert request["approvals_required"] == 2

    once = api.approve(first, request["id"], comment="first")
    assert once.status_code == 200, once.text
    assert once.json()["status"] == "pending"
    assert once.json()["grant"] is None
    assert _request_state(plant, request["id"]) == ("pending", 1, 0)

    again = api.approve(first, request["id"], comment="me again")
    assert_refusal(again, 409, "conflict")
    assert _request_state(plant, request["id"]) == ("pending", 1, 0)

    twice = api.approve(second, request["id"], comment="second")
    assert twice.status_code == 200, twice.text
    body = twice.json()
    assert body["status"] == "approved"
    assert [a["approver"] for a in body["approvals"]] == [first, second]
    assert body["grant"]["status"] == "active"
    assert _request_state(plant, request["id"]) == ("approved", 2, 1)
    assert len(plant.audit("access:request:approval")) == 2
    assert len(plant.audit("access:request:approved")) == 1


def test_a_denial_needs_a_comment(shared_api: Api) -> None:
    plant = shared_api.plant
    request = shared_api.create_request("vendor1")
    supervisor = shared_api.as_user("sup-a1")
    seq = plant.last_seq()
    for body in ({"comment": ""}, {"comment": "   "}, {}, None, {"comment": "x" * 1001}, {"comment": 42}):
        response = supervisor.post(f"/requests/{request['id']}/deny", json=body)
        assert_refusal(response, 400, "invalid_input")
        assert _request_state(plant, request["id"]) == ("pending", 0, 0)
    assert plant.audit(after_seq=seq) == []

    response = supervisor.post(f"/requests/{request['id']}/deny", json={"comment": "not during the batch run"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "denied"
    assert body["denial"]["approver"] == "sup-a1"
    assert body["denial"]["comment"] == "not during the batch run"
    assert body["grant"] is None
    [event] = [e for e in plant.audit("access:request:denied") if e["subject"] == request["id"]]
    assert event["actor"] == "sup-a1"


@pytest.mark.parametrize("first", ["approve", "deny"])
@pytest.mark.parametrize("then", ["approve", "deny"])
def test_a_decided_request_cannot_be_decided_again(shared_api: Api, first: str, then: str) -> None:
    api, plant = shared_api, shared_api.plant
    request = api.create_request("vendor1")
    assert api.as_user("sup-a1").post(f"/requests/{request['id']}/{first}",
                                      json={"comment": "decided"}).status_code == 200
    before = _request_state(plant, request["id"])

    response = api.as_user("sup-a2").post(f"/requests/{request['id']}/{then}", json={"comment": "again"})

    body = assert_refusal(response, 409, "conflict")
    assert "already" in body["message"]
    assert _request_state(plant, request["id"]) == before


def test_undecided_requests_expire(api: Api, plant: Plant) -> None:
    request = api.create_request("vendor1")
    plant.clock.advance(plant.settings.decide_within - dt.timedelta(seconds=1))
    assert api.as_user("vendor1").get(f"/requests/{request['id']}").json()["status"] == "pending"

    plant.clock.advance(dt.timedelta(seconds=1))
    response = api.approve("sup-a1", request["id"])

    body = assert_refusal(response, 409, "conflict")
    assert "expired" in body["message"]
    assert api.as_user("vendor1").get(f"/requests/{request['id']}").json()["status"] == "expired"
    assert api.as_user("sup-a1").get("/requests", params={"pending": "true"}).json() == []
    assert _request_state(plant, request["id"]) == ("expired", 0, 0)
    [event] = plant.audit("access:request:expired")
    assert event["subject"] == request["id"]
    assert event["site"] == "plant-a"


def test_an_approver_may_shorten_the_window(api: Api, plant: Plant) -> None:
    request = api.create_request("vendor1", duration="2h")
    now = plant.clock.now()

    response = api.approve("sup-a1", request["id"], shorten_to="30m")

    assert response.status_code == 200, response.text
    ends_at = dt.datetime.fromisoformat(response.json()["grant"]["ends_at"])
    assert ends_at == now + dt.timedelta(minutes=30)
    # "Shorten" never lengthens.
    longer = api.create_request("vendor2", duration="1h")
    answer = api.approve("sup-a1", longer["id"], shorten_to="4h")
    assert dt.datetime.fromisoformat(answer.json()["grant"]["ends_at"]) == plant.clock.now() + dt.timedelta(hours=1)


@pytest.mark.parametrize("shorten_to", ["soon", "0m", "-1h", "30", "1w", "x" * 17])
def test_an_invalid_shorten_to_is_refused_and_the_request_is_untouched(shared_api: Api, shorten_to: str) -> None:
    api, plant = shared_api, shared_api.plant
    request = api.create_request("vendor1")
    supervisor = api.as_user("sup-a1")
    seq = plant.last_seq()

    response = supervisor.post(f"/requests/{request['id']}/approve", json={"shorten_to": shorten_to})

    assert_refusal(response, 400, "invalid_input")
    assert _request_state(plant, request["id"]) == ("pending", 0, 0)
    assert plant.audit(after_seq=seq) == []


def test_a_locked_down_site_refuses_approvals(api: Api, plant: Plant) -> None:
    request = api.create_request("vendor1")
    plant.set_locked_down("plant-a")

    response = api.approve("sup-a1", request["id"])

    body = assert_refusal(response, 409, "conflict")
    assert "locked down" in body["message"]
    assert _request_state(plant, request["id"]) == ("pending", 0, 0)

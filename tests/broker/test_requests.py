"""Access requests: what a vendor may ask for, and that every refusal leaves nothing behind (invariant 8)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncssh
import pytest

from tests.fixtures.broker import Api, Plant, assert_refusal, new_public_key


def test_a_vendor_request_is_stored_pending_and_audited(api: Api, plant: Plant) -> None:
    now = plant.clock.now()
    key = new_public_key()

    response = api.request("vendor1", asset="hmi-01", duration="2h", reason="  replace HMI firmware ",
                           ssh=True, ports=[4840, 502, 502], public_key=key + " vendor@laptop")

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("req-")
    assert {k: body[k] for k in ("status", "asset", "site", "requester", "ssh", "ports", "duration_seconds",
                                  "start", "reason", "approvals_required", "approvals", "denial", "grant")} == {
        "status": "pending", "asset": "hmi-01", "site": "plant-a", "requester": "vendor1", "ssh": True,
        "ports": [502, 4840], "duration_seconds": 7200, "start": None, "reason": "replace HMI firmware",
        "approvals_required": 1, "approvals": [], "denial": None, "grant": None,
    }
    assert dt.datetime.fromisoformat(body["created_at"]) == now
    assert dt.datetime.fromisoformat(body["decide_by"]) == now + plant.settings.decide_within
    assert plant.row("SELECT public_key FROM access_requests")[0].split()[:2] == key.split()
    [event] = plant.audit("access:request:created")
    assert (event["actor"], event["subject"], event["site"]) == ("vendor1", body["id"], "plant-a")
    assert event["details"]["asset"] == "hmi-01"


def test_requests_are_visible_to_the_requester_and_the_sites_approvers_only(api: Api, plant: Plant) -> None:
    request = api.create_request("vendor1")

    assert [r["id"] for r in api.as_user("vendor1").get("/requests").json()] == [request["id"]]
    assert [r["id"] for r in api.as_user("sup-a1").get("/requests", params={"pending": "true"}).json()] == [
        request["id"]]
    assert [r["id"] for r in api.as_user("sec1").get("/requests").json()] == [request["id"]]
    assert api.as_user("sup-b").get("/requests").json() == []
    assert api.as_user("vendor2").get("/requests").json() == []
    assert_refusal(api.as_user("vendor2").get(f"/requests/{request['id']}"), 404, "not_found")
    assert_refusal(api.as_user("sup-b").get(f"/requests/{request['id']}"), 404, "not_found")
    assert api.as_user("sup-a1").get(f"/requests/{request['id']}").json()["id"] == request["id"]


NOW_PLUS = "NOW_PLUS"  # marker: replaced with clock.now() + the given timedelta


def _private_key_text() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh").decode()


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("unknown asset", {"asset": "hmi-99"}, 404, "hmi-99"),
    ("duration not a duration", {"duration": "2 hours"}, 400, "duration"),
    ("duration in weeks", {"duration": "1w"}, 400, "duration"),
    ("duration zero", {"duration": "0m"}, 400, "zero"),
    ("duration empty", {"duration": ""}, 400, "duration"),
    ("duration as a number", {"duration": 7200}, 400, "duration"),
    ("duration longer than the site allows", {"duration": "9h"}, 400, "at most 8h"),
    ("duration absurdly long", {"duration": "999999d"}, 400, "at most 8h"),
    ("empty reason", {"reason": ""}, 400, "reason"),
    ("blank reason", {"reason": "   \n\t"}, 400, "reason"),
    ("reason too long", {"reason": "x" * 1001}, 400, "reason"),
    ("missing reason", {"reason": None}, 400, "reason"),
    ("port not offered", {"ports": [5020]}, 400, "5020"),
    ("negative port", {"ports": [-502]}, 400, "-502"),
    ("port out of range", {"ports": [70000]}, 400, "70000"),
    ("ports not a list", {"ports": "502"}, 400, "ports"),
    ("too many ports", {"ports": list(range(1, 40))}, 400, "ports"),
    ("SSH on an asset without SSH", {"asset": "plc-01", "ssh": True, "ports": []}, 400, "no SSH"),
    ("no service at all", {"ssh": False, "ports": []}, 400, "at least one service"),
    ("read-only on a port without a filter", {"ssh": False, "ports": [4840], "read_only": True}, 400, "port 4840"),
    ("read-only without ports", {"ssh": True, "ports": [], "read_only": True}, 400, "Modbus/TCP"),
    ("read-only with SSH", {"ssh": True, "ports": [502], "read_only": True}, 400, "SSH"),
    ("public key is junk", {"public_key": "not a key"}, 400, "public key"),
    ("public key is a private key", {"public_key": "PRIVATE"}, 400, "public key"),
    ("public key missing", {"public_key": None}, 400, "public_key"),
    ("public key truncated", {"public_key": "TRUNCATED"}, 400, "public key"),
    ("unknown extra field", {"colour": "red"}, 400, "colour"),
    ("asset missing", {"asset": None}, 400, "asset"),
    ("start in the past", {"start": (NOW_PLUS, dt.timedelta(hours=-1))}, 400, "past"),
    ("start more than 30 days ahead", {"start": (NOW_PLUS, dt.timedelta(days=31))}, 400, "30 days"),
    ("start without a timezone", {"start": "NAIVE"}, 400, "timezone"),
    ("start not a time", {"start": "tomorrow morning"}, 400, "start"),
]


@pytest.mark.parametrize(("case", "fields", "status", "says"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_input_is_refused_and_nothing_is_stored(shared_api: Api, case: str, fields: dict[str, Any],
                                                           status: int, says: str) -> None:
    plant = shared_api.plant
    vendor = shared_api.as_user("vendor1")
    body: dict[str, Any] = {"asset": "hmi-01", "duration": "2h", "reason": "replace HMI firmware", "ssh": True,
                            "public_key": new_public_key()}
    for name, value in fields.items():
        if value is None:
            body.pop(name)
        elif isinstance(value, tuple) and value[0] == NOW_PLUS:
            body[name] = (plant.clock.now() + value[1]).isoformat()
        elif value == "NAIVE":
            body[name] = (plant.clock.now() + dt.timedelta(hours=1)).replace(tzinfo=None).isoformat()
        elif value == "PRIVATE":
            body[name] = _private_key_text()
        elif value == "TRUNCATED":
            body[name] = new_public_key()[:40]
        else:
            body[name] = value
    requests_before, seq_before = plant.count("access_requests"), plant.last_seq()

    response = vendor.post("/requests", json=body)

    answer = assert_refusal(response, status)
    assert says.lower() in answer["message"].lower(), answer
    assert plant.count("access_requests") == requests_before
    # Not even an audit event for a creation that did not happen; asking for an asset that does not exist is a
    # refusal worth a trail entry of its own (written apart from the refused change).
    expected = ["api:request:refused"] if status == 404 else []
    assert [e["action"] for e in plant.audit(after_seq=seq_before)] == expected


def test_malformed_json_is_refused(shared_api: Api) -> None:
    plant = shared_api.plant
    vendor = shared_api.as_user("vendor1")
    before = plant.count("access_requests")

    response = vendor.post("/requests", content=b'{"asset": "hmi-01", "duration": "2h",',
                           headers={"Content-Type": "application/json"})

    assert_refusal(response, 400, "invalid_input")
    assert plant.count("access_requests") == before


def test_a_locked_down_site_refuses_new_requests(api: Api, plant: Plant) -> None:
    vendor = api.as_user("vendor1")
    plant.set_locked_down("plant-a")

    response = api.request("vendor1", asset="hmi-01")

    body = assert_refusal(response, 403, "forbidden")
    assert "locked down" in body["message"]
    assert plant.count("access_requests") == 0
    [event] = plant.audit("access:request:refused")
    assert (event["actor"], event["site"], event["outcome"]) == ("vendor1", "plant-a", "refused")
    assert plant.audit("access:request:created") == []
    # The other plant is not affected.
    assert vendor.post("/requests", json={"asset": "hmi-b1", "duration": "1h", "reason": "check", "ssh": True,
                                          "public_key": new_public_key()}).status_code == 201


@pytest.mark.parametrize(("username", "asset", "says"), [
    ("vendor-a", "hmi-b1", "only at its own sites"),
    ("sup-a1", "hmi-01", "only vendor accounts"),
    ("sec1", "hmi-01", "only vendor accounts"),
])
def test_requests_outside_the_callers_role_or_sites_are_refused_and_audited(
        api: Api, plant: Plant, username: str, asset: str, says: str) -> None:
    response = api.request(username, asset=asset)

    body = assert_refusal(response, 403, "forbidden")
    assert says in body["message"]
    assert plant.count("access_requests") == 0
    [event] = plant.audit("access:request:refused")
    assert event["actor"] == username


def test_a_start_within_the_slack_is_accepted_and_scheduled_requests_keep_it(api: Api, plant: Plant) -> None:
    start = plant.clock.now() + dt.timedelta(hours=3)

    body = api.create_request("vendor1", start=start.isoformat(), duration="1h")

    assert dt.datetime.fromisoformat(body["start"]) == start
    # Nobody can usefully decide after the window has passed.
    assert dt.datetime.fromisoformat(body["decide_by"]) == start + dt.timedelta(hours=1)
    slightly_past = plant.clock.now() - dt.timedelta(minutes=2)
    assert api.request("vendor1", start=slightly_past.isoformat()).status_code == 201


def test_the_requester_can_cancel_a_pending_request_once(api: Api, plant: Plant) -> None:
    request = api.create_request("vendor1")
    assert_refusal(api.as_user("vendor2").post(f"/requests/{request['id']}/cancel"), 404, "not_found")
    assert_refusal(api.as_user("sup-a1").post(f"/requests/{request['id']}/cancel"), 403, "forbidden")

    response = api.as_user("vendor1").post(f"/requests/{request['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    [event] = plant.audit("access:request:cancelled")
    assert (event["actor"], event["subject"]) == ("vendor1", request["id"])
    assert_refusal(api.as_user("vendor1").post(f"/requests/{request['id']}/cancel"), 409, "conflict")
    assert_refusal(api.approve("sup-a1", request["id"]), 409, "conflict")
    assert plant.count("decisions") == 0

"""Revoking a grant: who may, what happens to it, and that gateways hear it at once."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from tests.fixtures.broker import Api, Plant, assert_refusal, read_sse_event


def _revoked_at(plant: Plant, grant_id: str) -> object:
    return plant.row("SELECT revoked_at FROM grants WHERE id = :id", id=grant_id)[0]


@pytest.mark.parametrize("who", ["vendor1", "sup-a1", "sup-a2", "sec1", "admin"])
def test_the_grantee_site_approvers_security_and_admins_can_revoke(shared_api: Api, who: str) -> None:
    plant = shared_api.plant
    grant = shared_api.grant("vendor1", "sup-a1")

    response = shared_api.as_user(who).post(f"/grants/{grant['id']}/revoke", json={"reason": "work finished"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["revoked_by"], body["revoke_reason"]) == ("revoked", who, "work finished")
    assert _revoked_at(plant, grant["id"]) is not None
    [event] = [e for e in plant.audit("access:grant:revoked") if e["subject"] == grant["id"]]
    assert (event["actor"], event["site"]) == (who, "plant-a")
    assert event["details"] == {"reason": "work finished", "was": "active"}
    assert shared_api.as_user("vendor1").get(f"/grants/{grant['id']}").json()["status"] == "revoked"


@pytest.mark.parametrize("who", ["vendor2", "sup-b"])
def test_others_cannot_see_or_revoke_a_grant(shared_api: Api, who: str) -> None:
    plant = shared_api.plant
    grant = shared_api.grant("vendor1", "sup-a1")
    client = shared_api.as_user(who)

    response = client.post(f"/grants/{grant['id']}/revoke", json={"reason": "mine now"})

    assert_refusal(response, 404, "not_found")
    assert _revoked_at(plant, grant["id"]) is None
    assert [e for e in plant.audit("access:grant:revoked") if e["subject"] == grant["id"]] == []
    assert grant["id"] not in [g["id"] for g in client.get("/grants").json()]


def test_revoking_twice_is_a_conflict(shared_api: Api) -> None:
    plant = shared_api.plant
    grant = shared_api.grant("vendor1", "sup-a1")
    vendor = shared_api.as_user("vendor1")
    assert vendor.post(f"/grants/{grant['id']}/revoke").status_code == 200
    first = _revoked_at(plant, grant["id"])

    response = vendor.post(f"/grants/{grant['id']}/revoke", json={"reason": "again"})

    body = assert_refusal(response, 409, "conflict")
    assert "already revoked" in body["message"]
    assert _revoked_at(plant, grant["id"]) == first
    assert len([e for e in plant.audit("access:grant:revoked") if e["subject"] == grant["id"]]) == 1


def test_an_expired_grant_cannot_be_revoked(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1", duration="1h")
    plant.clock.advance(dt.timedelta(hours=1))

    response = api.as_user("vendor1").post(f"/grants/{grant['id']}/revoke")

    body = assert_refusal(response, 409, "conflict")
    assert "expired" in body["message"]
    assert _revoked_at(plant, grant["id"]) is None


def test_a_too_long_revoke_reason_is_refused_and_changes_nothing(shared_api: Api) -> None:
    grant = shared_api.grant("vendor1", "sup-a1")

    response = shared_api.as_user("vendor1").post(f"/grants/{grant['id']}/revoke", json={"reason": "x" * 1001})

    assert_refusal(response, 400, "invalid_input")
    assert _revoked_at(shared_api.plant, grant["id"]) is None


def test_a_revocation_is_pushed_to_gateways_within_a_second(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    vendor = api.as_user("vendor1")
    headers = {"Authorization": f"Bearer {plant.gateway_token}"}
    timeout = httpx.Timeout(5.0, read=3.0)
    with httpx.Client(base_url=api.base_url, timeout=timeout) as client, \
            client.stream("GET", "/api/v1/gateway/events", headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        name, hello = read_sse_event(lines)
        assert name == "hello"
        assert dt.datetime.fromisoformat(hello["server_time"]) == plant.clock.now()

        started = time.monotonic()
        assert vendor.post(f"/grants/{grant['id']}/revoke", json={"reason": "done"}).status_code == 200
        name, event = read_sse_event(lines)
        elapsed = time.monotonic() - started

    assert name == "grant"
    assert event == {"grant_id": grant["id"], "status": "revoked", "ends_at": grant["ends_at"], "reason": "revoked"}
    assert elapsed < 1.0


def test_the_event_stream_refuses_unknown_and_user_credentials(shared_api: Api) -> None:
    for token in ("gpg_not-a-real-gateway-token", shared_api.token("vendor1"), None):
        response = shared_api.client(token).get("/gateway/events")
        assert_refusal(response, 401, "not_authenticated")

"""Containment (DESIGN invariant 2, broker side): locking a plant down or disabling an identity revokes its
open grants, is audited, and reaches connected gateways within a second — also when done by `gatepass admin`
outside the server process."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from broker import admin
from tests.fixtures.broker import Api, Plant, assert_refusal, read_sse_event


@contextmanager
def gateway_events(api: Api) -> Iterator[Iterator[str]]:
    """The gateway's event stream, past its ``hello``."""
    headers = {"Authorization": f"Bearer {api.plant.gateway_token}"}
    with httpx.Client(base_url=api.base_url, timeout=httpx.Timeout(5.0, read=3.0)) as client, \
            client.stream("GET", "/api/v1/gateway/events", headers=headers) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert read_sse_event(lines)[0] == "hello"
        yield lines


def _read_grant_events(lines: Iterator[str], count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        name, data = read_sse_event(lines)
        assert name == "grant"
        events.append(data)
    return events


def test_a_site_supervisor_locks_the_plant_down_and_every_open_grant_is_cut(api: Api, plant: Plant) -> None:
    first = api.grant("vendor1", "sup-a1", asset="hmi-01")
    second = api.grant("vendor2", "sup-a1", asset="plc-01", ssh=False, ports=[502])
    elsewhere = api.grant("vendor1", "sup-b", asset="hmi-b1")
    supervisor = api.as_user("sup-a1")

    with gateway_events(api) as lines:
        started = time.monotonic()
        response = supervisor.post("/sites/plant-a/lockdown", json={"reason": "ransomware on the office LAN"})
        events = _read_grant_events(lines, 2)
        elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert response.json()["locked_down"] is True
    assert sorted(response.json()["revoked_grants"]) == sorted([first["id"], second["id"]])
    assert elapsed < 1.0, f"the gateways heard {elapsed:.2f} s after the lockdown request was sent"
    assert sorted((e["grant_id"], e["status"], e["reason"]) for e in events) == sorted(
        [(first["id"], "revoked", "lockdown"), (second["id"], "revoked", "lockdown")])
    assert plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]
    assert plant.count("grants", "WHERE revoked_at IS NOT NULL") == 2
    [locked] = plant.audit("containment:site:locked_down")
    assert (locked["actor"], locked["subject"], locked["details"]["reason"]) == (
        "sup-a1", "plant-a", "ransomware on the office LAN")
    assert {e["subject"] for e in plant.audit("access:grant:revoked")} == {first["id"], second["id"]}
    # The other plant keeps working; this one refuses new requests and connections until lifted.
    assert api.as_user("vendor1").get(f"/grants/{elsewhere['id']}").json()["status"] == "active"
    assert_refusal(api.request("vendor1", asset="hmi-01"), 403, "forbidden")
    assert_refusal(supervisor.post("/sites/plant-a/lockdown", json={"reason": "again"}), 409, "conflict")

    lifted = supervisor.post("/sites/plant-a/lift")

    assert lifted.status_code == 200, lifted.text
    assert plant.audit("containment:site:lockdown_lifted")[0]["actor"] == "sup-a1"
    assert api.request("vendor1", asset="hmi-01").status_code == 201
    assert api.as_user("vendor1").get(f"/grants/{first['id']}").json()["status"] == "revoked"  # stays cut
    assert_refusal(supervisor.post("/sites/plant-a/lift"), 409, "conflict")


@pytest.mark.parametrize("who", ["sup-b", "vendor1"])
def test_only_the_plants_own_people_lock_it_down(shared_api: Api, who: str) -> None:
    plant = shared_api.plant
    client = shared_api.as_user(who)
    seq = plant.last_seq()

    for response in (client.post("/sites/plant-a/lockdown", json={"reason": "not my plant"}),
                     client.post("/sites/plant-a/lift")):
        body = assert_refusal(response, 403, "forbidden")
        assert "plant-a" in body["message"]

    assert not plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]
    refused = plant.audit(after_seq=seq)
    assert [(e["action"], e["actor"], e["outcome"]) for e in refused] == [
        ("containment:site:refused", who, "refused")] * 2


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/sites/plant-z/lockdown", {"reason": "x"}, 404),
    ("/sites/plant-a/lockdown", {}, 400),
    ("/sites/plant-a/lockdown", {"reason": ""}, 400),
    ("/sites/plant-a/lockdown", {"reason": "x" * 1001}, 400),
    ("/sites/plant-a/lockdown", None, 400),
    ("/sites/plant-z/lift", None, 404),
])
def test_bad_containment_calls_are_refused_and_change_nothing(shared_api: Api, path: str,
                                                              body: dict[str, Any] | None, status: int) -> None:
    plant = shared_api.plant

    response = shared_api.as_user("sec1").post(path, json=body)

    assert_refusal(response, status)
    assert not plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]


def test_a_lockdown_by_gatepass_admin_reaches_the_gateways_within_a_second(api: Api, plant: Plant) -> None:
    """`gatepass admin site lockdown` runs outside the server: the server relays the outbox row."""
    grant = api.grant("vendor1", "sup-a1")

    with gateway_events(api) as lines:
        revoked = admin.lock_down_site(plant.settings, name="plant-a", reason="drill")
        committed = time.monotonic()  # the invariant's clock starts at the change, as in the e2e tests
        [event] = _read_grant_events(lines, 1)
        elapsed = time.monotonic() - committed

    assert revoked == [grant["id"]]
    assert (event["grant_id"], event["status"], event["reason"]) == (grant["id"], "revoked", "lockdown")
    assert elapsed < 1.0, f"the gateways heard {elapsed:.2f} s after the change"


def test_disabling_an_identity_signs_it_out_and_cuts_its_grants_within_a_second(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    other = api.grant("vendor2", "sup-a1")
    vendor = api.as_user("vendor1")

    with gateway_events(api) as lines:
        revoked = admin.set_user_disabled(plant.settings, name="vendor1", disabled=True)
        committed = time.monotonic()
        [event] = _read_grant_events(lines, 1)
        elapsed = time.monotonic() - committed

    assert revoked == [grant["id"]]
    assert (event["grant_id"], event["status"], event["reason"]) == (grant["id"], "revoked", "identity_disabled")
    assert elapsed < 1.0, f"the gateways heard {elapsed:.2f} s after the change"
    assert_refusal(vendor.get("/me"), 401, "not_authenticated")
    assert api.as_user("vendor2").get(f"/grants/{other['id']}").json()["status"] == "active"
    [disabled] = plant.audit("admin:identity:disabled")
    assert disabled["subject"] == "vendor1"
    statuses = api.gateway().post("/gateway/grants/status", json={"grant_ids": [grant["id"]]}).json()["grants"]
    assert statuses[grant["id"]]["status"] == "revoked"
    plant.clock.advance(dt.timedelta(seconds=30))
    assert_refusal(api.login_response("vendor1"), 401, "login_failed")

"""Gateways scoped to sites and retired ones: a plant's gateway (or its stolen credential) is handed no other
plant's credentials, vendors are sent to their asset's site's gateway, and a retired gateway's credential is
refused everywhere while the sessions the broker had open on it end."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import asyncssh
import httpx
import pytest

from broker.api import gateway_routes, watch_routes
from broker.inventory import gateway_lifecycle, gateways
from tests.broker.test_recordings_verify import gatepass_local
from tests.fixtures.broker import Api, Plant, assert_refusal

PEER = "198.51.100.7:50123"


def add_gateway(plant: Plant, name: str, *sites: str) -> str:
    with plant.session() as session:
        return gateways.create_gateway(session, now=plant.clock.now(), actor="test", name=name, sites=sites)


def register(client: httpx.Client, host: str) -> None:
    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    answer = client.post("/gateway/register", json={"ssh_host": host, "ssh_port": 2222, "host_key": host_key})
    assert answer.status_code == 200, answer.text


def authorize(client: httpx.Client, plant: Plant, grant_id: str, asset: str) -> httpx.Response:
    serial = int(plant.row("SELECT serial FROM grants WHERE id = :id", id=grant_id)[0])
    return client.post("/gateway/authorize", json={"grant_id": grant_id, "serial": serial, "asset": asset,
                                                   "peer": PEER})


def test_a_site_scoped_gateway_is_handed_no_credential_of_another_site(api: Api, plant: Plant) -> None:
    plant_b = api.client(add_gateway(plant, "gw-plant-b", "plant-b"))
    grant_a = api.grant("vendor1", "sup-a1", asset="hmi-01")
    grant_b = api.grant("vendor1", "sup-b", asset="hmi-b1")

    refused = authorize(plant_b, plant, grant_a["id"], "hmi-01")
    allowed = authorize(plant_b, plant, grant_b["id"], "hmi-b1")

    body = assert_refusal(refused, 403, "forbidden")
    assert "gateway gw-plant-b serves plant-b only, not site plant-a" in body["message"]
    assert plant.target_secrets["hmi-01"] not in refused.text
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["target"]["password"] == plant.target_secrets["hmi-b1"]
    [event] = [e for e in plant.audit("gateway:connection:refused") if e["subject"] == grant_a["id"]]
    assert event["details"]["gateway"] == "gw-plant-b"
    assert "serves plant-b only" in event["details"]["reason"]
    # Nor may it record a session for the other site's grant (a gateway that skipped authorize).
    start = plant_b.post("/gateway/sessions", json={"grant_id": grant_a["id"], "kind": "shell", "peer": PEER})
    assert "serves plant-b only" in assert_refusal(start, 403)["message"]
    batch = plant_b.post("/gateway/sessions/batch", json={"starts": [
        {"grant_id": grant_a["id"], "kind": "shell", "peer": PEER}]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["results"][0]["status"] == 403
    assert plant.row("SELECT count(*) FROM sessions")[0] == 0


def test_vendors_are_sent_to_the_gateway_of_their_assets_site(api: Api, plant: Plant) -> None:
    register(api.gateway(), "gw.central.example")  # the embedded gateway serves every site
    register(api.client(add_gateway(plant, "gw-plant-b", "plant-b")), "gw.plant-b.example")

    on_a = api.grant("vendor1", "sup-a1", asset="hmi-01")
    on_b = api.grant("vendor1", "sup-b", asset="hmi-b1")

    assert on_a["gateway"]["host"] == "gw.central.example"
    assert on_b["gateway"]["host"] == "gw.plant-b.example"
    listed = {grant["id"]: grant["gateway"]["host"] for grant in api.as_user("vendor1").get("/grants").json()}
    assert listed == {on_a["id"]: "gw.central.example", on_b["id"]: "gw.plant-b.example"}


def test_a_retired_gateway_is_refused_everywhere_and_its_open_sessions_end(api: Api, plant: Plant) -> None:
    token = add_gateway(plant, "gw-old")
    old = api.client(token)
    register(old, "gw-old.example")
    grant = api.grant("vendor1", "sup-a1")
    started = old.post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "shell", "peer": PEER})
    assert started.status_code == 201, started.text
    session_id = started.json()["session_id"]

    with plant.session() as session:
        ended = gateway_lifecycle.retire_gateway(session, now=plant.clock.now(), actor="cli:root", name="gw-old",
                                                 reason="stolen from the plant's cabinet")

    assert ended == [session_id]
    for call in (lambda: old.post("/gateway/register", json={"ssh_host": "x", "ssh_port": 22,
                                                             "host_key": "ssh-ed25519 AAAA"}),
                 lambda: authorize(old, plant, grant["id"], "hmi-01"),
                 lambda: old.put(f"/gateway/recordings/{session_id}.cast", content=b"x"),
                 lambda: old.get("/gateway/events")):
        assert "was retired" in assert_refusal(call(), 401, "gateway_retired")["message"]
    [end] = [e for e in plant.audit("gateway:session:ended") if e["subject"] == session_id]
    assert (end["details"]["reason"], end["details"]["ended_by"]) == ("gateway_lost", "cli:root")
    assert "stolen from the plant's cabinet" in end["details"]["detail"]
    [retired] = plant.audit("admin:gateway:retired")
    assert retired["details"]["sessions_ended"] == [session_id]
    # Grants no longer point vendors at it.
    assert api.as_user("vendor1").get(f"/grants/{grant['id']}").json()["gateway"] is None


def test_gateway_list_and_retire_on_the_command_line(api: Api, plant: Plant) -> None:
    add_gateway(plant, "gw-plant-b", "plant-b")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return gatepass_local(plant, "admin", "gateway", *args)

    listed = run("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["gw-plant-b"]["sites"] == ["plant-b"]
    assert rows["embedded"]["sites"] == "all"

    retired = run("retire", "gw-plant-b", "--reason", "plant closed")
    again = run("retire", "gw-plant-b", "--reason", "twice")
    no_reason = run("retire", "embedded", "--reason", " ")

    assert retired.returncode == 0, retired.stderr
    assert "Retired gateway gw-plant-b" in retired.stdout
    assert again.returncode == 1
    assert "already retired" in again.stderr
    assert no_reason.returncode == 1
    assert "say why" in no_reason.stderr
    assert "gw-plant-b: serves plant-b; retired" in run("list").stdout
    unknown_site = run("add", "gw-x", "--site", "plant-z")
    assert unknown_site.returncode == 1
    assert "there is no site plant-z" in unknown_site.stderr


def test_a_retired_gateways_held_streams_end_at_their_next_keepalive(
        api: Api, plant: Plant, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_routes, "KEEPALIVE_SECONDS", 0.2)
    monkeypatch.setattr(watch_routes, "KEEPALIVE_SECONDS", 0.2)
    token = add_gateway(plant, "gw-old")
    headers = {"Authorization": f"Bearer {token}"}
    ended: dict[str, float] = {}
    connected = {path: threading.Event() for path in ("/gateway/events", "/gateway/live")}

    def follow(path: str) -> None:
        with httpx.stream("GET", f"{api.base_url}/api/v1{path}", headers=headers, timeout=10) as response:
            assert response.status_code == 200
            for _ in response.iter_lines():  # hello, then keepalives, until the broker ends the stream
                connected[path].set()
        ended[path] = time.monotonic()

    readers = [threading.Thread(target=follow, args=(path,), daemon=True) for path in connected]
    for reader in readers:
        reader.start()
    for path, event in connected.items():
        assert event.wait(10), f"{path} did not connect"
    time.sleep(0.6)  # both streams held open across keepalives while the gateway is in service
    assert ended == {}
    with plant.session() as session:
        gateway_lifecycle.retire_gateway(session, now=plant.clock.now(), actor="cli:root", name="gw-old",
                                         reason="decommissioned")
    retired_at = time.monotonic()

    for reader in readers:
        reader.join(timeout=10)

    assert set(ended) == set(connected)
    # A keepalive is 0.2 s here: a few of them under a loaded test run, where without the check they never end.
    assert all(moment - retired_at < 5 for moment in ended.values())

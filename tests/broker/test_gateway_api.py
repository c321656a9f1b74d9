"""The gateway API: authorize a certificate-holding client, report grant statuses, record sessions."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import asyncssh
import httpx
import pytest
from sqlalchemy import text

from tests.fixtures.broker import Api, Plant, assert_refusal

PEER = "198.51.100.7:50123"


def _serial(plant: Plant, grant_id: str) -> int:
    return int(plant.row("SELECT serial FROM grants WHERE id = :id", id=grant_id)[0])


def _authorize(api: Api, grant_id: str, serial: int, asset: str = "hmi-01") -> httpx.Response:
    return api.gateway().post("/gateway/authorize", json={"grant_id": grant_id, "serial": serial, "asset": asset,
                                                          "peer": PEER})


def test_register_returns_the_user_ca_and_publishes_the_gateway(api: Api, plant: Plant) -> None:
    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()

    response = api.gateway().post("/gateway/register", json={"ssh_host": "gw.plant-a.example", "ssh_port": 2222,
                                                             "host_key": host_key})

    assert response.status_code == 200, response.text
    assert response.json() == {"user_ca": plant.row("SELECT public_key FROM authorities")[0], "gateway": "embedded"}
    grant = api.grant("vendor1", "sup-a1")
    assert grant["gateway"] == {"host": "gw.plant-a.example", "port": 2222, "host_key": host_key}
    [event] = plant.audit("gateway:gateway:registered")
    assert event["actor"] == "gateway:embedded"


def test_a_restarting_gateway_ends_what_its_last_run_left_open_but_the_ends_it_still_reports(
        api: Api, plant: Plant) -> None:
    """A gateway that starts carries no session: those still open on it went with a run that stopped without
    reporting them (a crash, a power cut). It names the ends it kept to report (``kept_ends``); the rest are ended."""
    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    register = {"ssh_host": "gw.plant-a.example", "ssh_port": 2222, "host_key": host_key}
    grant = api.grant("vendor1", "sup-a1")
    lost, kept = (api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "shell",
                                                                "peer": "192.0.2.7:5000"}).json()["session_id"]
                  for _ in range(2))
    # A gateway from before kept_ends registers without it: nothing is ended on its word.
    assert api.gateway().post("/gateway/register", json=register).status_code == 200
    assert plant.audit("gateway:session:ended") == []

    plant.clock.advance(dt.timedelta(minutes=5))
    answer = api.gateway().post("/gateway/register", json={**register, "kept_ends": [kept, "ses-notours0000"]})

    assert answer.status_code == 200, answer.text
    [ended] = plant.audit("gateway:session:ended")
    assert (ended["subject"], ended["details"]["reason"]) == (lost, "gateway_lost")
    assert "restarted without it" in ended["details"]["detail"]
    assert ended["details"]["ended_by"] == "gateway:embedded"
    assert ended["details"]["duration_seconds"] == 300.0
    assert plant.audit("gateway:gateway:registered")[-1]["details"]["sessions_ended"] == [lost]
    assert plant.row("SELECT ended_at IS NULL FROM sessions WHERE id = :id", id=kept)[0]
    # The kept end still arrives, and is taken as any end.
    end = {"reason": "client_closed", "bytes_in": 1, "bytes_out": 2, "detail": None}
    assert api.gateway().post(f"/gateway/sessions/{kept}/end", json=end).status_code == 204
    too_long = api.gateway().post("/gateway/register", json={**register, "kept_ends": ["s" * 65]})
    assert too_long.status_code in (400, 422), too_long.text


@pytest.mark.parametrize(("asset", "credential"), [("hmi-01", "password"), ("rtu-01", "private_key")])
def test_authorize_hands_the_gateway_the_target_credential_and_never_logs_it(
        api: Api, plant: Plant, caplog: pytest.LogCaptureFixture, asset: str, credential: str) -> None:
    caplog.set_level(logging.DEBUG)
    if asset == "rtu-01":
        request = api.create_request("vendor1", asset="rtu-01", ports=[])
        api.approve("sup-a1", request["id"])
        grant_id = api.approve("sup-a2", request["id"]).json()["grant"]["id"]
    else:
        grant_id = api.grant("vendor1", "sup-a1", asset=asset)["id"]
    secret = plant.target_secrets[asset]

    response = _authorize(api, grant_id, _serial(plant, grant_id), asset)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["grant_id"], body["identity"], body["identity_kind"], body["asset"], body["site"]) == (
        grant_id, "vendor1", "human", asset, "plant-a")
    assert body["interactive"] is True
    assert body["ssh"] is True
    target = body["target"]
    assert (target["host"], target["ssh_port"], target["username"]) == ("10.20.0.5", 22, "root")
    assert target[credential] == secret
    assert target["password" if credential == "private_key" else "private_key"] is None
    assert target["host_key"].startswith("ssh-ed25519 ")
    [event] = plant.audit("gateway:connection:authorized")
    assert (event["actor"], event["subject"], event["details"]["peer"]) == ("vendor1", grant_id, PEER)
    assert not any(secret in str(e) for e in plant.audit())
    assert not any(secret in record.getMessage() for record in caplog.records)
    assert secret not in caplog.text


def test_authorize_of_a_tcp_only_grant_carries_no_target_credential(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1", asset="plc-01", ssh=False, ports=[502])

    response = _authorize(api, grant["id"], _serial(plant, grant["id"]), "plc-01")

    assert response.status_code == 200, response.text
    assert response.json()["target"] is None
    assert response.json()["ports"] == [502]


Refusal = Callable[[Plant, Api, dict[str, Any]], dict[str, Any]]


def _wrong_serial(plant: Plant, _api: Api, grant: dict[str, Any]) -> dict[str, Any]:
    return {"grant_id": grant["id"], "serial": _serial(plant, grant["id"]) ^ 1, "asset": "hmi-01"}


def _unknown_grant(plant: Plant, _api: Api, grant: dict[str, Any]) -> dict[str, Any]:
    return {"grant_id": "grt-00000000", "serial": _serial(plant, grant["id"]), "asset": "hmi-01"}


def _wrong_asset(plant: Plant, _api: Api, grant: dict[str, Any]) -> dict[str, Any]:
    return {"grant_id": grant["id"], "serial": _serial(plant, grant["id"]), "asset": "hmi-b1"}


def _revoked(plant: Plant, api: Api, grant: dict[str, Any]) -> dict[str, Any]:
    assert api.as_user("vendor1").post(f"/grants/{grant['id']}/revoke").status_code == 200
    return {"grant_id": grant["id"], "serial": _serial(plant, grant["id"]), "asset": "hmi-01"}


def _expired(plant: Plant, _api: Api, grant: dict[str, Any]) -> dict[str, Any]:
    plant.clock.set(dt.datetime.fromisoformat(grant["ends_at"]))
    return {"grant_id": grant["id"], "serial": _serial(plant, grant["id"]), "asset": "hmi-01"}


def _disabled(plant: Plant, _api: Api, grant: dict[str, Any]) -> dict[str, Any]:
    plant.set_disabled("vendor1")
    return {"grant_id": grant["id"], "serial": _serial(plant, grant["id"]), "asset": "hmi-01"}


def _identity_expired(plant: Plant, _api: Api, grant: dict[str, Any]) -> dict[str, Any]:
    with plant.engine.begin() as connection:
        connection.execute(text("UPDATE identities SET expires_at = :t WHERE username = 'vendor1'"),
                           {"t": plant.clock.now() - dt.timedelta(minutes=1)})
    return {"grant_id": grant["id"], "serial": _serial(plant, grant["id"]), "asset": "hmi-01"}


def _locked_down(plant: Plant, _api: Api, grant: dict[str, Any]) -> dict[str, Any]:
    plant.set_locked_down("plant-a")
    return {"grant_id": grant["id"], "serial": _serial(plant, grant["id"]), "asset": "hmi-01"}


REFUSALS: list[tuple[str, Refusal, str]] = [
    ("wrong serial", _wrong_serial, "does not belong to any grant"),
    ("unknown grant", _unknown_grant, "does not belong to any grant"),
    ("wrong asset", _wrong_asset, "not hmi-b1"),
    ("revoked", _revoked, "revoked"),
    ("expired", _expired, "ended"),
    ("disabled identity", _disabled, "disabled"),
    ("expired identity", _identity_expired, "expired on"),
    ("locked-down site", _locked_down, "locked down"),
]


@pytest.mark.parametrize(("case", "setup", "says"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_authorize_refuses_and_audits_why(api: Api, plant: Plant, case: str, setup: Refusal, says: str) -> None:
    grant = api.grant("vendor1", "sup-a1")
    body = setup(plant, api, grant)

    response = api.gateway().post("/gateway/authorize", json={**body, "peer": PEER})

    answer = assert_refusal(response, 403, "forbidden")
    assert says in answer["message"]
    assert "target" not in response.text
    [event] = plant.audit("gateway:connection:refused")
    assert event["outcome"] == "refused"
    assert event["subject"] == body["grant_id"]
    assert says in event["details"]["reason"]
    assert (event["details"]["asset"], event["details"]["peer"]) == (body["asset"], PEER)
    assert plant.audit("gateway:connection:authorized") == []


def test_authorize_refuses_a_scheduled_grant(api: Api, plant: Plant) -> None:
    start = plant.clock.now() + dt.timedelta(hours=1)
    request = api.create_request("vendor1", start=start.isoformat(), duration="1h")
    grant_id = api.approve("sup-a1", request["id"]).json()["grant"]["id"]

    response = _authorize(api, grant_id, _serial(plant, grant_id))

    answer = assert_refusal(response, 403, "forbidden")
    assert "not yet" in answer["message"]
    [event] = plant.audit("gateway:connection:refused")
    assert event["subject"] == grant_id
    plant.clock.set(start)
    assert _authorize(api, grant_id, _serial(plant, grant_id)).status_code == 200


def test_grant_statuses_as_the_gateway_sees_them(api: Api, plant: Plant) -> None:
    active = api.grant("vendor1", "sup-a1", duration="2h")
    revoked = api.grant("vendor1", "sup-a1")
    api.as_user("vendor1").post(f"/grants/{revoked['id']}/revoke")
    short = api.grant("vendor1", "sup-a1", duration="10m")
    request = api.create_request("vendor1", start=(plant.clock.now() + dt.timedelta(hours=1)).isoformat())
    scheduled = api.approve("sup-a1", request["id"]).json()["grant"]
    other_site = api.grant("vendor2", "sup-b", asset="hmi-b1")
    gateway = api.gateway()
    plant.clock.advance(dt.timedelta(minutes=10))
    ids = [active["id"], revoked["id"], short["id"], scheduled["id"], other_site["id"], "grt-00000000"]

    statuses = gateway.post("/gateway/grants/status", json={"grant_ids": ids}).json()["grants"]

    assert {gid: s["status"] for gid, s in statuses.items()} == {
        active["id"]: "active", revoked["id"]: "revoked", short["id"]: "expired", scheduled["id"]: "scheduled",
        other_site["id"]: "active"}
    assert statuses[active["id"]]["ends_at"] == active["ends_at"]

    plant.set_locked_down("plant-a")
    plant.set_disabled("vendor2")
    statuses = gateway.post("/gateway/grants/status", json={"grant_ids": ids}).json()["grants"]

    assert statuses[active["id"]]["status"] == "revoked"  # its site is locked down
    assert statuses[other_site["id"]]["status"] == "revoked"  # its identity is disabled
    assert gateway.post("/gateway/grants/status", json={"grant_ids": []}).json() == {"grants": {}}


def test_sessions_are_recorded_from_start_to_end(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    gateway = api.gateway()

    started = gateway.post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "exec", "peer": PEER,
                                                      "command": "uptime", "port": None})

    assert started.status_code == 201, started.text
    session_id = started.json()["session_id"]
    assert session_id.startswith("ses-")
    [event] = plant.audit("gateway:session:started")
    assert (event["actor"], event["subject"], event["site"]) == ("vendor1", session_id, "plant-a")
    assert (event["details"]["grant"], event["details"]["kind"], event["details"]["command"]) == (
        grant["id"], "exec", "uptime")

    plant.clock.advance(dt.timedelta(seconds=90))
    ended = gateway.post(f"/gateway/sessions/{session_id}/end", json={
        "reason": "client_closed", "bytes_in": 1234, "bytes_out": 56789, "detail": None})

    assert ended.status_code == 204, ended.text
    assert plant.row("SELECT end_reason, bytes_in, bytes_out FROM sessions WHERE id = :id", id=session_id) == (
        "client_closed", 1234, 56789)
    [event] = plant.audit("gateway:session:ended")
    assert event["subject"] == session_id
    assert {k: event["details"][k] for k in ("reason", "bytes_in", "bytes_out", "duration_seconds")} == {
        "reason": "client_closed", "bytes_in": 1234, "bytes_out": 56789, "duration_seconds": 90.0}

    again = gateway.post(f"/gateway/sessions/{session_id}/end", json={
        "reason": "error", "bytes_in": 1, "bytes_out": 1})
    assert_refusal(again, 409, "conflict")
    assert plant.row("SELECT end_reason FROM sessions WHERE id = :id", id=session_id)[0] == "client_closed"


@pytest.mark.parametrize("body", [
    {"reason": "bored", "bytes_in": 1, "bytes_out": 1},
    {"reason": "", "bytes_in": 1, "bytes_out": 1},
    {"reason": "client_closed", "bytes_in": -1, "bytes_out": 1},
    {"reason": "client_closed", "bytes_in": 1, "bytes_out": -5},
    {"reason": "client_closed", "bytes_in": "many", "bytes_out": 1},
    {"reason": "client_closed", "bytes_in": 1},
    {"reason": "client_closed", "bytes_in": 1, "bytes_out": 1, "detail": "x" * 1001},
    {"reason": "client_closed", "bytes_in": 1, "bytes_out": 1, "extra": True},
], ids=["unknown reason", "empty reason", "negative in", "negative out", "bytes not a number", "bytes missing",
        "detail too long", "unknown field"])
def test_a_bad_session_end_is_refused_and_the_session_stays_open(shared_api: Api, body: dict[str, Any]) -> None:
    plant = shared_api.plant
    grant = shared_api.grant("vendor1", "sup-a1")
    gateway = shared_api.gateway()
    session_id = gateway.post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "shell"}).json()[
        "session_id"]
    seq = plant.last_seq()

    response = gateway.post(f"/gateway/sessions/{session_id}/end", json=body)

    assert_refusal(response, 400, "invalid_input")
    assert plant.row("SELECT ended_at, end_reason FROM sessions WHERE id = :id", id=session_id) == (None, None)
    assert plant.audit(after_seq=seq) == []


def test_ending_an_unknown_session_is_not_found(shared_api: Api) -> None:
    response = shared_api.gateway().post("/gateway/sessions/ses-00000000/end", json={
        "reason": "client_closed", "bytes_in": 0, "bytes_out": 0})

    assert_refusal(response, 404, "not_found")


@pytest.mark.parametrize("state", ["revoked", "expired", "locked down"])
def test_no_session_starts_under_a_grant_that_is_not_active(api: Api, plant: Plant, state: str) -> None:
    grant = api.grant("vendor1", "sup-a1")
    if state == "revoked":
        api.as_user("vendor1").post(f"/grants/{grant['id']}/revoke")
    elif state == "expired":
        plant.clock.set(dt.datetime.fromisoformat(grant["ends_at"]))
    else:
        plant.set_locked_down("plant-a")

    response = api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "shell", "peer": PEER})

    answer = assert_refusal(response, 403, "forbidden")
    assert state in answer["message"]
    assert plant.count("sessions") == 0
    [event] = plant.audit("gateway:connection:refused")
    assert event["subject"] == grant["id"]
    assert plant.audit("gateway:session:started") == []


def test_no_session_starts_for_a_disabled_identity(api: Api, plant: Plant) -> None:
    """authorize and grants/status both treat a disabled identity's grant as unusable; so must session start."""
    grant = api.grant("vendor1", "sup-a1")
    plant.set_disabled("vendor1")

    response = api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "shell", "peer": PEER})

    answer = assert_refusal(response, 403, "forbidden")
    assert "disabled" in answer["message"]
    assert plant.count("sessions") == 0
    assert plant.audit("gateway:session:started") == []


@pytest.mark.parametrize(("asset", "ssh", "ports", "session"), [
    ("hmi-01", False, [502], {"kind": "tcp", "port": 4840}),
    ("hmi-01", True, [], {"kind": "tcp", "port": 502}),
    ("plc-01", False, [502], {"kind": "shell"}),
    ("plc-01", False, [502], {"kind": "exec", "command": "id"}),
], ids=["tcp port not granted", "tcp on an ssh-only grant", "shell on a tcp-only grant", "exec on a tcp-only grant"])
def test_no_session_starts_for_a_service_the_grant_does_not_cover(shared_api: Api, asset: str, ssh: bool,
                                                                 ports: list[int], session: dict[str, Any]) -> None:
    """DESIGN invariant 1: a connection needs an active grant for that asset *and service*."""
    plant = shared_api.plant
    grant = shared_api.grant("vendor1", "sup-a1", asset=asset, ssh=ssh, ports=ports)
    before = plant.count("sessions")

    response = shared_api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "peer": PEER,
                                                                     **session})

    assert_refusal(response, 403, "forbidden")
    assert plant.count("sessions") == before


@pytest.mark.parametrize("kind", ["telnet", "", "SHELL", "x" * 9])
def test_session_kinds_outside_the_contract_are_refused(shared_api: Api, kind: str) -> None:
    plant = shared_api.plant
    grant = shared_api.grant("vendor1", "sup-a1")
    before = plant.count("sessions")

    response = shared_api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": kind})

    assert_refusal(response, 400, "invalid_input")
    assert plant.count("sessions") == before


def test_what_the_gateway_refuses_itself_is_audited(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    gateway = api.gateway()

    reported = gateway.post("/gateway/refusals", json={
        "grant_id": grant["id"], "kind": "forward", "host": "10.9.9.9", "port": 22,
        "reason": "this grant reaches hmi-01 only, not 10.9.9.9"})

    assert reported.status_code == 204, reported.text
    [event] = plant.audit("gateway:connection:refused")
    assert (event["outcome"], event["actor"], event["subject"], event["site"]) == (
        "refused", "vendor1", grant["id"], "plant-a")
    assert event["details"]["reason"] == "this grant reaches hmi-01 only, not 10.9.9.9"
    assert (event["details"]["kind"], event["details"]["host"], event["details"]["port"]) == ("forward", "10.9.9.9", 22)
    before = plant.last_seq()
    assert_refusal(gateway.post("/gateway/refusals", json={"grant_id": grant["id"], "kind": "teleport",
                                                           "reason": "x"}), 400, "invalid_input")
    assert_refusal(gateway.post("/gateway/refusals", json={"grant_id": "grt-00000000", "kind": "forward",
                                                           "reason": "x"}), 404, "not_found")
    assert_refusal(api.as_user("vendor1").post("/gateway/refusals", json={
        "grant_id": grant["id"], "kind": "forward", "reason": "x"}), 401, None)
    # The gateway's own malformed reports change nothing; a user token on the gateway API is itself audited.
    assert [(e["action"], e["details"]["status"]) for e in plant.audit(after_seq=before)] == [
        ("api:request:refused", 401)]


def test_a_refused_modbus_write_is_audited_with_its_facts(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    gateway = api.gateway()
    session_id = gateway.post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "exec"}).json()[
        "session_id"]

    reported = gateway.post(f"/gateway/sessions/{session_id}/events", json={
        "kind": "modbus_write_refused", "detail": {"function_code": 6, "unit_id": 1}})

    assert reported.status_code == 204, reported.text
    [event] = plant.audit("gateway:modbus:write_refused")
    assert (event["outcome"], event["actor"], event["subject"]) == ("refused", "vendor1", session_id)
    assert (event["details"]["function_code"], event["details"]["grant"]) == (6, grant["id"])
    assert_refusal(gateway.post(f"/gateway/sessions/{session_id}/events", json={"kind": "made_up"}),
                   400, "invalid_input")
    assert_refusal(gateway.post("/gateway/sessions/ses-00000000/events", json={"kind": "modbus_write_refused"}),
                   404, "not_found")

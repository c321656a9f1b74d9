"""Issue 15 on the broker: the site's cut grace (`gatepass admin site add|set --cut-grace`), sent to the gateway
in the authorize answer, and how a cut command was stopped, kept in the session-end audit event."""

from __future__ import annotations

from typing import Any

import pytest

from broker.errors import InvalidInput
from broker.inventory import sites
from tests.broker.conftest import AdminCli
from tests.fixtures.broker import Api, Plant, assert_refusal

PEER = "198.51.100.7:50123"
STOP = {"signals": ["TERM", "KILL"], "confirmed": True, "exit": "signal KILL", "grace_ms": 2000,
        "swept": {"TERM": 3, "KILL": 1}, "sweep_error": None}




def _cut_grace_sent(api: Api, plant: Plant) -> Any:
    grant_id = api.grant("vendor1", "sup-a1")["id"]
    serial = int(plant.row("SELECT serial FROM grants WHERE id = :id", id=grant_id)[0])
    response = api.gateway().post("/gateway/authorize", json={"grant_id": grant_id, "serial": serial,
                                                              "asset": "hmi-01", "peer": PEER})
    assert response.status_code == 200, response.text
    return response.json()["cut_grace_ms"]


def test_the_sites_cut_grace_is_set_audited_and_sent_to_the_gateway(api: Api, plant: Plant,
                                                                    admin_cli: AdminCli) -> None:
    assert _cut_grace_sent(api, plant) == 2000  # the default

    code, out, err = admin_cli("admin", "site", "set", "plant-a", "--cut-grace", "500ms")

    assert code == 0, err
    assert "Site plant-a: cut grace 2s -> 500ms" in out
    [event] = plant.audit("admin:site:updated")
    assert event["details"] == {"cut_grace": {"old": "2s", "new": "500ms"}}
    assert _cut_grace_sent(api, plant) == 500

    code, out, _ = admin_cli("admin", "site", "set", "plant-a", "--cut-grace", "500ms")
    assert "unchanged" in out
    code, _, err = admin_cli("admin", "site", "add", "plant-c", "--cut-grace", "0")
    assert code == 0, err
    assert plant.row("SELECT cut_grace_ms FROM sites WHERE name = 'plant-c'")[0] == 0
    assert plant.audit("admin:site:created")[-1]["details"]["cut_grace"] == "0s"


@pytest.mark.parametrize(("value", "reason"), [
    ("31s", "too long: at most 30s"),
    ("1m", "too long: at most 30s"),
    ("500", "is not a cut grace: write it like 2s, 500ms or 0"),
    ("soon", "is not a cut grace"),
    ("-1s", "is not a cut grace"),
])
def test_a_bad_cut_grace_is_refused_with_the_reason_and_changes_nothing(plant: Plant, admin_cli: AdminCli,
                                                                       value: str, reason: str) -> None:
    code, _, err = admin_cli("admin", "site", "set", "plant-a", f"--cut-grace={value}", "--transfers", "download-only")

    assert code == 1
    assert reason in err
    assert plant.row("SELECT cut_grace_ms, transfers FROM sites WHERE name = 'plant-a'") == (2000, "both")
    assert plant.audit("admin:site:updated") == []
    with pytest.raises(InvalidInput, match=reason):
        sites.parse_cut_grace(value)


def _open_session(api: Api) -> str:
    grant = api.grant("vendor1", "sup-a1")
    started = api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "exec",
                                                            "command": "sleep 600"})
    assert started.status_code == 201, started.text
    session_id: str = started.json()["session_id"]
    return session_id


def test_the_session_end_event_says_how_the_cut_command_was_stopped(api: Api, plant: Plant) -> None:
    session_id = _open_session(api)

    ended = api.gateway().post(f"/gateway/sessions/{session_id}/end", json={
        "reason": "revoked", "bytes_in": 0, "bytes_out": 8, "detail": None, "stop": STOP})

    assert ended.status_code == 204, ended.text
    [event] = plant.audit("gateway:session:ended")
    assert event["details"]["stop"] == STOP
    assert event["details"]["reason"] == "revoked"


def test_a_session_end_without_a_stop_has_none_in_its_event(api: Api, plant: Plant) -> None:
    session_id = _open_session(api)
    api.gateway().post(f"/gateway/sessions/{session_id}/end", json={"reason": "client_closed", "bytes_in": 0,
                                                                   "bytes_out": 0})
    [event] = plant.audit("gateway:session:ended")
    assert "stop" not in event["details"]


@pytest.mark.parametrize("stop", [
    {**STOP, "signals": ["HUP"]},
    {**STOP, "signals": ["TERM", "KILL", "TERM"]},
    {**STOP, "grace_ms": 30_001},
    {**STOP, "swept": {"TERM": -1}},
    {**STOP, "swept": {"STOP": 1}},
    {**STOP, "exit": "x" * 65},
    {**STOP, "confirmed": "yes"},
    {**STOP, "pid": 4242},
], ids=["unknown signal", "too many signals", "grace too long", "negative count", "unknown sweep signal",
        "exit too long", "confirmed not a boolean", "unknown field"])
def test_a_bad_stop_report_is_refused_and_the_session_stays_open(api: Api, plant: Plant,
                                                                 stop: dict[str, Any]) -> None:
    session_id = _open_session(api)
    seq = plant.last_seq()

    response = api.gateway().post(f"/gateway/sessions/{session_id}/end", json={
        "reason": "revoked", "bytes_in": 0, "bytes_out": 0, "stop": stop})

    assert_refusal(response, 400, "invalid_input")
    assert plant.row("SELECT ended_at FROM sessions WHERE id = :id", id=session_id) == (None,)
    assert plant.audit(after_seq=seq) == []

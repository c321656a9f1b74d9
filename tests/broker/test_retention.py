"""Recording retention and evidence holds on the real broker: the purge job (a broker under uvicorn with a short
sweep interval, on the plant's moved clock) deletes what is past its site's retention, one audit event each,
never a held recording; `gatepass audit verify` accepts a purge the trail proves and still fails on a file
deleted by hand; holds and releases are for security and admins only (refusals audited); the safe default keeps
recordings forever."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from broker.inventory import sites
from broker.recordings import purge, retention, store
from broker.recordings.retention import parse_retention
from tests.broker.test_recordings_verify import gatepass_verify, record_session
from tests.fixtures.broker import Api, BrokerServer, Plant, Reaper, assert_refusal

PURGED = "retention:recording:purged"
DAY = dt.timedelta(days=1)


def set_retention(plant: Plant, site: str, days: int | object) -> dict[str, Any]:
    with plant.session() as session:
        return sites.update_site(session, now=plant.clock.now(), actor="test", name=site,
                                 recording_retention_days=days)


@pytest.fixture
def job_broker(plant: Plant, reaper: Reaper) -> Iterator[BrokerServer]:
    """A second broker replica over the same plant whose purge job looks every 50 ms (the default is 10 minutes)."""
    settings = dataclasses.replace(plant.settings, retention_sweep_interval=dt.timedelta(milliseconds=50))
    running = BrokerServer(settings).start()
    try:
        yield running
    finally:
        running.server.should_exit = True
        reaper.add(running.stop)


def wait_for_purges(plant: Plant, count: int, *, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        events = plant.audit(PURGED)
        if len(events) >= count:
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(events)} purge event(s) after {timeout} s, expected {count}")
        time.sleep(0.05)


def recording_path(plant: Plant, session_id: str) -> Any:
    return store.recordings_dir(plant.settings) / f"{session_id}.cast"


def test_the_purge_job_deletes_what_is_past_retention_keeps_held_ones_and_verify_agrees(
        api: Api, plant: Plant, job_broker: BrokerServer) -> None:
    grant = api.grant("vendor1", "sup-a1")
    old = record_session(api, plant, grant["id"], "old output\r\n$ ")
    held = record_session(api, plant, grant["id"], "held output\r\n$ ")
    changes = set_retention(plant, "plant-a", 30)
    assert changes == {"recording_retention": {"old": "default", "new": "30 days"}}
    answer = api.as_user("sec1").post(f"/recordings/{held}/hold", json={"reason": "incident 4711"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["on_hold"] is True
    assert answer.json()["holds"][0]["text"] == "by sec1: incident 4711"

    plant.clock.advance(20 * DAY)
    later = record_session(api, plant, api.grant("vendor1", "sup-a1")["id"], "later output\r\n$ ")
    old_bytes = recording_path(plant, old).stat().st_size
    plant.clock.advance(11 * DAY)  # old and held: 31 days; later: 11 days

    event = wait_for_purges(plant, 1)[0]
    assert event["subject"] == old
    assert event["actor"] == "system:retention"
    assert event["site"] == "plant-a"
    assert event["details"]["recording"]["bytes"] == old_bytes
    assert event["details"]["recording"]["sha256"] == plant.row(
        "SELECT recording_sha256 FROM sessions WHERE id = :id", id=old)[0]
    assert (event["details"]["retention_days"], event["details"]["policy"]) == (30, "site")
    deadline = time.monotonic() + 5  # the event commits first, the file goes right after it (retention.py)
    while recording_path(plant, old).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not recording_path(plant, old).exists()
    assert plant.row("SELECT recording_purged_at FROM sessions WHERE id = :id", id=old)[0] is not None
    assert recording_path(plant, held).is_file()
    assert recording_path(plant, later).is_file()

    verified = gatepass_verify(plant)
    assert verified.returncode == 0, verified.stderr
    assert "3 recordings checked" in verified.stdout
    assert "1 of them purged under retention, each proved by its audit event" in verified.stdout

    state = api.as_user("sec1").get(f"/recordings/{old}").json()
    assert state["purged_at"] is not None
    held_state = api.as_user("sec1").get(f"/recordings/{held}").json()
    assert held_state["retention"] == {"days": 30, "policy": "site", "forever": False,
                                       "purge_after": held_state["retention"]["purge_after"]}
    assert held_state["on_hold"] is True

    # Released: it follows the site's retention again, and the job takes it on its next round.
    released = api.as_user("sec1").post(f"/recordings/{held}/release", json={"reason": "case closed, no finding"})
    assert released.status_code == 200, released.text
    assert released.json()["holds"][0]["released_by"] == "sec1"
    release_event = plant.audit("review:recording:released")[-1]
    assert (release_event["actor"], release_event["subject"]) == ("sec1", held)
    assert release_event["details"]["reason"] == "case closed, no finding"
    assert release_event["details"]["holds"] == [{"run": None, "held_by": "sec1", "reason": "incident 4711"}]
    assert [e["subject"] for e in wait_for_purges(plant, 2)] == [old, held]
    assert not recording_path(plant, held).exists()
    assert len(plant.audit(PURGED)) == 2  # one event per recording, never a second for the same one

    # A file deleted by hand, with no purge event to prove it, still fails the check.
    recording_path(plant, later).unlink()
    tampered = gatepass_verify(plant)
    assert tampered.returncode == 1
    assert f"session {later}" in tampered.stderr
    assert "MISSING" in tampered.stderr


def test_a_purged_mark_without_its_event_is_not_proof(api: Api, plant: Plant) -> None:
    """Someone with database rights marks a row purged and deletes the file: no chained event, so it fails."""
    grant = api.grant("vendor1", "sup-a1")
    session_id = record_session(api, plant, grant["id"], "quiet output\r\n$ ")
    with plant.engine.begin() as db:
        db.execute(text("UPDATE sessions SET recording_purged_at = :now WHERE id = :id"),
                   {"now": plant.clock.now(), "id": session_id})
    recording_path(plant, session_id).unlink()
    result = gatepass_verify(plant)
    assert result.returncode == 1
    assert "no purge event in the audit trail proves it" in result.stderr


def test_a_changed_file_past_retention_is_kept_for_verify_to_report(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    session_id = record_session(api, plant, grant["id"], "evidence output\r\n$ ")
    path = recording_path(plant, session_id)
    path.write_bytes(path.read_bytes().replace(b"evidence", b"Evidence"))
    set_retention(plant, "plant-a", 1)
    plant.clock.advance(2 * DAY)
    from broker.db import make_session_factory

    report = purge.purge(make_session_factory(plant.engine), now=plant.clock.now(), default_days=0,
                         directory=store.recordings_dir(plant.settings))
    assert report.purged == []
    assert [c.session_id for c in report.kept] == [session_id]
    assert "no longer matches" in str(report.kept[0].problem)
    assert path.is_file()
    assert plant.audit(PURGED) == []

    # Kept ones never fill a batch: with room for one, the intact recording behind the changed one still goes.
    intact = record_session(api, plant, api.grant("vendor1", "sup-a1")["id"], "routine output\r\n$ ")
    plant.clock.advance(2 * DAY)
    with plant.session() as session:
        found = retention.due(session, now=plant.clock.now(), default_days=0,
                              directory=store.recordings_dir(plant.settings), limit=1)
    assert [(c.session_id, c.problem is None) for c in found] == [(session_id, False), (intact, True)]


def test_recordings_are_kept_forever_unless_a_retention_is_set(api: Api, plant: Plant) -> None:
    from broker.db import make_session_factory

    grant = api.grant("vendor1", "sup-a1")
    session_id = record_session(api, plant, grant["id"], "kept output\r\n$ ")
    factory = make_session_factory(plant.engine)
    directory = store.recordings_dir(plant.settings)
    plant.clock.advance(3650 * DAY)
    assert plant.settings.recording_retention_days == 0
    assert purge.plan(factory, now=plant.clock.now(), default_days=0, directory=directory).purged == []
    # The broker's default applies to sites without their own policy; a site's "forever" overrides it.
    planned = purge.plan(factory, now=plant.clock.now(), default_days=365, directory=directory).purged
    assert [(c.session_id, c.retention.source, c.retention.days) for c in planned] == [(session_id, "default", 365)]
    set_retention(plant, "plant-a", 0)
    assert purge.plan(factory, now=plant.clock.now(), default_days=365, directory=directory).purged == []
    assert set_retention(plant, "plant-a", sites.CLEAR) == {
        "recording_retention": {"old": "forever", "new": "default"}}
    assert recording_path(plant, session_id).is_file()
    assert plant.audit(PURGED) == []


def test_a_changed_default_retention_is_audited_before_anything_is_purged_under_it(api: Api, plant: Plant) -> None:
    """GATEPASS_RECORDING_RETENTION_DAYS is a deployment setting no command audits: the purge writes the change
    down (once per change) before the first deletion under it, and the trail says it came first."""
    from broker.db import make_session_factory

    session_id = record_session(api, plant, api.grant("vendor1", "sup-a1")["id"], "old output\r\n$ ")
    factory = make_session_factory(plant.engine)
    directory = store.recordings_dir(plant.settings)
    changed = "retention:default:changed"

    purge.purge(factory, now=plant.clock.now(), default_days=0, directory=directory)
    assert plant.audit(changed) == []  # the safe default (forever) in force from the start: nothing to say

    plant.clock.advance(40 * DAY)
    report = purge.purge(factory, now=plant.clock.now(), default_days=30, directory=directory)
    assert [c.session_id for c in report.purged] == [session_id]
    [event] = plant.audit(changed)
    details = json.loads(event["details"]) if isinstance(event["details"], str) else event["details"]
    assert (details["from_days"], details["to_days"]) == (0, 30)
    assert "kept forever -> kept 30 days" in details["summary"]
    assert event["seq"] < plant.audit(PURGED)[0]["seq"]

    purge.purge(factory, now=plant.clock.now(), default_days=30, directory=directory)
    assert len(plant.audit(changed)) == 1  # unchanged: not written again
    purge.purge(factory, now=plant.clock.now(), default_days=0, directory=directory)
    assert [json.loads(e["details"]) if isinstance(e["details"], str) else e["details"]
            for e in plant.audit(changed)][-1]["to_days"] == 0


@pytest.mark.parametrize(("given", "days"), [("30", 30), ("0", 0), ("forever", 0), ("default", None)])
def test_retention_values(given: str, days: int | None) -> None:
    assert parse_retention(given) == days


@pytest.mark.parametrize("given", ["-1", "1.5", "thirty", "36501", ""])
def test_retention_values_refused(given: str) -> None:
    from broker.errors import InvalidInput

    with pytest.raises(InvalidInput, match="is not a recording retention"):
        parse_retention(given)


def test_refusals_are_clear_and_audited(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    session_id = record_session(api, plant, grant["id"], "some output\r\n$ ")
    assert api.as_user("sec1").post(f"/recordings/{session_id}/hold", json={"reason": "keep"}).status_code == 200

    # The vendor whose session it is tries to let their own recording go.
    refused = api.as_user("vendor1").post(f"/recordings/{session_id}/release", json={"reason": "mine"})
    body = assert_refusal(refused, 403, "forbidden")
    assert "only security reviewers and admins can release a recording held as evidence" in body["message"]
    event = plant.audit("review:recording:hold_refused")[-1]
    assert (event["actor"], event["subject"], event["outcome"]) == ("vendor1", session_id, "refused")
    assert event["details"]["verb"] == "release"
    # A supervisor of the site may not hold (or read the holds) either; the hold stays.
    assert_refusal(api.as_user("sup-a1").post(f"/recordings/{session_id}/hold", json={"reason": "x"}), 403)
    assert_refusal(api.as_user("sup-a1").get(f"/recordings/{session_id}"), 403)
    assert plant.count("evidence_holds", "WHERE released_at IS NULL") == 1

    unknown = assert_refusal(api.as_user("sec1").post("/recordings/ses-nosuch/hold", json={"reason": "x"}), 404)
    assert "there is no session ses-nosuch" in unknown["message"]
    assert_refusal(api.as_user("sec1").post("/runs/run-nosuch/release", json={"reason": "x"}), 404)
    blank = assert_refusal(api.as_user("sec1").post(f"/recordings/{session_id}/release", json={"reason": "  "}), 400)
    assert "say why" in blank["message"]
    assert api.as_user("admin").post(f"/recordings/{session_id}/release", json={"reason": "done"}).status_code == 200
    again = assert_refusal(api.as_user("sec1").post(f"/recordings/{session_id}/release", json={"reason": "x"}), 409)
    assert "is not on hold" in again["message"]


def test_a_playbook_run_holds_its_recordings_under_its_run_id(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    ended = record_session(api, plant, grant["id"], "suspicious output\r\n$ ")
    live = api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "shell"})
    assert live.status_code == 201, live.text
    live_id = live.json()["session_id"]
    drill = api.as_user("sec1").post("/playbooks/compromised-vendor-account/drill",
                                     json={"identity": "vendor1", "reason": "rehearsal"})
    assert drill.status_code == 200, drill.text
    assert plant.count("evidence_holds") == 0  # a drill only plans

    run = api.as_user("sec1").post("/playbooks/compromised-vendor-account/run",
                                   json={"identity": "vendor1", "reason": "credential seen on a paste site"})
    assert run.status_code == 200, run.text
    run_id = run.json()["run_id"]
    rows = plant.column("SELECT session_id || ':' || run_id FROM evidence_holds ORDER BY session_id")
    assert sorted(rows) == sorted([f"{ended}:{run_id}", f"{live_id}:{run_id}"])
    preserved = plant.audit("respond:evidence:preserved")[-1]
    assert sorted(preserved["details"]["held"]) == sorted([ended, live_id])
    held_events = [e for e in plant.audit("review:recording:held") if e["details"]["run"] == run_id]
    assert sorted(e["subject"] for e in held_events) == sorted([ended, live_id])
    state = api.as_user("sec1").get(f"/recordings/{ended}").json()
    assert state["holds"][0]["text"].startswith(f"run {run_id} / by sec1: playbook compromised-vendor-account")

    released = api.as_user("sec1").post(f"/runs/{run_id}/release", json={"reason": "reviewed, benign"})
    assert released.status_code == 200, released.text
    assert sorted(released.json()["released"]) == sorted([ended, live_id])
    assert plant.count("evidence_holds", "WHERE released_at IS NULL") == 0
    assert json.loads(json.dumps(plant.audit("review:recording:released")[-1]["details"]["holds"]))[0]["run"] == run_id

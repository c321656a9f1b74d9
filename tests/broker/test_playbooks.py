"""Containment playbooks (issue 12): the built-in responses run by the people who may, every step audited
under the run's id; drills that plan without changing anything, or really run on a drill site; edits as new
versions; the runs read back with their time to contain; the message queued for the people concerned."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from sqlalchemy import select, text, update

from broker.access.notifications import Targets, claim_due, enqueue_playbook_messages
from broker.db import READ_ONLY_OPTION
from broker.inventory import gateways
from broker.models import Identity, Site
from broker.recordings import holds
from tests.approvals.conftest import open_session
from tests.fixtures.broker import Api, Plant


def _run(api: Api, who: str, name: str, verb: str = "run", **body: Any) -> Any:
    return api.as_user(who).post(f"/playbooks/{name}/{verb}", json={"reason": "drill of the night shift", **body})


def _live(plant: Plant, vendor: str, asset: str = "hmi-01", approver: str = "sup-a1") -> tuple[str, str]:
    plant.ensure(vendor)
    grant_id = plant.request_and_approve(vendor, approver, asset=asset)
    return grant_id, open_session(plant, grant_id)


def test_ransomware_at_a_site_locks_it_down_suspends_who_was_in_it_and_keeps_the_evidence(
        api: Api, plant: Plant) -> None:
    grant_a, session_a = _live(plant, "vendor1")
    grant_b, _ = _live(plant, "vendor2", asset="hmi-b1", approver="sup-b")
    answer = _run(api, "sup-a1", "ransomware-suspected", site="plant-a")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["lock_down_site"]["grants"] == [grant_a]
    assert steps["lock_down_site"]["sessions"] == [session_a]
    assert steps["suspend_recent_identities"]["identities"] == ["vendor1"]
    assert plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]
    assert plant.row("SELECT status FROM identities WHERE username = 'vendor1'") == ("suspended",)
    assert plant.row("SELECT revoked_at IS NULL FROM grants WHERE id = :id", id=grant_b)[0], "plant-b untouched"
    run_id = report["run_id"]
    events = [e for e in plant.audit() if e["subject"] == run_id]
    assert [e["action"] for e in events] == ["respond:playbook:started", *["respond:playbook:step"] * 2,
                                             "respond:evidence:preserved", "respond:playbook:step",
                                             "respond:playbook:step", "respond:playbook:finished"]
    suspended = plant.audit("identity:lifecycle:suspended")[-1]
    assert run_id in suspended["details"]["reason"]
    assert "sup-a1" in events[-1]["details"]["notify"]  # the site's supervisor (no address: by name)


def test_a_supervisor_of_another_site_or_a_vendor_may_not_and_it_is_audited(api: Api, plant: Plant) -> None:
    _live(plant, "vendor1")
    for who in ("sup-b", "vendor1"):
        refused = _run(api, who, "ransomware-suspected", site="plant-a")
        assert refused.status_code == 403, refused.text
        assert "may run ransomware-suspected" in refused.json()["message"]
    assert [e["actor"] for e in plant.audit("respond:playbook:refused")] == ["sup-b", "vendor1"]
    assert not plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]


def test_a_drill_plans_without_changing_anything_and_runs_for_real_only_on_a_drill_site(
        api: Api, plant: Plant) -> None:
    grant_id, session_id = _live(plant, "vendor1")
    planned = _run(api, "sec1", "ransomware-suspected", "drill", site="plant-a").json()
    assert planned["executed"] is False
    assert {s["step"]: s for s in planned["steps"]}["lock_down_site"]["sessions"] == [session_id]
    assert not plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]
    assert plant.row("SELECT revoked_at IS NULL FROM grants WHERE id = :id", id=grant_id)[0]
    assert plant.audit("respond:drill:planned")[-1]["subject"] == planned["run_id"]

    refused = _run(api, "sec1", "ransomware-suspected", "drill", site="plant-a", execute=True)
    assert refused.status_code == 409
    assert "drill site" in refused.json()["message"]
    with plant.session() as session:
        session.execute(update(Site).where(Site.name == "plant-a").values(drill_site=True))
    executed = _run(api, "sec1", "ransomware-suspected", "drill", site="plant-a", execute=True).json()
    assert executed["executed"] is True
    assert all(s["elapsed_ms"] is not None for s in executed["steps"])
    assert plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]


def test_a_rogue_ai_agent_is_stopped_by_its_sponsor_and_a_person_needs_the_other_playbook(
        api: Api, plant: Plant) -> None:
    plant.ensure("sup-a1")
    plant.add_user("triage-bot", role="vendor", kind="ai_agent", owner="sup-a1")
    wrong = _run(api, "sup-a1", "rogue-ai-agent", identity="vendor1")
    assert wrong.status_code in (400, 403), wrong.text
    done = _run(api, "sup-a1", "rogue-ai-agent", identity="triage-bot")
    assert done.status_code == 200, done.text
    assert plant.row("SELECT status FROM identities WHERE username = 'triage-bot'") == ("suspended",)


def test_a_compromised_vendor_account_is_suspended_and_its_second_factor_reset(api: Api, plant: Plant) -> None:
    _live(plant, "vendor1")
    done = _run(api, "sec1", "compromised-vendor-account", identity="vendor1")
    assert done.status_code == 200, done.text
    assert plant.row("SELECT status, totp_confirmed_at FROM identities WHERE username = 'vendor1'") == (
        "suspended", None)
    assert plant.audit("admin:identity:totp_reset")[-1]["subject"] == "vendor1"


def test_an_edit_is_a_new_version_and_unknown_steps_are_refused(admin_cli: Any, api: Api, plant: Plant) -> None:
    code, _, err = admin_cli("admin", "playbook", "edit", "ransomware-suspected", "--steps", "lock_down_site,format_c")
    assert code == 1
    assert "unknown step" in err
    code, out, _ = admin_cli("admin", "playbook", "edit", "ransomware-suspected", "--steps",
                             "revoke_site_grants,notify")
    assert code == 0
    assert "version 2" in out
    listed = {p["name"]: p for p in api.as_user("sec1").get("/playbooks").json()}
    assert listed["ransomware-suspected"]["version"] == 2
    assert [s["step"] for s in listed["ransomware-suspected"]["steps"]] == ["revoke_site_grants", "notify"]
    _live(plant, "vendor1")
    _run(api, "sec1", "ransomware-suspected", site="plant-a")
    assert not plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]  # v2 does not lock down
    assert plant.audit("respond:playbook:edited")[-1]["details"]["previous"][0] == "lock_down_site"


def test_the_runs_show_the_time_to_contain_once_the_gateways_report_the_ends(api: Api, plant: Plant) -> None:
    _, session_id = _live(plant, "vendor1")
    run_id = _run(api, "sec1", "ransomware-suspected", site="plant-a").json()["run_id"]
    [pending] = [r for r in api.as_user("sec1").get("/playbooks/runs").json() if r["run_id"] == run_id]
    assert (pending["sessions_cut"], pending["sessions_still_open"], pending["seconds_to_contain"]) == (1, 1, None)
    plant.clock.advance(dt.timedelta(milliseconds=700))
    with plant.session() as session:
        gateway = gateways.authenticate_gateway(session, plant.gateway_token)
        gateways.end_session(session, now=plant.clock.now(), gateway=gateway, session_id=session_id,
                             reason="revoked", bytes_in=0, bytes_out=0, detail=None)
    [done] = [r for r in api.as_user("sec1").get("/playbooks/runs").json() if r["run_id"] == run_id]
    assert done["seconds_to_contain"] == 0.7
    assert api.as_user("vendor2").get("/playbooks/runs").status_code == 403


def test_the_message_of_a_run_is_queued_for_the_webhook_and_the_people_concerned(api: Api, plant: Plant) -> None:
    with plant.session() as session:
        session.execute(update(Identity).where(Identity.username == "sup-a1").values(email="sup-a1@plant.example"))
    _live(plant, "vendor1")
    run_id = _run(api, "sec1", "ransomware-suspected", site="plant-a").json()["run_id"]
    targets = Targets(webhook_url="http://127.0.0.1:9/hook", approver_emails=True)
    with plant.session() as session:
        assert enqueue_playbook_messages(session, now=plant.clock.now(), targets=targets) == 2
        assert enqueue_playbook_messages(session, now=plant.clock.now(), targets=targets) == 0
        deliveries = claim_due(session, now=plant.clock.now(), public_url="http://gatepass.example")
    assert sorted(d.target for d in deliveries) == ["http://127.0.0.1:9/hook", "sup-a1@plant.example"]
    assert all(run_id in d.subject and "ransomware-suspected" in d.text for d in deliveries)


def test_a_site_switched_to_read_only_keeps_modbus_reads_and_ends_the_rest(admin_cli: Any, api: Api,
                                                                          plant: Plant) -> None:
    code, _, err = admin_cli("admin", "playbook", "edit", "plc-tampering", "--steps", "site_read_only,notify",
                             "--description", "someone writes to PLCs: keep reads, stop everything else")
    assert code == 0, err
    shell, _ = _live(plant, "vendor1")
    reads = plant.request_and_approve("vendor2", "sup-a1", asset="plc-01", ssh=False, ports=[502], read_only=True)
    done = _run(api, "sup-a1", "plc-tampering", site="plant-a")
    assert done.status_code == 200, done.text
    assert plant.row("SELECT read_only_mode FROM sites WHERE name = 'plant-a'")[0]
    assert plant.row("SELECT revoked_at IS NOT NULL FROM grants WHERE id = :id", id=shell)[0]
    assert plant.row("SELECT revoked_at IS NULL FROM grants WHERE id = :id", id=reads)[0]
    refused = api.as_user("vendor1").post("/requests", json={
        "asset": "hmi-01", "duration": "1h", "reason": "again", "ssh": True, "ports": [],
        "public_key": plant.row("SELECT public_key FROM access_requests LIMIT 1")[0]})
    assert refused.status_code == 403
    assert "read-only mode" in refused.json()["message"]


def test_a_playbook_needs_a_second_factor_at_sign_in_like_approving(api: Api, plant: Plant) -> None:
    """Someone signed in by the company's provider without multi-factor may look, not run a playbook."""
    api.as_user("sec1").get("/playbooks")  # signed in
    with plant.session() as session:
        session.execute(update(Identity.__table__.metadata.tables["api_tokens"]).where(
            Identity.__table__.metadata.tables["api_tokens"].c.identity_id == select(Identity.id).where(
                Identity.username == "sec1").scalar_subquery()).values(without_mfa=True))
    refused = _run(api, "sec1", "ransomware-suspected", site="plant-a")
    assert refused.status_code == 403
    assert "second factor" in refused.json()["message"]
    assert plant.audit("respond:playbook:refused")[-1]["details"]["mfa"] is False
    assert not plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]


def test_the_commands_help_names_every_step_the_broker_knows() -> None:
    from broker.respond.playbooks import Step
    from cli.admin_playbook_commands import STEPS

    assert tuple(Step) == STEPS


def test_security_edits_a_playbook_over_the_api_and_others_may_not(api: Api, plant: Plant) -> None:
    body = {"steps": ["lock_down_site", "preserve_evidence", "notify"]}
    for who in ("sup-a1", "vendor1"):
        refused = api.as_user(who).put("/playbooks/ransomware-suspected", json=body)
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"] == "only security reviewers and admins can change a playbook"
    assert [e["actor"] for e in plant.audit("respond:playbook:refused")] == ["sup-a1", "vendor1"]

    bad = api.as_user("sec1").put("/playbooks/ransomware-suspected", json={"steps": ["lock_down_site", "wipe"]})
    assert bad.status_code == 400
    assert "unknown step(s) wipe" in bad.json()["message"]
    edited = api.as_user("sec1").put("/playbooks/ransomware-suspected", json=body)
    assert edited.status_code == 200, edited.text
    assert edited.json()["version"] == 2
    assert [s["step"] for s in edited.json()["steps"]] == body["steps"]
    [event] = plant.audit("respond:playbook:edited")
    assert (event["actor"], event["details"]["steps"]) == ("sec1", body["steps"])
    assert "suspend_recent_identities" in event["details"]["previous"]
    listed = {p["name"]: p for p in api.as_user("sup-a1").get("/playbooks").json()}
    assert listed["ransomware-suspected"]["version"] == 2


def test_an_edit_needs_a_second_factor_too(api: Api, plant: Plant) -> None:
    api.as_user("sec1").get("/playbooks")
    with plant.session() as session:
        session.execute(update(Identity.__table__.metadata.tables["api_tokens"]).where(
            Identity.__table__.metadata.tables["api_tokens"].c.identity_id == select(Identity.id).where(
                Identity.username == "sec1").scalar_subquery()).values(without_mfa=True))
    refused = api.as_user("sec1").put("/playbooks/ransomware-suspected", json={"steps": ["notify"]})
    assert refused.status_code == 403
    assert "second factor" in refused.json()["message"]
    assert plant.audit("respond:playbook:edited") == []


def test_the_containment_is_committed_before_the_evidence_is_written_and_stays_if_that_fails(
        api: Api, plant: Plant, monkeypatch: Any) -> None:
    """The gateways act on committed changes only: the lockdown and the suspension must be committed (so the
    sessions are cut) before a busy site's evidence (a hold and an event per recording) is written, and a failure
    after them must not roll the containment back."""
    _, session_a = _live(plant, "vendor1")
    seen: dict[str, Any] = {}

    def failing_hold(*_: Any, **__: Any) -> list[str]:
        # Another connection, a reader (the run holds SQLite's write lock again): what is committed now, which is
        # what the gateways' event stream acts on.
        with plant.engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as reader:
            seen["locked_down"] = reader.execute(text("SELECT locked_down FROM sites WHERE name = 'plant-a'")).one()[0]
            seen["vendor1"] = reader.execute(text("SELECT status FROM identities WHERE username = 'vendor1'")).one()[0]
        raise RuntimeError("the evidence could not be held")

    monkeypatch.setattr(holds, "hold_for_run", failing_hold)
    with contextlib.suppress(RuntimeError):  # the test client re-raises the server's error
        answer = _run(api, "sup-a1", "ransomware-suspected", site="plant-a")
        assert answer.status_code == 500
    assert seen == {"locked_down": True, "vendor1": "suspended"}
    assert plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]
    assert plant.row("SELECT status FROM identities WHERE username = 'vendor1'") == ("suspended",)
    actions = [e["action"] for e in plant.audit()]
    assert "containment:site:locked_down" in actions
    assert "respond:playbook:finished" not in actions  # the run did not finish, and the trail says so
    assert session_a

"""Every identity governed (issue 11): the lifecycle and its rules, the inventory's flags, the sweep of end
dates and missing owners, and the access reviews — on the domain functions with a fixed clock, and over the API
for who may do what."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import update

from broker.errors import Conflict, Forbidden, InvalidInput
from broker.identity import attestation, identities, inventory, lifecycle
from broker.inventory.gateway_events import NullPublisher
from broker.models import Identity, Site
from tests.fixtures.broker import Api, Plant

DAY = dt.timedelta(days=1)


def _identity(plant: Plant, username: str) -> Identity:
    with plant.session() as session:
        identity = identities.get_identity(session, username)
        session.expunge(identity)
        return identity


def _flags(plant: Plant, username: str) -> list[str]:
    with plant.session() as session:
        return inventory.show_identity(session, now=plant.clock.now(), username=username).flags


def _service(plant: Plant, name: str = "historian", *, owner: str = "sup-a1", sites: list[str] | None = None) -> None:
    plant.ensure(owner)
    plant.add_user(name, role="vendor", kind="service", owner=owner, sites=sites)


# --- lifecycle ---------------------------------------------------------------------------------------------


def test_suspend_resume_retire_and_the_transitions_that_are_refused(plant: Plant) -> None:
    plant.ensure("vendor1")
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    with plant.session() as session:
        done = lifecycle.suspend(session, now=plant.clock.now(), events=NullPublisher(), actor="cli:ops",
                                 username="vendor1", reason="phishing suspected")
    assert (done.was, done.now, done.grants_revoked) == ("active", "suspended", [grant_id])
    assert plant.row("SELECT revoked_by FROM grants WHERE id = :id", id=grant_id) == ("cli:ops",)
    with plant.session() as session, pytest.raises(Conflict, match="only an active identity"):
        lifecycle.suspend(session, now=plant.clock.now(), events=NullPublisher(), actor="cli:ops",
                          username="vendor1", reason="again")
    with plant.session() as session, pytest.raises(InvalidInput, match="give a reason"):
        lifecycle.resume(session, now=plant.clock.now(), actor="cli:ops", username="vendor1", reason="  ")
    with plant.session() as session:
        lifecycle.resume(session, now=plant.clock.now(), actor="cli:ops", username="vendor1", reason="cleared")
        lifecycle.retire(session, now=plant.clock.now(), events=NullPublisher(), actor="cli:ops",
                         username="vendor1", reason="left the company")
    with plant.session() as session, pytest.raises(Conflict, match="only a suspended identity"):
        lifecycle.resume(session, now=plant.clock.now(), actor="cli:ops", username="vendor1", reason="back")
    actions = [e["action"] for e in plant.audit() if e["subject"] == "vendor1"]
    assert actions[-3:] == ["identity:lifecycle:suspended", "identity:lifecycle:resumed", "identity:lifecycle:retired"]
    with plant.session() as session, pytest.raises(Conflict, match="already exists"):
        identities.create_identity(session, vault=plant.vault, now=plant.clock.now(), actor="cli:ops",
                                   username="vendor1", role="vendor")


def test_the_last_active_admin_is_never_stopped(plant: Plant) -> None:
    with plant.session() as session, pytest.raises(Conflict, match="last active admin"):
        lifecycle.retire(session, now=plant.clock.now(), events=NullPublisher(), actor="cli:ops",
                         username="admin", reason="oops")
    assert _identity(plant, "admin").status == "active"


def test_end_dates_purpose_and_owner_rules_for_each_kind(plant: Plant) -> None:
    now = plant.clock.now()
    plant.ensure("vendor1", "sec1", "sup-a1")
    assert _identity(plant, "vendor1").expires_at == now + dt.timedelta(days=365)  # vendors: a year by default
    assert _identity(plant, "sec1").expires_at is None  # the plant's own staff: none unless given
    _service(plant)
    assert _identity(plant, "historian").expires_at == now + dt.timedelta(days=365)
    with plant.session() as session, pytest.raises(InvalidInput, match="at most a year"):
        identities.create_identity(session, vault=plant.vault, now=now, actor="cli:ops", username="bot-2",
                                   role="vendor", kind="service", owner="sup-a1", purpose="x",
                                   expires_at=now + dt.timedelta(days=400))
    with plant.session() as session, pytest.raises(InvalidInput, match="needs a purpose"):
        identities.create_identity(session, vault=plant.vault, now=now, actor="cli:ops", username="bot-3",
                                   role="vendor", kind="service", owner="sup-a1")
    with plant.session() as session, pytest.raises(InvalidInput, match="active human"):
        lifecycle.set_owner(session, now=now, actor="cli:ops", username="historian", owner="historian")


# --- the inventory and its flags ---------------------------------------------------------------------------


def test_each_flag_appears_when_its_condition_holds(plant: Plant) -> None:
    _service(plant, owner="sup-a1", sites=["plant-a"])
    plant.ensure("vendor1")
    assert _flags(plant, "historian") == []

    with plant.session() as session:
        lifecycle.suspend(session, now=plant.clock.now(), events=NullPublisher(), actor="cli:ops",
                          username="sup-a1", reason="on leave")
    assert "owner_inactive" in _flags(plant, "historian")
    with plant.session() as session:
        session.execute(update(Identity).where(Identity.username == "historian").values(owner_id=None))
    assert "no_owner" in _flags(plant, "historian")

    with plant.session() as session:
        session.execute(update(Site).where(Site.name == "plant-a").values(credential_max_age_days=30))
    plant.ensure("vendor-a")
    plant.clock.advance(dt.timedelta(days=31))
    assert "credential_older_than_policy" in _flags(plant, "vendor-a")
    plant.clock.advance(dt.timedelta(days=60))
    flags = _flags(plant, "vendor1")
    assert "unused_90_days" in flags
    assert "attestation_overdue" in flags
    plant.clock.advance(dt.timedelta(days=365 - 91 - 10))
    assert "expiring_within_14_days" in _flags(plant, "vendor1")


def test_a_person_holding_a_long_grant_is_flagged_as_standing_access(plant: Plant) -> None:
    plant.ensure("vendor1")
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    assert "human_with_standing_access" not in _flags(plant, "vendor1")
    with plant.session() as session:
        session.execute(update(Identity.__table__.metadata.tables["grants"]).where(
            Identity.__table__.metadata.tables["grants"].c.id == grant_id).values(
            ends_at=plant.clock.now() + dt.timedelta(days=30)))
    assert "human_with_standing_access" in _flags(plant, "vendor1")


def test_the_csv_export_cannot_run_as_a_spreadsheet_formula(plant: Plant) -> None:
    plant.ensure("sup-a1")
    with plant.session() as session:
        identities.create_identity(session, vault=plant.vault, now=plant.clock.now(), actor="cli:ops",
                                   username="bot-x", role="vendor", kind="service", owner="sup-a1",
                                   purpose='=HYPERLINK("http://evil.example","click")')
        text = inventory.as_csv(inventory.list_identities(session, now=plant.clock.now(), kind="service"))
    assert "'=HYPERLINK" in text
    assert "\n=" not in text
    assert ",=" not in text


def test_unknown_filters_are_refused_with_the_choices(plant: Plant) -> None:
    with plant.session() as session, pytest.raises(InvalidInput, match="choose one of"):
        inventory.list_identities(session, now=plant.clock.now(), flag="evil")


# --- the sweep: end dates, owners gone ---------------------------------------------------------------------


def test_an_identity_past_its_end_date_expires_and_is_cut(plant: Plant) -> None:
    plant.ensure("vendor1")
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01", duration="8h")
    with plant.session() as session:
        session.execute(update(Identity).where(Identity.username == "vendor1").values(
            expires_at=plant.clock.now() + dt.timedelta(hours=1)))
    plant.clock.advance(dt.timedelta(hours=2))
    with plant.session() as session:
        done = lifecycle.sweep(session, now=plant.clock.now(), events=NullPublisher())
    assert [(t.username, t.now, t.grants_revoked) for t in done] == [("vendor1", "expired", [grant_id])]
    event = plant.audit("grant:changed" if False else "identity:lifecycle:expired")[-1]
    assert event["subject"] == "vendor1"


def test_an_orphan_is_flagged_at_once_and_suspended_after_its_sites_grace(plant: Plant) -> None:
    _service(plant, owner="sup-a1", sites=["plant-a"])
    with plant.session() as session:
        session.execute(update(Site).where(Site.name == "plant-a").values(owner_grace_days=3))
        lifecycle.retire(session, now=plant.clock.now(), events=NullPublisher(), actor="cli:ops",
                         username="sup-a1", reason="left")
    [lost] = plant.audit("identity:owner:lost")
    assert lost["subject"] == "historian"
    plant.clock.advance(2 * DAY)
    with plant.session() as session:
        assert lifecycle.sweep(session, now=plant.clock.now(), events=NullPublisher()) == []
    plant.clock.advance(2 * DAY)
    with plant.session() as session:
        [done] = lifecycle.sweep(session, now=plant.clock.now(), events=NullPublisher())
    assert (done.username, done.now) == ("historian", "suspended")
    # A new owner in time would have stopped the clock.
    with plant.session() as session:
        lifecycle.set_owner(session, now=plant.clock.now(), actor="cli:ops", username="historian", owner="sup-a2")
    assert _identity(plant, "historian").owner_lost_at is None


# --- access reviews -----------------------------------------------------------------------------------------


def _attest(plant: Plant, reviewer: str, username: str, outcome: str, comment: str | None = "checked") -> None:
    with plant.session() as session:
        person = identities.get_identity(session, reviewer)
        attestation.attest(session, now=plant.clock.now(), events=NullPublisher(), reviewer=person,
                           username=username, outcome=outcome, comment=comment)


def test_the_owner_keeps_a_service_identity_and_the_next_review_moves(plant: Plant) -> None:
    _service(plant, owner="sup-a1")
    plant.clock.advance(80 * DAY)
    with plant.session() as session:
        owner = identities.get_identity(session, "sup-a1")
        [review] = [r for r in attestation.pending_reviews(session, now=plant.clock.now(), reviewer=owner)
                    if r.username == "historian"]
    assert (review.username, review.why_you, review.overdue) == ("historian", "you own it", False)
    _attest(plant, "sup-a1", "historian", "keep", "still exports the historian nightly")
    assert _identity(plant, "historian").attestation_due_at == plant.clock.now() + 90 * DAY
    with plant.session() as session:
        report = attestation.report(session)
    assert [(r["identity"], r["reviewer"], r["outcome"]) for r in report] == [("historian", "sup-a1", "keep")]


def test_outsiders_and_self_reviews_are_refused_and_audited(plant: Plant) -> None:
    _service(plant, owner="sup-a1")
    plant.ensure("vendor1", "sup-b")
    with pytest.raises(Forbidden, match="not accountable"):
        _attest(plant, "vendor1", "historian", "keep")
    with pytest.raises(Forbidden, match="their own access"):
        _attest(plant, "vendor1", "vendor1", "keep")
    refused = plant.audit("identity:attestation:refused")
    assert [(e["actor"], e["subject"], e["outcome"]) for e in refused] == [
        ("vendor1", "historian", "refused"), ("vendor1", "vendor1", "refused")]
    assert plant.count("attestations") == 0


def test_a_vendor_is_reviewed_by_the_supervisors_of_the_sites_it_uses(plant: Plant) -> None:
    plant.ensure("vendor1", "sup-b")
    plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    with pytest.raises(Forbidden):
        _attest(plant, "sup-b", "vendor1", "keep")
    _attest(plant, "sup-a2", "vendor1", "revoke", "no longer under contract")
    assert _identity(plant, "vendor1").status == "suspended"
    assert plant.count("grants", "WHERE revoked_at IS NULL") == 0


def test_an_overdue_review_suspends_by_default_and_only_flags_where_the_site_says_so(plant: Plant) -> None:
    _service(plant, "bot-a", owner="sup-a1", sites=["plant-a"])
    _service(plant, "bot-b", owner="sup-b", sites=["plant-b"])
    with plant.session() as session:
        session.execute(update(Site).where(Site.name == "plant-b").values(attestation_overdue="flag"))
    plant.clock.advance(91 * DAY)
    with plant.session() as session:
        suspended = attestation.sweep_overdue(session, now=plant.clock.now(), events=NullPublisher())
    assert "bot-a" in suspended
    assert "bot-b" not in suspended
    assert _identity(plant, "bot-b").status == "active"
    assert "attestation_overdue" in _flags(plant, "bot-b")
    assert any(e["subject"] == "bot-a" for e in plant.audit("identity:attestation:overdue"))


# --- over the API: who may do what ---------------------------------------------------------------------------


def test_the_inventory_is_for_security_and_admins(api: Api) -> None:
    assert api.as_user("vendor1").get("/identities").status_code == 403
    listed = api.as_user("sec1").get("/identities").json()
    assert {"vendor1", "sec1", "admin"} <= {r["username"] for r in listed}
    csv_answer = api.as_user("sec1").get("/identities?format=csv")
    assert csv_answer.headers["content-type"].startswith("text/csv")
    assert csv_answer.text.startswith("username,kind,status")


def test_security_may_suspend_a_vendor_may_not_and_the_refusal_is_audited(api: Api, plant: Plant) -> None:
    refused = api.as_user("vendor1").post("/identities/vendor2/suspend", json={"reason": "prank"})
    assert refused.status_code == 403
    assert plant.audit("identity:lifecycle:refused")[-1]["actor"] == "vendor1"
    assert _identity(plant, "vendor2").status == "active"
    done = api.as_user("sec1").post("/identities/vendor2/suspend", json={"reason": "odd logins"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "suspended"
    assert api.as_user("sec1").post("/identities/vendor2/resume", json={"reason": "fine"}).status_code == 403


def test_an_owner_may_stop_their_own_service_identity(api: Api, plant: Plant) -> None:
    plant.ensure("sup-a1")
    _service(plant, owner="sup-a1")
    done = api.as_user("sup-a1").post("/identities/historian/suspend", json={"reason": "behaving oddly"})
    assert done.status_code == 200, done.text
    reviews = api.as_user("sup-a1").get("/reviews?all=true").json()
    assert "historian" in [r["username"] for r in reviews]
    kept = api.as_user("sup-a1").post("/identities/historian/attest", json={"outcome": "keep", "comment": "ok"})
    assert kept.status_code == 200, kept.text


def test_a_site_sets_how_its_identities_are_governed_within_bounds(admin_cli: Any, plant: Plant) -> None:
    code, out, _ = admin_cli("admin", "site", "set", "plant-a", "--attestation-days", "30", "--attestation-overdue",
                             "flag", "--owner-grace-days", "3", "--credential-max-age-days", "180",
                             "--workload-credential", "2h")
    assert code == 0
    assert "workload credential 1h -> 2h" in out
    assert plant.row("SELECT attestation_days, attestation_overdue, owner_grace_days, credential_max_age_days, "
                     "workload_credential_seconds FROM sites WHERE name = 'plant-a'") == (30, "flag", 3, 180, 7200)
    for bad, why in ((("--attestation-days", "1"), "from 7 to 365"), (("--workload-credential", "2d"), "5m to 24h")):
        code, _, err = admin_cli("admin", "site", "set", "plant-a", *bad)
        assert code == 1
        assert why in err
    assert plant.row("SELECT attestation_days FROM sites WHERE name = 'plant-a'") == (30,)


def test_standing_access_is_part_of_the_review_and_ends_with_a_revoke(plant: Plant) -> None:
    from broker.access import standing

    _service(plant, owner="sup-a1", sites=["plant-a"])
    with plant.session() as session:
        policy = standing.approve_policy(session, now=plant.clock.now(), actor="cli:ops", username="historian",
                                         asset_name="plc-01", ssh=False, ports=[502], read_only=True, windows=[],
                                         ends_at=plant.clock.now() + 30 * DAY)
        policy_id = policy.id
        owner = identities.get_identity(session, "sup-a1")
        [review] = [r for r in attestation.pending_reviews(session, now=plant.clock.now(), reviewer=owner,
                                                           everything=True) if r.username == "historian"]
    assert review.usage.standing_policies[0].startswith(f"{policy_id} (plc-01, until ")
    _attest(plant, "sup-a1", "historian", "revoke", "the export moved to the new historian")
    assert plant.row("SELECT revoked_by FROM standing_policies WHERE id = :id", id=policy_id) == ("sup-a1",)


def test_the_sweep_keeps_the_last_admin_and_still_expires_the_others(plant: Plant) -> None:
    """An end date on the only admin must not stop the sweep for everyone else every minute."""
    plant.ensure("vendor1")
    with plant.session() as session:
        session.execute(update(Identity).where(Identity.username.in_(["admin", "vendor1"])).values(
            expires_at=plant.clock.now() + DAY))
    plant.clock.advance(2 * DAY)
    with plant.session() as session:
        done = lifecycle.sweep(session, now=plant.clock.now(), events=NullPublisher())
    assert [(t.username, t.now) for t in done] == [("vendor1", "expired")]
    assert _identity(plant, "admin").status == "active"

"""Supervision per asset (issue 13): `gatepass admin asset add|set --supervision required|optional|site`, a site's
`--supervise-high-criticality yes|no` (on for new sites), the rule that decides what is in force, what the gateway
is told at login, the audit trail, and the refusal of bad values."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.errors import InvalidInput, NotFound
from broker.inventory import sites
from broker.inventory.asset_listing import list_assets
from broker.inventory.supervision_policy import effective_supervision
from broker.models import Asset, Site
from tests.broker.conftest import AdminCli
from tests.fixtures.broker import Api, Plant

PEER = "198.51.100.7:50123"


@pytest.mark.parametrize(("site_requires", "high_flag", "criticality", "own", "required", "source"), [
    (False, False, "high", None, False, "site"),           # an old site: its high-criticality asset is not held
    (False, True, "high", None, True, "high_criticality"),  # a new site's default
    (False, True, "low", None, False, "site"),
    (True, False, "low", None, True, "site"),
    (True, True, "high", None, True, "site"),               # the site's own requirement is named first
    (False, True, "high", False, False, "asset"),           # the asset's own setting wins, either way
    (True, False, "low", False, False, "asset"),
    (False, False, "low", True, True, "asset"),
])
def test_the_rule_asset_first_then_the_site_then_high_criticality(
        site_requires: bool, high_flag: bool, criticality: str, own: bool | None, required: bool,
        source: str) -> None:
    site = Site(name="plant-x", supervision_required=site_requires, supervise_high_criticality=high_flag)
    asset = Asset(name="m-01", site=site, criticality=criticality, supervision_required=own)

    policy = effective_supervision(asset)

    assert (policy.required, policy.source) == (required, source)
    assert policy.asset_setting == {None: "site", True: "required", False: "optional"}[own]
    assert policy.describe().startswith("required" if required else "optional")


def test_the_sql_form_of_the_rule_agrees_with_it_for_every_case(plant: Plant) -> None:
    """supervision_required_clause (which held tunnels the notifier announces) is the same rule as
    effective_supervision, on the real database, for every combination of the table above."""
    from sqlalchemy import select

    from broker.inventory.supervision_policy import supervision_required_clause

    combos = [(site_requires, high_flag, criticality, own) for site_requires in (False, True)
              for high_flag in (False, True) for criticality in ("low", "high") for own in (None, True, False)]
    with plant.session() as session:
        for index, (site_requires, high_flag, criticality, own) in enumerate(combos):
            site = Site(name=f"rule-site-{index}", supervision_required=site_requires,
                        supervise_high_criticality=high_flag, created_at=plant.clock.now())
            session.add(site)
            session.add(Asset(name=f"rule-{index}", site=site, host="192.0.2.10", criticality=criticality,
                              supervision_required=own, created_at=plant.clock.now()))
        session.flush()
        by_sql = set(session.scalars(select(Asset.name).join(Site, Asset.site_id == Site.id)
                                     .where(Asset.name.like("rule-%"), supervision_required_clause())))
        by_rule = {asset.name for asset in session.scalars(select(Asset).where(Asset.name.like("rule-%")))
                   if effective_supervision(asset).required}
    assert by_rule
    assert by_sql == by_rule


def _rtu_grant(api: Api) -> str:
    request = api.create_request("vendor1", asset="rtu-01", ports=[])  # high criticality: two approvers
    api.approve("sup-a1", request["id"])
    return str(api.approve("sup-a2", request["id"]).json()["grant"]["id"])


def _sent(api: Api, plant: Plant, grant_id: str, asset: str) -> Any:
    """What the gateway is told about supervision when the grant's holder logs in to ``asset``."""
    serial = int(plant.row("SELECT serial FROM grants WHERE id = :id", id=grant_id)[0])
    response = api.gateway().post("/gateway/authorize", json={"grant_id": grant_id, "serial": serial,
                                                              "asset": asset, "peer": PEER})
    assert response.status_code == 200, response.text
    return response.json()["supervision_required"]


def test_the_gateway_is_told_the_policy_in_force_at_each_login(api: Api, plant: Plant, admin_cli: AdminCli) -> None:
    rtu, hmi = _rtu_grant(api), api.grant("vendor1", "sup-a1")["id"]
    # plant-a is set up like a site older than migration 0018: its high-criticality rtu-01 is not supervised.
    assert (_sent(api, plant, rtu, "rtu-01"), _sent(api, plant, hmi, "hmi-01")) == (False, False)

    code, out, err = admin_cli("admin", "site", "set", "plant-a", "--supervise-high-criticality", "yes")
    assert code == 0, err
    assert "Site plant-a: supervise high criticality off -> on" in out
    assert "Site plant-a: supervised assets (none) -> rtu-01" in out
    assert (_sent(api, plant, rtu, "rtu-01"), _sent(api, plant, hmi, "hmi-01")) == (True, False)
    [event] = plant.audit("admin:site:updated")
    assert event["details"] == {"supervise_high_criticality": {"old": False, "new": True},
                                "supervised_assets": {"old": [], "new": ["rtu-01"]}}

    code, out, err = admin_cli("admin", "asset", "set", "rtu-01", "--supervision", "optional")
    assert code == 0, err
    assert "Asset rtu-01: supervision site -> optional" in out
    assert ("Asset rtu-01: supervision in force required (high criticality, and plant-a supervises its "
            "high-criticality assets) -> optional (set on the asset)") in out
    code, out, err = admin_cli("admin", "asset", "set", "hmi-01", "--supervision", "required")
    assert code == 0, err
    assert (_sent(api, plant, rtu, "rtu-01"), _sent(api, plant, hmi, "hmi-01")) == (False, True)
    events = plant.audit("admin:asset:updated")
    assert [(e["subject"], e["site"], e["details"]["supervision"]) for e in events] == [
        ("rtu-01", "plant-a", {"old": "site", "new": "optional"}), ("hmi-01", "plant-a", {"old": "site",
                                                                                          "new": "required"})]

    # Back to the site's policy: the site requires supervision now, for every asset that follows it.
    admin_cli("admin", "asset", "set", "rtu-01", "--supervision", "site")
    code, out, err = admin_cli("admin", "site", "set", "plant-a", "--supervision", "required")
    assert code == 0, err
    assert "Site plant-a: supervised assets hmi-01, rtu-01 -> hmi-01, plc-01, rtu-01" in out
    assert (_sent(api, plant, rtu, "rtu-01"), _sent(api, plant, hmi, "hmi-01")) == (True, True)
    code, out, _ = admin_cli("admin", "asset", "set", "rtu-01", "--supervision", "site")
    assert "Asset rtu-01 unchanged" in out
    assert "Asset rtu-01: supervision in force required (plant-a requires supervision)" in out


def test_a_new_site_supervises_its_high_criticality_assets_unless_told_not_to(plant: Plant,
                                                                              admin_cli: AdminCli) -> None:
    code, out, err = admin_cli("admin", "site", "add", "plant-c")
    assert code == 0, err
    assert "sessions to its high-criticality assets wait for a supervisor watching" in out
    code, out, err = admin_cli("admin", "asset", "add", "press-01", "--site", "plant-c", "--host", "10.9.0.1",
                               "--criticality", "high", "--tcp-port", "502")
    assert code == 0, err
    assert ("supervision: required (high criticality, and plant-c supervises its high-criticality assets)"
            in out)
    code, out, err = admin_cli("admin", "site", "add", "plant-d", "--supervise-high-criticality", "no")
    assert code == 0, err
    admin_cli("admin", "asset", "add", "press-02", "--site", "plant-d", "--host", "10.9.0.2", "--criticality",
              "high", "--tcp-port", "502")
    admin_cli("admin", "asset", "add", "press-03", "--site", "plant-d", "--host", "10.9.0.3", "--tcp-port", "502",
              "--supervision", "required")
    assert plant.column("SELECT supervise_high_criticality FROM sites WHERE name IN ('plant-c', 'plant-d') "
                        "ORDER BY name") == [True, False]
    created = {e["subject"]: e["details"] for e in plant.audit("admin:site:created")}
    assert (created["plant-c"]["supervise_high_criticality"], created["plant-d"]["supervise_high_criticality"]) \
        == (True, False)
    assets = {e["subject"]: e["details"] for e in plant.audit("admin:asset:created")}
    assert (assets["press-02"]["supervision"], assets["press-03"]["supervision"]) == ("site", "required")

    code, out, err = admin_cli("admin", "asset", "list", "--site", "plant-d", "--json")
    assert code == 0, err
    listed = {record["name"]: record["supervision"] for record in json.loads(out)}
    assert listed == {
        "press-02": {"required": False, "source": "site", "asset_setting": "site",
                     "text": "optional (plant-d does not require supervision)"},
        "press-03": {"required": True, "source": "asset", "asset_setting": "required",
                     "text": "required (set on the asset)"}}
    code, out, _ = admin_cli("admin", "asset", "list")
    [press_01] = [line for line in out.splitlines() if line.startswith("press-01 ")]
    assert "supervision required (high criticality" in press_01
    code, out, _ = admin_cli("admin", "asset", "show", "press-03")
    assert "supervision:  required (set on the asset) (asset setting: required)" in out


def test_bad_values_are_refused_with_the_reason_and_change_nothing(plant: Plant, admin_cli: AdminCli,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for argv, refused in ((("asset", "set", "hmi-01", "--supervision", "always"),
                           "invalid choice: 'always' (choose from 'required', 'optional', 'site')"),
                          (("site", "set", "plant-a", "--supervise-high-criticality", "maybe"),
                           "invalid choice: 'maybe' (choose from 'yes', 'no')")):
        with pytest.raises(SystemExit) as exited:
            admin_cli("admin", *argv)
        assert exited.value.code == 2
        assert refused in capsys.readouterr().err
    # The domain refuses it too (whoever calls it), and a refused change leaves the other fields alone.
    with plant.session() as session, pytest.raises(InvalidInput, match=(
            r"supervision 'always' is not a policy: choose required .*, optional, or site")):
        sites.update_asset(session, now=plant.clock.now(), actor="test", name="hmi-01", supervision="always",
                           passed_env=["LC_ALL"])
    with plant.session() as session, pytest.raises(InvalidInput, match="supervision 'sometimes' is not a policy"):
        sites.create_asset(session, vault=plant.vault, now=plant.clock.now(), actor="test", name="new-01",
                           site="plant-a", host="10.0.0.9", supervision="sometimes")
    code, _, err = admin_cli("admin", "asset", "set", "nope-01", "--supervision", "required")
    assert code == 1
    assert "there is no asset named 'nope-01'" in err
    with plant.session() as session, pytest.raises(NotFound, match="there is no site named 'nope'"):
        list_assets(session, site="nope")
    assert plant.row("SELECT supervision_required, passed_env FROM assets WHERE name = 'hmi-01'")[0] is None
    assert plant.count("assets", "WHERE name = 'new-01'") == 0
    assert plant.audit("admin:asset:updated") == []
    assert plant.audit("admin:site:updated") == []


def test_the_grant_tells_its_holder_whether_sessions_wait_for_a_supervisor(api: Api, plant: Plant) -> None:
    """`supervision_required` on the Grant (the policy in force now), so `gatepass tunnel` can say so up front."""
    grant = api.grant("vendor1", "sup-a1")
    assert grant["supervision_required"] is False
    with plant.session() as session:
        sites.update_asset(session, now=plant.clock.now(), actor="test", name="hmi-01", supervision="required")
    shown = api.as_user("vendor1").get(f"/grants/{grant['id']}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["supervision_required"] is True

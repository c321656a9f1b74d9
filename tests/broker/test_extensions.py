"""Grant extensions: who may ask and decide, the limits, and what an approval changes (end, certificate, gateways)."""

from __future__ import annotations

import datetime as dt
import re
from contextlib import closing
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.fixtures.broker import Api, Plant, assert_refusal, parse_certificate


def _extend(api: Api, grant_id: str, who: str = "vendor1", **fields: Any) -> Any:
    body = {"duration": "30m", "reason": "the firmware update needs a second reboot"}
    body.update(fields)
    return api.as_user(who).post(f"/grants/{grant_id}/extend", json=body)


def _ask(api: Api, grant_id: str, who: str = "vendor1", **fields: Any) -> dict[str, Any]:
    response = _extend(api, grant_id, who, **fields)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _as_utc(value: Any) -> dt.datetime:
    """A timestamp read with raw SQL: a string on SQLite, a datetime on PostgreSQL."""
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _unchanged(plant: Plant, grant: dict[str, Any]) -> None:
    assert plant.count("grant_extensions", f"WHERE grant_id = '{grant['id']}'") == 0
    ends_at = plant.row("SELECT ends_at FROM grants WHERE id = :id", id=grant["id"])[0]
    assert _as_utc(ends_at) == dt.datetime.fromisoformat(grant["ends_at"])


def test_an_approved_extension_moves_the_end_reissues_the_certificate_and_tells_the_gateways(
    api: Api, plant: Plant,
) -> None:
    grant = api.grant("vendor1", "sup-a1", duration="1h")
    before = parse_certificate(grant["certificate"])
    plant.clock.advance(dt.timedelta(minutes=50))

    extension = _ask(api, grant["id"])
    assert (extension["status"], extension["requester"], extension["asset"]) == ("pending", "vendor1", "hmi-01")
    assert extension["duration_seconds"] == 1800
    assert extension["previous_ends_at"] == grant["ends_at"]
    assert [e["id"] for e in api.as_user("sup-a1").get("/extensions?pending=true").json()] == [extension["id"]]

    response = api.as_user("sup-a1").post(f"/extensions/{extension['id']}/approve", json={"comment": "ok"})

    assert response.status_code == 200, response.text
    decided = response.json()
    new_end = dt.datetime.fromisoformat(grant["ends_at"]) + dt.timedelta(minutes=30)
    assert (decided["status"], decided["new_ends_at"]) == ("approved", new_end.isoformat())
    assert decided["approvals"][0]["approver"] == "sup-a1"
    after = api.as_user("vendor1").get(f"/grants/{grant['id']}").json()
    assert (after["ends_at"], after["status"]) == (new_end.isoformat(), "active")
    cert = parse_certificate(after["certificate"])
    assert cert.valid_before == int(new_end.timestamp())
    assert (cert.serial, cert.principals, cert.extensions, cert.valid_after, cert.key_id) == (
        before.serial, before.principals, before.extensions, before.valid_after, before.key_id)
    change = plant.row("SELECT status, reason, ends_at FROM grant_changes WHERE grant_id = :id ORDER BY id DESC",
                       id=grant["id"])
    assert (change[0], change[1]) == ("active", "extended")
    assert _as_utc(change[2]) == new_end
    actions = [e["action"] for e in plant.audit() if e["subject"] in (grant["id"], extension["id"])]
    for action in ("access:extension:requested", "access:extension:approval", "access:extension:approved",
                   "access:grant:extended"):
        assert action in actions
    assert actions.count("ca:certificate:issued") == 2
    # After the old end the grant is still usable: the gateway authorizes the same serial.
    plant.clock.advance(dt.timedelta(minutes=20))
    assert api.as_user("vendor1").get(f"/grants/{grant['id']}").json()["status"] == "active"


def test_two_approver_assets_need_two_distinct_approvers_for_an_extension(api: Api, plant: Plant) -> None:
    request = api.create_request("vendor1", asset="rtu-01")
    assert api.approve("sup-a1", request["id"]).status_code == 200
    assert api.approve("sup-a2", request["id"]).status_code == 200
    grant_id = api.as_user("vendor1").get(f"/requests/{request['id']}").json()["grant"]["id"]
    extension = _ask(api, grant_id)
    assert extension["approvals_required"] == 2

    first = api.as_user("sup-a1").post(f"/extensions/{extension['id']}/approve")
    assert (first.status_code, first.json()["status"]) == (200, "pending")
    again = api.as_user("sup-a1").post(f"/extensions/{extension['id']}/approve")
    assert_refusal(again, 409, "conflict")
    ends_at = api.as_user("vendor1").get(f"/grants/{grant_id}").json()["ends_at"]
    assert ends_at == extension["previous_ends_at"]

    second = api.as_user("sup-a2").post(f"/extensions/{extension['id']}/approve")

    assert (second.status_code, second.json()["status"]) == (200, "approved")
    assert api.as_user("vendor1").get(f"/grants/{grant_id}").json()["ends_at"] == second.json()["new_ends_at"]


def test_a_denial_needs_a_comment_and_leaves_the_grant_alone(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    extension = _ask(api, grant["id"])
    sup = api.as_user("sup-a1")

    assert_refusal(sup.post(f"/extensions/{extension['id']}/deny", json={"comment": "  "}), 400, "invalid_input")
    response = sup.post(f"/extensions/{extension['id']}/deny", json={"comment": "finish tomorrow"})

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "denied"
    assert response.json()["denial"]["comment"] == "finish tomorrow"
    assert api.as_user("vendor1").get(f"/grants/{grant['id']}").json()["ends_at"] == grant["ends_at"]
    assert [e["actor"] for e in plant.audit("access:extension:denied")] == ["sup-a1"]
    assert_refusal(sup.post(f"/extensions/{extension['id']}/approve"), 409, "conflict")
    # Decided: a new ask is possible again.
    assert _extend(api, grant["id"]).status_code == 201


@pytest.mark.parametrize("who", ["sup-a1", "sec1"])
def test_only_the_grantee_may_ask_and_the_refusal_is_audited(api: Api, plant: Plant, who: str) -> None:
    grant = api.grant("vendor1", "sup-a1")

    body = assert_refusal(_extend(api, grant["id"], who), 403, "forbidden")

    assert "only the grantee" in body["message"]
    _unchanged(plant, grant)
    [event] = plant.audit("access:extension:refused")
    assert (event["actor"], event["outcome"], event["subject"]) == (who, "refused", grant["id"])


def test_someone_who_cannot_see_the_grant_gets_not_found(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    assert_refusal(_extend(api, grant["id"], "vendor2"), 404, "not_found")
    _unchanged(plant, grant)


def test_a_locked_down_site_refuses_extensions(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    plant.set_locked_down("plant-a")

    body = assert_refusal(_extend(api, grant["id"]), 403, "forbidden")

    assert "locked down" in body["message"]
    _unchanged(plant, grant)
    assert len(plant.audit("access:extension:refused")) == 1


@pytest.mark.parametrize("state", ["revoked", "expired"])
def test_only_an_active_grant_can_be_extended(api: Api, plant: Plant, state: str) -> None:
    grant = api.grant("vendor1", "sup-a1", duration="1h")
    if state == "revoked":
        assert api.as_user("vendor1").post(f"/grants/{grant['id']}/revoke").status_code == 200
    else:
        plant.clock.advance(dt.timedelta(hours=1))

    body = assert_refusal(_extend(api, grant["id"]), 409, "conflict")

    assert state in body["message"]
    assert plant.count("grant_extensions") == 0


@pytest.mark.parametrize(("duration", "words"), [("7h", "longer than plant-a allows"), ("0m", "longer than zero"),
                                                 ("soon", "not a duration"), ("8h", "longer than plant-a")])
def test_bad_durations_and_windows_past_the_site_maximum_are_refused(
    api: Api, plant: Plant, duration: str, words: str,
) -> None:
    grant = api.grant("vendor1", "sup-a1", duration="2h")  # plant-a allows 8h in all

    body = assert_refusal(_extend(api, grant["id"], duration=duration), 400, "invalid_input")

    assert words in body["message"]
    _unchanged(plant, grant)


def test_the_whole_window_may_reach_exactly_the_site_maximum(api: Api) -> None:
    grant = api.grant("vendor1", "sup-a1", duration="2h")
    assert _extend(api, grant["id"], duration="6h").status_code == 201


def test_a_reason_is_required(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    assert_refusal(_extend(api, grant["id"], reason="  "), 400, "invalid_input")
    _unchanged(plant, grant)


def test_one_pending_extension_per_grant(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    first = _ask(api, grant["id"])

    body = assert_refusal(_extend(api, grant["id"], duration="10m"), 409, "conflict")

    assert first["id"] in body["message"]
    assert plant.count("grant_extensions") == 1


@pytest.mark.parametrize(("who", "status", "code"), [("vendor1", 403, "forbidden"), ("sup-b", 403, "forbidden")])
def test_the_requester_and_approvers_of_other_sites_cannot_decide(
    api: Api, plant: Plant, who: str, status: int, code: str,
) -> None:
    grant = api.grant("vendor1", "sup-a1")
    extension = _ask(api, grant["id"])

    assert_refusal(api.as_user(who).post(f"/extensions/{extension['id']}/approve"), status, code)
    assert_refusal(api.as_user(who).post(f"/extensions/{extension['id']}/deny", json={"comment": "no"}), status, code)

    assert plant.row("SELECT status FROM grant_extensions WHERE id = :id", id=extension["id"])[0] == "pending"
    refusals = plant.audit("access:extension_decision:refused")
    assert [(e["actor"], e["outcome"]) for e in refusals] == [(who, "refused")] * 2
    assert api.as_user("vendor1").get(f"/grants/{grant['id']}").json()["ends_at"] == grant["ends_at"]


def test_listing_shows_each_viewer_their_share(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    extension = _ask(api, grant["id"])

    assert [e["id"] for e in api.as_user("vendor1").get("/extensions").json()] == [extension["id"]]
    assert [e["id"] for e in api.as_user("sup-a2").get("/extensions?pending=true").json()] == [extension["id"]]
    assert api.as_user("sup-b").get("/extensions").json() == []
    assert api.as_user("vendor2").get("/extensions").json() == []


def test_an_extension_lapses_when_its_grant_ends_first(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1", duration="1h")
    extension = _ask(api, grant["id"])
    plant.clock.advance(dt.timedelta(hours=1))

    assert api.as_user("sup-a1").get("/extensions?pending=true").json() == []
    [listed] = api.as_user("vendor1").get("/extensions").json()
    assert (listed["id"], listed["status"]) == (extension["id"], "lapsed")
    assert_refusal(api.as_user("sup-a1").post(f"/extensions/{extension['id']}/approve"), 409, "conflict")
    assert len(plant.audit("access:extension:lapsed")) == 1


def test_a_lockdown_after_the_ask_blocks_the_approval(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    extension = _ask(api, grant["id"])
    plant.set_locked_down("plant-a")

    body = assert_refusal(api.as_user("sup-a1").post(f"/extensions/{extension['id']}/approve"), 409, "conflict")

    assert "locked down" in body["message"]


# --- the web pages: the vendor's "Ask to extend" and the supervisor's Approve/Deny ------------------------

CSRF_FIELD = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def _web(api: Api, username: str) -> tuple[httpx.Client, str]:
    """A browser-like client signed in as ``username`` (the web session cookie carries an API token)."""
    client = httpx.Client(base_url=api.base_url, follow_redirects=False, timeout=10,
                          headers={"Cookie": f"gatepass_session={api.token(username)}"})
    page = client.get("/vendor" if username.startswith("vendor") else "/approvals")
    assert page.status_code == 200, page.text
    found = CSRF_FIELD.search(page.text)
    assert found is not None
    return client, found.group(1)


def test_the_web_pages_ask_for_and_approve_an_extension(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1", duration="1h")
    vendor, vendor_csrf = _web(api, "vendor1")
    supervisor, supervisor_csrf = _web(api, "sup-a1")
    with closing(vendor), closing(supervisor):
        assert f'action="/vendor/grants/{grant["id"]}/extend"' in vendor.get("/vendor").text
        refused = vendor.post(f"/vendor/grants/{grant['id']}/extend", data={"csrf": vendor_csrf, "duration": "9h",
                                                                            "reason": "more"})
        assert refused.status_code == 400
        assert "Extension refused" in refused.text
        asked = vendor.post(f"/vendor/grants/{grant['id']}/extend",
                            data={"csrf": vendor_csrf, "duration": "30m", "reason": "second reboot"})
        assert asked.status_code == 303, asked.text
        [extension_id] = plant.column("SELECT id FROM grant_extensions")
        page = supervisor.get("/approvals").text
        assert f'action="/approvals/extensions/{extension_id}/approve"' in page
        assert "second reboot" in page

        forged = supervisor.post(f"/approvals/extensions/{extension_id}/approve", data={"comment": "ok"})
        assert forged.status_code == 403
        assert plant.row("SELECT status FROM grant_extensions WHERE id = :id", id=extension_id)[0] == "pending"

        approved = supervisor.post(f"/approvals/extensions/{extension_id}/approve",
                                   data={"csrf": supervisor_csrf, "comment": "ok"})
        assert approved.status_code == 303, approved.text
    after = api.as_user("vendor1").get(f"/grants/{grant['id']}").json()
    assert dt.datetime.fromisoformat(after["ends_at"]) == (dt.datetime.fromisoformat(grant["ends_at"])
                                                           + dt.timedelta(minutes=30))


def test_the_supervisor_page_denies_an_extension_with_a_comment(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    extension = _ask(api, grant["id"])
    supervisor, csrf = _web(api, "sup-a1")
    with closing(supervisor):
        denied = supervisor.post(f"/approvals/extensions/{extension['id']}/deny",
                                 data={"csrf": csrf, "comment": "not today"})
        assert denied.status_code == 303, denied.text
    assert plant.row("SELECT status FROM grant_extensions WHERE id = :id", id=extension["id"]) == ("denied",)
    # The denial is a decision row, like a request's: verdict, comment, approver.
    assert plant.row("SELECT d.verdict, d.comment, i.username FROM extension_decisions d JOIN identities i "
                     "ON i.id = d.approver_id WHERE d.extension_id = :id", id=extension["id"]) == (
        "deny", "not today", "sup-a1")


def test_one_approver_counts_once_by_the_schema_for_extensions_as_for_requests(api: Api, plant: Plant) -> None:
    """One approval rule, one table shape: a second row for the same approver is refused by the database
    itself, for an extension's decisions exactly as for a request's."""
    grant = api.grant("vendor1", "sup-a1")
    extension = _ask(api, grant["id"])
    # Someone who has decided neither yet: the schema alone refuses their second row.
    approver = plant.row("SELECT id FROM identities WHERE username = 'vendor2'")[0]
    request_id = plant.row("SELECT request_id FROM grants WHERE id = :id", id=grant["id"])[0]
    now = dt.datetime.now(dt.UTC)
    for table, column, ballot in (("extension_decisions", "extension_id", extension["id"]),
                                  ("decisions", "request_id", request_id)):
        insert = sa.text(f"INSERT INTO {table} ({column}, approver_id, verdict, decided_at) "  # noqa: S608
                         "VALUES (:ballot, :approver, 'approve', :now)")
        values = {"ballot": ballot, "approver": approver, "now": now}
        with plant.session() as session:
            session.execute(insert, values)
            with pytest.raises(sa.exc.IntegrityError):
                session.execute(insert, values)

"""TOTP enrolment state (new and reset secrets are unconfirmed until proven with a code), `gatepass admin user
reset-totp`, approver e-mail addresses, and the site policy commands (`admin site add/set`) with maintenance
windows — through the same domain functions and CLI the operator uses, on the real database."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pyotp
import pytest

from broker.errors import InvalidInput
from broker.identity import identities
from broker.identity.identities import NewCredentials
from broker.inventory import sites
from cli.context import Context
from cli.main import main
from cli.state import ClientState
from tests.broker.conftest import AdminCli
from tests.fixtures.broker import Api, BrokerServer, Plant, assert_refusal


def confirmed_at(plant: Plant, username: str) -> object:
    return plant.row("SELECT totp_confirmed_at FROM identities WHERE username = :u", u=username)[0]


def new_user(plant: Plant, name: str = "newvendor") -> NewCredentials:
    creds = plant.add_user(name, role="vendor")
    assert creds is not None
    return creds


def test_a_new_user_gets_an_enrolment_code_kept_only_as_a_hash(plant: Plant) -> None:
    seq = plant.last_seq()
    creds = new_user(plant)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", creds.enrolment_code)
    stored, expires_at = plant.row("SELECT enrolment_code_hash, enrolment_code_expires_at FROM identities "
                                   "WHERE username = 'newvendor'")
    assert stored == hashlib.sha256(creds.enrolment_code.replace("-", "").encode()).hexdigest()
    assert _utc(expires_at) == plant.clock.now() + plant.settings.enrolment_code_ttl
    [issued] = plant.audit("admin:enrolment_code:issued", after_seq=seq)
    assert (issued["subject"], issued["details"]["reason"]) == ("newvendor", "created")
    assert creds.enrolment_code not in json.dumps(plant.audit())
    assert new_user(plant, "another").enrolment_code != creds.enrolment_code


def _utc(value: Any) -> dt.datetime:
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


def test_a_new_user_binds_the_factor_with_password_enrolment_code_and_code(api: Api, plant: Plant) -> None:
    creds = new_user(plant)
    assert confirmed_at(plant, "newvendor") is None
    seq = plant.last_seq()
    response = api.anonymous.post("/auth/login", json={
        "username": "newvendor", "password": creds.password, "enrolment_code": creds.enrolment_code,
        "totp": pyotp.TOTP(creds.totp_secret).at(plant.clock.now())})
    assert response.status_code == 200, response.text
    assert confirmed_at(plant, "newvendor") is not None
    assert [e["action"] for e in plant.audit(after_seq=seq)] == ["auth:enrolment_code:used", "auth:mfa:enrolled",
                                                                 "auth:login:succeeded"]
    assert plant.row("SELECT enrolment_code_hash FROM identities WHERE username = 'newvendor'")[0] is None
    # Confirmed users sign in exactly as before (the enrolment code, used up, is ignored): no second enrolment.
    seq = plant.last_seq()
    plant.clock.advance(dt.timedelta(seconds=30))
    for extra in ({"enrolment_code": creds.enrolment_code}, {}):
        plant.clock.advance(dt.timedelta(seconds=30))
        response = api.anonymous.post("/auth/login", json={
            "username": "newvendor", "password": creds.password,
            "totp": pyotp.TOTP(creds.totp_secret).at(plant.clock.now()), **extra})
        assert response.status_code == 200
    assert [e["action"] for e in plant.audit(after_seq=seq)] == ["auth:login:succeeded"] * 2


@pytest.mark.parametrize(("enrolment_code", "reason"), [
    (None, "no enrolment code given"),
    ("ZZZZ-ZZZZ-ZZZZ", "wrong enrolment code"),
])
def test_the_password_and_a_right_code_without_the_enrolment_code_bind_nothing(
        api: Api, plant: Plant, enrolment_code: str | None, reason: str) -> None:
    """DESIGN invariant 4: a password alone never binds the second factor, even with a code from the secret."""
    creds = new_user(plant)
    body = {"username": "newvendor", "password": creds.password,
            "totp": pyotp.TOTP(creds.totp_secret).at(plant.clock.now())}
    if enrolment_code is not None:
        body["enrolment_code"] = enrolment_code
    response = api.anonymous.post("/auth/login", json=body)

    refusal = assert_refusal(response, 401, "login_failed")
    assert refusal["message"] == "sign-in refused: wrong username, password or one-time code"
    assert confirmed_at(plant, "newvendor") is None
    [event] = plant.audit("auth:enrolment_code:refused")
    assert (event["actor"], event["details"]["reason"]) == ("newvendor", reason)
    assert [e for e in plant.audit("auth:mfa:enrolled") if e["actor"] == "newvendor"] == []


def test_an_enrolment_code_expires(api: Api, plant: Plant) -> None:
    creds = new_user(plant)
    plant.clock.advance(plant.settings.enrolment_code_ttl)
    response = api.anonymous.post("/auth/login", json={
        "username": "newvendor", "password": creds.password, "enrolment_code": creds.enrolment_code,
        "totp": pyotp.TOTP(creds.totp_secret).at(plant.clock.now())})
    assert_refusal(response, 401, "login_failed")
    assert plant.audit("auth:enrolment_code:refused")[-1]["details"]["reason"] == "enrolment code expired"
    assert confirmed_at(plant, "newvendor") is None


def test_an_unconfirmed_user_with_a_wrong_code_is_refused_on_the_api(api: Api, plant: Plant) -> None:
    """Only the web form offers the enrolment page; the API answers as for anyone with a wrong code."""
    creds = new_user(plant)
    response = api.anonymous.post("/auth/login", json={"username": "newvendor", "password": creds.password,
                                                       "enrolment_code": creds.enrolment_code, "totp": "000000"})
    assert response.status_code == 401
    assert confirmed_at(plant, "newvendor") is None
    assert plant.audit("auth:mfa:failed")[-1]["actor"] == "newvendor"
    assert "totp_secret" not in response.text  # the API never shows the secret


def test_gatepass_login_enrols_with_the_enrolment_code(api: Api, plant: Plant, broker: BrokerServer,
                                                      tmp_path: Path) -> None:
    creds = new_user(plant)
    (tmp_path / "pw").write_text(creds.password + "\n")
    code = pyotp.TOTP(creds.totp_secret).at(plant.clock.now())

    def login(*extra: str) -> tuple[int, str]:
        context = Context(environ={"GATEPASS_HOME": str(tmp_path / "home")}, state=ClientState(tmp_path / "home"),
                          out=io.StringIO(), err=io.StringIO(), clock=plant.clock.now, sleep=lambda _s: None,
                          transport=None)
        exit_code = main(["login", "--server", broker.url, "--user", "newvendor", "--password-file",
                          str(tmp_path / "pw"), "--totp", code, *extra], context=context)
        assert isinstance(context.err, io.StringIO)
        return exit_code, context.err.getvalue()

    assert login() == (1, "gatepass: first sign-in, or your one-time codes were reset? Add --enrolment-code CODE "
                          "(the code you were given with your password).\n"
                          "gatepass: sign-in refused: wrong username, password or one-time code\n")
    assert confirmed_at(plant, "newvendor") is None
    assert login("--enrolment-code", creds.enrolment_code) == (0, "")
    assert confirmed_at(plant, "newvendor") is not None


def test_reset_totp_issues_a_new_secret_and_signs_the_user_out(api: Api, plant: Plant, admin_cli: AdminCli) -> None:
    old_secret = plant.creds("vendor1").totp_secret
    token = api.login("vendor1")
    assert api.client(token).get("/me").status_code == 200

    code, out, _ = admin_cli("admin", "user", "reset-totp", "vendor1", "--json")
    assert code == 0
    answer = json.loads(out)
    assert set(answer) == {"username", "totp_secret", "enrolment_code"}
    assert answer["username"] == "vendor1"
    new_secret = answer["totp_secret"]
    assert new_secret != old_secret
    assert confirmed_at(plant, "vendor1") is None
    assert api.client(token).get("/me").status_code == 401  # tokens and web sessions are revoked
    [event] = plant.audit("admin:identity:totp_reset")
    assert event["subject"] == "vendor1"
    assert event["details"]["tokens_revoked"] >= 1
    assert new_secret not in json.dumps(plant.audit())
    assert answer["enrolment_code"] not in json.dumps(plant.audit())
    assert plant.audit("admin:enrolment_code:issued")[-1]["details"]["reason"] == "totp reset"

    plant.clock.advance(dt.timedelta(seconds=60))
    password = plant.creds("vendor1").password
    old_code = pyotp.TOTP(old_secret).at(plant.clock.now())
    assert api.anonymous.post("/auth/login", json={"username": "vendor1", "password": password,
                                                   "totp": old_code}).status_code == 401
    new_code = pyotp.TOTP(new_secret).at(plant.clock.now())
    # The password and a code from the new secret are not enough, nor the old enrolment code: the new one is.
    for stale in (None, plant.creds("vendor1").enrolment_code):
        assert api.anonymous.post("/auth/login", json={"username": "vendor1", "password": password, "totp": new_code,
                                                       "enrolment_code": stale}).status_code == 401
    assert confirmed_at(plant, "vendor1") is None
    assert api.anonymous.post("/auth/login", json={"username": "vendor1", "password": password, "totp": new_code,
                                                   "enrolment_code": answer["enrolment_code"]}).status_code == 200
    assert confirmed_at(plant, "vendor1") is not None
    assert plant.audit("auth:mfa:enrolled")[-1]["actor"] == "vendor1"


def test_reset_totp_refuses_unknown_and_non_human_identities(plant: Plant, admin_cli: AdminCli) -> None:
    code, _, err = admin_cli("admin", "user", "reset-totp", "nobody")
    assert code == 1
    assert "there is no user named 'nobody'" in err
    plant.add_user("robot", role="vendor", kind="service", owner="vendor1")
    code, _, err = admin_cli("admin", "user", "reset-totp", "robot")
    assert code == 1
    assert "service identity" in err


def test_user_add_keeps_the_json_contract_and_stores_the_email(plant: Plant, admin_cli: AdminCli) -> None:
    code, out, _ = admin_cli("admin", "user", "add", "sup-new", "--role", "supervisor", "--site", "plant-a",
                             "--email", "sup-new@plant-a.example", "--json")
    assert code == 0
    assert set(json.loads(out)) == {"username", "password", "totp_secret", "enrolment_code"}
    code, out, _ = admin_cli("admin", "user", "add", "sup-other", "--role", "supervisor", "--site", "plant-a")
    assert code == 0
    assert "enrolment code: " in out
    assert "needed once, with the password, at the first sign-in; it expires in 72 hours" in out
    assert plant.row("SELECT email FROM identities WHERE username = 'sup-new'")[0] == "sup-new@plant-a.example"
    assert confirmed_at(plant, "sup-new") is None  # enrols at the first sign-in

    code, _, _ = admin_cli("admin", "user", "set", "sup-new", "--email", "ops@plant-a.example")
    assert code == 0
    assert plant.row("SELECT email FROM identities WHERE username = 'sup-new'")[0] == "ops@plant-a.example"
    event = plant.audit("admin:identity:updated")[-1]
    assert event["details"] == {"email": {"old": "sup-new@plant-a.example", "new": "ops@plant-a.example"}}

    for bad in ("not-an-address", "a@b", "two@@plant.example", "sp ace@plant.example", "x@plant.example\nBcc: y"):
        code, _, err = admin_cli("admin", "user", "set", "sup-new", "--email", bad)
        assert code == 1, bad
        assert "is not an e-mail address" in err
    code, _, err = admin_cli("admin", "user", "add", "sup-bad", "--role", "supervisor", "--site", "plant-a",
                             "--email", "nope")
    assert code == 1
    assert plant.count("identities", "WHERE username = 'sup-bad'") == 0


def test_site_set_changes_policy_and_audits_old_and_new(plant: Plant, admin_cli: AdminCli) -> None:
    code, out, _ = admin_cli("admin", "site", "set", "plant-a", "--transfers", "download-only",
                             "--record-input", "off", "--maintenance-window", "Sat 06:00-14:00",
                             "--maintenance-window", "Mon-Fri  22:00-02:00")
    assert code == 0, out
    assert "transfers both -> download-only" in out
    row = plant.row("SELECT transfers, record_input, maintenance_windows FROM sites WHERE name = 'plant-a'")
    assert row[0] == "download_only"
    assert not row[1]
    windows = row[2] if isinstance(row[2], list) else json.loads(row[2])
    assert windows == ["Sat 06:00-14:00", "Mon-Fri 22:00-02:00"]
    [event] = plant.audit("admin:site:updated")
    assert event["site"] == "plant-a"
    assert event["details"]["transfers"] == {"old": "both", "new": "download_only"}
    assert event["details"]["record_input"] == {"old": True, "new": False}
    assert event["details"]["maintenance_windows"]["new"] == windows

    # Nothing to change: no event. A bad window: refused with the reason, nothing changed.
    code, out, _ = admin_cli("admin", "site", "set", "plant-a", "--transfers", "download-only")
    assert code == 0
    assert "unchanged" in out
    code, _, err = admin_cli("admin", "site", "set", "plant-a", "--maintenance-window", "Sat 6-14",
                             "--transfers", "both")
    assert code == 1
    assert "is not in the form DAYS HH:MM-HH:MM" in err
    assert plant.row("SELECT transfers FROM sites WHERE name = 'plant-a'")[0] == "download_only"
    assert len(plant.audit("admin:site:updated")) == 1

    code, _, _ = admin_cli("admin", "site", "set", "plant-a", "--no-maintenance-window")
    assert code == 0
    raw = plant.row("SELECT maintenance_windows FROM sites WHERE name = 'plant-a'")[0]
    assert (raw if isinstance(raw, list) else json.loads(raw)) == []


def test_site_add_takes_the_policy_options(plant: Plant, admin_cli: AdminCli) -> None:
    code, _, _ = admin_cli("admin", "site", "add", "plant-c", "--maintenance-window", "daily 12:00-13:00",
                           "--record-input", "off", "--transfers", "download-only")
    assert code == 0
    row = plant.row("SELECT transfers, record_input FROM sites WHERE name = 'plant-c'")
    assert (row[0], bool(row[1])) == ("download_only", False)
    created = plant.audit("admin:site:created")[-1]["details"]
    assert created["maintenance_windows"] == ["daily 12:00-13:00"]
    code, _, err = admin_cli("admin", "site", "set", "plant-x", "--transfers", "both")
    assert code == 1
    assert "there is no site named 'plant-x'" in err


@pytest.mark.parametrize(("spec", "reason"), [
    ("Sat 6:00-14:00", "is not in the form"),
    ("Sat", "is not in the form"),
    ("Funday 01:00-02:00", "'funday' is not a day"),
    ("Mon-Xyz 01:00-02:00", "is not a day"),
    ("Sat 24:00-02:00", "is not a time of day"),
    ("Sat 10:60-11:00", "is not a time of day"),
    ("Sat 10:00-24:01", "is not a time of day"),
    ("Sat 10:00-10:00", "is empty"),
    ("", "is not in the form"),
])
def test_maintenance_windows_are_parsed_strictly(spec: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        sites.parse_maintenance_window(spec)


SATURDAY = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)  # 2026-11-28 is a Saturday


@pytest.mark.parametrize(("windows", "start_hour", "hours", "inside"), [
    (["Sat 06:00-14:00"], 7, 2, True),
    (["Sat 06:00-14:00"], 7, 8, False),  # runs past the end
    (["Sat 06:00-14:00"], 5, 2, False),  # starts before
    (["Sun 06:00-14:00"], 7, 1, False),  # another day
    (["Fri 22:00-02:00"], 0, 1, True),  # Friday's overnight window reaches into Saturday
    (["Mon-Fri 22:00-02:00"], 23, 1, False),  # Saturday night is not in it
    (["Fri-Mon 00:00-24:00"], 0, 30, True),  # a range over the weekend, back-to-back days join
    (["Sat 06:00-12:00", "Sat 12:00-18:00"], 10, 4, True),  # adjacent windows count as one stretch
    (["daily 12:00-13:00"], 12, 1, True),
    ([], 3, 2, True),  # no windows: nothing to be outside of
])
def test_a_requested_window_is_inside_the_maintenance_windows(windows: list[str], start_hour: int, hours: int,
                                                              inside: bool) -> None:
    start = SATURDAY + dt.timedelta(hours=start_hour)
    assert sites.within_maintenance_windows(windows, start=start, end=start + dt.timedelta(hours=hours)) is inside


def test_email_addresses_are_checked() -> None:
    assert identities.check_email("  ops@plant-a.example ") == "ops@plant-a.example"
    assert identities.check_email("first.last+gate@sub.plant.example") == "first.last+gate@sub.plant.example"
    for bad in ("", "ops", "ops@", "@plant.example", "ops@plant", "ops@plant..example", "o ps@plant.example",
                "x" * 65 + "@plant.example", "ops@-plant.example"):
        with pytest.raises(InvalidInput):
            identities.check_email(bad)


def test_reset_totp_through_the_domain_revokes_every_live_token(plant: Plant) -> None:
    before = plant.count("api_tokens", "WHERE revoked_at IS NULL AND identity_id = "
                         "(SELECT id FROM identities WHERE username = 'sup-a1')")
    assert before >= 1  # signed in when the template was built
    with plant.session() as session:
        identities.reset_totp(session, vault=plant.vault, now=plant.clock.now(), actor="test", username="sup-a1")
    assert plant.count("api_tokens", "WHERE revoked_at IS NULL AND identity_id = "
                       "(SELECT id FROM identities WHERE username = 'sup-a1')") == 0

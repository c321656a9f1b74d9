"""Sign-in over the API: password + TOTP, one use per code, lockout, tokens (DESIGN invariants 4 and 5)."""

from __future__ import annotations

import datetime as dt
import hashlib

import pyotp
import pytest
from sqlalchemy import text

from broker import passwords, totp
from broker.identities import totp_purpose
from tests.fixtures.broker import Api, Plant, assert_refusal, new_public_key

GENERIC = "sign-in refused: wrong username, password or one-time code"


def test_login_returns_a_token_for_password_and_code(api: Api, plant: Plant) -> None:
    seq, tokens = plant.last_seq(), plant.count("api_tokens")

    response = api.login_response("vendor1")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token"].startswith("gpt_")
    assert dt.datetime.fromisoformat(body["expires_at"]) == plant.clock.now() + plant.settings.token_ttl
    assert body["identity"] == {"username": "vendor1", "kind": "human", "roles": ["vendor"],
                                "organisation": "acme-automation", "sites": []}
    me = api.client(body["token"]).get("/me")
    assert me.status_code == 200
    assert me.json()["username"] == "vendor1"
    [event] = plant.audit(after_seq=seq)
    assert (event["action"], event["actor"], event["outcome"]) == ("auth:login:succeeded", "vendor1", "success")
    # Only the token's SHA-256 is kept.
    assert plant.count("api_tokens") == tokens + 1
    assert hashlib.sha256(body["token"].encode()).hexdigest() in plant.column("SELECT token_hash FROM api_tokens")
    assert not any(body["token"] in value for value in plant.column("SELECT token_hash FROM api_tokens"))


def test_wrong_password_and_wrong_code_get_the_same_generic_answer(api: Api, plant: Plant) -> None:
    creds = plant.creds("vendor1")
    seq, tokens = plant.last_seq(), plant.count("api_tokens")
    wrong_password = api.login_response("vendor1", password=creds.password + "x")
    wrong_code = api.login_response("vendor1", code=api.wrong_code("vendor1"))

    first = assert_refusal(wrong_password, 401, "login_failed")
    second = assert_refusal(wrong_code, 401, "login_failed")
    assert first["message"] == second["message"] == GENERIC
    assert plant.count("api_tokens") == tokens
    password_event, code_event = plant.audit(after_seq=seq)
    assert (password_event["action"], password_event["actor"]) == ("auth:login:failed", "vendor1")
    assert password_event["details"]["reason"] == "wrong password"
    assert (code_event["action"], code_event["actor"]) == ("auth:mfa:failed", "vendor1")
    assert code_event["details"]["reason"] == "wrong one-time code"
    assert plant.row("SELECT failed_logins FROM identities WHERE username = 'vendor1'")[0] == 2


def test_a_one_time_code_is_accepted_once(api: Api, plant: Plant) -> None:
    code = api.totp("vendor1")
    assert api.login_response("vendor1", code=code).status_code == 200
    tokens = plant.count("api_tokens")

    replay = api.login_response("vendor1", code=code)

    body = assert_refusal(replay, 401, "login_failed")
    assert body["message"] == GENERIC
    [event] = plant.audit("auth:mfa:failed")
    assert event["actor"] == "vendor1"
    assert event["details"]["reason"] == "one-time code already used"
    assert plant.count("api_tokens") == tokens


def test_an_older_code_is_refused_after_a_newer_one_was_used(api: Api, plant: Plant) -> None:
    secret = plant.creds("vendor1").totp_secret
    plant.clock.advance(dt.timedelta(seconds=30))
    old_code = pyotp.TOTP(secret).at(plant.clock.now())  # never used
    plant.clock.advance(dt.timedelta(seconds=30))
    assert api.login_response("vendor1").status_code == 200  # uses the newer step

    # The older code is still inside the ±1 step drift window, but steps only move forward (RFC 6238 §5.2).
    assert_refusal(api.login_response("vendor1", code=old_code), 401, "login_failed")
    assert plant.audit("auth:mfa:failed")[-1]["details"]["reason"] == "one-time code already used"


def test_repeated_failures_lock_the_account_until_the_lockout_ends(api: Api, plant: Plant) -> None:
    creds = plant.creds("vendor1")
    limit = plant.settings.login_max_failures
    tokens = plant.count("api_tokens")
    for attempt in range(limit):
        # Mix both factors: a lockout counts failures, not which factor failed.
        if attempt % 2:
            response = api.login_response("vendor1", code=api.wrong_code("vendor1"))
        else:
            response = api.login_response("vendor1", password="not-" + creds.password)
        assert_refusal(response, 401, "login_failed")
    locked_at = plant.clock.now()

    with_right_credentials = api.login_response("vendor1")

    body = assert_refusal(with_right_credentials, 423, "account_locked")
    assert "locked" in body["message"]
    [lock] = plant.audit("auth:account:locked")
    assert lock["actor"] == "vendor1"
    until = dt.datetime.fromisoformat(lock["details"]["until"])
    assert until == locked_at + plant.settings.lockout_duration
    assert plant.count("api_tokens") == tokens

    plant.clock.set(until - dt.timedelta(seconds=1))
    assert_refusal(api.login_response("vendor1"), 423, "account_locked")
    assert len(plant.audit("auth:account:locked")) == 1  # refusals while locked do not extend the lock

    plant.clock.set(until + dt.timedelta(seconds=1))
    assert api.login_response("vendor1").status_code == 200


def test_unknown_user_gets_the_generic_answer_and_is_audited(api: Api, plant: Plant) -> None:
    response = api.anonymous.post("/auth/login", json={"username": "mallory", "password": "guess", "totp": "123456"})

    body = assert_refusal(response, 401, "login_failed")
    assert body["message"] == GENERIC
    [event] = plant.audit("auth:login:failed")
    assert event["actor"] == "mallory"
    assert event["outcome"] == "failure"
    assert event["details"]["reason"] == "unknown user"


@pytest.mark.parametrize("kind", ["service", "ai_agent"])
def test_service_and_ai_identities_never_sign_in_with_a_password(api: Api, plant: Plant, kind: str) -> None:
    """DESIGN invariant 5 — even when someone has put a password and a TOTP secret on the row."""
    name = f"{kind.replace('_', '-')}-historian"
    tokens = plant.count("api_tokens")
    assert plant.add_user(name, role="vendor", kind=kind, owner="admin") is None
    assert plant.row("SELECT password_hash, totp_secret_ciphertext FROM identities WHERE username = :u",
                     u=name) == (None, None)
    assert_refusal(api.anonymous.post("/auth/login", json={"username": name, "password": "x", "totp": "123456"}),
                   401, "login_failed")

    secret = totp.new_secret()
    with plant.engine.begin() as connection:
        connection.execute(text("UPDATE identities SET password_hash = :h, totp_secret_ciphertext = :t "
                                "WHERE username = :u"),
                           {"h": passwords.hash_password("planted-password"),
                            "t": plant.vault.seal(secret.encode(), purpose=totp_purpose(name)), "u": name})
    response = api.anonymous.post("/auth/login", json={"username": name, "password": "planted-password",
                                                       "totp": pyotp.TOTP(secret).at(plant.clock.now())})

    assert_refusal(response, 401, "login_failed")
    assert plant.count("api_tokens") == tokens
    events = [e for e in plant.audit("auth:login:failed") if e["actor"] == name]
    assert len(events) == 2
    assert all(kind in e["details"]["reason"] for e in events)


def test_a_disabled_account_cannot_sign_in_and_its_tokens_stop_working(api: Api, plant: Plant) -> None:
    token = api.login("vendor1")
    tokens = plant.count("api_tokens")
    plant.set_disabled("vendor1")

    assert_refusal(api.client(token).get("/me"), 401, "not_authenticated")
    response = api.login_response("vendor1")

    assert_refusal(response, 401, "login_failed")
    assert "disabled" in plant.audit("auth:login:failed")[-1]["details"]["reason"]
    assert plant.count("api_tokens") == tokens


def test_a_token_expires_after_its_lifetime(api: Api, plant: Plant) -> None:
    token = api.login("vendor1")
    client = api.client(token)
    plant.clock.advance(plant.settings.token_ttl - dt.timedelta(seconds=1))
    assert client.get("/me").status_code == 200

    plant.clock.advance(dt.timedelta(seconds=1))

    body = assert_refusal(client.get("/me"), 401, "not_authenticated")
    assert "expired" in body["message"]
    assert client.get("/requests").status_code == 401


def test_logout_revokes_the_token(api: Api, plant: Plant) -> None:
    token = api.login("vendor1")
    other = api.login("vendor1")
    client = api.client(token)

    response = client.post("/auth/logout")

    assert response.status_code == 204
    assert_refusal(client.get("/me"), 401, "not_authenticated")
    assert_refusal(client.post("/requests", json={}), 401, "not_authenticated")
    assert api.client(other).get("/me").status_code == 200  # only the token signed out
    [event] = plant.audit("auth:token:revoked")
    assert event["actor"] == "vendor1"
    assert_refusal(client.post("/auth/logout"), 401, "not_authenticated")  # signing out twice
    assert_refusal(api.client("gpt_not-a-token").post("/auth/logout"), 401, "not_authenticated")
    assert plant.count("api_tokens", "WHERE revoked_at IS NOT NULL") == 1


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/me"), ("GET", "/requests"), ("POST", "/requests"), ("GET", "/grants"), ("GET", "/audit/events"),
    ("GET", "/requests/req-00000000"), ("POST", "/grants/grt-00000000/revoke"),
])
def test_a_gateway_token_is_refused_on_the_user_api(shared_api: Api, method: str, path: str) -> None:
    before = shared_api.plant.last_seq()

    response = shared_api.gateway().request(method, path, json={} if method == "POST" else None)

    assert_refusal(response, 401, "not_authenticated")
    _only_the_refusal_is_audited(shared_api.plant, before, secret=shared_api.plant.gateway_token)


def _only_the_refusal_is_audited(plant: Plant, before: int, *, secret: str) -> None:
    """A credential used where it does not belong changes nothing but is itself in the trail (never the secret)."""
    events = plant.audit(after_seq=before)
    assert [(e["action"], e["details"]["status"]) for e in events] == [("api:request:refused", 401)]
    assert secret not in str(events)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/gateway/register", {"ssh_host": "127.0.0.1", "ssh_port": 2222, "host_key": new_public_key()}),
    ("POST", "/gateway/authorize", {"grant_id": "grt-00000000", "serial": 1, "asset": "hmi-01"}),
    ("POST", "/gateway/grants/status", {"grant_ids": []}),
    ("POST", "/gateway/sessions", {"grant_id": "grt-00000000", "kind": "shell"}),
    ("POST", "/gateway/sessions/ses-00000000/end", {"reason": "client_closed", "bytes_in": 0, "bytes_out": 0}),
    ("GET", "/gateway/events", None),
])
def test_a_user_token_is_refused_on_the_gateway_api(shared_api: Api, method: str, path: str,
                                                    body: dict[str, object] | None) -> None:
    admin = shared_api.as_user("admin")  # even the most privileged user
    before = shared_api.plant.last_seq()

    response = admin.request(method, path, json=body)

    assert_refusal(response, 401, "not_authenticated")
    _only_the_refusal_is_audited(shared_api.plant, before, secret=shared_api.token("admin"))
    assert shared_api.plant.row("SELECT registered_at FROM gateways")[0] is None

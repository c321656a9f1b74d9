"""Staff sign-in with the company account (OpenID Connect) against a real provider (tests/fixtures/oidc_provider.py):
groups become roles and sites, approvers need a second factor, a removed group takes the role away at the next
sign-in, every check of the ID token refuses what it must, and `gatepass login --oidc` gets a working token
through its loopback redirect. The web pages' side, in Chromium: tests/approvals/test_oidc_browser.py."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwk, jwt
from sqlalchemy import select

from assembly.environment import broker_settings
from broker.access import workflow
from broker.clock import SystemClock
from broker.identity.oidc_config import OidcSettings, parse_groups
from broker.identity.oidc_provider import RelyingParty, SignInRefused
from broker.models import Identity
from tests.fixtures.broker import BrokerServer, Plant, new_public_key
from tests.fixtures.oidc_provider import OidcProvider

GROUPS = "ot-sup-plant-a=supervisor:plant-a;ot-security=security"
CLIENT_ID = "gatepass-broker"
REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the tests read the provider's redirect themselves


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    started = OidcProvider(tmp_path_factory.mktemp("oidc") / "provider.log").start()
    try:
        yield started
    finally:
        started.stop()


def oidc_settings(provider: OidcProvider, **overrides: Any) -> OidcSettings:
    # A confidential client, as a broker is (this provider takes no public client at its token endpoint).
    return OidcSettings(issuer=provider.issuer, client_id=CLIENT_ID, client_secret="broker-secret-at-the-idp",
                        groups=parse_groups(GROUPS), **overrides)


@pytest.fixture
def server(plant: Plant, provider: OidcProvider) -> Iterator[BrokerServer]:
    # The provider's tokens carry the real time: the broker runs on it, and the plant's domain calls start now.
    plant.clock.set(dt.datetime.now(dt.UTC))
    running = BrokerServer(dataclasses.replace(plant.settings, clock=SystemClock(),
                                               oidc=oidc_settings(provider))).start()
    try:
        yield running
    finally:
        running.stop()


def company_sign_in(server: BrokerServer, provider: OidcProvider, sub: str) -> httpx.Response:
    """The command line's door, driven by hand: start, sign in at the provider, finish with the code."""
    with httpx.Client(base_url=server.url + "/api/v1", timeout=10) as client:
        started = client.post("/auth/oidc/start", json={"redirect_uri": REDIRECT}).json()
        back = parse_qs(urlsplit(provider.authorize(started["authorization_url"], sub)).query)
        return client.post("/auth/oidc/finish", json={"pending": started["pending"], "code": back["code"][0],
                                                      "state": back["state"][0]})


def details(event: dict[str, Any]) -> dict[str, Any]:
    value = event["details"]
    return json.loads(value) if isinstance(value, str) else dict(value)


def as_bearer(server: BrokerServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def pending_request(plant: Plant, requester: str = "vendor1", asset: str = "hmi-01") -> str:
    with plant.session() as session:
        vendor = session.scalars(select(Identity).where(Identity.username == requester)).one()
        return workflow.create_request(
            session, now=plant.clock.now(), decide_within=plant.settings.decide_within, requester=vendor,
            asset_name=asset, duration="1h", reason="replace HMI firmware", ssh=True, ports=[], start=None,
            public_key=new_public_key()).id


# --- configuration --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("groups", "refusal"), [
    ("contractors=vendor", "vendors keep their local Gatepass accounts"),
    ("ot-sup=supervisor", "supervisor without a site"),
    ("ot-boss=boss:plant-a", "not a role"),
    ("", "maps no group to a role"),
    ("just-a-group", "is not GROUP=ROLE"),
])
def test_a_group_mapping_that_would_make_vendors_or_nonsense_is_refused_when_the_settings_are_read(
        groups: str, refusal: str) -> None:
    environ = {"GATEPASS_OIDC_ISSUER": "https://login.plant.example", "GATEPASS_OIDC_CLIENT_ID": "gatepass",
               "GATEPASS_OIDC_GROUPS": groups}
    with pytest.raises(ValueError, match=refusal):
        broker_settings(environ)


def test_the_environment_gives_the_issuer_client_groups_and_accepted_factors() -> None:
    settings = broker_settings({
        "GATEPASS_OIDC_ISSUER": "https://login.plant.example/", "GATEPASS_OIDC_CLIENT_ID": "gatepass",
        "GATEPASS_OIDC_CLIENT_SECRET": "s3cret-from-the-provider", "GATEPASS_OIDC_MFA": "mfa, hwk",
        "GATEPASS_OIDC_GROUPS": "ot-sup=supervisor:plant-a,plant-b; ot-sec=security"}).oidc
    assert settings is not None
    assert settings.issuer_id == "https://login.plant.example"
    assert [(r.group, r.role, r.site) for r in settings.groups] == [
        ("ot-sup", "supervisor", "plant-a"), ("ot-sup", "supervisor", "plant-b"), ("ot-sec", "security", None)]
    assert settings.mfa_methods == {"mfa", "hwk"}
    assert "s3cret" not in repr(settings)
    assert broker_settings({}).oidc is None
    with pytest.raises(ValueError, match="plain http"):
        broker_settings({"GATEPASS_OIDC_ISSUER": "http://login.plant.example", "GATEPASS_OIDC_CLIENT_ID": "gp",
                         "GATEPASS_OIDC_GROUPS": "ot-sec=security"})


# --- signing in -----------------------------------------------------------------------------------------


def test_a_supervisor_in_the_plant_a_group_with_mfa_is_provisioned_and_can_approve(
        plant: Plant, provider: OidcProvider, server: BrokerServer) -> None:
    provider.set_person("sub-alice-1", preferred_username="Alice", email="alice@corp.example",
                        groups=["ot-sup-plant-a", "all-staff"], amr=["pwd", "mfa"])
    answer = company_sign_in(server, provider, "sub-alice-1")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["mfa"] is True
    assert body["identity"] == {"username": "alice", "kind": "human", "roles": ["supervisor"],
                                "organisation": None, "sites": ["plant-a"]}
    identity = plant.row("SELECT password_hash, totp_secret_ciphertext, oidc_issuer, oidc_subject, email "
                         "FROM identities WHERE username = 'alice'")
    assert tuple(identity) == (None, None, provider.issuer, "sub-alice-1", "alice@corp.example")

    request_id = pending_request(plant)
    with as_bearer(server, body["token"]) as alice:
        assert alice.get("/me").json()["username"] == "alice"
        approved = alice.post(f"/requests/{request_id}/approve", json={})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    [login] = plant.audit("auth:login:succeeded")[-1:]
    assert login["actor"] == "alice"
    assert details(login).items() >= {"method": "oidc", "mfa": True, "amr": ["pwd", "mfa"]}.items()
    [created] = [e for e in plant.audit("admin:identity:created") if e["subject"] == "alice"]
    assert created["actor"] == "oidc"


def test_without_a_second_factor_a_supervisor_may_look_but_approving_denying_and_lockdown_are_refused_and_audited(
        plant: Plant, provider: OidcProvider, server: BrokerServer) -> None:
    provider.set_person("sub-bob-1", preferred_username="bob", groups=["ot-sup-plant-a"], amr=["pwd"])
    answer = company_sign_in(server, provider, "sub-bob-1").json()
    assert answer["mfa"] is False
    request_id = pending_request(plant)
    seq = plant.last_seq()
    with as_bearer(server, answer["token"]) as bob:
        assert [r["id"] for r in bob.get("/requests", params={"pending": "true"}).json()] == [request_id]
        for path, body in ((f"/requests/{request_id}/approve", {}),
                           (f"/requests/{request_id}/deny", {"comment": "not today"}),
                           ("/sites/plant-a/lockdown", {"reason": "drill"})):
            refused = bob.post(path, json=body)
            assert refused.status_code == 403, (path, refused.text)
            assert "without a second factor" in refused.json()["message"]
    assert plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0] == "pending"
    assert plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0] in (False, 0)
    refusals = [e for e in plant.audit(after_seq=seq) if e["outcome"] == "refused"]
    assert [e["action"] for e in refusals] == ["access:decision:refused", "access:decision:refused",
                                               "containment:site:refused"]
    assert all(e["actor"] == "bob" and details(e)["mfa"] is False for e in refusals)


def test_an_acr_among_the_accepted_values_counts_as_a_second_factor(
        plant: Plant, provider: OidcProvider, server: BrokerServer) -> None:
    provider.set_person("sub-carol-1", preferred_username="carol", groups=["ot-sup-plant-a"], amr=["pwd"])
    assert company_sign_in(server, provider, "sub-carol-1").json()["mfa"] is False
    server.stop()
    accepting = BrokerServer(dataclasses.replace(plant.settings, clock=SystemClock(), oidc=oidc_settings(
        provider, mfa_methods=frozenset({"mfa", "urn:plant:acr:strong"})))).start()
    try:
        provider.set_person("sub-carol-1", preferred_username="carol", groups=["ot-sup-plant-a"], amr=["pwd"],
                            acr="urn:plant:acr:strong")
        assert company_sign_in(accepting, provider, "sub-carol-1").json()["mfa"] is True
    finally:
        accepting.stop()


def test_a_person_removed_from_the_group_loses_the_role_at_the_next_sign_in(
        plant: Plant, provider: OidcProvider, server: BrokerServer) -> None:
    provider.set_person("sub-dave-1", preferred_username="dave", groups=["ot-sup-plant-a"], amr=["mfa"])
    first = company_sign_in(server, provider, "sub-dave-1").json()
    assert first["identity"]["roles"] == ["supervisor"]

    # Moved from the supervisors to security in the directory: the next sign-in follows.
    provider.set_person("sub-dave-1", preferred_username="dave", groups=["ot-security"], amr=["mfa"])
    second = company_sign_in(server, provider, "sub-dave-1").json()
    assert second["identity"]["roles"] == ["security"]
    changed = plant.audit("auth:oidc:roles_changed")[-1]
    assert changed["subject"] == "dave"
    assert details(changed).items() >= {"added": ["security"], "removed": ["supervisor:plant-a"]}.items()
    request_id = pending_request(plant)
    with as_bearer(server, first["token"]) as earlier_session:
        # Roles are the person's, read at every request: the session from before the move has lost them too.
        assert earlier_session.post(f"/requests/{request_id}/approve", json={}).status_code == 403

    # Out of every mapped group: refused, and the role is gone for good (not kept until an admin notices).
    provider.set_person("sub-dave-1", preferred_username="dave", groups=["all-staff"], amr=["mfa"])
    refused = company_sign_in(server, provider, "sub-dave-1")
    assert refused.status_code == 401
    assert "none of the groups" in refused.json()["message"]
    assert plant.count("role_assignments",
                       "WHERE identity_id = (SELECT id FROM identities WHERE username = 'dave')") == 0
    failed = plant.audit("auth:login:failed")[-1]
    assert failed["actor"] == "dave"
    assert "none of the groups" in details(failed)["reason"]


def test_a_company_account_never_takes_over_a_local_account_with_the_same_name(
        plant: Plant, provider: OidcProvider, server: BrokerServer) -> None:
    provider.set_person("sub-intruder", preferred_username="vendor1", groups=["ot-security"], amr=["mfa"])
    refused = company_sign_in(server, provider, "sub-intruder")
    assert refused.status_code == 401
    assert "belongs to an existing Gatepass account" in refused.json()["message"]
    assert plant.row("SELECT oidc_subject FROM identities WHERE username = 'vendor1'")[0] is None
    assert details(plant.audit("auth:login:failed")[-1])["subject"] == "sub-intruder"


def test_a_name_is_taken_from_the_e_mail_when_the_preferred_username_is_not_a_valid_name(
        plant: Plant, provider: OidcProvider, server: BrokerServer) -> None:
    provider.set_person("sub-erin", preferred_username="Erin Example", email="erin.x@corp.example",
                        groups=["ot-security"], amr=["hwk"])
    assert company_sign_in(server, provider, "sub-erin").json()["identity"]["username"] == "erin.x"


def test_a_suspended_person_is_refused_at_the_company_sign_in(
        plant: Plant, provider: OidcProvider, server: BrokerServer) -> None:
    provider.set_person("sub-fay", preferred_username="fay", groups=["ot-security"], amr=["mfa"])
    assert company_sign_in(server, provider, "sub-fay").status_code == 200
    plant.set_disabled("fay")
    refused = company_sign_in(server, provider, "sub-fay")
    assert refused.status_code == 401
    assert "fay" in refused.json()["message"]


def test_a_finished_sign_in_with_another_state_or_a_changed_pending_state_is_refused(
        plant: Plant, provider: OidcProvider, server: BrokerServer) -> None:
    provider.set_person("sub-gus", preferred_username="gus", groups=["ot-security"], amr=["mfa"])
    with httpx.Client(base_url=server.url + "/api/v1", timeout=10) as client:
        started = client.post("/auth/oidc/start", json={"redirect_uri": REDIRECT}).json()
        back = parse_qs(urlsplit(provider.authorize(started["authorization_url"], "sub-gus")).query)
        other_state = client.post("/auth/oidc/finish", json={"pending": started["pending"], "code": back["code"][0],
                                                            "state": "not-the-state"})
        changed = client.post("/auth/oidc/finish", json={"pending": started["pending"][:-4] + "AAAA",
                                                        "code": back["code"][0], "state": back["state"][0]})
        elsewhere = client.post("/auth/oidc/start", json={"redirect_uri": "https://collector.example/cb"})
    assert other_state.status_code == 401
    assert "state does not match" in other_state.json()["message"]
    assert changed.status_code == 401
    assert "not started here" in changed.json()["message"]
    assert elsewhere.status_code == 400
    assert "RFC 8252" in elsewhere.json()["message"]
    assert len(plant.audit("auth:login:failed")) >= 2


def test_without_configuration_the_company_sign_in_is_not_there(plant: Plant) -> None:
    running = BrokerServer(plant.settings).start()
    try:
        answer = httpx.post(running.url + "/api/v1/auth/oidc/start", json={"redirect_uri": REDIRECT})
        page = httpx.get(running.url + "/sign-in")
    finally:
        running.stop()
    assert answer.status_code == 404
    assert "company account" not in page.text


# --- the ID token's checks, one by one, with tokens from the real provider ------------------------------


@pytest.fixture
def relying_party(provider: OidcProvider) -> RelyingParty:
    return RelyingParty(oidc_settings(provider))


def _real_token(provider: OidcProvider, *, client_id: str = CLIENT_ID, nonce: str = "n-1") -> str:
    provider.set_person("sub-token", preferred_username="tina", groups=["ot-security"], amr=["mfa"])
    return provider.token_for(client_id=client_id, sub="sub-token", redirect_uri=REDIRECT, nonce=nonce)


def test_a_real_token_for_this_client_passes_every_check(provider: OidcProvider, relying_party: RelyingParty) -> None:
    person = relying_party.verify_id_token(_real_token(provider), now=dt.datetime.now(dt.UTC), nonce="n-1")
    assert (person.subject, person.preferred_username, person.groups, person.amr) == (
        "sub-token", "tina", ("ot-security",), ("mfa",))


def test_a_token_for_another_application_is_refused(provider: OidcProvider, relying_party: RelyingParty) -> None:
    token = _real_token(provider, client_id="some-other-app")
    with pytest.raises(SignInRefused, match="meant for another application"):
        relying_party.verify_id_token(token, now=dt.datetime.now(dt.UTC), nonce="n-1")


def test_a_token_for_another_sign_in_or_out_of_its_time_is_refused(
        provider: OidcProvider, relying_party: RelyingParty) -> None:
    token, now = _real_token(provider), dt.datetime.now(dt.UTC)
    with pytest.raises(SignInRefused, match="nonce does not match"):
        relying_party.verify_id_token(token, now=now, nonce="another-sign-in")
    with pytest.raises(SignInRefused, match="expired"):
        relying_party.verify_id_token(token, now=now + dt.timedelta(hours=2), nonce="n-1")
    with pytest.raises(SignInRefused, match="dated in the future"):
        relying_party.verify_id_token(token, now=now - dt.timedelta(minutes=5), nonce="n-1")


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


def test_a_forged_or_unsigned_token_is_refused(provider: OidcProvider, relying_party: RelyingParty) -> None:
    header, claims = _parts(_real_token(provider))
    claims["groups"] = ["ot-sup-plant-a"]
    now = dt.datetime.now(dt.UTC)
    # Signed by someone else's key, with the provider's header (and its key id, where it names one).
    attacker = jwk.RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    forged = jwt.encode({key: value for key, value in header.items() if key in ("alg", "kid", "typ")}, claims,
                        attacker)
    with pytest.raises(SignInRefused, match="signature does not match"):
        relying_party.verify_id_token(forged, now=now, nonce="n-1")
    # Not signed at all.
    b64 = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")  # noqa: E731
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    with pytest.raises(SignInRefused, match="not a token signed by the provider"):
        relying_party.verify_id_token(unsigned, now=now, nonce="n-1")
    # Signed with a key id the provider does not publish.
    unknown = jwt.encode({"alg": "RS256", "kid": "made-up"}, claims, attacker)
    with pytest.raises(SignInRefused, match="key the provider does not publish"):
        relying_party.verify_id_token(unknown, now=now, nonce="n-1")


def test_the_authorization_request_carries_pkce_and_the_code_goes_back_with_its_verifier(
        plant: Plant, provider: OidcProvider) -> None:
    """The provider here does not enforce PKCE, so the broker's half is checked on the wire: the challenge sent to
    the authorization endpoint is the S256 of the verifier sent to the token endpoint (RFC 7636 §4.2, §4.5)."""
    sent: list[httpx.Request] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return super().handle_request(request)

    relying_party = RelyingParty(oidc_settings(provider), transport=Recording())
    provider.set_person("sub-pkce", preferred_username="pia", groups=["ot-security"], amr=["mfa"])
    now = dt.datetime.now(dt.UTC)
    pending = relying_party.begin(vault=plant.vault, now=now, redirect_uri=REDIRECT, purpose="cli")
    query = parse_qs(urlsplit(pending.authorization_url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["response_type"] == ["code"]
    back = parse_qs(urlsplit(provider.authorize(pending.authorization_url, "sub-pkce")).query)
    person = relying_party.finish(vault=plant.vault, now=now, sealed=pending.sealed, purpose="cli",
                                  code=back["code"][0], state=back["state"][0])
    assert person.subject == "sub-pkce"
    [token_request] = [r for r in sent if r.url.path.endswith("/token")]
    verifier = parse_qs(token_request.content.decode())["code_verifier"][0]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    assert query["code_challenge"] == [challenge]
    # A pending sign-in started for the command line does not open as the web's.
    with pytest.raises(SignInRefused, match="not started here"):
        relying_party.finish(vault=plant.vault, now=now, sealed=pending.sealed, purpose="web",
                             code=back["code"][0], state=back["state"][0])


# --- the command line: `gatepass login --oidc` ------------------------------------------------------------


@pytest.mark.slow
def test_gatepass_login_oidc_gets_a_working_token_through_its_loopback_redirect(
        plant: Plant, provider: OidcProvider, server: BrokerServer, tmp_path: Path) -> None:
    provider.set_person("sub-hal", preferred_username="hal", groups=["ot-sup-plant-a"], amr=["pwd", "otp"])
    home = tmp_path / "gatepass-home"
    environ = {**os.environ, "GATEPASS_HOME": str(home)}
    environ.pop("GATEPASS_SERVER", None)
    login = subprocess.Popen([sys.executable, "-m", "cli", "login", "--server", server.url, "--oidc", "--no-browser"],
                             env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert login.stderr is not None
        url = ""
        deadline = time.monotonic() + 30
        while not url.startswith("http") and time.monotonic() < deadline:
            url = login.stderr.readline().strip()
        assert url.startswith(provider.issuer), url
        # The person's browser: the provider's sign-in page, then its redirect to the CLI's loopback listener.
        back = provider.authorize(url, "sub-hal")
        assert back.startswith("http://127.0.0.1:")
        assert "/callback?" in back
        assert "Go back to your terminal" in httpx.get(back, timeout=10).text
        out, err = login.communicate(timeout=30)
    finally:
        if login.poll() is None:
            login.kill()
    assert login.returncode == 0, err
    assert f"Logged in to {server.url} as hal (supervisor)" in out
    saved = json.loads((home / "session.json").read_text())
    with as_bearer(server, saved["token"]) as hal:
        me = hal.get("/me")
    assert me.status_code == 200
    assert me.json()["sites"] == ["plant-a"]
    whoami = subprocess.run([sys.executable, "-m", "cli", "whoami"], env=environ, capture_output=True, text=True,
                            timeout=30, check=False)
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout.startswith("hal (human; roles supervisor")


def test_gatepass_login_oidc_refuses_a_password_on_the_side(tmp_path: Path) -> None:
    environ = {**os.environ, "GATEPASS_HOME": str(tmp_path / "home")}
    refused = subprocess.run([sys.executable, "-m", "cli", "login", "--server", "http://127.0.0.1:9", "--oidc",
                              "--user", "alice"], env=environ, capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode == 2
    assert "leave out --user" in refused.stderr

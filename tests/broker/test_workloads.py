"""Service and AI identities on their machines (issue 11): no interactive sign-in; a single-use join token and a key
made on the machine; short-lived credentials renewed at half-life with the same key; a second copy of a machine's
credential caught and locked without touching the identity's other machines; the `gatepass` commands that do it."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from approvals.web import SESSION_COOKIE
from broker.identity import passwords, totp, workloads
from broker.identity.identities import totp_purpose
from cli import client_join
from cli.context import Context
from cli.main import main
from cli.state import ClientState
from tests.broker.conftest import AdminCli
from tests.fixtures.broker import Api, BrokerServer, Plant, assert_refusal, parse_certificate

CSRF_FIELD = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
MINUTE = dt.timedelta(minutes=1)


@dataclasses.dataclass
class Machine:
    """One machine of a workload as the protocol sees it (docs/API.md, "Workloads"): its key, credential, counter."""

    key: Ed25519PrivateKey
    credential: str = ""
    instance_id: str = ""
    renewals: int = 0

    @classmethod
    def new(cls) -> Machine:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> str:
        return self.key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH).decode()

    def join_body(self, token: str, *, signer: Ed25519PrivateKey | None = None) -> dict[str, str]:
        message = workloads.join_message(token_hash=hashlib.sha256(token.encode()).hexdigest(),
                                         public_key=self.public_key)
        return {"token": token, "public_key": self.public_key,
                "signature": base64.b64encode((signer or self.key).sign(message)).decode()}

    def renew_body(self, now: dt.datetime, *, counter: int | None = None, signer: Ed25519PrivateKey | None = None,
                   credential: str | None = None) -> dict[str, Any]:
        counter = self.renewals + 1 if counter is None else counter
        message = workloads.renewal_message(
            instance_id=self.instance_id, counter=counter, timestamp=int(now.timestamp()),
            token_hash=hashlib.sha256((credential or self.credential).encode()).hexdigest())
        return {"counter": counter, "timestamp": int(now.timestamp()),
                "signature": base64.b64encode((signer or self.key).sign(message)).decode(),
                "public_key": Machine(signer).public_key if signer else self.public_key}

    def take(self, answer: httpx.Response) -> dict[str, Any]:
        assert answer.status_code in (200, 201), answer.text
        body: dict[str, Any] = answer.json()
        self.credential, self.instance_id = body["token"], body["instance"]["id"]
        self.renewals = body["instance"]["renewals"]
        return body


def add_workload(plant: Plant, name: str = "historian", *, kind: str = "service",
                 sites: list[str] | None = None) -> None:
    plant.add_user(name, role="vendor", kind=kind, owner="admin", sites=["plant-a"] if sites is None else sites)


def join_token(plant: Plant, name: str = "historian") -> str:
    with plant.session() as session:
        return workloads.issue_join_token(session, now=plant.clock.now(), actor="test-setup", username=name).token


def join(api: Api, plant: Plant, machine: Machine, name: str = "historian") -> dict[str, Any]:
    return machine.take(api.anonymous.post("/workloads/join", json=machine.join_body(join_token(plant, name))))


def renew(api: Api, plant: Plant, machine: Machine, **changes: Any) -> httpx.Response:
    credential = changes.pop("credential", None)
    body = machine.renew_body(plant.clock.now(), credential=credential, **changes)
    return api.client(credential or machine.credential).post("/workloads/renew", json=body)


def instance(plant: Plant, instance_id: str) -> tuple[Any, ...]:
    return tuple(plant.row("SELECT status, renewals, locked_reason FROM workload_instances WHERE id = :i",
                           i=instance_id))


# --- no interactive logon --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["service", "ai_agent"])
def test_the_sign_in_page_refuses_a_workload_even_with_a_planted_password(
        broker: BrokerServer, plant: Plant, kind: str) -> None:
    """DESIGN invariant 5 on the web: the sign-in form answers a service or AI identity exactly as a wrong password,
    even when someone put a password and a TOTP secret on its row."""
    add_workload(plant, "robot", kind=kind)
    secret = totp.new_secret()
    with plant.engine.begin() as connection:
        connection.execute(text("UPDATE identities SET password_hash = :h, totp_secret_ciphertext = :t, "
                                "totp_confirmed_at = :now WHERE username = 'robot'"),
                           {"h": passwords.hash_password("planted-password"), "now": plant.clock.now(),
                            "t": plant.vault.seal(secret.encode(), purpose=totp_purpose("robot"))})
    with httpx.Client(base_url=broker.url, follow_redirects=False, timeout=10) as client:
        form = CSRF_FIELD.search(client.get("/sign-in").text)
        assert form is not None
        answer = client.post("/sign-in", data={"csrf": form.group(1), "username": "robot",
                                               "password": "planted-password",
                                               "code": pyotp.TOTP(secret).at(plant.clock.now())})

    assert answer.status_code == 401
    assert "sign-in refused: wrong username, password or one-time code" in answer.text
    assert SESSION_COOKIE not in answer.cookies
    [event] = [e for e in plant.audit("auth:login:failed") if e["actor"] == "robot"]
    assert event["details"]["reason"] == f"{kind} identities cannot sign in with a password"
    assert plant.count("api_tokens", "WHERE identity_id = (SELECT id FROM identities WHERE username = 'robot')") == 0


def test_a_joined_workload_still_gets_the_uniform_answer_from_the_password_login(api: Api, plant: Plant) -> None:
    add_workload(plant)
    join(api, plant, Machine.new())
    joined = assert_refusal(api.anonymous.post("/auth/login", json={"username": "historian", "password": "x",
                                                                    "totp": "123456"}), 401, "login_failed")
    unknown = assert_refusal(api.anonymous.post("/auth/login", json={"username": "nobody-here", "password": "x",
                                                                     "totp": "123456"}), 401, "login_failed")
    assert joined == unknown


# --- join ------------------------------------------------------------------------------------------------------


def test_a_workload_joins_with_its_own_key_and_then_requests_access_without_a_password(
        api: Api, plant: Plant, admin_cli: AdminCli) -> None:
    add_workload(plant)
    code, out, _ = admin_cli("admin", "identity", "join-token", "historian", "--json")
    assert code == 0
    issued = json.loads(out)
    assert dt.datetime.fromisoformat(issued["expires_at"]) == plant.clock.now() + dt.timedelta(hours=1)
    # Only its SHA-256 is kept.
    assert plant.column("SELECT token_hash FROM join_tokens") == [hashlib.sha256(issued["token"].encode()).hexdigest()]
    [made] = plant.audit("workload:join_token:issued")
    assert (made["subject"], issued["token"] in json.dumps(made)) == ("historian", False)

    machine = Machine.new()
    answer = machine.take(api.anonymous.post("/workloads/join", json=machine.join_body(issued["token"])))

    assert answer["identity"]["username"] == "historian"
    assert answer["identity"]["kind"] == "service"
    assert re.fullmatch(r"wki-[0-9a-f]{8}", machine.instance_id)
    assert dt.datetime.fromisoformat(answer["expires_at"]) == plant.clock.now() + dt.timedelta(hours=1)
    blob = base64.b64decode(machine.public_key.split()[1])
    assert plant.row("SELECT public_key, fingerprint, status, renewals FROM workload_instances") == (
        machine.public_key, hashlib.sha256(blob).hexdigest(), "active", 0)
    assert plant.row("SELECT instance_id, token_hash FROM api_tokens WHERE instance_id IS NOT NULL") == (
        machine.instance_id, hashlib.sha256(machine.credential.encode()).hexdigest())
    assert plant.row("SELECT used_at FROM join_tokens")[0] is not None
    [joined] = plant.audit("workload:instance:joined")
    assert (joined["actor"], joined["subject"]) == ("historian", machine.instance_id)
    assert api.client(machine.credential).get("/me").json()["username"] == "historian"

    # The credential works like a person's sign-in: ask for access with the machine's own key.
    request = api.client(machine.credential).post("/requests", json={
        "asset": "hmi-01", "duration": "1h", "reason": "nightly historian export", "ssh": True,
        "public_key": machine.public_key})
    assert request.status_code == 201, request.text
    approved = api.approve("sup-a1", request.json()["id"])
    assert approved.status_code == 200, approved.text
    grant = api.client(machine.credential).get(f"/grants/{approved.json()['grant']['id']}").json()
    assert "permit-pty" not in parse_certificate(grant["certificate"]).extensions


def test_the_credential_lives_as_long_as_the_shortest_site_allows(api: Api, plant: Plant) -> None:
    with plant.engine.begin() as connection:
        connection.execute(text("UPDATE sites SET workload_credential_seconds = 600 WHERE name = 'plant-b'"))
        connection.execute(text("UPDATE sites SET workload_credential_seconds = 1800 WHERE name = 'plant-a'"))
    add_workload(plant, sites=["plant-a", "plant-b"])
    add_workload(plant, "at-a", sites=["plant-a"])
    add_workload(plant, "everywhere", sites=[])  # no site scope: it reaches every site, so every limit applies

    both = join(api, plant, Machine.new())
    one = join(api, plant, Machine.new(), "at-a")
    unscoped = join(api, plant, Machine.new(), "everywhere")

    assert dt.datetime.fromisoformat(both["expires_at"]) == plant.clock.now() + dt.timedelta(minutes=10)
    assert dt.datetime.fromisoformat(one["expires_at"]) == plant.clock.now() + dt.timedelta(minutes=30)
    assert dt.datetime.fromisoformat(unscoped["expires_at"]) == plant.clock.now() + dt.timedelta(minutes=10)


def test_a_join_token_joins_one_machine_once(api: Api, plant: Plant) -> None:
    add_workload(plant)
    token = join_token(plant)
    first = Machine.new()
    first.take(api.anonymous.post("/workloads/join", json=first.join_body(token)))

    again = api.anonymous.post("/workloads/join", json=Machine.new().join_body(token))

    body = assert_refusal(again, 403, "forbidden")
    assert "already used" in body["message"]
    [refused] = plant.audit("workload:instance:join_refused")
    assert (refused["outcome"], refused["subject"]) == ("refused", "historian")
    assert "already used" in refused["details"]["reason"]
    assert plant.count("workload_instances") == 1


def test_a_join_token_expires_after_an_hour(api: Api, plant: Plant) -> None:
    add_workload(plant)
    token = join_token(plant)
    plant.clock.advance(dt.timedelta(hours=1))

    body = assert_refusal(api.anonymous.post("/workloads/join", json=Machine.new().join_body(token)), 403)

    assert "expired" in body["message"]
    assert plant.audit("workload:instance:join_refused")[0]["details"]["reason"].startswith("this join token expired")
    assert plant.count("workload_instances") == 0


def test_the_join_proves_the_private_key_and_a_failed_proof_keeps_the_token(api: Api, plant: Plant) -> None:
    add_workload(plant)
    token = join_token(plant)
    machine = Machine.new()

    forged = api.anonymous.post("/workloads/join", json=machine.join_body(token, signer=Ed25519PrivateKey.generate()))

    assert "signature" in assert_refusal(forged, 403)["message"]
    assert plant.audit("workload:instance:join_refused")[0]["outcome"] == "refused"
    assert plant.row("SELECT used_at FROM join_tokens")[0] is None
    machine.take(api.anonymous.post("/workloads/join", json=machine.join_body(token)))  # the real machine still can


def test_a_key_joins_once(api: Api, plant: Plant) -> None:
    add_workload(plant)
    machine = Machine.new()
    join(api, plant, machine)

    again = api.anonymous.post("/workloads/join", json=machine.join_body(join_token(plant)))

    assert machine.instance_id in assert_refusal(again, 409)["message"]


@pytest.mark.parametrize(("public_key", "why"), [
    ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x", "Ed25519"),
    ("ssh-ed25519 not-base64", "not an OpenSSH"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "never send a private key"),
])
def test_only_an_ed25519_public_key_is_taken(api: Api, plant: Plant, public_key: str, why: str) -> None:
    add_workload(plant)
    body = {**Machine.new().join_body(join_token(plant)), "public_key": public_key}
    assert why in assert_refusal(api.anonymous.post("/workloads/join", json=body), 400, "invalid_input")["message"]
    assert plant.count("workload_instances") == 0


def test_an_unknown_join_token_is_refused_and_recorded(api: Api, plant: Plant) -> None:
    answer = api.anonymous.post("/workloads/join", json=Machine.new().join_body("gpj_not-one-the-broker-made"))

    assert "never issued" in assert_refusal(answer, 403)["message"]
    [recorded] = plant.audit("api:request:refused")
    assert recorded["subject"] == "/api/v1/workloads/join"


def test_join_tokens_are_only_for_active_service_and_ai_identities(plant: Plant, admin_cli: AdminCli) -> None:
    add_workload(plant)
    plant.creds("vendor1")
    plant.set_disabled("historian")

    for name, why in (("vendor1", "is a person"), ("historian", "disabled"), ("ghost", "no user named")):
        code, _, err = admin_cli("admin", "identity", "join-token", name)
        assert code == 1
        assert why in err
    assert plant.count("join_tokens") == 0


def test_a_suspended_or_expired_identity_can_neither_join_nor_renew(api: Api, plant: Plant) -> None:
    add_workload(plant)
    machine = Machine.new()
    join(api, plant, machine)
    token = join_token(plant)
    plant.set_disabled("historian")  # the status only, so the refusal itself is what is tested
    plant.clock.advance(dt.timedelta(minutes=31))

    refused_join = api.anonymous.post("/workloads/join", json=Machine.new().join_body(token))
    refused_renewal = renew(api, plant, machine)

    assert "'historian' is disabled" in assert_refusal(refused_join, 403)["message"]
    assert "'historian' is disabled" in assert_refusal(refused_renewal, 403)["message"]
    assert [e["details"]["reason"] for e in plant.audit("workload:credential:renewal_refused")] == [
        "the account 'historian' is disabled"]
    assert plant.audit("workload:instance:join_refused")[0]["details"]["reason"] == (
        "the account 'historian' is disabled")

    plant.set_disabled("historian", disabled=False)
    with plant.engine.begin() as connection:
        connection.execute(text("UPDATE identities SET expires_at = :t WHERE username = 'historian'"),
                           {"t": plant.clock.now() - MINUTE})
    assert "expired" in assert_refusal(renew(api, plant, machine), 403)["message"]
    assert instance(plant, machine.instance_id)[:2] == ("active", 0)  # refused, not locked


# --- renewal ---------------------------------------------------------------------------------------------------


def test_renewal_proves_the_same_key_and_replaces_the_credential(api: Api, plant: Plant) -> None:
    add_workload(plant)
    machine = Machine.new()
    join(api, plant, machine)
    old = machine.credential
    plant.clock.advance(dt.timedelta(minutes=31))

    answer = machine.take(renew(api, plant, machine))

    assert machine.credential != old
    assert answer["instance"]["renewals"] == machine.renewals == 1
    assert dt.datetime.fromisoformat(answer["expires_at"]) == plant.clock.now() + dt.timedelta(hours=1)
    assert api.client(old).get("/me").status_code == 401
    assert api.client(machine.credential).get("/me").status_code == 200
    [renewed] = plant.audit("workload:credential:renewed")
    assert (renewed["subject"], renewed["details"]["renewals"]) == (machine.instance_id, 1)
    plant.clock.advance(dt.timedelta(minutes=31))
    assert machine.take(renew(api, plant, machine))["instance"]["renewals"] == 2


def test_a_human_token_is_not_renewed_this_way(api: Api, plant: Plant) -> None:
    answer = api.as_user("vendor1").post("/workloads/renew", json={"counter": 1, "timestamp": 0,
                                                                     "signature": "AAAA"})
    assert "gatepass login" in assert_refusal(answer, 403)["message"]


def test_a_counter_ahead_or_a_stale_time_is_refused_without_locking(api: Api, plant: Plant) -> None:
    add_workload(plant)
    machine = Machine.new()
    join(api, plant, machine)

    ahead = renew(api, plant, machine, counter=5)
    body = machine.renew_body(plant.clock.now() - dt.timedelta(minutes=10))
    stale = api.client(machine.credential).post("/workloads/renew", json=body)

    assert "not the next one" in assert_refusal(ahead, 403)["message"]
    assert "clock" in assert_refusal(stale, 403)["message"]
    assert instance(plant, machine.instance_id) == ("active", 0, None)
    assert len(plant.audit("workload:credential:renewal_refused")) == 2
    assert machine.take(renew(api, plant, machine))["instance"]["renewals"] == 1


# --- a second copy ---------------------------------------------------------------------------------------------


def test_a_copied_credential_is_caught_and_locked_and_the_other_instances_go_on(api: Api, plant: Plant) -> None:
    add_workload(plant)
    original, sibling = Machine.new(), Machine.new()
    join(api, plant, original)
    join(api, plant, sibling)
    copy = dataclasses.replace(original)  # its state directory copied: key, credential and counter
    plant.clock.advance(dt.timedelta(minutes=31))
    original.take(renew(api, plant, original))

    caught = renew(api, plant, copy)

    body = assert_refusal(caught, 403)
    assert f"instance {original.instance_id} of 'historian' is now locked" in body["message"]
    status, renewals, reason = instance(plant, original.instance_id)
    assert (status, renewals) == ("locked", 1)
    assert "second copy" in reason
    assert api.client(original.credential).get("/me").status_code == 401  # the renewed one is revoked too
    assert plant.count("api_tokens", f"WHERE instance_id = '{original.instance_id}' AND revoked_at IS NULL") == 0
    [alert] = plant.audit("workload:instance:locked")
    assert (alert["outcome"], alert["subject"], alert["details"]["cause"]) == (
        "refused", original.instance_id, "stale_counter")
    assert (alert["details"]["presented_counter"], alert["details"]["renewals"]) == (1, 1)
    # The identity's other machine is not touched.
    assert instance(plant, sibling.instance_id) == ("active", 0, None)
    assert api.client(sibling.credential).get("/me").status_code == 200
    assert sibling.take(renew(api, plant, sibling))["instance"]["renewals"] == 1
    # And the locked one stays locked, whoever asks.
    again = renew(api, plant, original)
    assert "was locked" in assert_refusal(again, 403)["message"]


def test_a_signature_from_another_key_locks_the_instance(api: Api, plant: Plant) -> None:
    add_workload(plant, kind="ai_agent")
    machine, thief = Machine.new(), Machine.new()
    join(api, plant, machine)
    plant.clock.advance(dt.timedelta(minutes=31))

    caught = renew(api, plant, machine, signer=thief.key)

    assert_refusal(caught, 403)
    assert instance(plant, machine.instance_id)[0] == "locked"
    [alert] = plant.audit("workload:instance:locked")
    assert alert["details"]["cause"] == "wrong_key"
    blob = base64.b64decode(thief.public_key.split()[1])
    assert alert["details"]["presented_fingerprint"] == hashlib.sha256(blob).hexdigest()


def test_a_replaced_credential_presented_again_locks_even_with_the_right_counter(api: Api, plant: Plant) -> None:
    add_workload(plant)
    machine = Machine.new()
    join(api, plant, machine)
    first = machine.credential
    plant.clock.advance(dt.timedelta(minutes=31))
    machine.take(renew(api, plant, machine))

    caught = renew(api, plant, machine, credential=first)  # counter 2, the next one, but an old credential

    assert_refusal(caught, 403)
    assert plant.audit("workload:instance:locked")[0]["details"]["cause"] == "replaced_credential"


def test_locking_ends_the_grants_issued_for_that_key_only(api: Api, plant: Plant, admin_cli: AdminCli) -> None:
    add_workload(plant)
    one, two = Machine.new(), Machine.new()
    grants = {}
    for machine in (one, two):
        join(api, plant, machine)
        request = api.client(machine.credential).post("/requests", json={
            "asset": "hmi-01", "duration": "1h", "reason": "export", "ssh": True, "public_key": machine.public_key})
        grants[machine.instance_id] = api.approve("sup-a1", request.json()["id"]).json()["grant"]["id"]

    code, out, err = admin_cli("admin", "identity", "lock-instance", one.instance_id, "--reason", "machine sold")

    assert code == 0, err
    assert f"Locked instance {one.instance_id} of historian" in out
    assert plant.row("SELECT revoked_at IS NOT NULL FROM grants WHERE id = :g", g=grants[one.instance_id]) == (True,)
    assert plant.row("SELECT revoked_at IS NOT NULL FROM grants WHERE id = :g", g=grants[two.instance_id]) == (False,)
    assert plant.column("SELECT grant_id FROM grant_changes WHERE status = 'revoked'") == [grants[one.instance_id]]
    [locked] = plant.audit("workload:instance:locked")
    assert (locked["outcome"], locked["details"]["cause"], locked["details"]["reason"]) == (
        "success", "by_hand", "machine sold")
    assert locked["details"]["grants_revoked"] == [grants[one.instance_id]]
    assert api.client(two.credential).get("/me").status_code == 200

    code, _, err = admin_cli("admin", "identity", "lock-instance", one.instance_id, "--reason", "again")
    assert (code, "already locked" in err) == (1, True)
    code, out, _ = admin_cli("admin", "identity", "instances", "historian", "--json")
    assert {(r["id"], r["status"]) for r in json.loads(out)} == {(one.instance_id, "locked"),
                                                                 (two.instance_id, "active")}
    code, out, _ = admin_cli("admin", "identity", "instances", "historian")
    assert "machine sold" in out


# --- the gatepass commands -------------------------------------------------------------------------------------


def client_context(home: Path, broker: BrokerServer, plant: Plant) -> Context:
    return Context(environ={"GATEPASS_HOME": str(home), "GATEPASS_SERVER": broker.url}, state=ClientState(home),
                   out=io.StringIO(), err=io.StringIO(), clock=plant.clock.now, sleep=lambda _s: None)


def gatepass(context: Context, *argv: str) -> tuple[int, str, str]:
    assert isinstance(context.out, io.StringIO)
    assert isinstance(context.err, io.StringIO)
    context.out.seek(0), context.out.truncate(), context.err.seek(0), context.err.truncate()
    code = main(list(argv), context=context)
    return code, context.out.getvalue(), context.err.getvalue()


def test_the_client_signs_the_same_messages_as_the_broker_checks() -> None:
    assert client_join.join_message(token_hash="ab" * 32, public_key="ssh-ed25519 AAAA") == \
        workloads.join_message(token_hash="ab" * 32, public_key="ssh-ed25519 AAAA")
    assert client_join.renewal_message(instance_id="wki-1", counter=7, timestamp=1_800_000_000, token_hash="cd") == \
        workloads.renewal_message(instance_id="wki-1", counter=7, timestamp=1_800_000_000, token_hash="cd")


def test_gatepass_join_renews_at_half_life_and_a_copied_state_directory_gets_locked(
        api: Api, broker: BrokerServer, plant: Plant, tmp_path: Path) -> None:
    add_workload(plant)
    home = tmp_path / "historian"
    machine = client_context(home, broker, plant)

    code, out, err = gatepass(machine, "join", "--server", broker.url, "--token", join_token(plant), "--json")

    assert code == 0, err
    joined = json.loads(out)
    assert "token" not in out
    assert stat.S_IMODE((home / "id_ed25519").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "session.json").stat().st_mode) == 0o600
    public = (home / "id_ed25519.pub").read_text().split()
    assert plant.row("SELECT public_key FROM workload_instances") == (f"{public[0]} {public[1]}",)
    private = (home / "id_ed25519").read_text()
    assert "OPENSSH PRIVATE KEY" in private
    code, out, _ = gatepass(machine, "whoami")
    assert (code, out.startswith("historian (service")) == (0, True)

    # Before half-life nothing is renewed; past it, any command renews first.
    plant.clock.advance(dt.timedelta(minutes=29))
    gatepass(machine, "whoami")
    assert plant.audit("workload:credential:renewed") == []
    plant.clock.advance(dt.timedelta(minutes=2))
    code, _, err = gatepass(machine, "requests")
    assert code == 0, err
    assert [e["subject"] for e in plant.audit("workload:credential:renewed")] == [joined["instance"]["id"]]
    saved = json.loads((home / "session.json").read_text())
    assert saved["workload"]["renewals"] == 1

    # Its state directory copied to another machine: both renew, the second one is caught.
    copied = tmp_path / "copy"
    shutil.copytree(home, copied)
    stolen = client_context(copied, broker, plant)
    plant.clock.advance(dt.timedelta(minutes=1))
    code, out, err = gatepass(machine, "renew")
    assert code == 0, err
    assert "Renewed on" in out
    code, _, err = gatepass(stolen, "renew")
    assert code == 1
    assert "is now locked" in err
    assert instance(plant, joined["instance"]["id"])[0] == "locked"
    code, _, err = gatepass(machine, "whoami")
    assert code == 1


def test_gatepass_join_refused_leaves_no_key_behind(broker: BrokerServer, plant: Plant, tmp_path: Path) -> None:
    home = tmp_path / "machine"
    machine = client_context(home, broker, plant)

    code, _, err = gatepass(machine, "join", "--token", "gpj_wrong")

    assert code == 1
    assert "never issued this join token" in err
    assert not (home / "id_ed25519").exists()
    assert not (home / "session.json").exists()


def test_gatepass_join_does_not_take_over_a_state_directory_in_use(
        api: Api, broker: BrokerServer, plant: Plant, tmp_path: Path) -> None:
    add_workload(plant)
    home = tmp_path / "machine"
    machine = client_context(home, broker, plant)
    assert gatepass(machine, "join", "--token", join_token(plant))[0] == 0

    code, _, err = gatepass(machine, "join", "--token", join_token(plant))

    assert code == 2
    assert "already holds the credential of historian" in err
    people = client_context(tmp_path / "person", broker, plant)
    people.state.ensure_key()
    code, _, err = gatepass(people, "join", "--token", join_token(plant))
    assert (code, "already holds an SSH key" in err) == (2, True)


def test_admin_join_token_shows_the_token_once_with_the_command_to_run(plant: Plant, admin_cli: AdminCli) -> None:
    add_workload(plant)
    code, out, _ = admin_cli("admin", "identity", "join-token", "historian")
    assert code == 0
    token = re.search(r"gpj_[A-Za-z0-9_-]{40,}", out)
    assert token is not None
    assert f"--token {token.group()}" in out
    assert "shown once" in out


def test_a_workload_credential_in_the_session_cookie_opens_no_page_and_is_recorded(
        api: Api, plant: Plant, broker: BrokerServer) -> None:
    """The pages are for people: a joined service's credential, put in the web session cookie by hand, gets a
    403 page (not the vendor page), and the refusal is in the trail."""
    add_workload(plant)
    machine = Machine.new()
    join(api, plant, machine)
    with httpx.Client(base_url=broker.url, follow_redirects=False, timeout=10,
                      cookies={SESSION_COOKIE: machine.credential}) as client:
        answer = client.get("/vendor")
    assert answer.status_code == 403
    assert "a service account or AI agent uses the API" in answer.text
    refused = [e for e in plant.audit("web:page:refused") if e["actor"] == "historian"]
    assert refused[-1]["subject"] == "/vendor"

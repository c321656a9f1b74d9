"""The client commands end to end through ``main``, against the real broker on a loopback port.

What the CLI sent is checked where the broker keeps it: the database, the audit trail, or the API's own answer.
"""

from __future__ import annotations

import datetime as dt
import http.server
import io
import json
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.audit.trail import Action
from cli import client_access, client_audit
from cli.context import Context
from cli.main import main
from cli.state import Session
from tests.fixtures.broker import T0, Api, BrokerServer, Plant, new_public_key

from .conftest import OFFLINE_SERVER

SignIn = Callable[[str], Session]


def out(ctx: Context) -> str:
    assert isinstance(ctx.out, io.StringIO)
    return ctx.out.getvalue()


def err(ctx: Context) -> str:
    assert isinstance(ctx.err, io.StringIO)
    return ctx.err.getvalue()


def as_seen_by(api: Api, username: str, path: str) -> Any:
    """The broker's own answer to ``GET path`` for ``username``."""
    response = api.as_user(username).get(path)
    assert response.status_code == 200, response.text
    return response.json()


def approve(api: Api, approver: str, request_id: str, **body: Any) -> dict[str, Any]:
    response = api.approve(approver, request_id, **body)
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- login and logout ----------------------------------------------------------------------------------


def test_login_saves_a_private_session_and_never_prints_the_token(
    ctx: Context, api: Api, plant: Plant, broker: BrokerServer, tmp_path: Path
) -> None:
    creds = plant.creds("vendor1")
    password_file = tmp_path / "pw"
    password_file.write_text(creds.password + "\n")  # only the first line is the password
    code = api.totp("vendor1")  # a step vendor1 has not used yet (moves the clock 30 s on)
    before = plant.last_seq()
    assert main(["login", "--server", broker.url + "/", "--user", "vendor1", "--password-file", str(password_file),
                 "--totp", code], context=ctx) == 0
    expires_at = plant.clock.now() + plant.settings.token_ttl
    assert out(ctx) == f"Logged in to {broker.url} as vendor1 (vendor) until 2026-11-27 09:00 UTC.\n"
    saved = json.loads(ctx.state.session_path.read_text())
    token = saved.pop("token")
    assert saved == {"server": broker.url, "username": "vendor1", "expires_at": expires_at.isoformat()}
    assert stat.S_IMODE(ctx.state.session_path.stat().st_mode) == 0o600
    assert token not in out(ctx) + err(ctx)
    # The broker signed vendor1 in once, and the saved token is the one it issued.
    assert [(e["action"], e["actor"]) for e in plant.audit(after_seq=before)] == [(Action.LOGIN_SUCCEEDED, "vendor1")]
    assert api.client(token).get("/me").json()["username"] == "vendor1"


def test_failed_login_shows_the_brokers_reason(ctx: Context, api: Api, plant: Plant, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("not-the-password")
    before = plant.last_seq()
    code = main(["login", "--user", "vendor1", "--password-file", str(tmp_path / "pw"),
                 "--totp", api.totp("vendor1")], context=ctx)
    assert code == 1
    assert err(ctx).endswith("gatepass: sign-in refused: wrong username, password or one-time code\n")
    assert "Add --enrolment-code CODE" in err(ctx)  # the one thing to check first (no enrolment code was given)
    assert not ctx.state.session_path.exists()
    [failure] = plant.audit(after_seq=before)
    assert (failure["action"], failure["actor"], failure["details"]["reason"]) == (
        Action.LOGIN_FAILED, "vendor1", "wrong password")


def test_logout_revokes_and_forgets(ctx: Context, api: Api, plant: Plant, broker: BrokerServer,
                                    logged_in: Session) -> None:
    before = plant.last_seq()
    assert main(["logout"], context=ctx) == 0
    assert not ctx.state.session_path.exists()
    assert out(ctx) == f"Logged out of {broker.url}.\n"
    assert [(e["action"], e["actor"]) for e in plant.audit(after_seq=before)] == [(Action.LOGOUT, "vendor1")]
    assert api.client(logged_in.token).get("/me").status_code == 401


def test_logout_of_a_token_revoked_elsewhere_still_forgets_it(
    ctx: Context, api: Api, broker: BrokerServer, logged_in: Session
) -> None:
    assert api.client(logged_in.token).post("/auth/logout").status_code == 204
    assert main(["logout"], context=ctx) == 0
    assert not ctx.state.session_path.exists()
    assert out(ctx) == f"Logged out of {broker.url}.\n"


def test_whoami_shows_the_identity_the_broker_knows(ctx: Context, broker: BrokerServer, signed_in: SignIn) -> None:
    signed_in("sup-a1")
    assert main(["whoami"], context=ctx) == 0
    assert out(ctx) == (f"sup-a1 (human; roles supervisor; organisation acme-automation; sites plant-a) on "
                        f"{broker.url}, session until 2026-11-27 09:00 UTC\n")


# --- requests --------------------------------------------------------------------------------------------


def test_request_sends_the_public_key_and_defaults_to_ssh(
    ctx: Context, api: Api, plant: Plant, logged_in: Session
) -> None:
    assert main(["request", "hmi-01", "--for", "2h", "--reason", "replace HMI firmware"], context=ctx) == 0
    [request_id] = plant.column("SELECT id FROM access_requests")
    assert out(ctx) == f"Request {request_id} for hmi-01 (ssh) for 2h: pending approval by plant-a\n"
    request = as_seen_by(api, "vendor1", f"/requests/{request_id}")
    assert (request["requester"], request["asset"], request["ssh"], request["ports"], request["read_only"],
            request["duration_seconds"], request["start"], request["reason"]) == (
        "vendor1", "hmi-01", True, [], False, 7200, None, "replace HMI firmware")
    public_key = plant.row("SELECT public_key FROM access_requests WHERE id = :id", id=request_id)[0]
    assert public_key.split()[:2] == ctx.state.ensure_key().split()[:2]


def test_request_with_ports_and_start(ctx: Context, api: Api, plant: Plant, logged_in: Session) -> None:
    argv = ["request", "hmi-01", "--for", "90m", "--reason", "r", "--port", "502", "4840", "--port", "502",
            "--start", "2026-11-28T08:00:00", "--json"]
    assert main(argv, context=ctx) == 0
    printed = json.loads(out(ctx))
    assert printed == as_seen_by(api, "vendor1", f"/requests/{printed['id']}")
    assert (printed["ssh"], printed["ports"], printed["duration_seconds"]) == (False, [502, 4840], 5400)
    assert printed["start"] == "2026-11-28T08:00:00+00:00"
    [created] = plant.audit(Action.REQUEST_CREATED)
    assert created["details"] == {"asset": "hmi-01", "ssh": False, "ports": [502, 4840], "read_only": False,
                                  "duration": "90m", "reason": "r"}


def test_request_read_only_ports(ctx: Context, api: Api, plant: Plant, logged_in: Session) -> None:
    assert main(["request", "plc-01", "--for", "1h", "--reason", "read the batch counters", "--port", "502",
                 "--read-only"], context=ctx) == 0
    [request_id] = plant.column("SELECT id FROM access_requests")
    assert out(ctx) == f"Request {request_id} for plc-01 (tcp/502) for 1h: pending approval by plant-a\n"
    request = as_seen_by(api, "vendor1", f"/requests/{request_id}")
    assert (request["ssh"], request["ports"], request["read_only"]) == (False, [502], True)
    grant = approve(api, "sup-a1", request_id)["grant"]
    assert as_seen_by(api, "vendor1", f"/grants/{grant['id']}")["read_only"] is True


def test_request_wait_polls_until_approved(ctx: Context, api: Api, plant: Plant, logged_in: Session) -> None:
    pauses: list[float] = []

    def sleep(seconds: float) -> None:  # the supervisor approves while the CLI waits, before its third poll
        pauses.append(seconds)
        if len(pauses) == 3:
            [request_id] = plant.column("SELECT id FROM access_requests")
            approve(api, "sup-a1", request_id, comment="ok")

    ctx.sleep = sleep
    code = main(["request", "hmi-01", "--for", "2h", "--reason", "r", "--wait", "--json"], context=ctx)
    assert code == 0
    printed = json.loads(out(ctx))  # stdout is only the JSON document
    assert (printed["status"], [a["approver"] for a in printed["approvals"]]) == ("approved", ["sup-a1"])
    assert printed == as_seen_by(api, "vendor1", f"/requests/{printed['id']}")
    assert f"Waiting for approval of {printed['id']} (hmi-01, ssh) by plant-a" in err(ctx)
    assert pauses == [client_access.POLL_SECONDS] * 3  # two polls saw it pending, the third approved


def test_request_wait_exits_1_when_denied(ctx: Context, api: Api, plant: Plant, logged_in: Session) -> None:
    def sleep(_seconds: float) -> None:
        [request_id] = plant.column("SELECT id FROM access_requests")
        answer = api.as_user("sup-a1").post(f"/requests/{request_id}/deny", json={"comment": "not during the batch"})
        assert answer.status_code == 200, answer.text

    ctx.sleep = sleep
    code = main(["request", "hmi-01", "--for", "2h", "--reason", "r", "--wait"], context=ctx)
    assert code == 1
    [request_id] = plant.column("SELECT id FROM access_requests")
    assert f"Waiting for approval of {request_id}" in out(ctx)
    assert err(ctx).endswith(
        f"gatepass: request {request_id} for hmi-01 was denied by sup-a1: not during the batch\n"
    )


def test_usage_errors_exit_2(offline_ctx: Context, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["deny", "req-1"], ["request", "hmi-01", "--for", "2 hours", "--reason", "r"],
                 ["request", "hmi-01", "--for", "1h", "--reason", "r", "--port", "70000"]):
        with pytest.raises(SystemExit) as exited:
            main(argv, context=offline_ctx)
        assert exited.value.code == 2
    assert "gatepass: argument --port: '70000' is not a TCP port" in capsys.readouterr().err


def test_requests_lists_as_json_or_table(ctx: Context, api: Api, logged_in: Session) -> None:
    pending = api.create_request("vendor1", asset="hmi-01", duration="2h")
    approved = api.create_request("vendor1", asset="hmi-01", duration="2h")
    grant = approve(api, "sup-a1", approved["id"])["grant"]
    assert main(["requests", "--pending", "--json"], context=ctx) == 0
    assert json.loads(out(ctx)) == [as_seen_by(api, "vendor1", f"/requests/{pending['id']}")]
    ctx.out = io.StringIO()
    assert main(["requests"], context=ctx) == 0
    header, *rows = out(ctx).splitlines()
    assert header.split() == ["ID", "STATUS", "ASSET", "SITE", "REQUESTER", "ACCESS", "WINDOW", "REASON"]
    by_id = {row.split()[0]: row for row in rows}
    assert set(by_id) == {pending["id"], approved["id"]}
    assert by_id[pending["id"]].split()[1:6] == ["pending", "hmi-01", "plant-a", "vendor1", "ssh"]
    assert "2h from approval" in by_id[pending["id"]]
    assert by_id[approved["id"]].split()[1:3] == ["approved", "(active)"]
    assert grant["status"] == "active"
    assert "2026-11-27 08:00 UTC to 2026-11-27 10:00 UTC" in by_id[approved["id"]]


def test_approve_and_deny(ctx: Context, api: Api, signed_in: SignIn) -> None:
    first, second, third = (api.create_request("vendor1")["id"] for _ in range(3))
    signed_in("sup-a1")
    assert main(["approve", first, "--comment", "ok"], context=ctx) == 0
    assert main(["approve", second, "--shorten-to", "60m"], context=ctx) == 0
    assert main(["deny", third, "--comment", "no"], context=ctx) == 0

    approved = as_seen_by(api, "vendor1", f"/requests/{first}")
    assert [(a["approver"], a["comment"]) for a in approved["approvals"]] == [("sup-a1", "ok")]
    shortened = as_seen_by(api, "vendor1", f"/requests/{second}")
    assert [(a["approver"], a["comment"]) for a in shortened["approvals"]] == [("sup-a1", None)]
    window = shortened["grant"]
    assert dt.datetime.fromisoformat(window["ends_at"]) - dt.datetime.fromisoformat(window["starts_at"]) == \
        dt.timedelta(hours=1)
    denied = as_seen_by(api, "vendor1", f"/requests/{third}")
    assert (denied["status"], denied["denial"]["approver"], denied["denial"]["comment"]) == ("denied", "sup-a1", "no")

    lines = out(ctx).splitlines()
    assert lines == [
        f"Approved {first} (vendor1 on hmi-01): approved; grant {approved['grant']['id']} (active) "
        "from 2026-11-27 08:00 UTC until 2026-11-27 10:00 UTC.",
        f"Approved {second} (vendor1 on hmi-01): approved; grant {window['id']} (active) "
        "from 2026-11-27 08:00 UTC until 2026-11-27 09:00 UTC.",
        f"Denied {third} (vendor1 on hmi-01).",
    ]


def test_approve_records_one_of_two_approvals(ctx: Context, api: Api, signed_in: SignIn) -> None:
    request_id = api.create_request("vendor1", asset="rtu-01")["id"]  # high criticality: two approvers
    signed_in("sup-a1")
    assert main(["approve", request_id], context=ctx) == 0
    assert out(ctx) == (f"Recorded your approval of {request_id} (vendor1 on rtu-01): "
                        "pending approval by plant-a (1 of 2 approvals).\n")
    signed_in("sup-a2")
    assert main(["approve", request_id], context=ctx) == 0
    assert out(ctx).splitlines()[1].startswith(f"Approved {request_id} (vendor1 on rtu-01): approved; grant grt-")
    request = as_seen_by(api, "vendor1", f"/requests/{request_id}")
    assert [a["approver"] for a in request["approvals"]] == ["sup-a1", "sup-a2"]


def test_cancel_withdraws_a_pending_request(ctx: Context, api: Api, logged_in: Session) -> None:
    request_id = api.create_request("vendor1")["id"]
    assert main(["cancel", request_id], context=ctx) == 0
    assert out(ctx) == f"Cancelled {request_id} (hmi-01).\n"
    assert as_seen_by(api, "vendor1", f"/requests/{request_id}")["status"] == "cancelled"


def test_revoke_ends_a_grant(ctx: Context, api: Api, plant: Plant, signed_in: SignIn) -> None:
    grant = api.grant("vendor1", "sup-a1")
    signed_in("sec1")
    assert main(["revoke", grant["id"], "--reason", "vendor laptop lost"], context=ctx) == 0
    assert out(ctx) == f"Revoked grant {grant['id']} (vendor1 on hmi-01): its live sessions are being ended.\n"
    [revoked] = plant.audit(Action.GRANT_REVOKED)
    assert (revoked["actor"], revoked["subject"]) == ("sec1", grant["id"])
    assert as_seen_by(api, "vendor1", f"/grants/{grant['id']}")["revoke_reason"] == "vendor laptop lost"


# --- refusals --------------------------------------------------------------------------------------------


def _other_site(api: Api, signed_in: SignIn) -> tuple[str, str]:
    request_id = api.create_request("vendor1", asset="hmi-b1")["id"]
    signed_in("sup-a1")
    return request_id, "only approvers of site plant-b can approve requests for hmi-b1"


def _already_decided(api: Api, signed_in: SignIn) -> tuple[str, str]:
    request_id = api.create_request("vendor1")["id"]
    approve(api, "sup-a1", request_id)
    signed_in("sup-a2")
    return request_id, f"request {request_id} is already approved; only pending requests can be decided"


def _revoked_token(api: Api, signed_in: SignIn) -> tuple[str, str]:
    request_id = api.create_request("vendor1")["id"]
    session = signed_in("sup-a1")
    assert api.client(session.token).post("/auth/logout").status_code == 204  # signed out from another machine
    return request_id, (
        f"your session on {session.server} has expired or was revoked (not signed in: the token is unknown or "
        f"was signed out; sign in again): run `gatepass login --server {session.server} --user sup-a1`"
    )


def _unknown_request(_api: Api, signed_in: SignIn) -> tuple[str, str]:
    signed_in("sup-a1")
    return "req-00000000", "there is no request req-00000000"


@pytest.mark.parametrize("case", [_other_site, _already_decided, _revoked_token, _unknown_request],
                         ids=["403-forbidden", "409-conflict", "401-revoked", "404-not-found"])
def test_api_refusals_are_rendered_as_one_line(
    ctx: Context, api: Api, signed_in: SignIn, case: Callable[[Api, SignIn], tuple[str, str]]
) -> None:
    request_id, message = case(api, signed_in)
    before = as_seen_by(api, "vendor1", "/requests")
    assert main(["approve", request_id], context=ctx) == 1
    assert err(ctx) == f"gatepass: {message}\n"
    assert out(ctx) == ""
    assert as_seen_by(api, "vendor1", "/requests") == before  # nothing was decided


def test_input_the_broker_refuses_is_rendered_with_its_reason(ctx: Context, api: Api, signed_in: SignIn) -> None:
    request_id = api.create_request("vendor1")["id"]
    signed_in("sup-a1")
    assert main(["approve", request_id, "--comment", "x" * 1001], context=ctx) == 1
    assert err(ctx) == "gatepass: the request is not valid: comment: String should have at most 1000 characters\n"
    assert as_seen_by(api, "vendor1", f"/requests/{request_id}")["status"] == "pending"


@pytest.fixture
def not_a_broker() -> Iterator[str]:
    """A stock web server that is not the broker (what a wrong URL or a proxy's error page looks like)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="not-a-broker",
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_an_answer_that_is_not_the_brokers_is_rendered_with_its_status(
    offline_ctx: Context, not_a_broker: str
) -> None:
    offline_ctx.state.save_session(Session(server=not_a_broker, username="sup-a1", token="gpt_x",
                                           expires_at=T0 + dt.timedelta(hours=1)))
    assert main(["approve", "req-1"], context=offline_ctx) == 1
    assert err(offline_ctx) == (
        f"gatepass: the broker at {not_a_broker} answered HTTP 501 (Unsupported method ('POST'))\n"
    )


def test_unreachable_broker(offline_ctx: Context) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = f"http://127.0.0.1:{port}"  # nothing listens here once the probe is closed
    offline_ctx.state.save_session(Session(server=server, username="v", token="t",
                                           expires_at=T0 + dt.timedelta(hours=1)))
    assert main(["requests"], context=offline_ctx) == 1
    assert err(offline_ctx).startswith(f"gatepass: cannot reach the broker at {server}: ")


def test_commands_without_a_session_say_how_to_log_in(offline_ctx: Context) -> None:
    assert main(["ssh", "hmi-01"], context=offline_ctx) == 1
    assert err(offline_ctx) == (f"gatepass: you are not logged in to {OFFLINE_SERVER}: "
                                f"run `gatepass login --server {OFFLINE_SERVER} --user NAME`\n")


def test_an_expired_session_is_not_sent(ctx: Context, api: Api, plant: Plant, broker: BrokerServer,
                                        logged_in: Session) -> None:
    plant.clock.advance(plant.settings.token_ttl)  # the client and the broker share this clock
    assert api.client(logged_in.token).get("/me").status_code == 401  # the broker agrees it has expired
    assert main(["requests"], context=ctx) == 1
    assert err(ctx) == (f"gatepass: your session on {broker.url} expired at 2026-11-27 09:00 UTC: "
                        f"run `gatepass login --server {broker.url} --user vendor1`\n")


# --- ssh, ssh-config -----------------------------------------------------------------------------------


@pytest.fixture
def gateway_host_key(api: Api) -> str:
    """A gateway registered with the broker at 127.0.0.1:2222 (nothing listens: these tests stop at ssh's argv)."""
    host_key = new_public_key()
    answer = api.gateway().post("/gateway/register", json={"ssh_host": "127.0.0.1", "ssh_port": 2222,
                                                            "host_key": host_key})
    assert answer.status_code == 200, answer.text
    return host_key


def grant_for_this_machine(ctx: Context, api: Api, *, asset: str = "hmi-01", requester: str = "vendor1",
                           approver: str = "sup-a1") -> dict[str, Any]:
    """A grant whose certificate the broker issued for the CLI's own key, as the grantee sees it."""
    return api.grant(requester, approver, asset=asset, public_key=ctx.state.ensure_key())


@pytest.fixture
def ssh_recorder(tmp_path: Path) -> Path:
    """Stands in for the ssh binary only: writes its argv to ``tmp_path/argv`` and exits 7."""
    recorder = tmp_path / "fake-ssh"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\nexit 7\n')
    recorder.chmod(0o755)
    return recorder


def test_ssh_writes_certificate_and_known_hosts_then_runs_ssh(
    ctx: Context, api: Api, logged_in: Session, gateway_host_key: str, ssh_recorder: Path, tmp_path: Path
) -> None:
    grant = grant_for_this_machine(ctx, api)
    grant_for_this_machine(ctx, api, asset="hmi-b1", approver="sup-b")  # another asset: not used, not written
    ctx.environ = {**ctx.environ, "GATEPASS_SSH_BIN": str(ssh_recorder)}
    assert main(["ssh", "hmi-01", "--", "cat", "/etc/hostname"], context=ctx) == 7  # ssh's exit code
    home = ctx.state.home
    assert (tmp_path / "argv").read_text().splitlines() == [
        "-p", "2222", "-i", str(home / "id_ed25519"),
        "-o", f"CertificateFile={home / 'certs' / 'hmi-01-cert.pub'}", "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
        "-o", "GlobalKnownHostsFile=/dev/null", "hmi-01@127.0.0.1", "cat", "/etc/hostname",
    ]
    assert grant["certificate"].startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert (home / "certs" / "hmi-01-cert.pub").read_text() == grant["certificate"] + "\n"
    assert sorted(p.name for p in (home / "certs").iterdir()) == ["hmi-01-cert.pub"]
    assert grant["gateway"]["host_key"].split()[:2] == gateway_host_key.split()[:2]
    assert (home / "known_hosts").read_text() == f"[127.0.0.1]:2222 {grant['gateway']['host_key']}\n"


def test_ssh_refuses_a_certificate_for_another_key(
    ctx: Context, api: Api, logged_in: Session, gateway_host_key: str
) -> None:
    grant_for_this_machine(ctx, api)
    ctx.state.key_path.unlink()
    ctx.state.public_key_path.unlink()
    ctx.state.ensure_key()  # a new key: the certificate no longer fits
    assert main(["ssh", "hmi-01"], context=ctx) == 1
    assert "was issued for another key" in err(ctx)


def test_ssh_without_a_grant_says_how_to_request(
    ctx: Context, api: Api, logged_in: Session, gateway_host_key: str
) -> None:
    grant_for_this_machine(ctx, api, asset="hmi-b1", approver="sup-b")  # a grant, but for another asset
    api.create_request("vendor1", asset="hmi-01")  # and a request nobody approved yet
    assert main(["ssh", "hmi-01"], context=ctx) == 1
    assert err(ctx) == ("gatepass: no active grant for hmi-01: request access with "
                        "`gatepass request hmi-01 --for 1h --reason …`\n")


def test_ssh_config_prints_a_block_per_own_grant(
    ctx: Context, api: Api, plant: Plant, logged_in: Session, gateway_host_key: str
) -> None:
    grant_for_this_machine(ctx, api)
    api.grant("vendor2", "sup-b", asset="hmi-b1")
    plant.add_role("vendor1", "supervisor", "plant-b")  # so vendor1 also sees vendor2's grant on hmi-b1
    assert {g["identity"] for g in as_seen_by(api, "vendor1", "/grants?usable=true")} == {"vendor1", "vendor2"}
    assert main(["ssh-config"], context=ctx) == 0
    text = out(ctx)
    assert text.count("\nHost ") == 1
    assert "Host hmi-01.gatepass\n" in text
    assert f"    CertificateFile {ctx.state.home / 'certs' / 'hmi-01-cert.pub'}\n" in text
    assert "    HostName 127.0.0.1\n    Port 2222\n" in text
    assert sorted(p.name for p in (ctx.state.home / "certs").iterdir()) == ["hmi-01-cert.pub"]


def test_ssh_config_write_that_cannot_write_its_file_says_so_without_a_traceback(
    ctx: Context, api: Api, logged_in: Session, gateway_host_key: str, tmp_path: Path
) -> None:
    grant_for_this_machine(ctx, api)
    ctx.environ = {**ctx.environ, "HOME": str(tmp_path / "eng")}
    (ctx.state.home / "ssh_config").mkdir(parents=True)  # where the config goes: a folder someone made

    assert main(["ssh-config", "--write"], context=ctx) == 1

    assert err(ctx).startswith(f"gatepass: cannot write {ctx.state.home / 'ssh_config'}: "), err(ctx)
    assert out(ctx) == ""
    assert not (tmp_path / "eng" / ".ssh" / "config").exists()  # not included: there is nothing to include


def test_ssh_config_write_with_a_relative_home_edits_no_config_in_the_current_folder(
    ctx: Context, api: Api, logged_in: Session, gateway_host_key: str, tmp_path: Path
) -> None:
    grant_for_this_machine(ctx, api)
    ctx.environ = {**ctx.environ, "HOME": "gatepass-relative-home"}

    assert main(["ssh-config", "--write"], context=ctx) == 1

    assert err(ctx).startswith("gatepass: HOME is 'gatepass-relative-home', not an absolute path, so ~/.ssh/config "
                               f"cannot be found: wrote {ctx.state.home / 'ssh_config'}; add `Include "), err(ctx)
    assert not Path("gatepass-relative-home").exists()  # nothing made under the folder the command ran in
    assert (ctx.state.home / "ssh_config").read_text().count("Host hmi-01.gatepass") == 1


def test_an_approval_waited_for_updates_the_ssh_config_written_before_and_nothing_else(
    ctx: Context, api: Api, plant: Plant, logged_in: Session, gateway_host_key: str, tmp_path: Path
) -> None:
    ctx.environ = {**ctx.environ, "HOME": str(tmp_path / "eng")}
    assert main(["ssh-config", "--write"], context=ctx) == 0  # no grant yet: an empty config, included
    user_config = (tmp_path / "eng" / ".ssh" / "config").read_bytes()
    assert "Host " not in (ctx.state.home / "ssh_config").read_text()

    def sleep(_seconds: float) -> None:
        [request_id] = plant.column("SELECT id FROM access_requests")
        approve(api, "sup-a1", request_id, comment="ok")

    ctx.sleep = sleep
    ctx.out, ctx.err = io.StringIO(), io.StringIO()
    assert main(["request", "hmi-01", "--for", "2h", "--reason", "r", "--wait"], context=ctx) == 0

    written = (ctx.state.home / "ssh_config").read_text()
    assert "Host hmi-01.gatepass\n" in written
    assert f"    CertificateFile {ctx.state.home / 'certs' / 'hmi-01-cert.pub'}\n" in written
    assert f"Updated {ctx.state.home / 'ssh_config'}: `ssh hmi-01.gatepass` works now" in err(ctx)
    assert (tmp_path / "eng" / ".ssh" / "config").read_bytes() == user_config  # ~/.ssh/config not touched


def test_an_approval_waited_for_writes_no_ssh_config_where_none_was_asked_for(
    ctx: Context, api: Api, plant: Plant, logged_in: Session, gateway_host_key: str
) -> None:
    def sleep(_seconds: float) -> None:
        [request_id] = plant.column("SELECT id FROM access_requests")
        approve(api, "sup-a1", request_id, comment="ok")

    ctx.sleep = sleep
    assert main(["request", "hmi-01", "--for", "2h", "--reason", "r", "--wait"], context=ctx) == 0
    assert not ctx.state.ssh_config_path.exists()
    assert "ssh_config" not in err(ctx)


def test_key_export_overwrites_an_earlier_export_but_never_another_file(
    ctx: Context, api: Api, logged_in: Session, gateway_host_key: str, tmp_path: Path
) -> None:
    grant_for_this_machine(ctx, api)
    personal = tmp_path / "dot-ssh" / "id_ed25519"  # the engineer's own key, named by a slip of the keyboard
    personal.parent.mkdir()
    personal.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nthe engineer's own key\n")

    assert main(["key", "export", "--format", "ppk", "--asset", "hmi-01", "--out", str(personal)], context=ctx) == 2

    assert err(ctx) == (f"gatepass: {personal} exists and is not a PuTTY key file: key export replaces only a "
                        "file it wrote before; give another --out, or move that file away first\n")
    assert personal.read_text() == "-----BEGIN OPENSSH PRIVATE KEY-----\nthe engineer's own key\n"
    # An earlier export is replaced (the next approval's certificate), mode 0600.
    earlier = tmp_path / "hmi-01.ppk"
    assert main(["key", "export", "--format", "ppk", "--asset", "hmi-01", "--out", str(earlier)], context=ctx) == 0
    assert main(["key", "export", "--format", "ppk", "--asset", "hmi-01", "--out", str(earlier)], context=ctx) == 0
    assert earlier.read_text().startswith("PuTTY-User-Key-File-3: ")
    assert earlier.stat().st_mode & 0o777 == 0o600


# --- audit export --------------------------------------------------------------------------------------


def test_audit_export_pages_on_the_sequence_number(
    ctx: Context, api: Api, plant: Plant, signed_in: SignIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_audit, "PAGE_SIZE", 2)
    plant.clock.advance(dt.timedelta(minutes=1))
    first = plant.last_seq() + 1
    requests = [api.create_request("vendor1")["id"] for _ in range(3)]  # three events at 08:01
    plant.clock.advance(dt.timedelta(minutes=1))
    denied = api.as_user("sup-a1").post(f"/requests/{requests[0]}/deny", json={"comment": "no"})  # one at 08:02
    assert denied.status_code == 200, denied.text
    signed_in("sec1")
    assert main(["audit", "export", "--format", "jsonl", "--since", "2026-11-27T08:01:00"], context=ctx) == 0
    exported = [json.loads(line) for line in out(ctx).splitlines()]
    assert [e["seq"] for e in exported] == [first, first + 1, first + 2, first + 3]  # all since 08:01, once each
    assert exported == plant.audit(after_seq=first - 1)
    assert [e["action"] for e in exported] == [Action.REQUEST_CREATED] * 3 + [Action.REQUEST_DENIED]


def test_audit_export_is_for_security_reviewers(ctx: Context, logged_in: Session) -> None:
    assert main(["audit", "export"], context=ctx) == 1
    assert err(ctx) == "gatepass: only security reviewers and admins can read the audit trail\n"
    assert out(ctx) == ""

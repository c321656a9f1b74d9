"""The client commands end to end through ``main``, against a tiny in-process broker (httpx.WSGITransport)."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cli import client_audit
from cli.context import Context
from cli.main import main
from cli.state import Session

from .conftest import NOW, SERVER, TinyBroker

REQUEST = {
    "id": "req-1a2b3c4d", "status": "pending", "asset": "hmi-01", "site": "plant-a", "requester": "vendor1",
    "ssh": True, "ports": [], "duration_seconds": 7200, "start": None, "reason": "replace HMI firmware",
    "created_at": "2026-11-27T10:00:00+00:00", "decide_by": "2026-11-27T11:00:00+00:00",
    "approvals_required": 1, "approvals": [], "denial": None, "grant": None,
}
APPROVED = REQUEST | {
    "status": "approved",
    "approvals": [{"approver": "sup1", "comment": "ok", "decided_at": "2026-11-27T10:01:00+00:00"}],
    "grant": {"id": "grt-9", "starts_at": "2026-11-27T10:01:00+00:00", "ends_at": "2026-11-27T12:01:00+00:00",
              "status": "active"},
}


def out(ctx: Context) -> str:
    assert isinstance(ctx.out, io.StringIO)
    return ctx.out.getvalue()


def err(ctx: Context) -> str:
    assert isinstance(ctx.err, io.StringIO)
    return ctx.err.getvalue()


def test_login_saves_a_private_session_and_never_prints_the_token(
    ctx: Context, broker: TinyBroker, tmp_path: Path
) -> None:
    broker.on("POST", "/auth/login", (200, {
        "token": "tok-very-secret", "expires_at": "2026-11-27T11:00:00+00:00",
        "identity": {"username": "vendor1", "kind": "human", "roles": ["vendor"], "organisation": "Acme",
                     "sites": []},
    }))
    password_file = tmp_path / "pw"
    password_file.write_text("s3cret\n")
    code = main(["login", "--server", SERVER + "/", "--user", "vendor1", "--password-file", str(password_file),
                 "--totp", "123456"], context=ctx)
    assert code == 0
    assert broker.calls[0]["body"] == {"username": "vendor1", "password": "s3cret", "totp": "123456"}
    assert out(ctx) == f"Logged in to {SERVER} as vendor1 (vendor) until 2026-11-27 11:00 UTC.\n"
    assert "tok-very-secret" not in out(ctx) + err(ctx)
    saved = json.loads(ctx.state.session_path.read_text())
    assert saved == {"server": SERVER, "username": "vendor1", "token": "tok-very-secret",
                     "expires_at": "2026-11-27T11:00:00+00:00"}
    assert stat.S_IMODE(ctx.state.session_path.stat().st_mode) == 0o600


def test_failed_login_shows_the_brokers_reason(ctx: Context, broker: TinyBroker, tmp_path: Path) -> None:
    broker.on("POST", "/auth/login", (401, {"error": "login_failed",
                                            "message": "wrong username, password or one-time code"}))
    (tmp_path / "pw").write_text("x")
    code = main(["login", "--user", "v", "--password-file", str(tmp_path / "pw"), "--totp", "1"], context=ctx)
    assert code == 1
    assert err(ctx) == "gatepass: wrong username, password or one-time code\n"
    assert not ctx.state.session_path.exists()


def test_request_sends_the_public_key_and_defaults_to_ssh(
    ctx: Context, broker: TinyBroker, logged_in: Session
) -> None:
    broker.on("POST", "/requests", (201, REQUEST))
    code = main(["request", "hmi-01", "--for", "2h", "--reason", "replace HMI firmware"], context=ctx)
    assert code == 0
    call = broker.calls[0]
    assert call["authorization"] == f"Bearer {logged_in.token}"
    assert call["body"] == {
        "asset": "hmi-01", "duration": "2h", "reason": "replace HMI firmware", "ssh": True, "ports": [],
        "read_only": False, "start": None, "public_key": ctx.state.ensure_key(),
    }
    assert out(ctx) == "Request req-1a2b3c4d for hmi-01 (ssh) for 2h: pending approval by plant-a\n"


def test_request_with_ports_and_start(ctx: Context, broker: TinyBroker, logged_in: Session) -> None:
    broker.on("POST", "/requests", (201, REQUEST))
    argv = ["request", "plc-01", "--for", "90m", "--reason", "r", "--port", "502", "4840", "--port", "502",
            "--start", "2026-11-28T08:00:00", "--json"]
    assert main(argv, context=ctx) == 0
    body = broker.calls[0]["body"]
    assert (body["ssh"], body["ports"], body["duration"]) == (False, [502, 4840], "90m")
    assert body["start"] == "2026-11-28T08:00:00+00:00"
    assert json.loads(out(ctx)) == REQUEST


def test_request_wait_polls_until_approved(ctx: Context, broker: TinyBroker, logged_in: Session) -> None:
    answers = iter([REQUEST, REQUEST, APPROVED])
    broker.on("POST", "/requests", (201, REQUEST))
    broker.on("GET", "/requests/req-1a2b3c4d", lambda _b, _q: (200, next(answers)))
    code = main(["request", "hmi-01", "--for", "2h", "--reason", "r", "--wait", "--json"], context=ctx)
    assert code == 0
    assert json.loads(out(ctx))["status"] == "approved"  # stdout is only the JSON document
    assert "Waiting for approval of req-1a2b3c4d (hmi-01, ssh) by plant-a" in err(ctx)
    assert [c["method"] for c in broker.calls] == ["POST", "GET", "GET", "GET"]


def test_request_wait_exits_1_when_denied(ctx: Context, broker: TinyBroker, logged_in: Session) -> None:
    denied = REQUEST | {"status": "denied", "denial": {"approver": "sup1", "comment": "not during the batch"}}
    broker.on("POST", "/requests", (201, REQUEST))
    broker.on("GET", "/requests/req-1a2b3c4d", (200, denied))
    code = main(["request", "hmi-01", "--for", "2h", "--reason", "r", "--wait"], context=ctx)
    assert code == 1
    assert "Waiting for approval of req-1a2b3c4d" in out(ctx)
    assert err(ctx).endswith(
        "gatepass: request req-1a2b3c4d for hmi-01 was denied by sup1: not during the batch\n"
    )


def test_usage_errors_exit_2(ctx: Context, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["deny", "req-1"], ["request", "hmi-01", "--for", "2 hours", "--reason", "r"],
                 ["request", "hmi-01", "--for", "1h", "--reason", "r", "--port", "70000"]):
        with pytest.raises(SystemExit) as exited:
            main(argv, context=ctx)
        assert exited.value.code == 2
    assert "gatepass: argument --port: '70000' is not a TCP port" in capsys.readouterr().err


def test_requests_lists_as_json_or_table(ctx: Context, broker: TinyBroker, logged_in: Session) -> None:
    broker.on("GET", "/requests", (200, [REQUEST, APPROVED]))
    assert main(["requests", "--pending", "--json"], context=ctx) == 0
    assert broker.calls[0]["query"] == {"pending": ["true"]}
    assert json.loads(out(ctx)) == [REQUEST, APPROVED]
    ctx.out = io.StringIO()
    assert main(["requests"], context=ctx) == 0
    lines = out(ctx).splitlines()
    assert lines[0].split() == ["ID", "STATUS", "ASSET", "SITE", "REQUESTER", "ACCESS", "WINDOW", "REASON"]
    assert "2h from approval" in lines[1]
    assert lines[2].split()[1:3] == ["approved", "(active)"]
    assert "2026-11-27 10:01 UTC to 2026-11-27 12:01 UTC" in lines[2]


def test_approve_and_deny(ctx: Context, broker: TinyBroker, logged_in: Session) -> None:
    broker.on("POST", "/requests/req-1a2b3c4d/approve", (200, APPROVED))
    broker.on("POST", "/requests/req-1a2b3c4d/deny", (200, REQUEST | {"status": "denied"}))
    assert main(["approve", "req-1a2b3c4d", "--comment", "ok"], context=ctx) == 0
    assert main(["approve", "req-1a2b3c4d", "--shorten-to", "60m"], context=ctx) == 0
    assert main(["deny", "req-1a2b3c4d", "--comment", "no"], context=ctx) == 0
    assert [c["body"] for c in broker.calls] == [
        {"comment": "ok"}, {"comment": None, "shorten_to": "1h"}, {"comment": "no"}
    ]
    assert out(ctx).splitlines()[0].startswith("Approved req-1a2b3c4d (vendor1 on hmi-01): approved; grant grt-9")


@pytest.mark.parametrize(
    ("status", "payload", "message"),
    [
        (403, {"error": "forbidden", "message": "only approvers of plant-a decide on its requests"},
         "only approvers of plant-a decide on its requests"),
        (409, {"error": "conflict", "message": "request req-1 is already decided"}, "request req-1 is already decided"),
        (401, {"error": "not_authenticated", "message": "token expired"},
         f"your session on {SERVER} has expired or was revoked (token expired): "
         f"run `gatepass login --server {SERVER} --user vendor1`"),
        (422, {"detail": [{"loc": ["body", "comment"], "msg": "field required"}]},
         "the broker refused the input: comment: field required"),
        (502, b"Bad Gateway", f"the broker at {SERVER} answered HTTP 502 (Bad Gateway)"),
    ],
)
def test_api_refusals_are_rendered_as_one_line(
    ctx: Context, broker: TinyBroker, logged_in: Session, status: int, payload: Any, message: str
) -> None:
    broker.on("POST", "/requests/req-1/approve", (status, payload))
    assert main(["approve", "req-1"], context=ctx) == 1
    assert err(ctx) == f"gatepass: {message}\n"


def test_unreachable_broker(ctx: Context) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = f"http://127.0.0.1:{port}"  # nothing listens here once the probe is closed
    ctx = dataclasses.replace(ctx, transport=None)
    ctx.state.save_session(Session(server=server, username="v", token="t", expires_at=NOW.replace(hour=11)))
    assert main(["requests"], context=ctx) == 1
    assert err(ctx).startswith(f"gatepass: cannot reach the broker at {server}: ")


def test_commands_without_a_session_say_how_to_log_in(ctx: Context) -> None:
    assert main(["ssh", "hmi-01"], context=ctx) == 1
    assert err(ctx) == (f"gatepass: you are not logged in to {SERVER}: "
                        f"run `gatepass login --server {SERVER} --user NAME`\n")


@pytest.fixture
def certificate(ctx: Context, tmp_path: Path) -> str:
    """A real certificate for the client's key, signed by a throwaway CA."""
    public = ctx.state.ensure_key()
    (tmp_path / "user.pub").write_text(public + "\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "grant", "-n", "hmi-01", "-V", "+1h",
                    str(tmp_path / "user.pub")], check=True)
    return (tmp_path / "user-cert.pub").read_text().strip()


def grant(certificate: str, **overrides: Any) -> dict[str, Any]:
    return {
        "id": "grt-9", "request_id": "req-1a2b3c4d", "asset": "hmi-01", "site": "plant-a", "identity": "vendor1",
        "status": "active", "starts_at": "2026-11-27T09:00:00+00:00", "ends_at": "2026-11-27T12:00:00+00:00",
        "ssh": True, "ports": [502], "certificate": certificate,
        "gateway": {"host": "127.0.0.1", "port": 2222, "host_key": "ssh-ed25519 AAAAgatewaykey"},
    } | overrides


def test_ssh_writes_certificate_and_known_hosts_then_runs_ssh(
    ctx: Context, broker: TinyBroker, logged_in: Session, certificate: str, tmp_path: Path
) -> None:
    broker.on("GET", "/grants", (200, [grant(certificate)]))
    recorder = tmp_path / "fake-ssh"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\nexit 7\n')
    recorder.chmod(0o755)
    ctx = dataclasses.replace(ctx, environ={**ctx.environ, "GATEPASS_SSH_BIN": str(recorder)})
    assert main(["ssh", "hmi-01", "--", "cat", "/etc/hostname"], context=ctx) == 7  # ssh's exit code
    assert broker.calls[0]["query"] == {"asset": ["hmi-01"], "usable": ["true"]}
    home = ctx.state.home
    assert (tmp_path / "argv").read_text().splitlines() == [
        "-p", "2222", "-i", str(home / "id_ed25519"),
        "-o", f"CertificateFile={home / 'certs' / 'hmi-01-cert.pub'}", "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
        "-o", "GlobalKnownHostsFile=/dev/null", "hmi-01@127.0.0.1", "cat", "/etc/hostname",
    ]
    assert (home / "certs" / "hmi-01-cert.pub").read_text() == certificate + "\n"
    assert (home / "known_hosts").read_text() == "[127.0.0.1]:2222 ssh-ed25519 AAAAgatewaykey\n"


def test_ssh_refuses_a_certificate_for_another_key(
    ctx: Context, broker: TinyBroker, logged_in: Session, certificate: str
) -> None:
    broker.on("GET", "/grants", (200, [grant(certificate)]))
    ctx.state.key_path.unlink()
    ctx.state.public_key_path.unlink()
    ctx.state.ensure_key()  # a new key: the certificate no longer fits
    assert main(["ssh", "hmi-01"], context=ctx) == 1
    assert "was issued for another key" in err(ctx)


def test_ssh_without_a_grant_says_how_to_request(ctx: Context, broker: TinyBroker, logged_in: Session) -> None:
    broker.on("GET", "/grants", (200, []))
    assert main(["ssh", "hmi-01"], context=ctx) == 1
    assert err(ctx) == ("gatepass: no active grant for hmi-01: request access with "
                        "`gatepass request hmi-01 --for 1h --reason …`\n")


def test_ssh_config_prints_a_block_per_grant(
    ctx: Context, broker: TinyBroker, logged_in: Session, certificate: str
) -> None:
    broker.on("GET", "/grants", (200, [grant(certificate), grant(certificate, identity="vendor2", id="grt-x")]))
    assert main(["ssh-config"], context=ctx) == 0
    assert broker.calls[0]["query"] == {"usable": ["true"]}
    text = out(ctx)
    assert text.count("\nHost ") == 1
    assert "Host hmi-01.gatepass\n" in text
    assert f"    CertificateFile {ctx.state.home / 'certs' / 'hmi-01-cert.pub'}\n" in text
    assert (ctx.state.home / "certs" / "hmi-01-cert.pub").exists()


def test_audit_export_pages_on_the_sequence_number(
    ctx: Context, broker: TinyBroker, logged_in: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_audit, "PAGE_SIZE", 2)
    events = [{"seq": i, "occurred_at": f"2026-11-27T09:0{t}:00+00:00"} for i, t in enumerate([0, 1, 1, 1, 2], 1)]

    def page(_body: Any, query: dict[str, list[str]]) -> tuple[int, Any]:
        since = query.get("since", [""])[0]
        after = int(query["after_seq"][0])
        chosen = [e for e in events if e["seq"] > after and (not since or e["occurred_at"] >= since)]
        return 200, chosen[: int(query["limit"][0])]

    broker.on("GET", "/audit/events", page)
    assert main(["audit", "export", "--format", "jsonl", "--since", "2026-11-27T09:01:00"], context=ctx) == 0
    assert [json.loads(line)["seq"] for line in out(ctx).splitlines()] == [2, 3, 4, 5]
    assert broker.calls[0]["query"]["since"] == ["2026-11-27T09:01:00+00:00"]
    assert [c["query"]["after_seq"] for c in broker.calls] == [["0"], ["3"], ["5"]]


def test_audit_export_refuses_formats_not_built_yet(ctx: Context) -> None:
    assert main(["audit", "export", "--format", "cef"], context=ctx) == 2
    assert err(ctx) == "gatepass: format cef is not available yet: use --format jsonl\n"


def test_logout_revokes_and_forgets(ctx: Context, broker: TinyBroker, logged_in: Session) -> None:
    broker.on("POST", "/auth/logout", (204, None))
    assert main(["logout"], context=ctx) == 0
    assert broker.calls[0]["authorization"] == f"Bearer {logged_in.token}"
    assert not ctx.state.session_path.exists()
    assert out(ctx) == f"Logged out of {SERVER}.\n"

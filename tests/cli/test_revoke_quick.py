"""`gatepass revoke` on the standard library's HTTP client (cli/quick_http.py, issue 14: revoke -> ssh exits
<= 120 ms): it answers exactly as the httpx client does, against the real broker over TCP, and does not import
httpx at all."""

from __future__ import annotations

import dataclasses
import http.server
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.audit.trail import Action
from cli.context import Context
from cli.main import main
from cli.state import Session
from tests.fixtures.broker import Api, Plant
from tests.fixtures.ports import free_port

SignIn = Callable[[str], Session]
ROOT = Path(__file__).resolve().parents[2]
# A proxy in the CLI's environment: quick_http steps aside and `revoke` goes through httpx (which reads the
# process's own environment, where no proxy is set, so it still reaches the broker directly).
THROUGH_HTTPX = {"https_proxy": "http://proxy.invalid:3128"}


def _run(ctx: Context, argv: list[str], *, extra_environ: dict[str, str]) -> tuple[int, str, str]:
    run = dataclasses.replace(ctx, environ={**ctx.environ, **extra_environ}, out=io.StringIO(), err=io.StringIO())
    code = main(argv, context=run)
    assert isinstance(run.out, io.StringIO)
    assert isinstance(run.err, io.StringIO)
    return code, run.out.getvalue(), run.err.getvalue()


def test_revoke_without_httpx_ends_the_grant(ctx: Context, api: Api, plant: Plant, signed_in: SignIn) -> None:
    grant = api.grant("vendor1", "sup-a1")
    signed_in("sec1")

    code, out, err = _run(ctx, ["revoke", grant["id"], "--reason", "laptop lost", "--json"], extra_environ={})

    assert (code, err) == (0, "")
    assert f'"id": "{grant["id"]}"' in out
    assert '"status": "revoked"' in out
    [revoked] = plant.audit(Action.GRANT_REVOKED)
    assert (revoked["actor"], revoked["subject"], revoked["details"]["reason"]) == ("sec1", grant["id"],
                                                                                     "laptop lost")


def _again(api: Api, signed_in: SignIn) -> str:
    grant = api.grant("vendor1", "sup-a1")
    signed_in("sec1")
    assert api.as_user("sec1").post(f"/grants/{grant['id']}/revoke", json={"reason": "first"}).status_code == 200
    return str(grant["id"])


def _unknown(_api: Api, signed_in: SignIn) -> str:
    signed_in("sec1")
    return "grt-00000000"


def _signed_out(api: Api, signed_in: SignIn) -> str:
    grant = api.grant("vendor1", "sup-a1")
    session = signed_in("sec1")
    assert api.client(session.token).post("/auth/logout").status_code == 204
    return str(grant["id"])


def _not_theirs(api: Api, signed_in: SignIn) -> str:
    grant = api.grant("vendor1", "sup-a1")
    signed_in("vendor2")
    return str(grant["id"])


@pytest.mark.parametrize("case", [_again, _unknown, _signed_out, _not_theirs],
                         ids=["already revoked", "unknown grant", "signed out", "someone else's grant"])
def test_a_refused_revoke_reads_as_with_httpx(ctx: Context, api: Api, signed_in: SignIn,
                                              case: Callable[[Api, SignIn], str]) -> None:
    grant_id = case(api, signed_in)

    quick = _run(ctx, ["revoke", grant_id], extra_environ={})
    through_httpx = _run(ctx, ["revoke", grant_id], extra_environ=THROUGH_HTTPX)

    assert quick == through_httpx
    code, out, err = quick
    assert (code, out) == (1, "")
    assert err.startswith("gatepass: ")
    assert len(err) > 30  # a sentence: what was refused and why


def test_an_unreachable_broker_is_said_so(ctx: Context, signed_in: SignIn) -> None:
    session = signed_in("sec1")
    ctx.state.save_session(dataclasses.replace(session, server=f"http://127.0.0.1:{free_port()}"))

    code, out, err = _run(ctx, ["revoke", "grt-00000000"], extra_environ={})

    assert (code, out) == (1, "")
    assert err.startswith("gatepass: cannot reach the broker at http://127.0.0.1:")


@pytest.mark.parametrize("argv", [["revoke", "grt-00000000"], ["ssh", "hmi-01", "--", "true"]],
                         ids=["revoke", "ssh"])
def test_the_commands_that_must_act_at_once_do_not_import_httpx(tmp_path: Path, argv: list[str]) -> None:
    script = f"import sys; from cli.main import main; sys.exit(main({argv!r}))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_", "COVERAGE_", "GATEPASS_"))}
    env["GATEPASS_HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "you are not logged in" in done.stderr  # it got as far as looking for the session
    assert "cli.quick_http" in modules
    assert not {m for m in modules if m == "httpx" or m.startswith("httpx.")}


class _NotTheBroker(http.server.BaseHTTPRequestHandler):
    """What a wrong URL or a proxy's error page looks like: stock answers, one of them chunked."""

    def do_POST(self) -> None:
        if "chunked" in self.path:
            self.send_response(409)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            body = json.dumps({"error": "conflict", "message": "a refusal sent in chunks by something else"}).encode()
            for part in (body[:10], body[10:]):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_error(502, "Bad Gateway", "<html>the proxy could not reach it</html>")

    def log_message(self, format: str, *args: object) -> None:  # noqa: ARG002 (quiet: no request lines in the output)
        return


@pytest.fixture
def not_the_broker() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTheBroker)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("prefix", "says"), [
    ("", "answered HTTP 502 (Bad Gateway)"),
    ("/chunked", "a refusal sent in chunks by something else"),
], ids=["error page", "chunked refusal"])
def test_answers_from_something_else_read_as_with_httpx(ctx: Context, signed_in: SignIn, not_the_broker: str,
                                                        prefix: str, says: str) -> None:
    session = signed_in("sec1")
    ctx.state.save_session(dataclasses.replace(session, server=not_the_broker + prefix))

    quick = _run(ctx, ["revoke", "grt-00000000"], extra_environ={})
    through_httpx = _run(ctx, ["revoke", "grt-00000000"], extra_environ=THROUGH_HTTPX)

    assert quick == through_httpx
    assert quick[0] == 1
    assert says in quick[2]


# -- `gatepass ssh` looks its grant up the same way (quick_http.get) before it becomes ssh -----------------------

def test_the_grant_lookup_without_httpx_reads_exactly_as_through_httpx(ctx: Context, api: Api,
                                                                       signed_in: SignIn) -> None:
    from cli import quick_http
    from cli.api import ApiClient

    grant = api.grant("vendor1", "sup-a1")
    api.grant("vendor1", "sup-a1", asset="plc-01", ssh=False, ports=[502])
    session = signed_in("vendor1")
    for params in ({"usable": "true"}, {"usable": "true", "asset": "hmi-01"}, {"usable": "true", "asset": "nope"}):
        quick = quick_http.get(session.server, "/grants", params, token=session.token, username=session.username)
        with ApiClient(session.server, token=session.token, username=session.username) as client:
            assert quick == client.get("/grants", params=params)
    assert [g["id"] for g in quick_http.get(session.server, "/grants", {"asset": "hmi-01"}, token=session.token,
                                            username=session.username)] == [grant["id"]]


def test_ssh_config_without_httpx_says_the_same_as_through_httpx(ctx: Context, api: Api,
                                                                   signed_in: SignIn) -> None:
    """The commands built on the lookup (here `gatepass ssh-config`; `ssh` and `tunnel` alike) print the same, and
    an expired session reads the same."""
    grant = api.grant("vendor1", "sup-a1")
    signed_in("vendor1")
    quick = _run(ctx, ["ssh-config"], extra_environ={})
    through_httpx = _run(ctx, ["ssh-config"], extra_environ=THROUGH_HTTPX)
    assert quick == through_httpx
    # The grant was found and read (this broker has no gateway registered, which the CLI then says).
    assert quick[0] == 1
    assert f"grant {grant['id']} has no gateway to connect through" in quick[2]

    session = ctx.state.load_session()
    assert session is not None
    ctx.state.save_session(dataclasses.replace(session, token="gp_" + "0" * 40))
    quick = _run(ctx, ["ssh-config"], extra_environ={})
    assert quick == _run(ctx, ["ssh-config"], extra_environ=THROUGH_HTTPX)
    assert quick[0] != 0
    assert "expired or was revoked" in quick[2]

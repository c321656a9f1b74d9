"""An AI agent's delegated grant runs only the commands its sponsor listed (issue 11): the client's command is
split into words and compared exactly with each listed argv, never as a substring; what reaches the target is
the listed argv re-quoted. Refusals are told on stderr, exit 1, run nothing and are reported for the audit trail.
Real gateway, real sshd, asyncssh and the stock ssh client."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.command_policy import judge_exec
from gateway.errors import BrokerProtocolError
from gateway.models import Authorization
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, Vendor, sshd_credential
from tests.gateway.fake_broker import FakeBroker

pytestmark = pytest.mark.anyio

AGENT_COMMANDS = [["echo", "plc status: ok"], ["cat", "/etc/hostname"], ["sh", "-c", "echo one; echo two"]]


def _authorization(**fields: Any) -> Authorization:
    body = {"grant_id": "grt-00000001", "identity": "agent-7", "identity_kind": "ai_agent", "asset": "hmi-01",
            "site": "plant-a", "starts_at": "2026-11-27T08:00:00+00:00", "ends_at": "2026-11-27T09:00:00+00:00",
            "ssh": True, "interactive": False, "ports": [], "target": None, **fields}
    return Authorization.from_json(body)


# -- the rule ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["echo 'plc status: ok'", 'echo "plc status: ok"', "echo plc\\ status:\\ ok",
                                     "  cat   /etc/hostname  ", "sh -c 'echo one; echo two'"])
def test_a_listed_command_passes_in_any_quoting_and_runs_as_listed(command: str) -> None:
    verdict = judge_exec(_authorization(allowed_commands=AGENT_COMMANDS), command)
    assert verdict.refusal is None
    assert verdict.command in ("echo 'plc status: ok'", "cat /etc/hostname", "sh -c 'echo one; echo two'")


@pytest.mark.parametrize("command", [
    "cat /etc/hostname; id",  # a second command after the listed one
    "cat /etc/hostname && rm -rf /tmp/x",
    "cat /etc/hostname /etc/shadow",  # more arguments
    "cat",  # fewer
    "echo plc status: ok",  # other words: three arguments, not one
    "/bin/cat /etc/hostname",  # another spelling of the program is another command
    "cat /etc/hostname #",
    "cat\n/etc/hostname\nid",
    "cat $(id) /etc/hostname",
    "sh -c 'echo one; echo two; id'",
])
def test_anything_else_is_refused_with_the_list(command: str) -> None:
    verdict = judge_exec(_authorization(allowed_commands=AGENT_COMMANDS), command)
    assert verdict.command is None
    assert verdict.refusal is not None
    assert "agent-7 may run only the commands its sponsor delegated on hmi-01" in verdict.refusal
    assert "`cat /etc/hostname`" in verdict.refusal


def test_words_that_split_alike_still_reach_the_target_as_the_listed_argv() -> None:
    """``a;b`` is one word to shlex and two commands to sh: the target gets the listed argv quoted, never the
    client's text."""
    verdict = judge_exec(_authorization(allowed_commands=[["echo", "a;id"]]), "echo a;id")
    assert verdict.command == "echo 'a;id'"


def test_an_unsplittable_command_and_an_empty_list_are_refused() -> None:
    unbalanced = judge_exec(_authorization(allowed_commands=AGENT_COMMANDS), "cat '/etc/hostname")
    assert unbalanced.command is None
    assert "cannot be split into words" in str(unbalanced.refusal)
    nothing = judge_exec(_authorization(allowed_commands=[]), "true")
    assert nothing.command is None
    assert "its sponsor delegated none" in str(nothing.refusal)


def test_without_a_list_any_command_runs_but_an_ai_agent_without_one_runs_none() -> None:
    human = _authorization(identity_kind="human", identity="vendor1")
    assert human.allowed_commands is None
    assert judge_exec(human, "anything at all; id").command == "anything at all; id"
    # Deny by default: an AI agent's authorization from a broker that sends no list.
    assert _authorization().allowed_commands == ()
    assert judge_exec(_authorization(), "true").command is None


@pytest.mark.parametrize("value", ["echo", [["echo"], "id"], [[]], [["echo", 1]], {"echo": []}])
def test_a_malformed_list_from_the_broker_is_a_protocol_error(value: object) -> None:
    with pytest.raises(BrokerProtocolError, match="allowed_commands"):
        _authorization(allowed_commands=value)


# -- through the gateway ------------------------------------------------------------------------------------------


def _agent(grant_for: GrantFactory, sshd: OpenSSHServer, commands: list[list[str]]) -> Vendor:
    vendor = grant_for(sshd_credential(sshd), identity="agent-7", interactive=False)
    vendor.grant.identity_kind = "ai_agent"
    vendor.grant.allowed_commands = commands
    return vendor


async def test_the_agent_runs_a_listed_command_and_is_refused_another_on_the_same_connection(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    marker = tmp_path / "must-not-exist"
    vendor = _agent(grant_for, sshd_target, [["echo", "plc status: ok"]])
    async with await vendor.connect() as conn:
        ran = await conn.run("echo 'plc status: ok'")
        refused = await conn.run(f"echo 'plc status: ok'; touch {marker}")
        again = await conn.run('echo "plc status: ok"')
    assert (ran.exit_status, ran.stdout) == (0, "plc status: ok\n")
    assert (again.exit_status, again.stdout) == (0, "plc status: ok\n")
    assert refused.exit_status == 1
    assert refused.stdout == ""
    assert "gatepass: agent-7 may run only the commands its sponsor delegated on hmi-01" in str(refused.stderr)
    assert not marker.exists()
    [refusal] = await fake_broker.until(lambda: fake_broker.refusals, what="the refused command")
    assert (refusal["grant_id"], refusal["kind"]) == (vendor.grant.grant_id, "exec")
    assert f"touch {marker}" in refusal["reason"]
    # Only the two commands that ran are sessions, recorded under their listed form.
    await fake_broker.until(lambda: len(fake_broker.ended) == 2, what="the two sessions' ends")
    assert [s["command"] for s in fake_broker.sessions.values()] == ["echo 'plc status: ok'"] * 2


async def test_the_stock_ssh_client_shows_the_reason_and_exits_1(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = _agent(grant_for, sshd_target, [["cat", "/etc/hostname"]])
    key_file, cert_file = tmp_path / "agent", tmp_path / "agent-cert.pub"
    key_file.write_bytes(vendor.key.export_private_key())
    os.chmod(key_file, 0o600)
    cert_file.write_bytes(vendor.cert.export_certificate())
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{vendor.gateway.port} {vendor.gateway.host_public_key}\n")
    process = await asyncio.create_subprocess_exec(
        "ssh", "-F", "none", "-p", str(vendor.gateway.port), "-i", str(key_file), "-o",
        f"CertificateFile={cert_file}", "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "hmi-01@127.0.0.1", "cat", "/etc/passwd",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 1
    assert stdout == b""
    assert ("gatepass: agent-7 may run only the commands its sponsor delegated on hmi-01, word for word; "
            "`cat /etc/passwd` is not one of them (allowed: `cat /etc/hostname`)") in stderr.decode()
    await fake_broker.until(lambda: fake_broker.refusals, what="the refused command")
    assert fake_broker.sessions == {}

"""AI-agent delegation end to end (issue 11): a sponsor delegates part of a live grant with `gatepass delegate`;
the agent, with its own key and the stock ssh client, runs a listed command through `gatepass serve` to a real
sshd, is refused an unlisted one, gets Modbus reads but no writes from a real PLC (pymodbus), is refused any
wider delegation, appears with its sponsor in the SIEM export, and is stopped within a second by
`gatepass admin identity suspend`."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from tests.e2e.stack import GATEPASS, Stack
from tests.fixtures.ports import free_port
from tests.gateway.modbus_plc import REGISTERS, UNIT, ModbusPlc

pytestmark = pytest.mark.slow

AGENT = "agent-e2e"
PLC = "plc-ag"
READY = "sh -c 'echo agent-ready; sleep 600'"


@dataclass
class Agent:
    """The AI agent's machine: its own key pair (the private half never leaves it) and its known gateway."""

    home: Path
    stack: Stack

    @property
    def key(self) -> Path:
        return self.home / "id_ed25519"

    def ssh(self, grant: dict[str, Any], *remote: str, forwards: tuple[str, ...] = ()) -> list[str]:
        certificate = self.home / f"{grant['id']}-cert.pub"
        certificate.write_text(grant["certificate"] + "\n")
        known_hosts = self.home / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{self.stack.ssh_port} {grant['gateway']['host_key']}\n")
        options = ["-p", str(self.stack.ssh_port), "-i", str(self.key), "-o", f"CertificateFile={certificate}",
                   "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
                   "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
        for forward in forwards:
            options += ["-N", "-L", forward]
        return ["ssh", "-F", "none", *options, f"{grant['asset']}@127.0.0.1", *remote]

    def sftp(self, grant: dict[str, Any], batch: Path) -> subprocess.CompletedProcess[str]:
        argv = self.ssh(grant)
        argv[0:3] = ["sftp", "-F", "none"]
        argv[argv.index("-p")] = "-P"
        argv[-1:-1] = ["-b", str(batch)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def agent(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Agent:
    stack.gatepass("admin", "user", "add", AGENT, "--role", "vendor", "--site", "plant-a", "--kind", "ai_agent",
                   "--owner", "vendor1", "--sponsor", "vendor1", "--purpose", "reads PLC bridge status")
    home = tmp_path_factory.mktemp("agent-machine")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", AGENT, "-f", str(home / "id_ed25519")],
                   check=True, capture_output=True)
    return Agent(home=home, stack=stack)


@pytest.fixture(scope="module")
def plc(stack: Stack) -> Iterator[ModbusPlc]:
    server = ModbusPlc().start()
    stack.gatepass("admin", "asset", "add", PLC, "--site", "plant-a", "--host", server.host, "--tcp-port", "502")
    try:
        yield server
    finally:
        server.stop()


def _sponsor_grant(stack: Stack, asset: str, *services: str, duration: str = "1h") -> dict[str, Any]:
    request = stack.request("vendor1", asset, "--for", duration, "--reason", "agent-assisted diagnostics", *services)
    stack.approve("sup-a1", request["id"])
    return stack.grant_of("vendor1", request["id"])


def _delegate(stack: Stack, agent: Agent, grant_id: str, *args: str,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    return stack.gatepass("delegate", grant_id, "--to", AGENT, "--key", str(agent.key) + ".pub", "--json", *args,
                          user="vendor1", check=check)


def _delegated(stack: Stack, agent: Agent, grant_id: str, *args: str) -> dict[str, Any]:
    grant: dict[str, Any] = json.loads(_delegate(stack, agent, grant_id, *args).stdout)
    return grant


def _wait_listening(port: int, process: subprocess.Popen[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def test_the_agent_runs_a_listed_command_and_nothing_else(stack: Stack, agent: Agent, tmp_path: Path) -> None:
    parent = _sponsor_grant(stack, "hmi-01")
    grant = _delegated(stack, agent, parent["id"], "--for", "10m", "--command", "uname -n",
                       "--reason", "read the bridge's host name")
    assert (grant["identity"], grant["sponsor"], grant["allowed_commands"]) == (AGENT, "vendor1", [["uname", "-n"]])

    ran = subprocess.run(agent.ssh(grant, "uname", "-n"), capture_output=True, text=True, timeout=30, check=False)
    refused = subprocess.run(agent.ssh(grant, f"uname -n; touch {tmp_path}/pwned"), capture_output=True, text=True,
                             timeout=30, check=False)

    assert (ran.returncode, ran.stdout) == (0, socket.gethostname() + "\n"), ran.stderr
    assert refused.returncode == 1
    assert ("gatepass: agent-e2e may run only the commands its sponsor delegated on hmi-01, word for word; "
            f"`uname -n; touch {tmp_path}/pwned` is not one of them (allowed: `uname -n`)") in refused.stderr
    assert not (tmp_path / "pwned").exists()
    started = stack.grant_event("gateway:session:started", grant["id"])
    assert (started["actor"], started["details"]["sponsor"], started["details"]["command"]) == (
        AGENT, "vendor1", "uname -n")
    exec_refused = next(e for e in stack.audit_events() if e["action"] == "gateway:connection:refused"
                        and e["subject"] == grant["id"])
    assert (exec_refused["actor"], exec_refused["details"]["kind"], exec_refused["details"]["sponsor"]) == (
        AGENT, "exec", "vendor1")
    # The SIEM export carries both: the agent as the actor, its sponsor beside it.
    cef = stack.gatepass("audit", "export", "--format", "cef", user="security1").stdout.splitlines()
    line = next(text for text in cef if "act=gateway:session:started" in text and grant["id"] in text)
    assert "suser=agent-e2e" in line
    assert "cs5Label=sponsor cs5=vendor1" in line
    ocsf = [json.loads(text) for text in stack.gatepass("audit", "export", "--format", "ocsf",
                                                         user="security1").stdout.splitlines()]
    delegated = next(e for e in ocsf if e["metadata"]["event_code"] == "access:grant:delegated")
    assert (delegated["unmapped"]["details"]["agent"], delegated["unmapped"]["details"]["sponsor"]) == (
        AGENT, "vendor1")


def test_the_agent_downloads_but_never_uploads(stack: Stack, agent: Agent, tmp_path: Path) -> None:
    parent = _sponsor_grant(stack, "hmi-01")
    grant = _delegated(stack, agent, parent["id"], "--for", "10m")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "bridge.log").write_text("bridge up\n")
    (tmp_path / "patch.bin").write_bytes(os.urandom(3000))
    batch = tmp_path / "batch"
    batch.write_text(f"get {remote}/bridge.log {tmp_path}/bridge.log\n-put {tmp_path}/patch.bin {remote}/patch.bin\n")

    result = agent.sftp(grant, batch)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bridge.log").read_text() == "bridge up\n"
    assert not (remote / "patch.bin").exists()
    assert f"site plant-a allows AI agents downloads only: writing {remote}/patch.bin is refused" in result.stderr
    refused = stack.grant_event("gateway:file:refused", grant["id"])
    assert (refused["actor"], refused["details"]["sponsor"]) == (AGENT, "vendor1")


def test_a_wider_delegation_is_refused_with_the_reason(stack: Stack, agent: Agent) -> None:
    parent = _sponsor_grant(stack, "hmi-01", duration="30m")

    longer = _delegate(stack, agent, parent["id"], "--for", "2h", check=False)
    more_ports = _delegate(stack, agent, parent["id"], "--for", "5m", "--ssh", "--port", "502", check=False)
    writes = _delegate(stack, agent, parent["id"], "--for", "5m", "--allow-writes", check=False)

    assert longer.returncode == 1
    assert f"after grant {parent['id']} ends" in longer.stderr
    assert "an agent's grant is never longer than its sponsor's" in longer.stderr
    assert more_ports.returncode == 1
    assert f"port 502 is not part of grant {parent['id']} (its ports: none)" in more_ports.stderr
    assert writes.returncode == 1
    assert "site plant-a does not let AI agents write" in writes.stderr
    refusals = [e for e in stack.audit_events() if e["action"] == "access:delegation:refused"
                and e["subject"] == parent["id"]]
    assert len(refusals) == 3
    assert {(e["actor"], e["details"]["agent"]) for e in refusals} == {("vendor1", AGENT)}


def test_the_agents_modbus_access_reads_but_never_writes(stack: Stack, agent: Agent, plc: ModbusPlc) -> None:
    parent = _sponsor_grant(stack, PLC, "--port", "502")  # the sponsor may write; the agent may not
    grant = _delegated(stack, agent, parent["id"], "--for", "10m")
    assert (grant["ports"], grant["read_only"]) == ([502], True)
    local_port = free_port()
    tunnel = subprocess.Popen(agent.ssh(grant, forwards=(f"127.0.0.1:{local_port}:{PLC}:502",)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(local_port, tunnel)
        with ModbusTcpClient("127.0.0.1", port=local_port, timeout=5, retries=0) as client:
            assert client.read_holding_registers(0, count=len(REGISTERS), device_id=UNIT).registers == REGISTERS
            refused = client.write_register(2, 9999, device_id=UNIT)
            assert refused.isError()
            assert refused.exception_code == 1  # ILLEGAL FUNCTION, answered by the gateway
    finally:
        tunnel.terminate()
        tunnel.communicate(timeout=15)
    assert plc.registers() == REGISTERS
    event = stack.grant_event("gateway:modbus:write_refused", grant["id"])
    assert (event["actor"], event["details"]["sponsor"], event["details"]["function_code"]) == (AGENT, "vendor1", 6)


def test_a_joined_agent_gets_its_certificate_itself_and_uses_gatepass_ssh(stack: Stack) -> None:
    """The whole flow with a joined machine: no key changes hands, the agent fetches its own certificate."""
    stack.gatepass("admin", "user", "add", "agent-joined", "--role", "vendor", "--site", "plant-a", "--kind",
                   "ai_agent", "--owner", "vendor1", "--sponsor", "vendor1", "--purpose", "reads the bridge")
    token = json.loads(stack.gatepass("admin", "identity", "join-token", "agent-joined", "--json").stdout)["token"]
    stack.gatepass("join", "--server", stack.base_url, "--token", token, user="agent-joined")
    parent = _sponsor_grant(stack, "hmi-01")
    delegated = json.loads(stack.gatepass("delegate", parent["id"], "--to", "agent-joined", "--for", "10m",
                                          "--command", "uname -n", "--json", user="vendor1").stdout)

    def agent_ssh(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([GATEPASS, "ssh", "hmi-01", "--", *command], env=stack.env(stack.home("agent-joined")),
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)

    ran, refused = agent_ssh("uname", "-n"), agent_ssh("id")
    assert (ran.returncode, ran.stdout) == (0, socket.gethostname() + "\n"), ran.stderr
    assert refused.returncode == 1
    assert "agent-joined may run only the commands its sponsor delegated on hmi-01" in refused.stderr
    started = stack.grant_event("gateway:session:started", delegated["id"])
    assert (started["actor"], started["details"]["sponsor"]) == ("agent-joined", "vendor1")


def test_revoking_the_sponsors_grant_ends_the_agents_session(stack: Stack, agent: Agent) -> None:
    parent = _sponsor_grant(stack, "hmi-01")
    grant = _delegated(stack, agent, parent["id"], "--for", "10m", "--command", READY)
    session = subprocess.Popen(agent.ssh(grant, READY), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert session.stdout is not None
    assert session.stdout.readline() == "agent-ready\n"

    stack.gatepass("revoke", parent["id"], "--reason", "work done", user="vendor1")

    _, stderr = session.communicate(timeout=10)
    assert "access to hmi-01 ended: the grant it was delegated from ended" in stderr
    ended = stack.grant_event("gateway:session:ended", grant["id"])
    assert (ended["details"]["reason"], ended["details"]["sponsor"]) == ("revoked", "vendor1")


def test_suspending_the_agent_cuts_all_its_sessions_within_a_second(stack: Stack, agent: Agent,
                                                                     plc: ModbusPlc) -> None:
    shell_parent = _sponsor_grant(stack, "hmi-01")
    plc_parent = _sponsor_grant(stack, PLC, "--port", "502")
    shell_grant = _delegated(stack, agent, shell_parent["id"], "--for", "10m", "--command", READY)
    plc_grant = _delegated(stack, agent, plc_parent["id"], "--for", "10m")
    session = subprocess.Popen(agent.ssh(shell_grant, READY), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    local_port = free_port()
    tunnel = subprocess.Popen(agent.ssh(plc_grant, forwards=(f"127.0.0.1:{local_port}:{PLC}:502",)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert session.stdout is not None
    assert session.stdout.readline() == "agent-ready\n"
    _wait_listening(local_port, tunnel)
    # A Modbus connection held open through the tunnel: a live TCP session under the agent's second grant.
    client = ModbusTcpClient("127.0.0.1", port=local_port, timeout=5, retries=0)
    assert client.connect()
    try:
        assert not client.read_holding_registers(0, count=1, device_id=UNIT).isError()

        stack.gatepass("admin", "identity", "suspend", AGENT, "--reason", "kill switch: agent misbehaving")
        committed = time.monotonic()
        _, session_err = session.communicate(timeout=10)
        session_cut = time.monotonic() - committed
        tunnel.communicate(timeout=10)
        tunnel_cut = time.monotonic() - committed
    finally:
        client.close()

    assert session_cut < 1.0, session_cut
    assert tunnel_cut < 1.0, tunnel_cut
    assert "access to hmi-01 ended: your identity was suspended" in session_err
    # The shell's one session, and the Modbus connection held open (the listening probe before it closed itself).
    for grant, count in ((shell_grant, 1), (plc_grant, 2)):
        ended = stack.grant_events("gateway:session:ended", grant["id"], count=count)[-1]
        assert (ended["actor"], ended["details"]["reason"], ended["details"]["sponsor"]) == (
            AGENT, "revoked", "vendor1")
    # The sponsor's own grants go on: only the agent was stopped.
    usable = {g["id"] for g in stack.api_get("vendor1", "/grants?usable=true")}
    assert {shell_parent["id"], plc_parent["id"]} <= usable
    refused = _delegate(stack, agent, shell_parent["id"], "--for", "5m", check=False)
    assert refused.returncode == 1
    assert f"the account '{AGENT}' is" in refused.stderr

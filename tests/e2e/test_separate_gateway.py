"""A gateway run on its own (`gatepass broker` and `gatepass gateway`, each with its own data, as deploy/compose.yaml
runs them): a real ssh session's recording is uploaded to the broker when the session ends and deleted on the
gateway, so `gatepass audit verify` and the reviewers find it where the broker keeps recordings. What a gateway
kept (`--keep-recordings`) goes after a restart without it; a copy changed on the gateway's disk is refused,
audited and left there."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.stack import GATEPASS, Stack, new_installation, stop_process
from tests.fixtures.sshd import OpenSSHServer

pytestmark = pytest.mark.slow


@dataclass
class SeparateGateway:
    """`gatepass gateway` in its own process and directory, signed in with its own credential."""

    stack: Stack
    root: Path
    token_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def recordings(self) -> Path:
        return self.root / "recordings"

    @property
    def log_path(self) -> Path:
        return self.root / "gateway.log"

    def start(self, *extra: str) -> None:
        argv = [GATEPASS, "gateway", "--broker", self.stack.base_url, "--token-file", str(self.token_file),
                "--ssh", f"127.0.0.1:{self.stack.ssh_port}", "--host-key", str(self.root / "ssh_host_ed25519_key"),
                "--recordings", str(self.recordings), *extra]
        with self.log_path.open("ab") as log:
            earlier = log.tell()  # a restart appends: only this run's lines say it is ready
            self.process = subprocess.Popen(argv, cwd=self.root, env=self.stack.env(), stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while b"Gatepass gateway on" not in self.log_path.read_bytes()[earlier:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gatepass gateway did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
def broker_stack(tmp_path_factory: pytest.TempPathFactory, plant_machine: OpenSSHServer) -> Iterator[Stack]:
    """`gatepass broker` alone: plant-a with hmi-01 (the sshd); vendor1, sup-a1 and security1 signed in."""
    with new_installation(tmp_path_factory) as stack:
        stack.init()
        stack.gatepass_many(
            ["admin", "site", "add", "plant-a"],
            ["admin", "asset", "add", "hmi-01", "--site", "plant-a", "--host", plant_machine.host, "--criticality",
             "low", "--ssh-port", str(plant_machine.port), "--ssh-user", plant_machine.username, "--ssh-key-file",
             str(plant_machine.client_private_key), "--host-key", plant_machine.host_key])
        stack.add_users(("vendor1", "vendor"), ("sup-a1", "supervisor", "plant-a"), ("security1", "security"))
        stack.start("broker")
        stack.login_all("vendor1", "sup-a1", "security1")
        yield stack


@pytest.fixture(scope="module")
def gateway(broker_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeparateGateway]:
    root = tmp_path_factory.mktemp("gateway")
    added = json.loads(broker_stack.gatepass("admin", "gateway", "add", "gw-plant-a", "--site", "plant-a",
                                             "--json").stdout)
    token_file = root / "token"
    token_file.write_text(added["token"] + "\n")
    token_file.chmod(0o600)
    running = SeparateGateway(stack=broker_stack, root=root, token_file=token_file)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def session_with_output(stack: Stack, gateway: SeparateGateway, text: str) -> tuple[str, dict[str, object]]:
    """Run ``echo TEXT`` on hmi-01 through the separate gateway: (session id, its reported recording)."""
    grant = stack.fresh_grant("hmi-01", "--for", "10m", "--reason", "e2e separate gateway")
    result = stack.gatepass("ssh", "hmi-01", "--", f"echo {text}", user="vendor1", check=False)
    assert (result.returncode, result.stdout) == (0, f"{text}\n"), result.stderr + gateway.log()
    ended = stack.grant_events("gateway:session:ended", grant["id"])
    assert ended, gateway.log()
    recording = ended[0]["details"]["recording"]
    assert isinstance(recording, dict)
    return str(ended[0]["subject"]), recording


def wait_for(condition: object, what: str, gateway: SeparateGateway, timeout: float = 20.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s:\n{gateway.log()}")
        time.sleep(0.1)


def actions_for(stack: Stack, session_id: str, action: str) -> list[dict[str, object]]:
    return [e for e in stack.audit_events() if e["action"] == action and e["subject"] == session_id]


def test_a_recording_moves_to_the_broker_when_its_session_ends(broker_stack: Stack, gateway: SeparateGateway) -> None:
    session_id, recording = session_with_output(broker_stack, gateway, "output-from-the-plant")
    assert recording["uploads"] is True
    name = str(recording["name"])
    on_broker = broker_stack.data / "recordings" / name

    wait_for(lambda: on_broker.is_file() and not (gateway.recordings / name).exists(), "the upload", gateway)

    data = on_broker.read_bytes()
    assert hashlib.sha256(data).hexdigest() == recording["sha256"]
    assert len(data) == recording["bytes"]
    assert "output-from-the-plant" in data.decode()
    [received] = actions_for(broker_stack, session_id, "gateway:recording:received")
    assert received["actor"] == "gateway:gw-plant-a"
    verified = json.loads(broker_stack.gatepass("audit", "verify", "--json").stdout)
    assert verified["ok"] is True, verified
    assert verified["recordings_on_gateways"] == 0
    # The reviewers' API shows the recording with its hash (the review page plays it from here).
    shown = broker_stack.api_get("security1", f"/recordings/{session_id}")
    assert shown["recording"] == {"name": name, "sha256": recording["sha256"], "bytes": recording["bytes"]}


def test_kept_recordings_go_after_a_restart_and_a_changed_one_is_refused_and_left(
        broker_stack: Stack, gateway: SeparateGateway) -> None:
    gateway.stop()
    gateway.start("--keep-recordings")
    intact_id, intact = session_with_output(broker_stack, gateway, "kept-intact")
    changed_id, changed = session_with_output(broker_stack, gateway, "kept-then-changed")
    assert "uploads" not in intact
    assert "uploads" not in changed
    intact_file, changed_file = (gateway.recordings / str(r["name"]) for r in (intact, changed))
    time.sleep(1.0)  # had anything been uploaded, it would be gone by now
    assert intact_file.is_file(), gateway.log()
    assert changed_file.is_file(), gateway.log()
    changed_file.write_bytes(changed_file.read_bytes().replace(b"kept-then-changed", b"kept-then-CHANGED"))

    gateway.stop()
    gateway.start()

    on_broker = broker_stack.data / "recordings"
    wait_for(lambda: (on_broker / str(intact["name"])).is_file() and not intact_file.exists(), "the upload", gateway)
    wait_for(lambda: actions_for(broker_stack, changed_id, "gateway:recording:refused"), "the refusal", gateway)
    [refused] = actions_for(broker_stack, changed_id, "gateway:recording:refused")
    assert "SHA-256" in str(refused["details"]["reason"])  # type: ignore[index]
    assert changed_file.is_file()  # left for an operator
    assert not (on_broker / str(changed["name"])).exists()
    assert "the broker refused recording" in gateway.log()
    assert actions_for(broker_stack, intact_id, "gateway:recording:received")


def test_a_session_that_ends_while_the_broker_is_away_is_reported_and_uploaded_once_it_is_back(
        broker_stack: Stack, gateway: SeparateGateway) -> None:
    grant = broker_stack.fresh_grant("hmi-01", "--for", "10m", "--reason", "e2e broker outage")
    ssh = subprocess.Popen([GATEPASS, "ssh", "hmi-01", "--", "echo started; read line; echo got-$line"],
                           env=broker_stack.env(broker_stack.home("vendor1")), stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert ssh.stdout is not None
    assert ssh.stdout.readline() == "started\n", gateway.log()
    kept = gateway.recordings / ".reports"

    broker_stack.stop()  # the plant's link to the broker goes down
    ssh.communicate("bye\n", timeout=30)  # the session ends meanwhile (or the gateway cut it: it cannot check)
    wait_for(lambda: kept.is_dir() and any(kept.glob("*.json")), "keeping the end report", gateway)
    time.sleep(6.0)  # longer than a late report's mark (broker.inventory.gateways.LATE_REPORT)
    broker_stack.start("broker")

    wait_for(lambda: not any(kept.glob("*.json")), "delivering the kept report", gateway, timeout=90)
    [ended] = broker_stack.grant_events("gateway:session:ended", grant["id"])
    recording = ended["details"]["recording"]
    assert recording["uploads"] is True
    assert ended["details"]["reported_after_seconds"] >= 6  # its time is the session's end, not the delivery's
    name = str(recording["name"])
    wait_for(lambda: (broker_stack.data / "recordings" / name).is_file() and not (gateway.recordings / name).exists(),
             "the upload after the outage", gateway)
    verified = json.loads(broker_stack.gatepass("audit", "verify", "--json", check=False).stdout)
    assert verified["chain_ok"] is True
    assert not [problem for problem in verified["recording_problems"] if ended["subject"] in problem]


def test_a_session_lost_with_a_crashed_gateway_is_ended_when_it_restarts(
        broker_stack: Stack, gateway: SeparateGateway) -> None:
    """The gateway dies (SIGKILL: a crash, a power cut) under a running session, so nobody reports its end; the
    broker ends it when the gateway registers again, instead of counting it open for ever."""
    grant = broker_stack.fresh_grant("hmi-01", "--for", "10m", "--reason", "e2e gateway crash")
    running = subprocess.Popen([GATEPASS, "ssh", "hmi-01", "--", "echo ready; sleep 600"],
                               env=broker_stack.env(broker_stack.home("vendor1")), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert running.stdout is not None
        assert running.stdout.readline().strip() == "ready", gateway.log()
        assert gateway.process is not None
        gateway.process.kill()
        gateway.process.wait()
        running.communicate(timeout=30)  # the vendor's connection went with the gateway
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert broker_stack.grant_events("gateway:session:ended", grant["id"]) == []
    gateway.start()
    [ended] = broker_stack.grant_events("gateway:session:ended", grant["id"])
    assert ended["details"]["reason"] == "gateway_lost"
    assert "restarted without it" in str(ended["details"]["detail"])


def test_a_retired_gateway_can_no_longer_let_anyone_in(broker_stack: Stack, gateway: SeparateGateway) -> None:
    # Last in this module: the gateway's credential is withdrawn for good.
    broker_stack.fresh_grant("hmi-01", "--for", "10m", "--reason", "e2e before retirement")
    running = subprocess.Popen([GATEPASS, "ssh", "hmi-01", "--", "echo ready; sleep 600"],
                               env=broker_stack.env(broker_stack.home("vendor1")), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert running.stdout is not None
    assert running.stdout.readline().strip() == "ready", gateway.log()
    retired = broker_stack.gatepass("admin", "gateway", "retire", "gw-plant-a", "--reason", "cabinet was opened")
    assert "Retired gateway gw-plant-a" in retired.stdout
    # The broker ended that session in its trail; the gateway hears at its event stream's next keepalive (15 s)
    # that it was retired, and cuts the session for real.
    _, err = running.communicate(timeout=40)
    assert running.returncode == 255, err + gateway.log()
    assert "the plant retired this gateway" in err

    result = broker_stack.gatepass("ssh", "hmi-01", "--", "echo should-not-run", user="vendor1", check=False)

    assert result.returncode != 0
    assert "should-not-run" not in result.stdout
    listed = json.loads(broker_stack.gatepass("admin", "gateway", "list", "--json").stdout)
    [row] = [row for row in listed if row["name"] == "gw-plant-a"]
    assert row["retired_at"] is not None
    assert row["sites"] == ["plant-a"]

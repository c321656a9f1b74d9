"""Supervision by default for high-criticality assets at new sites (issue 13), end to end: `gatepass serve` in its own
process, a new site and a high-criticality asset added with the admin commands and no supervision option at all,
the vendor's stock ssh through the real gateway to a real sshd, the plant's webhook receiving the link to watch the
session, and the supervisor following that link with `gatepass watch`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.approvals.test_notifications import WebhookReceiver
from tests.e2e.stack import Stack
from tests.e2e.test_live_watch import ECHO_LOOP, VendorSession, watcher
from tests.fixtures import database as test_databases
from tests.fixtures.ports import free_port
from tests.fixtures.sshd import OpenSSHServer

pytestmark = pytest.mark.slow


@dataclass
class NotifyingStack(Stack):
    """A stack whose broker announces requests and session starts to a webhook."""

    webhook_url: str = ""

    def env(self, home: object = None) -> dict[str, str]:
        env = super().env(home)  # type: ignore[arg-type]
        env["GATEPASS_NOTIFY_WEBHOOK"] = self.webhook_url
        return env


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, plant_machine: OpenSSHServer,
          webhook: WebhookReceiver) -> Iterator[NotifyingStack]:
    """plant-n, added with no supervision option; plc-n (high criticality, the sshd) in it; vendor1, two supervisors
    of plant-n (a high-criticality asset needs two approvals), security1."""
    root = tmp_path_factory.mktemp("gatepass")
    server = test_databases.postgres_server_url()
    database = test_databases.create_postgres_database(server) if server else \
        test_databases.create_sqlite_database(root)
    stack = NotifyingStack(root=root, http_port=free_port(), ssh_port=free_port(), database_url=database.url,
                           webhook_url=webhook.url)
    try:
        stack.init()
        added = stack.gatepass("admin", "site", "add", "plant-n").stdout
        assert "sessions to its high-criticality assets wait for a supervisor watching" in added
        added = stack.gatepass("admin", "asset", "add", "plc-n", "--site", "plant-n", "--host", plant_machine.host,
                               "--criticality", "high", "--ssh-port", str(plant_machine.port), "--ssh-user",
                               plant_machine.username, "--ssh-key-file", str(plant_machine.client_private_key),
                               "--host-key", plant_machine.host_key).stdout
        assert "supervision: required (high criticality, and plant-n supervises its high-criticality assets)" in added
        stack.add_user("vendor1", "vendor")
        stack.add_user("sup-n1", "supervisor", "plant-n")
        stack.add_user("sup-n2", "supervisor", "plant-n")
        stack.add_user("security1", "security")
        stack.start()
        for user in ("vendor1", "sup-n1", "sup-n2", "security1"):
            stack.login(user)
        yield stack
    finally:
        stack.stop()
        if server:
            test_databases.drop_postgres_database(server, database.name)


def test_a_high_criticality_asset_at_a_new_site_holds_the_session_until_a_supervisor_follows_the_link(
        stack: NotifyingStack, webhook: WebhookReceiver) -> None:
    request = stack.request("vendor1", "plc-n", "--for", "10m", "--reason", "PLC firmware, supervised")
    stack.approve("sup-n1", request["id"])
    stack.approve("sup-n2", request["id"])
    grant = stack.grant_of("vendor1", request["id"])
    vendor = VendorSession(stack, ECHO_LOOP, asset="plc-n")
    supervisor = None
    try:
        vendor.stderr.wait_for("gatepass: plc-n is supervised: this session starts when a supervisor of plant-n "
                               "watches it", timeout=15)
        session_id = stack.grant_event("gateway:session:started", grant["id"])["subject"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any("session" in body for body in webhook.bodies):
            time.sleep(0.1)
        [announced] = [body for body in webhook.bodies if "session" in body]
        assert announced["watch_url"] == f"{stack.base_url}/approvals/sessions/{session_id}/watch"
        assert announced["session"]["supervision_required"] is True
        assert "It waits until a supervisor of plant-n watches it." in announced["text"]
        assert vendor.stdout.so_far() == []  # held: the command has not run

        # The supervisor follows the link (here: its session id, with `gatepass watch`): the session starts.
        supervisor = watcher(stack, "sup-n1", announced["watch_url"].rsplit("/", 2)[-2])
        vendor.stderr.wait_for("gatepass: a supervisor of plant-n is watching: the session starts")
        started = vendor.stdout.wait_for("ready")
        assert vendor.stdout.seen.index(started) == 0  # nothing ran before: "ready" is the command's first line
        vendor.type("one")
        vendor.stdout.wait_for("vendor typed: one")
    finally:
        if supervisor is not None:
            supervisor.terminate()
            supervisor.communicate(timeout=10)
        vendor.close()
    created = [e for e in stack.audit_events() if e["action"] == "admin:site:created" and e["subject"] == "plant-n"]
    assert created[0]["details"]["supervise_high_criticality"] is True
    # One announcement of the session, whatever the rounds since.
    assert [body["session"]["id"] for body in webhook.bodies if "session" in body] == [session_id]

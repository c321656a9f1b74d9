"""Watching a TCP tunnel live (issue 13) end to end: `gatepass serve`, stock `ssh -N -L` through the gateway to a real
Modbus/TCP PLC (pymodbus) on a read-only grant, a supervisor watching in Chromium and a security reviewer with
`gatepass watch`: the connection, its bytes, a read and a refused write appear; End session cuts the tunnel."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.approvals.conftest import screenshot
from tests.e2e.stack import Stack
from tests.e2e.test_live_watch import Lines, sign_in, trail, watcher
from tests.e2e.test_tunnels import ASSET, _grant, _modbus, _stock_ssh, _wait_listening
from tests.fixtures.ports import free_port
from tests.gateway.modbus_plc import REGISTERS, UNIT, ModbusPlc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plc(stack: Stack) -> Iterator[ModbusPlc]:
    """A real PLC on port 502 of its own loopback address, as asset plc-m (Modbus/TCP) of plant-a."""
    server = ModbusPlc().start()
    try:
        stack.gatepass("admin", "asset", "add", ASSET, "--site", "plant-a", "--host", server.host, "--tcp-port", "502")
        yield server
    finally:
        server.stop()


def test_a_supervisor_watches_a_modbus_tunnel_and_ends_it(stack: Stack, plc: ModbusPlc, page: Any) -> None:
    sign_in(stack, page, "sup-tunnel")
    grant = _grant(stack, "502", read_only=True)
    local_port = free_port()
    ssh = _stock_ssh(stack, f"127.0.0.1:{local_port}:{ASSET}:502")
    observer: subprocess.Popen[str] | None = None
    lines = notes = None
    try:
        _wait_listening(local_port, ssh)  # a first, empty connection: the readiness probe
        stack.grant_events("gateway:session:ended", grant["id"], timeout=10)
        with _modbus(local_port) as client:
            started = stack.grant_events("gateway:session:started", grant["id"], count=2, timeout=10)
            session_id = started[-1]["subject"]

            # A supervisor of another plant may not watch it (refused, audited), as for a shell.
            refused = stack.gatepass("watch", session_id, user="sup-b", check=False, timeout=30)
            assert refused.returncode != 0
            assert "only supervisors of plant-a and security reviewers may watch" in refused.stderr

            # A security reviewer follows it in a terminal, the supervisor in the browser.
            observer = watcher(stack, "security1", session_id)
            assert observer.stdout is not None
            assert observer.stderr is not None
            lines, notes = Lines(observer.stdout), Lines(observer.stderr)
            hello = notes.wait_for(f"Watching session {session_id}: vendor1 on {ASSET} port 502 (plant-a)")
            assert "a tunnel has no terminal" in hello
            lines.wait_for("connection from 127.0.0.1:", timeout=15)  # the gateway's feed runs

            page.goto(stack.base_url + "/approvals")
            page.locator(f"tr[id='{session_id}']").get_by_role("link", name="Watch").click()
            page.wait_for_url(f"{stack.base_url}/approvals/sessions/{session_id}/watch")
            view = page.locator(".tunnel-watch")
            expect(view).to_have_attribute("data-state", "live")
            connection = view.locator("[data-watch=connections] tr")
            expect(connection).to_contain_text("127.0.0.1:", timeout=15_000)  # its feed started
            expect(connection.locator("td[data-label=Port]")).to_have_text("502")
            expect(page.get_by_label("Message to the vendor")).to_have_count(0)  # nothing can reach a tunnel's client

            assert client.read_holding_registers(0, count=len(REGISTERS), device_id=UNIT).registers == REGISTERS
            write = client.write_register(2, 9999, device_id=UNIT)
            assert write.isError()
            assert write.exception_code == 1  # ILLEGAL FUNCTION, from the gateway

            log = view.locator("[data-watch=requests]")
            expect(log).to_contain_text(f"unit 1 function 3 addresses 0-{len(REGISTERS) - 1} — Read Holding Registers")
            refusal = log.locator("li.refused")
            expect(refusal).to_have_count(1)
            expect(refusal).to_contain_text("function 6 addresses 2 — refused: Write Single Register is not a read "
                                            "and the grant is read-only")
            expect(connection.locator("td[data-label='To the asset']")).not_to_have_text("0 B", timeout=15_000)
            expect(connection.locator("td[data-label='From the asset']")).not_to_have_text("0 B", timeout=15_000)
            screenshot(page, "watch-tunnel")

            lines.wait_for(f"modbus unit 1 function 3 addresses 0-{len(REGISTERS) - 1}: Read Holding Registers")
            lines.wait_for("REFUSED modbus unit 1 function 6 addresses 2: Write Single Register is not a read")
            lines.wait_for("bytes: ", timeout=15)

            # A tunnel's client has no terminal: a message to the vendor is refused with the reason.
            token = json.loads((stack.home("security1") / "session.json").read_text())["token"]
            message = httpx.post(f"{stack.base_url}/api/v1/sessions/{session_id}/messages", json={"text": "hello"},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert message.status_code == 409
            assert "is a TCP tunnel: it has no terminal to show a message on" in message.text

            page.get_by_label("Reason (shown to the vendor)").fill("no PLC work during the batch run")
            with page.expect_response(lambda answer: answer.url.endswith(f"/sessions/{session_id}/end")) as posted:
                page.get_by_role("button", name="End session").click()
            assert posted.value.status == 303
            committed = time.monotonic()
            raw = client.socket
            assert raw is not None
            raw.settimeout(5)
            assert raw.recv(1) == b""  # the tunnel's connection is cut
            elapsed = time.monotonic() - committed
            assert elapsed < 1.0, f"the tunnel closed {elapsed:.2f} s after End session"
        ssh.wait(timeout=10)
        lines.wait_for("(closed")  # the last totals, and why
        notes.wait_for("The watch ended: the session ended")
    finally:
        if observer is not None:
            if observer.poll() is None:
                observer.terminate()
            observer.wait(timeout=10)
        for reader in (lines, notes):
            if reader is not None:
                reader.close()
        if ssh.poll() is None:
            ssh.kill()
        _, ssh_stderr = ssh.communicate(timeout=10)
    # stock ssh prints the disconnect reason: the observer's line
    assert "sup-tunnel (supervisor, plant-a) ended this session: no PLC work during the batch run" in ssh_stderr
    assert plc.registers() == REGISTERS  # the refused write never reached the PLC
    ended = stack.grant_events("gateway:session:ended", grant["id"], count=2, timeout=10)
    assert ended[-1]["subject"] == session_id
    assert ended[-1]["details"]["reason"] == "revoked"
    joined = trail(stack, "live:watch:joined", session_id, count=2)
    assert sorted((e["actor"], e["details"]["via"], e["details"]["announced"]) for e in joined) == [
        ("security1", "api", False), ("sup-tunnel", "web", False)]
    assert sorted(e["actor"] for e in trail(stack, "live:watch:left", session_id, count=2)) == [
        "security1", "sup-tunnel"]
    assert [e["actor"] for e in trail(stack, "live:watch:refused", session_id)] == ["sup-b"]

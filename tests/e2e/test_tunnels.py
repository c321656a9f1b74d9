"""TCP access end to end: a real Modbus/TCP PLC (pymodbus) behind `gatepass serve`, reached with
`gatepass tunnel` and with stock `ssh -N -L`; read-only grants, refusals, cut-off and the audit trail."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from tests.e2e.stack import GATEPASS, Stack
from tests.fixtures.ports import free_port
from tests.gateway.modbus_plc import REGISTERS, UNIT, ModbusPlc

pytestmark = pytest.mark.slow

ASSET = "plc-m"


class EchoServer:
    """A plain TCP service on the PLC's address (not Modbus), in a thread."""

    def __init__(self, host: str) -> None:
        self.host, self.port = host, free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(echo, self.host, self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def plc() -> Iterator[ModbusPlc]:
    server = ModbusPlc().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def echo(plc: ModbusPlc) -> Iterator[EchoServer]:
    server = EchoServer(plc.host)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def plc_asset(stack: Stack, plc: ModbusPlc, echo: EchoServer) -> str:
    """plc-m in plant-a: Modbus/TCP on 502 and a plain TCP service, at the PLC's loopback address, no SSH."""
    stack.gatepass("admin", "asset", "add", ASSET, "--site", "plant-a", "--host", plc.host,
                   "--tcp-port", "502", "--tcp-port", str(echo.port))
    return ASSET


@pytest.fixture(autouse=True)
def _registers_restored(plc: ModbusPlc) -> Iterator[None]:
    yield
    with ModbusTcpClient(plc.host, port=plc.port, timeout=5, retries=0) as client:
        client.write_registers(0, list(REGISTERS), device_id=UNIT)


def _grant(stack: Stack, *ports: str, read_only: bool = False, duration: str = "10m") -> dict[str, Any]:
    for old in stack.api_get("vendor1", f"/grants?asset={ASSET}&usable=true"):
        stack.gatepass("revoke", old["id"], user="vendor1")
    extra = ["--read-only"] if read_only else []
    request = stack.request("vendor1", ASSET, "--for", duration, "--reason", "PLC diagnostics", "--port", *ports,
                            *extra)
    stack.approve("sup-a1", request["id"])
    grant = stack.grant_of("vendor1", request["id"])
    stack.gatepass("ssh-config", user="vendor1")  # writes the certificate stock ssh uses below
    return grant


def _wait_listening(port: int, process: subprocess.Popen[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _start_tunnel(stack: Stack, port: int, local_port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen([GATEPASS, "tunnel", ASSET, "--port", str(port), "--local-port", str(local_port)],
                               env=stack.env(stack.home("vendor1")), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == f"{ASSET} port {port} is at 127.0.0.1:{local_port}\n"
    _wait_listening(local_port, process)
    return process


def _stock_ssh(stack: Stack, *forwards: str) -> subprocess.Popen[str]:
    home = stack.home("vendor1")
    argv = ["ssh", "-N", "-p", str(stack.ssh_port), "-i", str(home / "id_ed25519"),
            "-o", f"CertificateFile={home / 'certs' / f'{ASSET}-cert.pub'}", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes"]
    for forward in forwards:
        argv += ["-L", forward]
    return subprocess.Popen([*argv, f"{ASSET}@127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


# How often a stock ssh that has not exited yet gets SIGTERM again. OpenSSH before 9.6 (Debian 12 ships 9.2p1) checks
# its quit flag and then calls poll() with the signal unblocked (bz3531, fixed upstream by blocking the signals and
# using ppoll): a SIGTERM that lands in between is taken but ssh sleeps on in poll() until a socket wakes it or its
# keep-alive timer fires, 300 s under BatchMode (a Debian default). Under load the signal hits that window when it is
# sent just after ssh closed a refused forward's connection. A second signal interrupts the poll() and ssh exits.
SSH_TERM_AGAIN = 1.0


def _stop(process: subprocess.Popen[str], *, term_again: float | None = None) -> tuple[int, str]:
    """SIGTERM (again every ``term_again`` s if given), then what the process said. A process still running 15 s
    later is killed and reaped (a Popen left running fails the next test's set-up) and fails the test."""
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        left = max(0.0, deadline - time.monotonic())
        try:
            _, stderr = process.communicate(timeout=min(term_again or left, left))
        except subprocess.TimeoutExpired:
            if time.monotonic() < deadline:
                continue
            process.kill()
            _, stderr = process.communicate()
            raise AssertionError(f"{process.args[0]} did not exit within 15 s of SIGTERM; it said: {stderr}") \
                from None
        return process.returncode, stderr


def _stop_ssh(ssh: subprocess.Popen[str]) -> tuple[int, str]:
    return _stop(ssh, term_again=SSH_TERM_AGAIN)


def _modbus(port: int) -> ModbusTcpClient:
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    assert client.connect()
    return client


def test_read_and_write_through_gatepass_tunnel(stack: Stack, plc: ModbusPlc, plc_asset: str) -> None:
    grant = _grant(stack, "502")
    local_port = free_port()
    tunnel = _start_tunnel(stack, 502, local_port)
    try:
        with _modbus(local_port) as client:
            assert client.read_holding_registers(0, count=len(REGISTERS), device_id=UNIT).registers == REGISTERS
            assert not client.write_register(4, 4242, device_id=UNIT).isError()
        with _modbus(local_port) as client:  # a second connection through the same tunnel
            assert client.read_holding_registers(4, count=1, device_id=UNIT).registers == [4242]
    finally:
        code, stderr = _stop(tunnel)
    assert code == 0, stderr
    assert "tunnel stopped" in stderr
    assert plc.registers()[4] == 4242
    # Three connections: the readiness probe of _start_tunnel and the two Modbus clients.
    ended = stack.grant_events("gateway:session:ended", grant["id"], count=3, timeout=10)
    started = stack.grant_events("gateway:session:started", grant["id"], count=3, timeout=10)
    assert [(e["details"]["kind"], e["details"]["port"]) for e in started] == [("tcp", 502)] * 3
    with_bytes = [e for e in ended if e["details"]["bytes_in"] > 0 and e["details"]["bytes_out"] > 0]
    assert len(with_bytes) == 2
    assert {e["details"]["reason"] for e in ended} == {"client_closed"}
    # What each Modbus connection asked, for the watcher's baselines (the probe asked nothing: no event).
    activity = stack.grant_events("gateway:modbus:activity", grant["id"], count=2, timeout=10)
    assert sorted((e["details"]["functions"], e["details"]["registers"]) for e in activity) == sorted([
        ("3:1,6:1", f"3:0-{len(REGISTERS) - 1};6:4"), ("3:1", "3:4")])


def test_read_only_grant_through_stock_ssh(stack: Stack, plc: ModbusPlc, plc_asset: str) -> None:
    grant = _grant(stack, "502", read_only=True)
    local_port = free_port()
    ssh = _stock_ssh(stack, f"127.0.0.1:{local_port}:{ASSET}:502")
    try:
        _wait_listening(local_port, ssh)
        with _modbus(local_port) as client:
            assert client.read_holding_registers(0, count=len(REGISTERS), device_id=UNIT).registers == REGISTERS
            refused = client.write_register(2, 9999, device_id=UNIT)
            assert refused.isError()
            assert refused.exception_code == 1  # ILLEGAL FUNCTION, answered by the gateway
            assert client.read_holding_registers(2, count=1, device_id=UNIT).registers == [REGISTERS[2]]
    finally:
        _stop_ssh(ssh)
    assert plc.registers() == REGISTERS
    (event,) = stack.grant_events("gateway:modbus:write_refused", grant["id"], timeout=10)
    assert event["outcome"] == "refused"
    assert (event["details"]["function_code"], event["details"]["unit_id"]) == (6, UNIT)
    assert event["details"]["port"] == 502
    # The refused write is part of what the connection asked.
    (activity,) = stack.grant_events("gateway:modbus:activity", grant["id"], timeout=10)
    assert (activity["details"]["functions"], activity["details"]["registers"]) == (
        "3:2,6:1", f"3:0-{len(REGISTERS) - 1};6:2")


def test_other_ports_and_hosts_are_refused_with_the_reason(stack: Stack, echo: EchoServer, plc_asset: str) -> None:
    _grant(stack, "502")
    other_port, other_host = free_port(), free_port()
    ssh = _stock_ssh(stack, f"127.0.0.1:{other_port}:{ASSET}:{echo.port}", f"127.0.0.1:{other_host}:10.9.9.9:502")
    try:
        _wait_listening(other_port, ssh)
        for port in (other_port, other_host):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.settimeout(5)
                assert conn.recv(1) == b""  # ssh closes the local connection it could not forward
    finally:
        _, stderr = _stop_ssh(ssh)
    assert f"administratively prohibited: port {echo.port} on {ASSET} is not part of this grant (granted: 502)" \
        in stderr
    assert f"administratively prohibited: this grant reaches {ASSET} only, not 10.9.9.9" in stderr


def test_read_only_on_a_port_without_a_filter_is_refused(stack: Stack, echo: EchoServer, plc_asset: str) -> None:
    """The broker refuses a read-only request it could not enforce (the gateway refuses such a forward too,
    tests/gateway/test_readonly.py, for grants made before this rule)."""
    refused = stack.gatepass("request", ASSET, "--for", "10m", "--reason", "PLC diagnostics", "--port",
                             str(echo.port), "--read-only", user="vendor1", check=False)
    assert refused.returncode == 1
    assert f"read-only access is only available for Modbus/TCP (port 502), not port {echo.port}" in refused.stderr


def test_revocation_cuts_an_open_tunnel_within_a_second(stack: Stack, plc_asset: str) -> None:
    grant = _grant(stack, "502")
    local_port = free_port()
    tunnel = _start_tunnel(stack, 502, local_port)
    try:
        with _modbus(local_port) as client:
            assert client.read_holding_registers(0, count=1, device_id=UNIT).registers == REGISTERS[:1]
            raw = client.socket
            assert raw is not None
            stack.grant_events("gateway:session:started", grant["id"], timeout=10)
            revoked_at = time.monotonic()
            stack.gatepass("revoke", grant["id"], user="sup-a1")
            raw.settimeout(5)
            assert raw.recv(1) == b""
            assert time.monotonic() - revoked_at < 1.0 + 0.5  # the revoke command's own start-up is inside this
        code = tunnel.wait(15)
    finally:
        code, stderr = _stop(tunnel)
    assert code == 1
    assert f"your grant {grant['id']} for {ASSET} was revoked: the tunnel is closed" in stderr
    # The readiness probe, then the client.
    ended = stack.grant_events("gateway:session:ended", grant["id"], count=2, timeout=10)
    assert [e["details"]["reason"] for e in ended] == ["client_closed", "revoked"]


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_tunnel_comes_back_after_ssh_dies_and_ends_with_the_grant(stack: Stack, plc_asset: str) -> None:
    grant = _grant(stack, "502", duration="20s")
    local_port = free_port()
    tunnel = _start_tunnel(stack, 502, local_port)
    try:
        (ssh_pid,) = _children(tunnel.pid)
        os.kill(ssh_pid, signal.SIGKILL)  # the link dies under ssh
        time.sleep(0.2)
        _wait_listening(local_port, tunnel)
        assert _children(tunnel.pid) != [ssh_pid]
        with _modbus(local_port) as client:
            assert client.read_holding_registers(0, count=1, device_id=UNIT).registers == REGISTERS[:1]
        code = tunnel.wait(40)
    finally:
        code, stderr = _stop(tunnel)
    assert "the tunnel dropped" in stderr
    assert "reconnecting in 0.5 s" in stderr
    assert code == 0
    assert f"your grant {grant['id']} for {ASSET} ended at " in stderr


def test_tunnel_notices_a_dead_link_and_comes_back(stack: Stack, plc_asset: str) -> None:
    """The link to the gateway turns into a black hole (its relay is frozen): ssh's keep-alives notice it
    within about 20 s, and the tunnel comes back over a fresh link while the grant lasts."""
    _grant(stack, "502")
    local_port = free_port()
    env = stack.env(stack.home("vendor1")) | {"GATEPASS_SSH_BIN": "ssh -o 'ProxyCommand=socat - TCP:%h:%p'"}
    tunnel = subprocess.Popen([GATEPASS, "tunnel", ASSET, "--port", "502", "--local-port", str(local_port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    frozen: list[int] = []
    try:
        _wait_listening(local_port, tunnel)
        (ssh_pid,) = _children(tunnel.pid)
        frozen = _children(ssh_pid)  # the relay (socat) standing for the network path
        assert len(frozen) == 1
        os.kill(frozen[0], signal.SIGSTOP)
        dropped_at = time.monotonic()
        deadline = dropped_at + 40
        while time.monotonic() < deadline and _children(tunnel.pid) in ([ssh_pid], []):
            time.sleep(0.2)
        noticed = time.monotonic() - dropped_at
        # ssh gives up when a 4th ask would go out unanswered: 4 x ServerAliveInterval (5 s) = about 20 s.
        assert noticed < 30, f"the dead link went unnoticed for {noticed:.1f} s"
        _wait_listening(local_port, tunnel)
        with _modbus(local_port) as client:
            assert client.read_holding_registers(0, count=1, device_id=UNIT).registers == REGISTERS[:1]
    finally:
        for pid in frozen:  # first: the frozen relay still holds the tunnel's stderr open
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        code, stderr = _stop(tunnel)
    assert "the tunnel dropped (ssh exited with status 255)" in stderr
    assert code == 0


def test_connections_opened_at_once_are_each_audited_and_all_cut_with_the_grant(
        stack: Stack, echo: EchoServer, plc_asset: str) -> None:
    """Issue 14: the gateway records the starts that arrive together in one call to the broker; every connection
    is still its own session with its own audit event, and the revocation still cuts every one."""
    grant = _grant(stack, str(echo.port))
    local_port = free_port()
    ssh = _stock_ssh(stack, f"127.0.0.1:{local_port}:{ASSET}:{echo.port}")
    sockets: list[socket.socket] = []
    try:
        _wait_listening(local_port, ssh)  # a first connection (its own session), closed at once
        sockets = [socket.create_connection(("127.0.0.1", local_port), timeout=10) for _ in range(100)]
        for index, sock in enumerate(sockets):
            sock.sendall(f"{index:03d}".encode())
        assert [sock.recv(3) for sock in sockets] == [f"{index:03d}".encode() for index in range(100)]

        started = stack.grant_events("gateway:session:started", grant["id"], count=101, timeout=20)
        assert len(started) == 101
        assert len({event["subject"] for event in started}) == 101
        assert {event["details"]["port"] for event in started} == {echo.port}

        stack.gatepass("revoke", grant["id"], user="sup-a1")
        for sock in sockets:
            sock.settimeout(5)
            assert sock.recv(1) == b""
        ended = stack.grant_events("gateway:session:ended", grant["id"], count=101, timeout=20)
        assert len(ended) == 101
        assert sorted(event["details"]["reason"] for event in ended) == ["client_closed"] + ["revoked"] * 100
    finally:
        for sock in sockets:
            sock.close()
        _stop_ssh(ssh)

"""A TCP tunnel at a site that requires supervision (issue 13), end to end: `gatepass serve` in its own process, stock
`ssh -N -L` through the real gateway to a TCP service of the plant, a supervisor of the site following the session
with `gatepass watch`: bytes reach the service only while the supervisor watches; after they stop watching, the
tunnel is held and then cut after the site's grace; the supervisor's page shows the held session with `Watch`."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.stack import GATEPASS, Stack
from tests.e2e.test_live_watch import Lines, sign_in, trail, watcher
from tests.fixtures.ports import free_port

pytestmark = pytest.mark.slow

ASSET = "echo-t"
SITE = "plant-t"
NOTE = "supervision required: the session waits for a supervisor of the site watching"


class _Echo(socketserver.BaseRequestHandler):
    server: RecordingEcho

    def handle(self) -> None:
        self.server.connections += 1
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                with self.server.lock:
                    self.server.received += data
                self.request.sendall(data)


class RecordingEcho(socketserver.ThreadingTCPServer):
    """A plant service on loopback that echoes and keeps everything that reached it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.connections = 0
        self.received = b""
        self.lock = threading.Lock()
        self.port: int = self.server_address[1]

    def seen(self) -> bytes:
        with self.lock:
            return self.received


@pytest.fixture(scope="module")
def service() -> Iterator[RecordingEcho]:
    server = RecordingEcho()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def supervised_site(stack: Stack, service: RecordingEcho) -> str:
    """plant-t requires supervision (grace 5 s); echo-t is its TCP service; sup-t supervises it (signed in)."""
    stack.gatepass("admin", "site", "add", SITE)
    stack.gatepass("admin", "site", "set", SITE, "--supervision", "required", "--supervision-grace", "5s")
    stack.gatepass("admin", "asset", "add", ASSET, "--site", SITE, "--host", "127.0.0.1",
                   "--tcp-port", str(service.port))
    stack.add_user("sup-t", "supervisor", SITE)
    stack.login("sup-t")
    return SITE


def _stock_ssh(stack: Stack, forward: str) -> subprocess.Popen[str]:
    home = stack.home("vendor1")
    return subprocess.Popen([
        "ssh", "-N", "-p", str(stack.ssh_port), "-i", str(home / "id_ed25519"),
        "-o", f"CertificateFile={home / 'certs' / f'{ASSET}-cert.pub'}", "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-L", forward, f"{ASSET}@127.0.0.1",
    ], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _connect_when_listening(port: int, ssh: subprocess.Popen[str], timeout: float = 15) -> socket.socket:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert ssh.poll() is None, ssh.communicate()
        with contextlib.suppress(OSError):
            return socket.create_connection(("127.0.0.1", port), timeout=1)
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _nothing_comes(sock: socket.socket, seconds: float) -> None:
    sock.settimeout(seconds)
    with pytest.raises(TimeoutError):
        sock.recv(1)


def _receive(sock: socket.socket, size: int, timeout: float = 15) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the tunnel closed after {data!r}"
        data += chunk
    return data


def test_a_supervised_tunnel_relays_only_while_a_supervisor_watches_and_is_cut_after_the_grace(
        stack: Stack, service: RecordingEcho, supervised_site: str, page: Any) -> None:
    grant = stack.fresh_grant(ASSET, "--for", "10m", "--reason", "supervised tunnel", "--port", str(service.port),
                              approver="sup-t")
    stack.gatepass("ssh-config", user="vendor1")  # writes the certificate stock ssh uses
    local_port = free_port()
    ssh = _stock_ssh(stack, f"127.0.0.1:{local_port}:{ASSET}:{service.port}")
    observer: subprocess.Popen[str] | None = None
    lines = None
    try:
        client = _connect_when_listening(local_port, ssh)
        with client:
            started = stack.grant_events("gateway:session:started", grant["id"], timeout=15)
            session_id = started[-1]["subject"]
            client.sendall(b"before anyone watched\n")
            _nothing_comes(client, 1.5)
            assert (service.connections, service.seen()) == (0, b"")  # the service was not even connected

            # The supervisor's page lists the held tunnel with Watch and says it waits for a supervisor.
            sign_in(stack, page, "sup-t-web", SITE)
            row = page.locator(f"tr[id='{session_id}']")
            expect(row).to_contain_text(NOTE)
            expect(row.get_by_role("link", name="Watch")).to_have_attribute(
                "href", f"/approvals/sessions/{session_id}/watch")
            assert service.seen() == b""  # loading the page watches nothing

            # The supervisor follows it in a terminal: the held bytes go through, then everything else.
            observer = watcher(stack, "sup-t", session_id)
            assert observer.stdout is not None
            lines = Lines(observer.stdout)
            assert _receive(client, 22) == b"before anyone watched\n"
            client.sendall(b"while watched\n")
            assert _receive(client, 14) == b"while watched\n"
            lines.wait_for(f"gatepass: {ASSET} is supervised: nothing is relayed on this connection until a "
                           f"supervisor of {SITE} watches it")
            lines.wait_for(f"gatepass: a supervisor of {SITE} is watching: the connection is relayed")

            # The supervisor stops watching: held both ways, then cut after the 5 s grace.
            observer.terminate()
            observer.wait(timeout=10)
            left = time.monotonic()
            time.sleep(0.5)  # the broker hears the watch end and tells the gateway: let the hold begin first
            client.sendall(b"after the supervisor left\n")
            client.settimeout(15)
            assert client.recv(64) == b""  # nothing echoed: the connection is cut
            waited = time.monotonic() - left
            assert 4.0 < waited < 10.0, f"cut {waited:.1f} s after the supervisor left (grace 5 s)"
        ssh.wait(timeout=15)
    finally:
        if observer is not None:
            if observer.poll() is None:
                observer.terminate()
            observer.wait(timeout=10)
            assert observer.stderr is not None
            observer.stderr.close()
        if lines is not None:
            lines.close()
        if ssh.poll() is None:
            ssh.kill()
        _, ssh_stderr = ssh.communicate(timeout=10)
    assert service.seen() == b"before anyone watched\nwhile watched\n"  # held bytes never reached the service
    assert f"no supervisor of {SITE} watched it for 5 s, and the site requires one" in ssh_stderr
    ended = stack.grant_event("gateway:session:ended", grant["id"])
    assert ended["subject"] == session_id
    assert (ended["details"]["reason"], ended["details"]["detail"]) == ("revoked", "unsupervised")
    assert [e["actor"] for e in trail(stack, "live:watch:joined", session_id)] == ["sup-t"]
    assert [e["actor"] for e in trail(stack, "live:watch:left", session_id)] == ["sup-t"]


def test_gatepass_tunnel_says_up_front_that_connections_wait_for_a_supervisor(
        stack: Stack, service: RecordingEcho, supervised_site: str) -> None:
    """A held tunnel gives the engineering tool no answer, and the gateway has no terminal to say why: the grant
    says the asset is supervised, and `gatepass tunnel` tells the vendor when it starts (an unsupervised one not)."""
    stack.fresh_grant(ASSET, "--for", "10m", "--reason", "supervised tunnel note", "--port", str(service.port),
                      approver="sup-t")
    assert [g["supervision_required"] for g in stack.api_get("vendor1", f"/grants?asset={ASSET}&usable=true")] == [
        True]
    local_port = free_port()
    tunnel = subprocess.Popen([GATEPASS, "tunnel", ASSET, "--port", str(service.port), "--local-port",
                               str(local_port)], env=stack.env(stack.home("vendor1")), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert tunnel.stderr is not None
        said = ""
        deadline = time.monotonic() + 30
        while "requires a supervisor" not in said and time.monotonic() < deadline and tunnel.poll() is None:
            said += tunnel.stderr.readline()
    finally:
        tunnel.terminate()  # stops its ssh too, even one still starting (cli/tunnel_keeper.py)
        try:
            tunnel.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            tunnel.kill()
            tunnel.communicate(timeout=15)
            raise
    assert (f"{ASSET} requires a supervisor of its site to watch every session: each connection waits, with "
            "nothing reaching the machine, until one watches it") in said

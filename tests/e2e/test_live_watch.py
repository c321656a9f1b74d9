"""Live supervision end to end (issue 13): `gatepass serve` in its own process, the stock ssh client through the real
gateway to a real sshd, observers with `gatepass watch`, a raw HTTP client that never reads, and Chromium."""

from __future__ import annotations

import io
import json
import queue
import socket
import subprocess
import threading
import time
from typing import IO, Any

import pyotp
import pytest
from playwright.sync_api import expect

from tests.approvals.conftest import screenshot
from tests.e2e.stack import GATEPASS, Stack
from tests.fixtures.sshd import OpenSSHServer

pytestmark = pytest.mark.slow

ECHO_LOOP = 'echo ready; while read line; do echo "vendor typed: $line"; done'


class Lines:
    """A pipe read line by line in a thread, so a test can wait for a line with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._stream = stream
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Once the writer is gone: the reader has met the end of the pipe; close it."""
        self._thread.join(timeout=10)
        self._stream.close()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def so_far(self) -> list[str]:
        """Every line read until now (without waiting for more)."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.seen
            if line is None:
                self._queue.put(None)  # the end stays visible to wait_for
                return self.seen
            self.seen.append(line)

    def to_the_end(self, timeout: float = 10) -> list[str]:
        """Every line, once the writer has closed the pipe (its process ended)."""
        self._thread.join(timeout)
        return self.so_far()

    def wait_for(self, text: str, timeout: float = 10) -> str:
        for line in self.seen:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} did not appear within {timeout} s; seen: {self.seen[-20:]}")


class VendorSession:
    """vendor1's stock ssh (through `gatepass ssh`) running ``command`` on ``asset``, stdin open."""

    def __init__(self, stack: Stack, command: str, asset: str = "hmi-01") -> None:
        self.process = subprocess.Popen([GATEPASS, "ssh", asset, "--", command],
                                        env=stack.env(stack.home("vendor1")), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.stdout = Lines(self.process.stdout)
        self.stderr = Lines(self.process.stderr)

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.stdout.close()
        self.stderr.close()


def live_session(stack: Stack, command: str = ECHO_LOOP) -> tuple[VendorSession, str, str]:
    """A fresh grant on hmi-01 and a vendor session running ``command``: (session, its id, the grant id)."""
    grant = stack.fresh_grant("hmi-01", "--for", "10m", "--reason", "live supervision test")
    vendor = VendorSession(stack, command)
    vendor.stdout.wait_for("ready", timeout=15)
    started = stack.grant_event("gateway:session:started", grant["id"])
    return vendor, started["subject"], grant["id"]


def watcher(stack: Stack, user: str, session_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen([GATEPASS, "watch", session_id], env=stack.env(stack.home(user)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)


def trail(stack: Stack, action: str, session_id: str, *, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in stack.audit_events() if e["action"] == action and e["subject"] == session_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_gatepass_watch_prints_the_session_and_the_vendor_sees_who_watches(stack: Stack) -> None:
    vendor, session_id, grant_id = live_session(stack)
    observer = watcher(stack, "sup-a1", session_id)
    assert observer.stdout is not None
    assert observer.stderr is not None
    shown, notes = Lines(observer.stdout), Lines(observer.stderr)
    try:
        notes.wait_for(f"Watching session {session_id}: vendor1 on hmi-01 (plant-a)")
        vendor.stderr.wait_for("gatepass: sup-a1 (supervisor, plant-a) is watching this session")
        vendor.type("hello observer")
        vendor.stdout.wait_for("vendor typed: hello observer")
        shown.wait_for("vendor typed: hello observer")
        shown.wait_for("sup-a1 (supervisor, plant-a) is watching this session")  # the notice is in the feed too
    finally:
        observer.terminate()
        observer.wait(timeout=10)
        shown.close()
        notes.close()
    vendor.stderr.wait_for("gatepass: sup-a1 (supervisor, plant-a) stopped watching")
    vendor.type("still here")
    vendor.stdout.wait_for("vendor typed: still here")  # leaving changes nothing for the vendor
    vendor.close()
    joined = trail(stack, "live:watch:joined", session_id)
    assert [(e["actor"], e["details"]["grant"], e["details"]["via"]) for e in joined] == [
        ("sup-a1", grant_id, "api")]
    left = trail(stack, "live:watch:left", session_id)
    assert [e["actor"] for e in left] == ["sup-a1"]


def test_a_supervisor_of_another_site_may_not_watch_and_is_audited(stack: Stack) -> None:
    vendor, session_id, _grant_id = live_session(stack)
    try:
        refused = stack.gatepass("watch", session_id, user="sup-b", check=False, timeout=30)
        assert refused.returncode != 0
        assert "only supervisors of plant-a and security reviewers may watch" in refused.stderr
        # A vendor, even the one whose session it is, cannot watch either.
        own = stack.gatepass("watch", session_id, user="vendor1", check=False, timeout=30)
        assert own.returncode != 0
        assert "vendor1 is neither" in own.stderr
        assert not any("watching" in line for line in vendor.stderr.so_far())
    finally:
        vendor.close()
    refusals = trail(stack, "live:watch:refused", session_id, count=2)
    assert sorted(e["actor"] for e in refusals) == ["sup-b", "vendor1"]
    assert {e["outcome"] for e in refusals} == {"refused"}
    assert trail(stack, "live:watch:joined", session_id, timeout=0) == []


def stalled_observer(stack: Stack, user: str, session_id: str) -> socket.socket:
    """An observer that asks for the stream and then never reads a byte (a stopped browser, a frozen laptop)."""
    token = json.loads((stack.home(user) / "session.json").read_text())["token"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window that fills at once
    sock.connect(("127.0.0.1", stack.http_port))
    sock.sendall(f"GET /api/v1/sessions/{session_id}/watch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


BULK_BYTES = 30_000_000


def timed_bulk_output(stack: Stack, *, stall: int) -> float:
    """Seconds for 30 MB of terminal text to reach vendor1's ssh, with ``stall`` observers that never read."""
    stack.fresh_grant("hmi-01", "--for", "10m", "--reason", "bulk output under watch")
    command = f"echo ready; read go; head -c {BULK_BYTES} /dev/zero | tr '\\0' x"
    process = subprocess.Popen([GATEPASS, "ssh", "hmi-01", "--", command], env=stack.env(stack.home("vendor1")),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    notices = Lines(io.TextIOWrapper(process.stderr))
    sockets: list[socket.socket] = []
    try:
        assert process.stdout.readline() == b"ready\n"
        started_event = [e for e in stack.audit_events() if e["action"] == "gateway:session:started"][-1]
        observers = ("sup-a1", "sup-a2", "security1")[:stall]
        sockets = [stalled_observer(stack, user, started_event["subject"]) for user in observers]
        for user in observers:
            notices.wait_for(f"gatepass: {user} (")  # "... is watching this session": the feed runs
        started = time.monotonic()
        process.stdin.write(b"go\n")
        process.stdin.flush()
        received = 0
        while chunk := process.stdout.read1(1 << 20):
            received += len(chunk)
        elapsed = time.monotonic() - started
        assert received == BULK_BYTES  # everything arrived, in full
        return elapsed
    finally:
        for sock in sockets:
            sock.close()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        process.stdin.close()
        process.stdout.close()
        notices.close()


def test_stalled_observers_do_not_slow_the_session(stack: Stack) -> None:
    unwatched = timed_bulk_output(stack, stall=0)
    watched = timed_bulk_output(stack, stall=3)
    # Bounded: the session never waits for an observer (each one's queue drops its oldest frames instead).
    assert watched < unwatched * 1.5 + 1.0, f"unwatched {unwatched:.2f} s, with 3 stalled observers {watched:.2f} s"


def sign_in(stack: Stack, page: Any, user: str, site: str = "plant-a") -> None:
    """A new supervisor of ``site``, signed in in the browser (first sign-in: password, code, enrolment code)."""
    stack.add_user(user, "supervisor", site)
    creds = stack.users[user]
    page.goto(stack.base_url + "/sign-in")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(creds["password"])
    page.get_by_label("One-time code").fill(pyotp.TOTP(creds["totp_secret"]).now())
    page.get_by_label("Enrolment code").fill(creds["enrolment_code"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(stack.base_url + "/approvals")


def test_the_watch_view_follows_the_session_sends_a_message_and_ends_it(stack: Stack, page: Any) -> None:
    sign_in(stack, page, "sup-watch")
    vendor, session_id, grant_id = live_session(stack)
    try:
        row = page.locator(f"tr[id='{session_id}']")
        row.get_by_role("link", name="Watch").click(timeout=6_000)
        page.wait_for_url(f"{stack.base_url}/approvals/sessions/{session_id}/watch")
        expect(page.locator(".watch")).to_have_attribute("data-state", "live")
        vendor.stderr.wait_for("gatepass: sup-watch (supervisor, plant-a) is watching this session")

        vendor.type("reading tag TIC-101")
        vendor.stdout.wait_for("vendor typed: reading tag TIC-101")
        screen = page.locator("pre.terminal")
        expect(screen).to_contain_text("vendor typed: reading tag TIC-101")

        page.get_by_label("Message to the vendor").fill("please stop before touching the PLC")
        page.get_by_role("button", name="Send message").click()
        vendor.stderr.wait_for("gatepass: message from sup-watch (supervisor, plant-a): please stop before "
                               "touching the PLC")
        expect(page.locator("[data-watch=notices]")).to_contain_text("please stop before touching the PLC")
        screenshot(page, "watch")

        page.get_by_label("Reason (shown to the vendor)").fill("unplanned change on the boiler line")
        with page.expect_response(lambda answer: answer.url.endswith(f"/sessions/{session_id}/end")) as posted:
            page.get_by_role("button", name="End session").click()
        assert posted.value.status == 303
        committed = time.monotonic()  # the answer comes after the revocation committed
        vendor.process.wait(timeout=10)
        elapsed = time.monotonic() - committed
        assert elapsed < 1.0, f"the session ended {elapsed:.2f} s after End session"
        vendor.stderr.wait_for("gatepass: sup-watch (supervisor, plant-a) ended this session: unplanned change on "
                               "the boiler line", timeout=2)
    finally:
        vendor.close()
    ended = stack.grant_event("gateway:session:ended", grant_id)
    assert ended["details"]["reason"] == "revoked"
    revoked = [e for e in stack.audit_events() if e["action"] == "access:grant:revoked" and e["subject"] == grant_id]
    assert revoked[-1]["actor"] == "sup-watch"
    assert "unplanned change on the boiler line" in revoked[-1]["details"]["reason"]
    sent = trail(stack, "live:message:sent", session_id)
    assert sent[0]["details"]["message"] == "please stop before touching the PLC"
    assert [e["details"]["via"] for e in trail(stack, "live:watch:joined", session_id)] == ["web"]


def test_a_supervised_site_holds_sessions_until_a_supervisor_watches_and_cuts_them_after_the_last_left(
        stack: Stack, plant_machine: OpenSSHServer) -> None:
    stack.gatepass("admin", "site", "add", "plant-s")
    changed = stack.gatepass("admin", "site", "set", "plant-s", "--supervision", "required", "--supervision-grace",
                             "5s").stdout
    assert "supervision required off -> on" in changed
    stack.gatepass("admin", "asset", "add", "hmi-s", "--site", "plant-s", "--host", plant_machine.host,
                   "--ssh-port", str(plant_machine.port), "--ssh-user", plant_machine.username,
                   "--ssh-key-file", str(plant_machine.client_private_key), "--host-key", plant_machine.host_key)
    stack.add_user("sup-s", "supervisor", "plant-s")
    stack.login("sup-s")
    grant = stack.fresh_grant("hmi-s", "--for", "10m", "--reason", "supervised work", approver="sup-s")
    vendor = VendorSession(stack, ECHO_LOOP, asset="hmi-s")
    reviewer = supervisor = None
    try:
        vendor.stderr.wait_for("gatepass: hmi-s is supervised: this session starts when a supervisor of plant-s "
                               "watches it", timeout=15)
        session_id = stack.grant_event("gateway:session:started", grant["id"])["subject"]
        # A security reviewer may watch, but is not the plant's supervisor: the session still waits.
        reviewer = watcher(stack, "security1", session_id)
        vendor.stderr.wait_for("gatepass: security1 (security) is watching this session")
        supervisor = watcher(stack, "sup-s", session_id)
        vendor.stderr.wait_for("gatepass: a supervisor of plant-s is watching: the session starts")
        started = vendor.stdout.wait_for("ready")
        assert vendor.stdout.seen.index(started) == 0  # nothing ran before: "ready" is the command's first line
        vendor.type("one")
        vendor.stdout.wait_for("vendor typed: one")

        supervisor.terminate()
        supervisor.wait(timeout=10)
        vendor.stderr.wait_for("gatepass: no supervisor of plant-s is watching: your input is held, and the "
                               "session ends in 5 s unless one watches again")
        held = time.monotonic()
        vendor.type("two")
        vendor.process.wait(timeout=15)
        waited = time.monotonic() - held
        assert 4.0 < waited < 7.0, f"cut {waited:.1f} s after the last supervisor left (grace 5 s)"
        vendor.stderr.wait_for("no supervisor of plant-s watched it for 5 s, and the site requires one", timeout=2)
        assert not any("vendor typed: two" in line for line in vendor.stdout.to_the_end())  # held input never ran
    finally:
        for process in (reviewer, supervisor):
            if process is not None:
                process.terminate()
                process.communicate(timeout=10)
        vendor.close()
    ended = stack.grant_event("gateway:session:ended", grant["id"])
    assert (ended["details"]["reason"], ended["details"]["detail"]) == ("revoked", "unsupervised")
    updated = [e for e in stack.audit_events() if e["action"] == "admin:site:updated" and e["subject"] == "plant-s"]
    assert updated[-1]["details"]["supervision_required"] == {"old": False, "new": True}

    # SFTP cannot be watched yet: on a supervised site it does not run at all (fail closed).
    stack.fresh_grant("hmi-s", "--for", "10m", "--reason", "supervised transfer", approver="sup-s")
    stack.gatepass("ssh-config", user="vendor1")  # writes the certificate and pins the gateway's key
    home = stack.home("vendor1")
    sftp = subprocess.run([
        "sftp", "-P", str(stack.ssh_port), "-i", str(home / "id_ed25519"),
        "-o", f"CertificateFile={home / 'certs' / 'hmi-s-cert.pub'}", "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-b", "-", "hmi-s@127.0.0.1",
    ], input="ls\n", capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert sftp.returncode != 0
    assert "an SFTP session cannot be watched" in sftp.stderr


def test_a_watch_ends_when_the_observer_may_no_longer_watch(stack: Stack) -> None:
    stack.add_user("sup-leaving", "supervisor", "plant-a")
    stack.login("sup-leaving")
    vendor, session_id, _grant_id = live_session(stack)
    observer = watcher(stack, "sup-leaving", session_id)
    try:
        vendor.stderr.wait_for("gatepass: sup-leaving (supervisor, plant-a) is watching this session")
        stack.gatepass("admin", "identity", "suspend", "sup-leaving", "--reason", "left the company")
        # Asked again within RECHECK_SECONDS (10 s): the stream ends, the vendor is told, the session goes on.
        _, notes = observer.communicate(timeout=20)
        assert "The watch ended:" in notes
        vendor.stderr.wait_for("gatepass: sup-leaving (supervisor, plant-a) stopped watching")
        vendor.type("after")
        vendor.stdout.wait_for("vendor typed: after")
    finally:
        if observer.poll() is None:
            observer.kill()
            observer.communicate()
        vendor.close()
    assert [e["actor"] for e in trail(stack, "live:watch:left", session_id)] == ["sup-leaving"]


def test_a_site_may_allow_silent_observers_and_then_every_session_says_so_at_its_start(stack: Stack) -> None:
    stack.gatepass("admin", "site", "set", "plant-b", "--silent-observers", "allowed")
    stack.fresh_grant("hmi-b", "--for", "10m", "--reason", "silent observers", approver="sup-b")
    vendor = VendorSession(stack, ECHO_LOOP, asset="hmi-b")
    observer = None
    try:
        vendor.stderr.wait_for("gatepass: at plant-b, supervisors and security may watch this session without it "
                               "being announced here (site policy)", timeout=15)
        vendor.stdout.wait_for("ready")
        session_id = [e for e in stack.audit_events() if e["action"] == "gateway:session:started"][-1]["subject"]
        observer = watcher(stack, "sup-b", session_id)
        assert observer.stdout is not None
        shown = Lines(observer.stdout)
        # No notice to wait on here: type until a line shows in the watch (the gateway's feed starts when the
        # broker's watch message reaches it), with a deadline.
        deadline = time.monotonic() + 10
        for attempt in range(1, 100):
            vendor.type(f"quietly {attempt}")
            try:
                shown.wait_for(f"vendor typed: quietly {attempt}", timeout=1)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        assert not any("is watching" in line for line in vendor.stderr.so_far())
    finally:
        if observer is not None:
            observer.terminate()
            observer.communicate(timeout=10)
        vendor.close()
        stack.gatepass("admin", "site", "set", "plant-b", "--silent-observers", "no")
    joined = trail(stack, "live:watch:joined", session_id)
    assert joined[0]["details"]["announced"] is False

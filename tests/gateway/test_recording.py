"""Session recordings (asciicast v2) through the gateway with stock ssh, and failing closed on a full disk."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import Gateway, recording
from gateway.recording_store import DirectoryStore
from tests.fixtures.disks import small_tmpfs
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, Vendor, sshd_credential
from tests.gateway.fake_broker import FakeBroker
from tests.gateway.test_openssh_client import _ssh, _ssh_argv, _ssh_finished, _ssh_running
from tests.gateway.waiting import eventually

pytestmark = pytest.mark.anyio


def read_cast(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def text_of(events: list[list[Any]], code: str) -> str:
    return "".join(event[2] for event in events if event[1] == code)


async def ended(fake_broker: FakeBroker, session_id: str | None = None, timeout: float = 5) -> dict[str, Any]:
    """The session-end call the broker received (of the only session, unless one is named)."""
    for _ in range(int(timeout / 0.02)):
        ids = [session_id] if session_id else list(fake_broker.sessions)
        if len(ids) == 1 and ids[0] in fake_broker.ended:
            return fake_broker.ended[ids[0]]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no session end reported: {fake_broker.sessions} {fake_broker.ended}")


def stored(gateway: Gateway, end: dict[str, Any]) -> Path:
    """The recording file the session end names; its hash and size must be what the broker was told."""
    recording = end["recording"]
    path = gateway.settings.recordings_dir / recording["name"]
    data = path.read_bytes()
    assert recording["sha256"] == hashlib.sha256(data).hexdigest()
    assert recording["bytes"] == len(data)
    return path


async def test_pty_shell_is_recorded_as_the_client_saw_it(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    code, stdout, _ = await _ssh(_ssh_argv(vendor, tmp_path, options=("-tt",)),
                                 stdin=b"echo rec-$((6*7)); exit 3\n")
    assert code == 3
    assert b"rec-42" in stdout
    end = await ended(fake_broker)
    (session_id,) = fake_broker.sessions
    path = stored(gateway, end)
    assert path.name == f"{session_id}.cast"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    header, events = read_cast(path)
    assert header["version"] == 2
    assert header["env"]["TERM"]  # ssh -tt passes the client's TERM (or "dumb")
    assert header["title"] == "vendor1@hmi-01: shell"
    assert header["gatepass"] == {
        "session": session_id, "grant": vendor.grant.grant_id, "identity": "vendor1", "asset": "hmi-01",
        "site": "plant-a", "kind": "shell", "command": None, "input_recorded": True,
    }  # fmt: skip
    assert isinstance(header["timestamp"], int)
    assert text_of(events, "o") == stdout.decode()
    assert "echo rec-$((6*7))" in text_of(events, "i")
    assert events[-1][1:] == ["m", "exit 3"]
    times = [event[0] for event in events]
    assert times == sorted(times)
    assert all(isinstance(t, float) for t in times)


async def test_input_is_not_recorded_when_the_site_says_so(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    fake_broker.grants[vendor.grant.grant_id].record_input = False
    code, stdout, _ = await _ssh(_ssh_argv(vendor, tmp_path, options=("-tt",)), stdin=b"echo secret-typed; exit\n")
    assert code == 0
    header, events = read_cast(stored(gateway, await ended(fake_broker)))
    assert header["gatepass"]["input_recorded"] is False
    assert [event for event in events if event[1] == "i"] == []
    assert text_of(events, "o") == stdout.decode()  # the terminal's echo is output, as the client saw it


async def test_resize_is_recorded(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    async with await vendor.connect() as conn:
        process = await conn.create_process(term_type="xterm", term_size=(100, 30), encoding=None)
        process.stdin.write(b"stty size\n")
        output = b""
        while b"30 100" not in output:
            output += await asyncio.wait_for(process.stdout.read(4096), 5)
        process.change_terminal_size(120, 40)
        process.stdin.write(b"stty size; exit\n")
        result = await asyncio.wait_for(process.wait(), 5)
        assert b"40 120" in result.stdout
    header, events = read_cast(stored(gateway, await ended(fake_broker)))
    assert (header["width"], header["height"], header["env"]) == (100, 30, {"TERM": "xterm"})
    assert ["r", "120x40"] in [event[1:] for event in events]


async def test_exec_output_stderr_and_exit_are_recorded(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    command = "cat; echo to-stderr >&2; exit 7"
    code, stdout, stderr = await _ssh(_ssh_argv(vendor, tmp_path, command), stdin=b"typed-in\n")
    assert (code, stdout, stderr) == (7, b"typed-in\n", b"to-stderr\n")
    header, events = read_cast(stored(gateway, await ended(fake_broker)))
    assert (header["width"], header["height"], header["env"]) == (80, 24, {"TERM": None})
    assert header["title"] == f"vendor1@hmi-01: {command}"
    assert header["gatepass"]["kind"] == "exec"
    assert header["gatepass"]["command"] == command
    output = text_of(events, "o")
    assert sorted(output.splitlines()) == ["to-stderr", "typed-in"]
    assert text_of(events, "i") == "typed-in\n"
    assert events[-1][1:] == ["m", "exit 7"]


async def test_multibyte_character_split_across_writes_survives(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    # "€" is E2 82 AC in UTF-8: the pause makes the target send it in two chunks.
    code, stdout, _ = await _ssh(_ssh_argv(vendor, tmp_path, r"printf '\342\202'; sleep 0.3; printf '\254 ok\n'"))
    assert (code, stdout) == (0, "€ ok\n".encode())
    _, events = read_cast(stored(gateway, await ended(fake_broker)))
    assert text_of(events, "o") == "€ ok\n"


async def test_binary_output_and_input_are_recorded_byte_for_byte(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    """A command that pipes bytes (a firmware image, a tar stream) is recorded losslessly: text as text, the
    rest as base64 (ob/ib), in order, so the recording holds exactly what crossed the gateway."""
    vendor = grant_for(sshd_credential(sshd_target))
    upload = bytes(range(256)) * 512 + "tail text €\n".encode()
    code, stdout, _ = await _ssh(_ssh_argv(vendor, tmp_path, "echo start; cat; head -c 300000 /dev/urandom"),
                                 stdin=upload)
    assert code == 0
    assert stdout.startswith(b"start\n" + upload)
    assert len(stdout) == 6 + len(upload) + 300000
    _, events = read_cast(stored(gateway, await ended(fake_broker)))

    def stream(text_code: str) -> bytes:
        return b"".join(base64.b64decode(event[2]) if event[1] == text_code + "b" else event[2].encode()
                        for event in events if event[1] in (text_code, text_code + "b"))

    assert stream("o") == stdout
    assert stream("i") == upload
    assert any(event[1] == "ob" for event in events)
    assert any(event[1] == "o" for event in events)


async def test_gateway_notice_is_recorded(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    process = await _ssh_running(_ssh_argv(vendor, tmp_path, "echo started; sleep 30"))
    fake_broker.revoke(vendor.grant.grant_id)
    code, _, _ = await _ssh_finished(process, 5)
    assert code == 255
    end = await ended(fake_broker)
    assert end["reason"] == "revoked"
    _, events = read_cast(stored(gateway, end))
    notices = text_of(events, "m")
    assert "the grant was revoked by the plant" in notices
    assert text_of(events, "o") == "started\n"


async def test_a_hung_store_holds_its_sessions_not_the_gateway_and_a_revocation_still_cuts_at_once(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    """The writer process stops (a disk that hangs): the busy session fills what its recording may queue and is
    paused; the event loop goes on, so a revocation still cuts within a second, and once the store moves again
    the recording is finished whole."""
    store = gateway.ctx.recordings
    vendor = grant_for(sshd_credential(sshd_target))
    process = await _ssh_running(_ssh_argv(vendor, tmp_path, "echo started; head -c 200000000 /dev/zero; sleep 30"))
    output = asyncio.ensure_future(process.communicate())  # read on: only the recording may hold the session
    worker = store.process._process
    assert worker is not None
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        await eventually(lambda: store.queue.queued_bytes >= store.queue.writer_limit, timeout=10,
                         what="the session's recording to fill its share of the queue")
        for _ in range(15):  # held: no more is read from the target, and the event loop goes on meanwhile
            started = time.monotonic()
            await asyncio.sleep(0.1)
            # (the old queue made it wait 10 s, the stall timeout; 2 s leaves room for a loaded CI machine)
            assert time.monotonic() - started < 2.0, "the event loop waited for the store"
            assert store.queue.queued_bytes <= store.queue.writer_limit + 2 * recording.BATCH_BYTES
        fake_broker.revoke(vendor.grant.grant_id)
        started = time.monotonic()
        _, stderr = await asyncio.wait_for(output, 5)
        elapsed = time.monotonic() - started
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert elapsed < 1.0, f"the revocation cut the session {elapsed:.2f} s after it was sent"
    assert process.returncode == 255
    assert b"gatepass: access to hmi-01 ended: the grant was revoked by the plant" in stderr
    end = await ended(fake_broker, timeout=15)
    assert end["reason"] == "revoked"
    _, events = read_cast(stored(gateway, end))  # whole: the hash the broker got is the file's
    assert "the grant was revoked by the plant" in text_of(events, "m")
    assert gateway.ctx.recordings_refusal("plant-a") is None  # a store that moved again blocks nothing


# -- a full disk: the gateway fails closed ------------------------------------------------------------


def _fill(directory: Path) -> Path:
    """Write zeros until the file system is full; the filler file is returned so the test can free it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        chunk = b"\0" * 4096
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return filler


def _with_output(directory: Path) -> list[Path]:
    """The recordings in ``directory`` whose file already holds the command's first output event."""
    return [path for path in directory.glob("*.cast") if b'"o", "started' in path.read_bytes()]


class TestFullDisk:
    """The recordings directory is a 256 KiB tmpfs, filled during the test (needs root, as in CI)."""

    @pytest.fixture
    def recordings_dir(self, tmp_path: Path) -> Iterator[Path]:
        with small_tmpfs(tmp_path / "small-disk") as mount_point:
            yield mount_point

    @pytest.fixture
    def gateway_options(self) -> dict[str, Any]:
        return {"recording_probe_interval": 0.5}

    def vendor(self, grant_for: GrantFactory, sshd: OpenSSHServer, directory: Path) -> tuple[Vendor, Path]:
        directory.mkdir()
        return grant_for(sshd_credential(sshd)), directory

    async def test_new_sessions_are_refused_and_nothing_runs_until_space_is_freed(
        self, gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker,
        tmp_path: Path, recordings_dir: Path,
    ) -> None:
        filler = _fill(recordings_dir)
        vendor, keys = self.vendor(grant_for, sshd_target, tmp_path / "keys")
        marker = tmp_path / "marker"

        # The first session finds out: its recording cannot even start, so the command never runs.
        code, stdout, stderr = await _ssh(_ssh_argv(vendor, keys, f"touch {marker}"))
        assert code != 0
        assert stdout == b""
        assert b"gatepass: the session recording cannot be written (No space left on device)" in stderr
        assert not marker.exists()
        end = await ended(fake_broker)
        assert end["reason"] == "error"
        assert end["detail"].startswith("recording failed: ")
        (first,) = fake_broker.sessions
        assert (first, {"kind": "recording_failed",
                        "detail": {"error": "the session recording cannot be written (No space left on device)"}}) \
            in fake_broker.session_events

        # The site is blocked now: the next one is refused with the reason and what to do.
        code, stdout, stderr = await _ssh(_ssh_argv(vendor, keys, f"touch {marker}"))
        assert code != 0
        assert b"gatepass: sessions at site plant-a are refused: recordings cannot be written (No space left " \
               b"on device); ask the plant to fix the gateway's storage" in stderr
        assert not marker.exists()
        assert len(fake_broker.session_events) == 1  # a refusal is not a new recording failure

        # Space freed: the next attempt after the probe interval probes the store and runs.
        filler.unlink()
        interval = gateway.settings.recording_probe_interval
        await eventually(lambda: time.monotonic() - gateway.ctx.blocked_sites["plant-a"].last_probe >= interval,
                         what="the probe interval to pass since the site's last probe")
        code, stdout, _ = await _ssh(_ssh_argv(vendor, keys, f"touch {marker}; echo back"))
        assert (code, stdout) == (0, b"back\n")
        assert marker.exists()
        last = sorted(fake_broker.sessions)[-1]
        end = await ended(fake_broker, last)
        assert end["reason"] == "client_closed"
        _, events = read_cast(stored(gateway, end))
        assert text_of(events, "o") == "back\n"

    async def test_live_sessions_at_the_site_end_when_the_disk_fills(
        self, gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker,
        tmp_path: Path, recordings_dir: Path,
    ) -> None:
        busy, busy_keys = self.vendor(grant_for, sshd_target, tmp_path / "busy")
        idle, idle_keys = self.vendor(grant_for, sshd_target, tmp_path / "idle")
        loud = "echo started; while :; do echo some-output-from-the-machine-$RANDOM; sleep 0.01; done"
        busy_run = asyncio.ensure_future(_ssh(_ssh_argv(busy, busy_keys, loud), timeout=15))
        idle_run = asyncio.ensure_future(_ssh(_ssh_argv(idle, idle_keys, "echo started; sleep 30"), timeout=15))
        # Both recordings have their first output on disk (the recorder's timed flush), not only the header.
        await eventually(lambda: len(_with_output(recordings_dir)) == 2, timeout=10,
                         what="both recordings to flush their first output")
        assert not busy_run.done()
        assert not idle_run.done()
        _fill(recordings_dir)

        code, stdout, stderr = await asyncio.wait_for(busy_run, 5)
        assert code == 255
        assert stdout.startswith(b"started\n")
        assert b"gatepass: the session recording cannot be written (No space left on device); the session is " \
               b"ended because it cannot be recorded" in stderr
        code, _, stderr = await asyncio.wait_for(idle_run, 5)
        assert code == 255
        assert b"the session recording cannot be written (No space left on device)" in stderr

        for session_id, started in fake_broker.sessions.items():
            end = await ended(fake_broker, session_id)
            assert end["reason"] == "error"
            assert end["detail"] == \
                "recording failed: the session recording cannot be written (No space left on device)"
            if started["command"] == loud:
                assert "recording" not in end  # it did not reach the store whole: no hash is claimed
            elif "recording" in end:
                # The idle one may still have fitted its last lines into a block it already had.
                _, events = read_cast(stored(gateway, end))
                assert "the session recording cannot be written" in text_of(events, "m")
        assert {session for session, event in fake_broker.session_events if event["kind"] == "recording_failed"} \
            == set(fake_broker.sessions)

    async def test_tcp_tunnels_are_not_recorded_and_not_affected(
        self, gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer,
        tmp_path: Path, recordings_dir: Path, plc_port: int,
    ) -> None:
        tunnel_vendor = grant_for(None, ssh=False, ports=[plc_port])
        async with await tunnel_vendor.connect() as conn:
            reader, writer = await conn.open_connection("hmi-01", plc_port)
            _fill(recordings_dir)
            # A shell session at the site fails and blocks it ...
            shell, keys = self.vendor(grant_for, sshd_target, tmp_path / "shell")
            code, _, _ = await _ssh(_ssh_argv(shell, keys, "true"))
            assert code != 0
            assert "plant-a" in gateway.ctx.blocked_sites
            # ... the tunnel stays up.
            writer.write(b"read holding registers")
            assert await asyncio.wait_for(reader.readexactly(22), 5) == b"read holding registers"
            writer.close()


# -- the store on its own -------------------------------------------------------------------------------


def test_store_refuses_names_that_are_paths(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "recordings")
    for name in ("../escape.cast", "a/b.cast", "ses-1.txt", ".cast", "ses-1.cast/"):
        with pytest.raises(ValueError, match="is not a recording name"):
            store.create(name)
    assert not (tmp_path / "escape.cast").exists()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DirectoryStore]:
    store = DirectoryStore(tmp_path / "recordings")
    yield store
    store.close()  # its writer process


def test_store_never_overwrites_and_hashes_exactly_what_it_wrote(tmp_path: Path, store: DirectoryStore) -> None:
    first_name, first = store.create("ses-1.cast")
    second_name, second = store.create("ses-1.cast")
    assert (first_name, second_name) == ("ses-1.cast", "ses-1.1.cast")
    first.write(b"a" * 100_000)  # over the buffer threshold: written before close
    first.write(b"tail\n")
    sha256, size = first.close()
    data = (tmp_path / "recordings" / "ses-1.cast").read_bytes()
    assert (sha256, size) == (hashlib.sha256(data).hexdigest(), 100_005)
    assert second.close() == (hashlib.sha256(b"").hexdigest(), 0)
    store.probe()
    assert sorted(p.name for p in (tmp_path / "recordings").iterdir()) == ["ses-1.1.cast", "ses-1.cast"]

"""The recordings disk's reserve: below it new recorded sessions are refused; below half of it the session filling
the disk is ended, its recording whole, while quiet sessions go on (a full disk would end them all, fail closed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.errors import InvalidInput
from cli.run_commands import recording_reserve
from gateway import Gateway
from gateway.context import measure_recordings, size_words
from gateway.settings import DEFAULT_RECORDING_RESERVE
from tests.fixtures.disks import small_tmpfs
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, Vendor, sshd_credential
from tests.gateway.fake_broker import FakeBroker
from tests.gateway.test_openssh_client import _ssh, _ssh_argv, _ssh_running
from tests.gateway.test_recording import ended, read_cast, stored, text_of
from tests.gateway.waiting import eventually

pytestmark = pytest.mark.anyio

MiB = 1 << 20
RESERVE = 8 * MiB


@pytest.fixture
def recordings_dir(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small-disk", size="24m") as mount_point:
        yield mount_point


@pytest.fixture
def gateway_options() -> dict[str, Any]:
    return {"recording_reserve": RESERVE, "recording_space_interval": 0.2}


def _free(directory: Path) -> int:
    found = os.statvfs(directory)
    return found.f_bavail * found.f_frsize


def _leave_free(directory: Path, size: int) -> Path:
    """Fill the disk with one file until about ``size`` bytes are left free; the file is returned to free later."""
    filler = directory / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * (_free(directory) - size))
    return filler


def _vendor(grant_for: GrantFactory, sshd: OpenSSHServer, directory: Path) -> tuple[Vendor, Path]:
    directory.mkdir()
    return grant_for(sshd_credential(sshd)), directory


async def test_below_the_reserve_a_new_session_is_refused_before_anything_runs(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path,
    recordings_dir: Path,
) -> None:
    filler = _leave_free(recordings_dir, 6 * MiB)
    await eventually(lambda: gateway.ctx.recordings_refusal("plant-a") is not None, what="a look at the full disk")
    vendor, keys = _vendor(grant_for, sshd_target, tmp_path / "keys")
    marker = tmp_path / "marker"

    code, stdout, stderr = await _ssh(_ssh_argv(vendor, keys, f"touch {marker}"))

    assert code != 0
    assert stdout == b""
    assert b"is free on the gateway's recordings disk, below the 8 MiB it keeps for the sessions already running" \
        in stderr, stderr
    assert not marker.exists()
    end = await ended(fake_broker)  # the broker hears of it: the trail has the refused session and why
    assert end["reason"] == "error"
    assert "below the 8 MiB it keeps for the sessions already running" in end["detail"]
    assert not fake_broker.session_events  # refused, not a failed recording: the site is not blocked
    assert not gateway.ctx.blocked_sites

    # Space freed: once the gateway has looked again (each 0.2 s here), the next session runs.
    filler.unlink()
    await eventually(lambda: gateway.ctx.recordings_refusal("plant-a") is None, what="the next look at the disk")
    code, stdout, _ = await _ssh(_ssh_argv(vendor, keys, f"touch {marker}; echo back"))
    assert (code, stdout) == (0, b"back\n")
    assert marker.exists()


async def test_below_half_the_reserve_the_session_filling_the_disk_is_ended_and_the_quiet_one_goes_on(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path,
    recordings_dir: Path,
) -> None:
    busy, busy_keys = _vendor(grant_for, sshd_target, tmp_path / "busy")
    quiet, quiet_keys = _vendor(grant_for, sshd_target, tmp_path / "quiet")
    # About 2.6 MB a second of output, for at most 12 s: far more than the disk holds.
    loud = "echo started; for i in $(seq 240); do head -c 100000 /dev/zero | base64 -w0; echo; sleep 0.05; done"
    quiet_run = asyncio.ensure_future(_ssh(_ssh_argv(quiet, quiet_keys, "echo started; sleep 6; echo still-here"),
                                           timeout=20))
    await eventually(lambda: len(fake_broker.sessions) == 1, what="the quiet session to start")
    _leave_free(recordings_dir, RESERVE + 2 * MiB)
    busy_run = asyncio.ensure_future(_ssh(_ssh_argv(busy, busy_keys, loud), timeout=20))

    code, stdout, stderr = await asyncio.wait_for(busy_run, 20)
    assert code == 255, stderr
    assert stdout.startswith(b"started\n")
    assert b"gatepass: this session is ended: the gateway's recordings disk is nearly full (" in stderr, stderr
    assert b"under half its 8 MiB reserve) and this session wrote the most to it" in stderr
    assert not quiet_run.done()
    assert _free(recordings_dir) > 0

    code, stdout, stderr = await asyncio.wait_for(quiet_run, 20)
    assert (code, stdout) == (0, b"started\nstill-here\n"), stderr

    busy_id = next(sid for sid, started in fake_broker.sessions.items() if started["command"] == loud)
    end = await ended(fake_broker, busy_id)
    assert end["reason"] == "error"
    assert end["detail"].startswith("recordings disk nearly full: the gateway's recordings disk is nearly full")
    # Its recording is whole: hashed, reported, and it says why the session ended.
    _, events = read_cast(stored(gateway, end))
    assert text_of(events, "o").startswith("started\n")
    assert "this session is ended: the gateway's recordings disk is nearly full" in text_of(events, "m")
    assert not fake_broker.session_events  # no recording failed
    assert not gateway.ctx.blocked_sites


async def test_a_session_that_writes_nothing_is_not_ended_for_what_something_else_wrote(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path,
    recordings_dir: Path,
) -> None:
    quiet, keys = _vendor(grant_for, sshd_target, tmp_path / "quiet")
    run = asyncio.ensure_future(_ssh(_ssh_argv(quiet, keys, "echo started; sleep 2; echo still-here"), timeout=20))
    await eventually(lambda: len(fake_broker.sessions) == 1, what="the session to start")
    await asyncio.sleep(0.5)  # its first output is looked at once before the disk fills
    _leave_free(recordings_dir, RESERVE // 4)  # something else (a log, a copy) fills the disk
    code, stdout, stderr = await asyncio.wait_for(run, 20)
    assert (code, stdout) == (0, b"started\nstill-here\n"), stderr


def _recorded(gateway: Gateway, fake_broker: FakeBroker, command: str) -> Any:
    """The gateway's live session running ``command``, or None."""
    for session, _path in gateway.ctx.recording_files():
        if fake_broker.sessions.get(session._session_id, {}).get("command") == command:
            return session
    return None


def _taken(gateway: Gateway, session: Any) -> int:
    """The size of ``session``'s recording file now (0 once it is no longer a live recorded session)."""
    return measure_recordings(gateway.ctx.recording_files()).get(session, 0)


def _look(gateway: Gateway, free: int) -> Any:
    """One look of the guard (gateway/server.py's loop, driven by the test): ``free`` bytes free, the files now."""
    return gateway.ctx.check_recording_space(free, measure_recordings(gateway.ctx.recording_files()))


@contextlib.asynccontextmanager
async def _running(gateway: Gateway, fake_broker: FakeBroker, *commands: tuple[Vendor, Path, str],
                   ) -> AsyncIterator[tuple[list[asyncio.subprocess.Process], list[Any]]]:
    """Stock ssh running each (vendor, keys, command) through the gateway, and the gateway's session of each; the
    clients are killed afterwards (a stopped one is continued first)."""
    processes = [await _ssh_running(_ssh_argv(vendor, keys, command)) for vendor, keys, command in commands]
    readers = [asyncio.ensure_future(process.communicate()) for process in processes]
    try:
        await eventually(lambda: all(_recorded(gateway, fake_broker, command) is not None
                                     for _, _, command in commands), what="every session")
        yield processes, [_recorded(gateway, fake_broker, command) for _, _, command in commands]
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.kill()
        await asyncio.wait(readers, timeout=10)


@pytest.mark.parametrize("gateway_options", [{"recording_reserve": RESERVE, "recording_space_interval": 3600}])
async def test_a_session_already_being_ended_is_not_picked_again_while_another_fills_the_disk(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path,
) -> None:
    # The first session to be ended for space belongs to a laptop that froze (its ssh stopped): the end is sent,
    # but the channel's close is never answered, so the gateway still lists the session. The next look must end the
    # session that fills the disk now, not pick the ending one again (its whole recording counted as new growth)
    # while the disk fills and every session at the site fails.
    frozen, frozen_keys = _vendor(grant_for, sshd_target, tmp_path / "frozen")
    steady, steady_keys = _vendor(grant_for, sshd_target, tmp_path / "steady")
    burst = "echo started; sleep 1; head -c 2000000 /dev/zero | base64 -w0; echo; sleep 30"
    stream = "echo started; for i in $(seq 400); do head -c 20000 /dev/zero | base64 -w0; echo; sleep 0.05; done"
    async with _running(gateway, fake_broker, (frozen, frozen_keys, burst),
                        (steady, steady_keys, stream)) as (processes, (first, second)):
        assert _look(gateway, 64 * MiB) is None  # plenty free: a look, nothing ended
        await eventually(lambda: _taken(gateway, first) > 2_500_000, what="the burst")
        processes[0].send_signal(signal.SIGSTOP)

        assert _look(gateway, RESERVE // 4) is first  # it grew the most: ended
        await asyncio.sleep(0.5)  # the steady session goes on writing; the frozen one never answers the close
        assert _look(gateway, RESERVE // 4) is second


@pytest.mark.parametrize("gateway_options", [{"recording_reserve": RESERVE, "recording_space_interval": 3600}])
async def test_a_session_filling_the_disk_just_under_the_rate_of_one_look_is_ended_too(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path,
    recordings_dir: Path,
) -> None:
    # One look every 0.2 s (driven here) and 8 KiB per look ended a session at once; this one writes less, for as
    # long as it likes: below half the reserve it is the only thing filling the disk, and without a
    # second rule it would go on until the disk is full and every session at the site fails.
    slow, slow_keys = _vendor(grant_for, sshd_target, tmp_path / "slow")
    quiet, quiet_keys = _vendor(grant_for, sshd_target, tmp_path / "quiet")
    # About 5.5 KB of recording a second, reaching the file in one write a second (the recorder's flush): never
    # 8 KiB between two looks.
    trickle = "echo started; for i in $(seq 300); do head -c 1000 /dev/zero | base64 -w0; echo; sleep 0.25; done"
    quiet_run = asyncio.ensure_future(_ssh(_ssh_argv(quiet, quiet_keys, "echo started; sleep 8; echo still-here"),
                                           timeout=20))
    slow_run = asyncio.ensure_future(_ssh(_ssh_argv(slow, slow_keys, trickle), timeout=30))
    await eventually(lambda: _recorded(gateway, fake_broker, trickle) is not None, what="the slow session")
    slow_session = _recorded(gateway, fake_broker, trickle)
    assert _look(gateway, _free(recordings_dir)) is None  # plenty free: a look, nothing ended
    _leave_free(recordings_dir, RESERVE // 4)  # something else (a copy) takes the disk below half the reserve

    ended_now = []
    for _ in range(40):  # 8 s
        await asyncio.sleep(0.2)
        if (session := _look(gateway, _free(recordings_dir))) is not None:
            ended_now.append(session)
            break
    assert ended_now == [slow_session]

    code, _stdout, stderr = await asyncio.wait_for(slow_run, 20)
    assert code == 255
    assert b"since the disk went below its reserve" in stderr, stderr
    code, stdout, stderr = await asyncio.wait_for(quiet_run, 20)
    assert (code, stdout) == (0, b"started\nstill-here\n"), stderr


@pytest.mark.parametrize("gateway_options", [{"recording_reserve": RESERVE, "recording_space_interval": 3600}])
async def test_the_guard_weighs_what_reaches_the_disk_not_what_the_session_sent(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path,
) -> None:
    # A control character is recorded as six bytes (\u0001): the session sending half as much as the other fills the
    # disk three times as fast, and is the one to end. Counted by what was sent, the other would have been ended.
    noisy, noisy_keys = _vendor(grant_for, sshd_target, tmp_path / "noisy")
    plain, plain_keys = _vendor(grant_for, sshd_target, tmp_path / "plain")
    control = "echo started; for i in $(seq 400); do head -c 20000 /dev/zero | tr '\\0' '\\1'; sleep 0.05; done"
    text = "echo started; for i in $(seq 400); do head -c 40000 /dev/zero | tr '\\0' x; echo; sleep 0.05; done"
    async with _running(gateway, fake_broker, (noisy, noisy_keys, control),
                        (plain, plain_keys, text)) as (_, (noisy_session, _plain_session)):
        assert _look(gateway, 64 * MiB) is None  # plenty free: a look, nothing ended
        await asyncio.sleep(2.5)  # both write; more than one flush of each recording reaches its file
        assert _look(gateway, RESERVE // 4) is noisy_session


@pytest.mark.parametrize("gateway_options", [{"recording_reserve": RESERVE, "recording_space_interval": 0.05}])
async def test_a_look_at_a_hung_disk_holds_up_no_session_and_no_exit(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, tmp_path: Path,
) -> None:
    # An NFS mount that stopped answering: statvfs blocks until it does. The relay goes on, and the stuck look is in a
    # daemon thread (asyncio.to_thread's pool threads are joined at exit: the gateway could never exit).
    stuck, release = threading.Event(), threading.Event()
    daemon: list[bool] = []

    def hang() -> int:
        daemon.append(threading.current_thread().daemon)
        stuck.set()
        release.wait(30)
        return 64 * MiB

    gateway.recordings.free_bytes = hang  # type: ignore[method-assign]
    try:
        await eventually(stuck.is_set, what="the guard's next look to hang")
        vendor, keys = _vendor(grant_for, sshd_target, tmp_path / "keys")
        code, stdout, _ = await _ssh(_ssh_argv(vendor, keys, "echo through"))
        assert (code, stdout) == (0, b"through\n")
        assert daemon == [True]
    finally:
        release.set()


def test_sizes_read_as_an_operator_writes_them() -> None:
    assert [size_words(n) for n in (512, 1536, 8 * MiB, 3 * MiB // 2, 256 * MiB, 5 << 30)] == [
        "512 bytes", "1.5 KiB", "8 MiB", "1.5 MiB", "256 MiB", "5 GiB"]


def test_the_reserve_comes_from_the_flag_then_the_environment_then_the_default() -> None:
    assert recording_reserve({}) == DEFAULT_RECORDING_RESERVE == 256 * MiB
    assert recording_reserve({"GATEPASS_RECORDING_RESERVE": "1G"}) == 1 << 30
    assert recording_reserve({"GATEPASS_RECORDING_RESERVE": "1G"}, "0") == 0
    with pytest.raises(InvalidInput, match=r"^--recording-reserve: 'lots' is not a size"):
        recording_reserve({}, "lots")
    with pytest.raises(InvalidInput, match=r"^GATEPASS_RECORDING_RESERVE: '1\.5G' is not a size.*nothing was started"):
        recording_reserve({"GATEPASS_RECORDING_RESERVE": "1.5G"})


@pytest.mark.parametrize("argv", [["serve", "--http", "127.0.0.1:0", "--ssh", "127.0.0.1:0"],
                                  ["gateway", "--token-file", "/dev/null"]])
def test_a_reserve_that_is_not_a_size_stops_the_command_with_the_setting_named(tmp_path: Path, argv: list[str]) -> None:
    gatepass = str(Path(sys.executable).with_name("gatepass"))
    env = {**os.environ, "GATEPASS_RECORDING_RESERVE": "1.5G", "GATEPASS_DATA": str(tmp_path / "data")}
    done = subprocess.run([gatepass, *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("gatepass: GATEPASS_RECORDING_RESERVE: '1.5G' is not a size"), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()

"""A cut stops what the vendor started on the target, not only the connection (issue 15).

A real OpenSSH sshd logs in a dedicated unprivileged user (``TARGET_LOGIN``), so every process of that login that
this sshd started is the vendor's, and ``OpenSSHServer.login_processes`` tells whether anything survived the cut
(it counts only this server's, so another run of these tests at the same time does not disturb this one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.fixtures.disks import small_tmpfs
from tests.fixtures.sshd import TARGET_LOGIN, OpenSSHServer, start_sshd
from tests.gateway.conftest import GrantFactory, Vendor, sshd_credential
from tests.gateway.fake_broker import FakeBroker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# A plain command, a shell loop, and a job left in the background by a shell that has ended: sshd drops a signal
# request once the session's shell is gone, yet the job keeps the channel open through its output.
EXEC_COMMANDS = {
    "sleep": "echo started; sleep 600",
    "loop": "echo started; while :; do sleep 1; done",
    "background": "sleep 600 & echo started",
}


async def wait_until_gone(target: OpenSSHServer, deadline: float) -> list[str]:
    """Poll until the login has no process or ``deadline`` (loop time) passed; what is left."""
    loop = asyncio.get_running_loop()
    while (left := target.login_processes()) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return left


async def wait_for_process(target: OpenSSHServer, args: str, timeout: float = 5) -> None:
    """Until a process with exactly these arguments runs (not merely a shell whose command line names it)."""
    deadline = time.monotonic() + timeout
    while not any(line.split(maxsplit=1)[1:] == [args] for line in target.login_processes()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{args!r} never ran on the target: {target.login_processes()}")
        await asyncio.sleep(0.05)


async def wait_ended(fake_broker: FakeBroker, count: int, timeout: float = 10) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(fake_broker.ended) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(fake_broker.ended)} of {count} session ends reported: {fake_broker.ended}")
        await asyncio.sleep(0.05)
    return {fake_broker.sessions[sid].get("command") or fake_broker.sessions[sid]["kind"]: end
            for sid, end in fake_broker.ended.items()}


@pytest.fixture
def login_target(tmp_path: Path) -> Iterator[OpenSSHServer]:
    server = start_sshd(tmp_path / "sshd", username=TARGET_LOGIN)
    try:
        yield server
    finally:
        server.kill_login_processes()
        server.stop()


Started = tuple[asyncssh.SSHClientConnection, list[asyncssh.SSHClientProcess[str]]]


async def start_everything(vendor: Vendor, target: OpenSSHServer) -> Started:
    """One connection running each exec command and an interactive shell with a running child."""
    conn = await vendor.connect()
    processes = []
    for command in EXEC_COMMANDS.values():
        process = await conn.create_process(command)
        assert await asyncio.wait_for(process.stdout.readline(), 5) == "started\n"
        processes.append(process)
    shell = await conn.create_process(term_type="xterm", term_size=(80, 24))
    shell.stdin.write("sleep 700\n")
    await wait_for_process(target, "sleep 700")
    processes.append(shell)
    await wait_for_process(target, "sleep 600")
    return conn, processes


@pytest.mark.parametrize("reason", ["revoked", "lockdown", "expired"])
async def test_a_cut_leaves_no_process_of_the_vendor_on_the_target(
    grant_for: GrantFactory, login_target: OpenSSHServer, fake_broker: FakeBroker, reason: str
) -> None:
    vendor = grant_for(sshd_credential(login_target), seconds=6 if reason == "expired" else 600)
    loop = asyncio.get_running_loop()
    _conn, processes = await start_everything(vendor, login_target)
    if reason == "expired":
        remaining = (vendor.grant.ends_at - datetime.now(UTC)).total_seconds()
        assert remaining > 0, "setting the sessions up took longer than the grant"
        cut_at = loop.time() + remaining
    else:
        cut_at = loop.time()
        fake_broker.revoke(vendor.grant.grant_id, reason)

    results = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), 10)
    assert loop.time() - cut_at < 1.0, "the vendor's channels must close within a second (invariant 2)"
    for result in results:
        assert result.exit_status == 255
        assert "the commands of this session on hmi-01 are being stopped (TERM now, KILL after 2 s)" in str(
            result.stderr)

    left = await wait_until_gone(login_target, cut_at + 3.0)
    assert left == [], f"still running on the target 3 s after the cut: {left}"

    ends = await wait_ended(fake_broker, 4)
    assert {end["reason"] for end in ends.values()} == {reason}
    for end in ends.values():
        stop = end["stop"]
        assert stop["signals"][0] == "TERM"
        assert stop["grace_ms"] == 2000
        assert stop["swept"]["TERM"] >= 1, stop  # the background job at least: no signal request reaches it
        assert stop["sweep_error"] is None
    # An interactive bash ignores TERM: it gets KILL after the grace, and its PTY's hangup ends its child.
    assert ends["shell"]["stop"]["signals"] == ["TERM", "KILL"]
    assert ends["shell"]["stop"]["exit"] == "signal KILL"
    assert ends["shell"]["stop"]["confirmed"] is True
    # The background job's shell had ended before the cut (status 0): only the sweep could reach the job.
    assert ends[EXEC_COMMANDS["background"]]["stop"]["exit"] == "status 0"
    # A plain command ends on TERM, and the target says so.
    assert ends[EXEC_COMMANDS["sleep"]]["stop"]["signals"] == ["TERM"]
    assert ends[EXEC_COMMANDS["sleep"]]["stop"]["exit"] == "signal TERM"
    assert ends[EXEC_COMMANDS["sleep"]]["stop"]["confirmed"] is True


async def test_a_command_that_ignores_term_gets_kill_after_the_sites_grace(
    grant_for: GrantFactory, login_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(login_target))
    vendor.grant.cut_grace_ms = 300
    conn = await vendor.connect()
    # An ignored signal stays ignored across exec: neither the shell nor sleep hears TERM.
    process = await conn.create_process("trap '' TERM; echo started; sleep 600; echo after")
    assert await asyncio.wait_for(process.stdout.readline(), 5) == "started\n"
    loop = asyncio.get_running_loop()
    cut_at = loop.time()
    fake_broker.revoke(vendor.grant.grant_id)
    result = await asyncio.wait_for(process.wait(), 2)
    assert "KILL after 0.3 s" in str(result.stderr)
    left = await wait_until_gone(login_target, cut_at + 1.5)  # well inside the default grace of 2 s
    assert left == []
    (end,) = (await wait_ended(fake_broker, 1)).values()
    assert end["stop"]["signals"] == ["TERM", "KILL"]
    assert end["stop"]["grace_ms"] == 300
    assert end["stop"]["exit"] == "signal KILL"
    assert end["stop"]["confirmed"] is True


async def test_a_session_that_ends_by_itself_sends_no_signal(
    grant_for: GrantFactory, login_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(login_target))
    async with await vendor.connect() as conn:
        result = await asyncio.wait_for(conn.run("echo done"), 5)
    assert result.stdout == "done\n"
    assert result.stderr == ""
    (end,) = (await wait_ended(fake_broker, 1)).values()
    assert end["reason"] == "client_closed"
    assert "stop" not in end



class TestRecordingFailure:
    """A session ended because its recording cannot be written is stopped on the target too, background jobs
    included (the recordings directory is a small tmpfs filled during the test: needs root, as in CI)."""

    @pytest.fixture
    def recordings_dir(self, tmp_path: Path) -> Iterator[Path]:
        with small_tmpfs(tmp_path / "small-disk") as mount_point:
            yield mount_point

    async def test_a_session_whose_recording_fails_leaves_nothing_running(
        self, grant_for: GrantFactory, login_target: OpenSSHServer, fake_broker: FakeBroker, recordings_dir: Path,
    ) -> None:
        vendor = grant_for(sshd_credential(login_target))
        conn = await vendor.connect()
        # A job in a process group of its own: the TERM that sshd sends to the command's group misses it.
        loud = "setsid sleep 602 & echo started; while :; do echo output-from-the-machine-$RANDOM; sleep 0.01; done"
        process = await conn.create_process(loud)
        assert await asyncio.wait_for(process.stdout.readline(), 5) == "started\n"
        await wait_for_process(login_target, "sleep 602")
        filler = recordings_dir / "filler"
        with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):  # ENOSPC: the disk is full
            while True:
                out.write(b"\0" * 4096)

        result = await asyncio.wait_for(process.wait(), 10)
        loop = asyncio.get_running_loop()
        ended_at = loop.time()
        assert "the session is ended because it cannot be recorded" in str(result.stderr)
        assert "are being stopped (TERM now, KILL after 2 s)" in str(result.stderr)
        left = await wait_until_gone(login_target, ended_at + 3.0)
        conn.close()
        # Only sshd's own process of the still open connection may be left; nothing the vendor started.
        assert [line for line in left if not line.split(maxsplit=1)[1].startswith("sshd:")] == []
        (end,) = (await wait_ended(fake_broker, 1)).values()
        assert end["reason"] == "error"
        assert end["stop"]["signals"][0] == "TERM"
        assert end["stop"]["swept"]["TERM"] >= 1  # the job in its own process group
        assert end["stop"]["sweep_error"] is None

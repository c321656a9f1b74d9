"""demo.target.DemoTarget works with the stock OpenSSH client: exec, exit codes, PTYs, SFTP, refusals."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from demo.target import HOST_KEY_FILE, DemoTarget
from tests.fixtures.demo import ThreadedDemoTarget


def run(argv: list[str], stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=30, env=env)


def test_exec_returns_output(demo_target: ThreadedDemoTarget) -> None:
    result = run(demo_target.ssh_command("echo hi"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi\n"


def test_exec_returns_exit_code(demo_target: ThreadedDemoTarget) -> None:
    result = run(demo_target.ssh_command("exit 7"))
    assert result.returncode == 7, result.stderr


def test_stdin_stdout_stderr(demo_target: ThreadedDemoTarget) -> None:
    result = run(demo_target.ssh_command("tr a-z A-Z; echo oops >&2"), stdin=b"plant-a\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"PLANT-A\n"
    assert result.stderr == b"oops\n"


def test_large_output_arrives_whole(demo_target: ThreadedDemoTarget) -> None:
    result = run(demo_target.ssh_command("head -c 3000000 /dev/zero"))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 3_000_000


def test_commands_run_in_the_demo_home(demo_target: ThreadedDemoTarget) -> None:
    result = run(demo_target.ssh_command('pwd; echo "$HOME $USER"'))
    assert result.returncode == 0, result.stderr
    home = str(demo_target.target.home)
    assert result.stdout.decode().splitlines() == [home, f"{home} operator"]


def _connect(demo_target: ThreadedDemoTarget) -> asyncssh.SSHClientConnection:
    """An asyncssh client connection (password login), for what the stock client does not show."""
    assert demo_target.password is not None
    return asyncssh.connect(
        demo_target.host,
        demo_target.port,
        username=demo_target.username,
        password=demo_target.password,
        client_keys=None,
        known_hosts=asyncssh.import_known_hosts(demo_target.known_hosts_line + "\n"),
    )


def test_killed_program_reports_its_signal(demo_target: ThreadedDemoTarget) -> None:
    async def run_killed() -> asyncssh.SSHCompletedProcess:
        async with _connect(demo_target) as connection:
            return await connection.run("kill -TERM $$")

    result = demo_target.run(run_killed())
    assert result.exit_signal is not None
    assert result.exit_signal[0] == "TERM"
    # The stock client exits 255 when the remote program died of a signal.
    assert run(demo_target.ssh_command("kill -TERM $$")).returncode == 255


def test_pty_follows_window_size(demo_target: ThreadedDemoTarget) -> None:
    # "size=$(stty size)" prints "size=ROWS COLS"; the PTY's echo of the typed line never contains that,
    # and the prompt may land on the same line as the output, so search the text instead of whole lines.
    async def sizes() -> tuple[str, str]:
        async with _connect(demo_target) as connection:
            process = await connection.create_process(term_type="xterm", term_size=(100, 30))
            process.stdin.write('echo "size=$(stty size)"\n')
            first = ""
            while "size=30 100" not in first:
                chunk = await asyncio.wait_for(process.stdout.read(1024), 10)
                assert chunk, f"the session ended early: {first!r}"
                first += chunk
            process.change_terminal_size(132, 43)
            process.stdin.write('echo "size=$(stty size)"; exit\n')
            later = await asyncio.wait_for(process.stdout.read(), 10)
            await process.wait()
            return first, later

    first, later = demo_target.run(sizes())
    assert "size=30 100" in first
    assert "size=43 132" in later


def test_pty_exec(demo_target: ThreadedDemoTarget) -> None:
    result = run(demo_target.ssh_command("tty; stty size", options=("-tt",)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("/dev/pts/")


def test_interactive_shell_with_pty(demo_target: ThreadedDemoTarget) -> None:
    result = run(demo_target.ssh_command(options=("-tt",)), stdin=b"echo $((6 * 7))\nexit 3\n")
    assert result.returncode == 3, result.stderr
    assert b"Gatepass demo target" in result.stdout
    assert b"42" in result.stdout


# SIG_IGN is what a program started with `cmd &` from a script inherits for SIGINT, and passes on.
@pytest.mark.parametrize("parent_sigint", [signal.default_int_handler, signal.SIG_IGN], ids=["default", "ignored"])
def test_interrupt_reaches_the_foreground_program(
    demo_target: ThreadedDemoTarget, parent_sigint: signal.Handlers
) -> None:
    async def interrupt() -> str:
        async with _connect(demo_target) as connection:
            process = await connection.create_process(term_type="xterm", term_size=(80, 24))
            process.stdin.write("sleep 30; echo not-interrupted\n")
            for _ in range(1000):  # until `sleep` is the terminal's foreground job; ^C earlier hits the shell
                if _foreground_sleep(demo_target.target.home):
                    break
                await asyncio.sleep(0.01)
            process.stdin.write("\x03")  # ^C: the PTY turns it into SIGINT for the foreground job
            process.stdin.write("echo status-$?; exit\n")
            output = await asyncio.wait_for(process.stdout.read(), 10)
            await process.wait()
            return output

    previous = signal.signal(signal.SIGINT, parent_sigint)
    try:
        output = demo_target.run(interrupt())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "status-130" in output
    assert "\nnot-interrupted" not in output


def test_runs_on_uvloop(tmp_path: Path, ssh_keypair) -> None:
    pytest.importorskip("uvloop")
    key = ssh_keypair()
    target = ThreadedDemoTarget.start(state_dir=tmp_path / "state", client_key=key, use_uvloop=True)
    try:
        exec_result = run(target.ssh_command("echo hi; exit 7"))
        assert exec_result.returncode == 7, exec_result.stderr
        assert exec_result.stdout == b"hi\n"
        shell = run(target.ssh_command("tty", options=("-tt",)))
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout.startswith(b"/dev/pts/")
    finally:
        target.stop()


def test_shell_without_pty(demo_target: ThreadedDemoTarget) -> None:
    result = run(demo_target.ssh_command(options=("-T",)), stdin=b"echo $((6 * 7))\nexit 4\n")
    assert result.returncode == 4, result.stderr
    assert result.stdout == b"42\n"


def test_password_login(demo_target: ThreadedDemoTarget, tmp_path: Path) -> None:
    assert demo_target.password is not None
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{demo_target.password}'\n")
    askpass.chmod(0o700)
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    argv = demo_target.ssh_command(
        "echo via-password",
        key=None,
        options=("-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"),
    )
    result = run(argv, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"via-password\n"


def test_wrong_password_is_refused(demo_target: ThreadedDemoTarget, tmp_path: Path) -> None:
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho 'not-the-password'\n")
    askpass.chmod(0o700)
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    argv = demo_target.ssh_command(
        "true",
        options=(
            "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=password",
            "-o", "NumberOfPasswordPrompts=1",
        ),
    )  # fmt: skip
    result = run(argv, env=env)
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr


def test_other_key_is_refused(demo_target: ThreadedDemoTarget, ssh_keypair) -> None:
    stranger = ssh_keypair("stranger")
    result = run(demo_target.ssh_command("true", key=stranger.private_key, options=("-o", "BatchMode=yes")))
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr


def test_other_username_is_refused(demo_target: ThreadedDemoTarget) -> None:
    argv = demo_target.ssh_command("true", options=("-o", "BatchMode=yes"))
    argv[-2] = f"root@{demo_target.host}"
    result = run(argv)
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr


def test_sftp_is_confined_to_the_demo_home(demo_target: ThreadedDemoTarget, tmp_path: Path) -> None:
    source = tmp_path / "recipe.csv"
    source.write_bytes(b"setpoint,42\n")
    argv = demo_target.ssh_command()
    options = argv[1:-1]
    options[options.index("-p")] = "-P"
    result = run(["sftp", "-b", "-", *options, argv[-1]], stdin=b"put " + bytes(source) + b" /recipe.csv\n")
    assert result.returncode == 0, result.stderr
    assert (demo_target.target.home / "recipe.csv").read_bytes() == b"setpoint,42\n"


def test_port_forwarding_is_refused(demo_target: ThreadedDemoTarget) -> None:
    async def open_tunnel() -> None:
        assert demo_target.password is not None
        async with asyncssh.connect(
            demo_target.host,
            demo_target.port,
            username=demo_target.username,
            password=demo_target.password,
            client_keys=None,
            known_hosts=asyncssh.import_known_hosts(demo_target.known_hosts_line + "\n"),
        ) as connection:
            with pytest.raises(asyncssh.ChannelOpenError):
                await connection.open_connection("127.0.0.1", demo_target.port)

    demo_target.run(open_tunnel())


def test_host_key_is_kept_across_restarts(tmp_path: Path, ssh_keypair) -> None:
    key = ssh_keypair()
    first = ThreadedDemoTarget.start(state_dir=tmp_path / "state", client_key=key)
    host_key = first.host_key
    first.stop()
    assert stat.S_IMODE((tmp_path / "state" / HOST_KEY_FILE).stat().st_mode) == 0o600
    second = ThreadedDemoTarget.start(state_dir=tmp_path / "state", client_key=key)
    try:
        assert second.host_key == host_key
        assert host_key.startswith("ssh-ed25519 AAAA")
        assert len(host_key.split()) == 2
        result = run(second.ssh_command("echo again"))
        assert result.stdout == b"again\n", result.stderr
    finally:
        second.stop()


@pytest.mark.parametrize("tty", ["-T", "-tt"])
def test_stop_ends_live_sessions(tmp_path: Path, ssh_keypair, tty: str) -> None:
    key = ssh_keypair()
    target = ThreadedDemoTarget.start(state_dir=tmp_path / "state", client_key=key)
    session = subprocess.Popen(
        target.ssh_command("sleep 60", options=(tty,)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(500):
            if _programs_in(target.target.home):
                break
            time.sleep(0.01)
        assert _programs_in(target.target.home)
        target.stop()
        assert session.wait(timeout=10) == 255
        # The group got SIGHUP; a program may take a moment to die after its shell did.
        for _ in range(200):
            if not _programs_in(target.target.home):
                break
            time.sleep(0.01)
        assert _programs_in(target.target.home) == []  # the remote `sleep 60` was hung up too
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()


def _foreground_sleep(directory: Path) -> bool:
    """True once a `sleep` started in ``directory`` is the foreground process group of its terminal."""
    for pid in _programs_in(directory):
        try:
            command, fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        process_group, foreground_group = fields.split()[2], fields.split()[5]  # proc(5): pgrp, tpgid
        if command.endswith("(sleep") and process_group == foreground_group:
            return True
    return False


def _programs_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory`` (the demo target's programs run in its home)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != directory.resolve():
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.com", "::"])  # noqa: S104
def test_refuses_non_loopback_addresses(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        DemoTarget(state_dir=tmp_path, host=host, password="x")


@pytest.mark.parametrize("credentials", [{}, {"password": ""}, {"authorized_key": "", "password": None}])
def test_needs_a_credential(tmp_path: Path, credentials: dict[str, str | None]) -> None:
    with pytest.raises(ValueError, match="authorized_key or a password"):
        DemoTarget(state_dir=tmp_path, **credentials)

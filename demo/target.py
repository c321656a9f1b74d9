"""DEMO ONLY: a stand-in plant machine, an SSH server on loopback that runs a local ``/bin/sh``.

``gatepass serve --demo`` starts one so the README walkthrough needs no other host: the broker vaults
its one credential (a public key or a password for user ``operator``), the gateway injects it, and the
vendor gets a shell on ... the broker's own machine, as the user running Gatepass. That is why it is a
demo and nothing more: it binds to loopback addresses only and refuses any other ``host``.

What it speaks (asyncssh): public key or password authentication for one username; exec and shell
sessions through ``/bin/sh`` with or without a PTY (exit codes and signals, window-size changes);
SFTP confined to its home directory (``STATE_DIR/home``). Port forwarding, agent and X11 forwarding
are refused (asyncssh's defaults), since nothing in the demo needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import hmac
import ipaddress
import logging
import os
import signal
import struct
import termios
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh

logger = logging.getLogger("gatepass.demo.target")

HOST_KEY_FILE = "demo_target_host_key"
SHELL = "/bin/sh"
READ_SIZE = 65536
# After the program exits, how long its last output may take to drain before the exit status is sent.
OUTPUT_GRACE_SECONDS = 1.0
# How long a program gets to exit after SIGHUP (client gone, target stopping) before SIGKILL.
HANGUP_GRACE_SECONDS = 2.0
BANNER = b"Gatepass demo target: a local /bin/sh on the Gatepass host, for trying Gatepass out.\r\n"


def _loopback_only(host: str) -> str:
    """Return the address to bind; refuse anything but a loopback address (this hands out a shell)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"the demo target binds to a loopback address only, not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"the demo target binds to a loopback address only, not {host!r}")
    return host


def _load_or_create_host_key(state_dir: Path) -> asyncssh.SSHKey:
    """The target's ed25519 host key, kept in ``state_dir`` so its pinned fingerprint survives restarts."""
    path = state_dir / HOST_KEY_FILE
    if path.exists():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    state_dir.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start (asyncssh's write_private_key would leave it 0644 for a moment).
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(key.export_private_key())
    return key


def _public_line(key: asyncssh.SSHKey) -> str:
    """``ssh-ed25519 AAAA…`` without a comment."""
    key_type, key_data = key.export_public_key("openssh").decode().split()[:2]
    return f"{key_type} {key_data}"


def _set_window_size(fd: int, term_size: tuple[int, int, int, int]) -> None:
    width, height, pixel_width, pixel_height = (max(0, min(value, 0xFFFF)) for value in term_size)
    # struct winsize is rows, columns, x pixels, y pixels (termios(3)); SSH sends width first (RFC 4254 6.2).
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixel_width, pixel_height))


# Signals a login session starts with at their default action, as sshd does for its children: a Gatepass
# started in the background (`cmd &` in a script, nohup) passes SIG_IGN for some of them down to every
# program, and then ^C or a hang-up would not reach what the vendor runs.
_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
_libc.signal.restype = ctypes.c_void_p
_SIG_DFL = None  # a NULL handler: SIG_DFL in <signal.h>


def _new_session(tty_path: str | None) -> Callable[[], None]:
    """A preexec_fn: a new session with default signal actions and, for a PTY, that PTY as controlling terminal.

    It calls libc's signal() because Python's signal.signal() works only in the main thread, and the
    demo target may run on another thread's event loop. It opens the PTY by name rather than using
    fd 0 because uvloop (uvicorn's loop when installed) runs preexec_fn before it sets up the child's stdin.
    """

    def set_up_child() -> None:  # pragma: no cover - runs in the child between fork and exec
        for signal_number in _DEFAULT_SIGNALS:
            _libc.signal(signal_number, _SIG_DFL)
        os.setsid()
        if tty_path is not None:
            descriptor = os.open(tty_path, os.O_RDWR)
            try:
                fcntl.ioctl(descriptor, termios.TIOCSCTTY, 0)  # ^C and job control on this terminal
            finally:
                os.close(descriptor)

    return set_up_child


def _signal_group(pid: int, signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal_number)


async def _wait_fd(fd: int, *, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    if writable:
        loop.add_writer(fd, ready.set_result, None)
    else:
        loop.add_reader(fd, ready.set_result, None)
    try:
        await ready
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def _read_pty(fd: int) -> bytes:
    """Read from a non-blocking PTY main side; b"" once every process holding the other side is gone."""
    while True:
        try:
            return os.read(fd, READ_SIZE)
        except BlockingIOError:
            await _wait_fd(fd, writable=False)
        except OSError as error:
            if error.errno == errno.EIO:  # Linux reports the closed follower side as EIO, not EOF
                return b""
            raise


async def _write_pty(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await _wait_fd(fd, writable=True)
            continue
        view = view[written:]


class _DemoSSHServer(asyncssh.SSHServer):
    """One per connection: checks the one username and credential the demo target was given."""

    def __init__(self, target: DemoTarget) -> None:
        self._target = target
        self._connection: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._connection = conn
        self._target._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 (asyncssh's signature)
        if self._connection is not None:
            self._target._connections.discard(self._connection)

    def begin_auth(self, username: str) -> bool:  # noqa: ARG002 (asyncssh's signature)
        return True  # always authenticate, also for unknown names, so they learn nothing

    def public_key_auth_supported(self) -> bool:
        return self._target._authorized_key is not None

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        expected = self._target._authorized_key
        return (
            expected is not None
            and hmac.compare_digest(username.encode(), self._target.username.encode())
            and hmac.compare_digest(key.public_data, expected.public_data)
        )

    def password_auth_supported(self) -> bool:
        return self._target._password is not None

    def validate_password(self, username: str, password: str) -> bool:
        expected = self._target._password
        return (
            expected is not None
            and hmac.compare_digest(username.encode(), self._target.username.encode())
            and hmac.compare_digest(password.encode(), expected.encode())
        )


class DemoTarget:
    """DEMO ONLY: an SSH server on loopback giving a local ``/bin/sh`` to one user with one credential.

    ``await start()`` listens (``port=0`` picks a free port: read ``port`` afterwards); ``host_key`` is the
    public host key line to pin; ``await stop()`` closes every connection and hangs up every program.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "operator",
        authorized_key: str | None = None,
        password: str | None = None,
    ) -> None:
        if not authorized_key and not password:  # an empty password would let anyone in
            raise ValueError("the demo target needs an authorized_key or a password, or nobody could log in")
        if not username:
            raise ValueError("the demo target needs a username")
        self.host = _loopback_only(host)
        self.username = username
        self.state_dir = Path(state_dir)
        self.home = self.state_dir / "home"
        self._requested_port = port
        self._authorized_key = asyncssh.import_public_key(authorized_key) if authorized_key else None
        self._password = password or None
        self._host_key: asyncssh.SSHKey | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._sessions: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._acceptor is None:
            raise RuntimeError("the demo target is not started: await start() first")
        return self._acceptor.get_port()

    @property
    def host_key(self) -> str:
        """The public host key, ``ssh-ed25519 AAAA…``; available before ``start()`` (made then if need be)."""
        if self._host_key is None:
            self._host_key = _load_or_create_host_key(self.state_dir)
        return _public_line(self._host_key)

    async def start(self) -> None:
        if self._acceptor is not None:
            raise RuntimeError("the demo target is running already")
        if self._host_key is None:
            self._host_key = _load_or_create_host_key(self.state_dir)
        self.home.mkdir(parents=True, exist_ok=True)
        home = str(self.home).encode()
        self._acceptor = await asyncssh.listen(
            self.host,
            self._requested_port,
            server_factory=lambda: _DemoSSHServer(self),
            server_host_keys=[self._host_key],
            process_factory=self._run_session,
            sftp_factory=lambda channel: asyncssh.SFTPServer(channel, chroot=home),
            encoding=None,
            line_editor=False,  # the shell's own PTY does line editing, as on a real machine
            allow_pty=True,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=30,
        )
        logger.warning(
            "demo target on %s:%d (user %s): a local /bin/sh for the walkthrough, never for production",
            self.host,
            self.port,
            self.username,
        )

    async def stop(self) -> None:
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is None:
            return
        acceptor.close()
        connections = list(self._connections)
        for connection in connections:
            connection.close()
        for connection in connections:
            await connection.wait_closed()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=HANGUP_GRACE_SECONDS + OUTPUT_GRACE_SECONDS + 1)
        await acceptor.wait_closed()

    async def __aenter__(self) -> DemoTarget:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- sessions -------------------------------------------------------------------------------

    def _environment(self, term_type: str | None) -> dict[str, str]:
        environment = {
            "HOME": str(self.home),
            "USER": self.username,
            "LOGNAME": self.username,
            "SHELL": SHELL,
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PS1": f"{self.username}@gatepass-demo$ ",
        }
        if term_type:
            environment["TERM"] = term_type
        return environment

    async def _run_session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
        try:
            term_type = process.get_terminal_type()
            command = process.command
            if term_type is not None:
                if command is None:
                    process.stdout.write(BANNER)
                argv = [SHELL, "-c", command] if command is not None else [SHELL, "-i"]
                await self._run_in_pty(process, argv, term_type)
            else:
                argv = [SHELL, "-c", command] if command is not None else [SHELL]
                await self._run_with_pipes(process, argv)
        except Exception:  # a broken session must not take the server down; say so and end it
            logger.exception("demo target session failed")
            with contextlib.suppress(Exception):
                process.exit(255)
        finally:
            if task is not None:
                self._sessions.discard(task)

    async def _run_with_pipes(self, process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> None:
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.home,
            env=self._environment(None),
            preexec_fn=_new_session(None),  # its own process group, so hanging up reaches what it started
        )
        if child.stdin is None or child.stdout is None or child.stderr is None:  # pragma: no cover
            raise RuntimeError("asyncio gave the demo target's program no pipes")
        child_stdin, child_stdout, child_stderr = child.stdin, child.stdout, child.stderr

        async def feed_input() -> None:
            while data := await _read_channel(process, child.pid, None):
                child_stdin.write(data)
                await child_stdin.drain()
            child_stdin.close()

        async def copy(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
            while data := await source.read(READ_SIZE):
                sink.write(data)
                await sink.drain()

        async def copy_output() -> None:
            await asyncio.gather(copy(child_stdout, process.stdout), copy(child_stderr, process.stderr))

        await self._supervise(process, child, feed_input(), copy_output())

    async def _run_in_pty(self, process: asyncssh.SSHServerProcess[bytes], argv: list[str], term_type: str) -> None:
        main_fd, follower_fd = os.openpty()
        try:
            try:
                _set_window_size(main_fd, process.get_terminal_size())
                child = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=follower_fd,
                    stdout=follower_fd,
                    stderr=follower_fd,
                    cwd=self.home,
                    env=self._environment(term_type),
                    preexec_fn=_new_session(os.ttyname(follower_fd)),
                )
            finally:
                os.close(follower_fd)
            os.set_blocking(main_fd, False)

            async def feed_input() -> None:
                while data := await _read_channel(process, child.pid, main_fd):
                    await _write_pty(main_fd, data)

            async def copy_output() -> None:
                while data := await _read_pty(main_fd):
                    process.stdout.write(data)
                    await process.stdout.drain()

            await self._supervise(process, child, feed_input(), copy_output())
        finally:
            os.close(main_fd)

    async def _supervise(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        child: asyncio.subprocess.Process,
        feed_input: Awaitable[None],
        copy_output: Awaitable[None],
    ) -> None:
        """Run until the program exits (then report its status) or the client goes away (then hang it up)."""
        input_task = asyncio.ensure_future(feed_input)
        output_task = asyncio.ensure_future(copy_output)
        exited = asyncio.ensure_future(child.wait())
        closed = asyncio.ensure_future(process.wait_closed())
        tasks = [input_task, output_task, exited, closed]
        try:
            await asyncio.wait([exited, closed], return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                # A program that leaves a child holding its output would otherwise keep the session open.
                await asyncio.wait([output_task], timeout=OUTPUT_GRACE_SECONDS)
                returncode = exited.result()
                if returncode >= 0:
                    process.exit(returncode)
                else:
                    process.exit_with_signal(signal.Signals(-returncode).name.removeprefix("SIG"))
        finally:
            if child.returncode is None:
                await _hang_up(child)
            for task in tasks:
                task.cancel()
            # Collect every outcome (a client that vanished mid-write raises in a copy task) so none is
            # reported later as "exception never retrieved".
            await asyncio.gather(*tasks, return_exceptions=True)


async def _read_channel(process: asyncssh.SSHServerProcess[bytes], pid: int, pty_fd: int | None) -> bytes:
    """Next input from the client; signals, breaks and window changes are applied on the way."""
    while True:
        try:
            return await process.stdin.read(READ_SIZE)
        except asyncssh.TerminalSizeChanged as change:
            if pty_fd is not None:
                _set_window_size(pty_fd, change.term_size)
        except asyncssh.BreakReceived:
            _signal_group(pid, signal.SIGINT)  # RFC 4335: a break is an interrupt to the program
        except asyncssh.SignalReceived as received:
            signal_number = getattr(signal, f"SIG{received.signal}", None)
            if isinstance(signal_number, signal.Signals):
                _signal_group(pid, signal_number)


async def _hang_up(child: asyncio.subprocess.Process) -> None:
    """SIGHUP to the program's process group, as when a terminal line drops; SIGKILL if it lingers."""
    _signal_group(child.pid, signal.SIGHUP)
    try:
        await asyncio.wait_for(child.wait(), HANGUP_GRACE_SECONDS)
    except TimeoutError:
        _signal_group(child.pid, signal.SIGKILL)
        await child.wait()

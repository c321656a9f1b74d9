"""What every benchmark shares: real OpenSSH sshd's, one Gatepass installation driven with the `gatepass`
command, stock `ssh` configs for the three paths (gateway, OpenSSH ProxyJump, direct), timing and tables.

Everything listens on 127.0.0.1 only and lives in one temporary directory; `Bench.close()` stops every
process it started (sshd trees included) and removes the directory. The bench process makes itself a
"child subreaper" (prctl), so remote commands that outlive their SSH connection (a `sleep 600` whose
session was cut, no PTY) are re-parented to it and killed at the end instead of leaking.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp

REPO = Path(__file__).resolve().parents[1]
SSHD = "/usr/sbin/sshd"
ASSET = "hmi-01"
SITE = "plant-a"


def gatepass_binary() -> str:
    """The `gatepass` command of the interpreter running the bench (the project's venv under `make bench`)."""
    beside = Path(sys.executable).with_name("gatepass")
    if beside.exists():
        return str(beside)
    venv = REPO / ".venv" / "bin" / "gatepass"
    if venv.exists():
        return str(venv)
    found = shutil.which("gatepass")
    if found is None:
        raise SystemExit("bench: the `gatepass` command was not found; run `make venv` first")
    return found


GATEPASS = gatepass_binary()


# ---------------------------------------------------------------------------------------------------
# processes


def compile_bytecode() -> None:
    """Byte-compile the product's packages, as `pip install` does: this sandbox sets PYTHONDONTWRITEBYTECODE, so
    every module changed since its last compile would otherwise be compiled again at each `gatepass` start,
    a cost (several ms a module) that an installed CLI never pays."""
    import compileall

    for package in ("cli", "broker", "gateway", "assembly", "approvals", "demo"):
        if (REPO / package).is_dir():
            compileall.compile_dir(REPO / package, quiet=1)


def become_subreaper() -> None:
    """Orphaned descendants (remote commands of cut sessions) get re-parented to us, so we can end them."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def writer_cpu_seconds(serve_pid: int) -> float:
    """CPU seconds of the gateway's recording writer process (gateway.recording_worker), a child of serve."""
    total = 0.0
    for children in Path(f"/proc/{serve_pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                if b"gateway.recording_worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    total += cpu_seconds(int(pid))
            except OSError:  # it ended meanwhile
                continue
    return total


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill_tree(root: int) -> list[int]:
    """SIGSTOP ``root`` and all its descendants (until the tree stops growing), then SIGKILL them."""
    frozen: list[int] = []
    pending = [root]
    for _ in range(50):  # bounded: a tree deeper than this is not something we started
        if not pending:
            break
        for pid in pending:
            _signal(pid, signal.SIGSTOP)
        frozen.extend(pending)
        known = set(frozen)
        children = _children_by_parent()
        pending = [c for p in frozen for c in children.get(p, []) if c not in known]
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    return frozen


def reap_orphans(keep: Iterable[int] = ()) -> int:
    """Kill and reap our direct children that no Popen object owns (re-parented remote commands)."""
    keep = set(keep)
    me = os.getpid()
    orphans = [pid for pid in _children_by_parent().get(me, []) if pid not in keep]
    for pid in orphans:
        kill_tree(pid)
    for pid in orphans:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    return len(orphans)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_banner(port: int, alive: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server meant for 127.0.0.1:{port} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"nothing answered SSH on 127.0.0.1:{port} within {timeout}s")


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    os.chmod(path, 0o600)
    return path


def public_line(path: Path) -> str:
    return " ".join(Path(str(path) + ".pub").read_text().split()[:2])


# ---------------------------------------------------------------------------------------------------
# sshd


@dataclass
class Sshd:
    """One OpenSSH sshd on a free loopback port with its own config, host key and authorized keys."""

    name: str
    directory: Path
    port: int
    host_key: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key}"

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            kill_tree(self.process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def start_sshd(directory: Path, name: str, *, authorized_keys: Sequence[str], skip_rc_files: bool = True,
               log_level: str = "VERBOSE") -> Sshd:
    """sshd for the user running the bench, keys only. ``skip_rc_files`` sets SHLVL=1 for sessions, so
    Debian's bash does not source ~/.bashrc for `ssh host CMD` (FIELD-NOTES: ~80 ms of root's rc files)."""
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # sshd's privilege separation dir
    directory.mkdir(parents=True, exist_ok=True)
    host_key = keygen(directory / "ssh_host_ed25519_key")
    authorized = directory / "authorized_keys"
    authorized.write_text("".join(line.strip() + "\n" for line in authorized_keys))
    username = pwd.getpwuid(os.getuid()).pw_name
    log_path = directory / "sshd.log"
    last: Exception | None = None
    for _attempt in range(3):
        port = free_port()
        lines = [
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}", f"AllowUsers {username}", "UsePAM no", "StrictModes no",
            "PermitRootLogin prohibit-password", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "Subsystem sftp internal-sftp", "AllowTcpForwarding yes",
            "X11Forwarding no", "PrintMotd no", "PrintLastLog no", "UseDNS no", "MaxStartups 200:30:400",
            "MaxSessions 100", f"LogLevel {log_level}",
        ]
        if skip_rc_files:
            lines.append("SetEnv SHLVL=1")
        config = directory / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        with log_path.open("ab") as log:
            process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT)
        server = Sshd(name=name, directory=directory, port=port, host_key=public_line(host_key), process=process,
                      log_path=log_path)
        try:
            wait_for_banner(port, lambda p=process: p.poll() is None)  # type: ignore[misc]
        except (RuntimeError, TimeoutError) as error:
            server.stop()
            last = error
            continue
        return server
    raise RuntimeError(f"sshd {name} did not start: {last}\n{log_path.read_text(errors='replace')}")


# ---------------------------------------------------------------------------------------------------
# the Gatepass installation


@dataclass
class Installation:
    """`gatepass init`, admin set-up, `gatepass serve`, and vendor/supervisor logins, as a user does them."""

    root: Path
    http_port: int = field(default_factory=free_port)
    ssh_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    _clients: dict[str, httpx.Client] = field(default_factory=dict)
    ssh_config: str = ""  # what `gatepass ssh-config` printed for the vendor

    vendor = "vendor1"
    supervisor = "sup-a1"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.root / "serve.log"

    def home(self, user: str | None) -> Path:
        path = self.root / f"home-{user or 'admin'}"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def env(self, user: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEPASS_")}
        env.update({
            "GATEPASS_DATA": str(self.root / "data"),
            "GATEPASS_HTTP": f"127.0.0.1:{self.http_port}",
            "GATEPASS_SSH": f"127.0.0.1:{self.ssh_port}",
            "GATEPASS_SERVER": self.base_url,
            "GATEPASS_HOME": str(self.home(user)),
        })
        return env

    def gatepass(self, *args: str, user: str | None = None, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([GATEPASS, *args], env=self.env(user), text=True, capture_output=True,
                                timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"gatepass {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def set_up(self, target: Sshd, target_key: Path) -> None:
        self.users["admin"] = json.loads(self.gatepass("init", "--json").stdout)["admin"]
        self.gatepass("admin", "site", "add", SITE, "--max-window", "8h")
        self.gatepass("admin", "asset", "add", ASSET, "--site", SITE, "--host", "127.0.0.1",
                      "--ssh-port", str(target.port), "--ssh-user", pwd.getpwuid(os.getuid()).pw_name,
                      "--ssh-key-file", str(target_key), "--host-key", target.host_key)
        for name, role, sites in ((self.vendor, "vendor", ()), (self.supervisor, "supervisor", (SITE,))):
            args = ["admin", "user", "add", name, "--role", role, "--org", "Bench", "--json"]
            for site in sites:
                args += ["--site", site]
            self.users[name] = json.loads(self.gatepass(*args).stdout)
        self.start()
        for name in (self.vendor, self.supervisor):
            self.login(name)

    def start(self) -> None:
        # BENCH_SERVE_COMMAND replaces `gatepass serve` for what-if runs (bench/whatif_serve.py).
        command = shlex.split(os.environ.get("BENCH_SERVE_COMMAND", "")) or [GATEPASS, "serve"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env(), stdout=log, cwd=REPO,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gatepass serve exited early:\n{self.log_path.read_text()}")
            if "SSH gateway:" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"gatepass serve did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_tree(self.process.pid)
                self.process.wait(timeout=10)

    def login(self, name: str) -> None:
        """Once per user: the broker accepts each TOTP code only once (replay guard)."""
        creds = self.users[name]
        password_file = self.home(name) / "password"
        password_file.write_text(creds["password"] + "\n")
        password_file.chmod(0o600)
        self.gatepass("login", "--server", self.base_url, "--user", name, "--password-file", str(password_file),
                      "--totp", pyotp.TOTP(creds["totp_secret"]).now(), "--enrolment-code", creds["enrolment_code"],
                      user=name)

    def token(self, user: str) -> str:
        return str(json.loads((self.home(user) / "session.json").read_text())["token"])

    def api(self, user: str) -> httpx.Client:
        """A kept-alive HTTP client with the user's saved session (what the CLI sends, minus its start-up)."""
        if user not in self._clients:
            self._clients[user] = httpx.Client(base_url=self.base_url + "/api/v1", timeout=15,
                                               headers={"Authorization": f"Bearer {self.token(user)}"})
        return self._clients[user]

    def call(self, user: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.api(user).request(method, path, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path} as {user}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    # -- grants ------------------------------------------------------------------------------------

    @property
    def vendor_key(self) -> Path:
        return self.home(self.vendor) / "id_ed25519"

    @property
    def certificate_path(self) -> Path:
        return self.home(self.vendor) / "certs" / f"{ASSET}-cert.pub"

    def revoke_usable(self) -> None:
        for grant in self.call(self.vendor, "GET", f"/grants?asset={ASSET}&usable=true"):
            self.call(self.supervisor, "POST", f"/grants/{grant['id']}/revoke", {"reason": "bench: next run"})

    def first_grant(self, duration: str = "1h") -> dict[str, Any]:
        """The first grant through the CLI: `gatepass request` (creates the vendor key), `gatepass approve`,
        `gatepass ssh-config` (writes the certificate and pins the gateway's host key)."""
        request = json.loads(self.gatepass("request", ASSET, "--for", duration, "--reason", "bench", "--json",
                                           user=self.vendor).stdout)
        self.gatepass("approve", request["id"], "--comment", "bench", user=self.supervisor)
        self.ssh_config = self.gatepass("ssh-config", user=self.vendor).stdout
        grants = self.call(self.vendor, "GET", f"/grants?asset={ASSET}&usable=true")
        grant: dict[str, Any] = next(g for g in grants if g["request_id"] == request["id"])
        return grant

    def next_grant(self, duration: str = "1h") -> dict[str, Any]:
        """Another grant over the API (no CLI start-up): earlier ones are revoked first, so this is the one
        `gatepass ssh` picks; its certificate is written where the CLI writes it."""
        self.revoke_usable()
        request = self.call(self.vendor, "POST", "/requests", {
            "asset": ASSET, "duration": duration, "reason": "bench", "ssh": True, "ports": [],
            "public_key": Path(str(self.vendor_key) + ".pub").read_text().strip(),
        })
        approved = self.call(self.supervisor, "POST", f"/requests/{request['id']}/approve", {"comment": "bench"})
        grant: dict[str, Any] = self.call(self.vendor, "GET", f"/grants/{approved['grant']['id']}")
        self.certificate_path.write_text(grant["certificate"].strip() + "\n")
        return grant


# ---------------------------------------------------------------------------------------------------
# one bench environment: target sshd, jump sshd, installation, ssh config


class Bench:
    """Target sshd (rc files skipped), jump sshd (for ProxyJump; its own sessions source rc files, which
    gives the rc-file cost as a reference), a Gatepass installation, and one ssh config with the hosts
    ``direct``, ``jump``, ``proxyjump`` (target via jump), ``direct-rc`` (the jump sshd itself, a session
    that runs the login shell's rc files) and ``ASSET.gatepass`` (from `gatepass ssh-config`)."""

    def __init__(self, name: str, *, target_log_level: str = "DEBUG1") -> None:
        become_subreaper()
        compile_bytecode()
        self.root = Path(tempfile.mkdtemp(prefix=f"gatepass-bench-{name}-"))
        self.target: Sshd | None = None
        self.jump: Sshd | None = None
        self.installation: Installation | None = None
        self._target_log_level = target_log_level
        self.ssh_config = self.root / "ssh_config"

    def __enter__(self) -> Bench:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        client = keygen(self.root / "client_ed25519")  # the vendor's own key for direct / ProxyJump
        vault = keygen(self.root / "vault_ed25519")  # the credential the gateway injects
        self.client_key = client
        self.target = start_sshd(self.root / "target", "target", authorized_keys=[public_line(client),
                                 public_line(vault)], skip_rc_files=True, log_level=self._target_log_level)
        self.jump = start_sshd(self.root / "jump", "jump", authorized_keys=[public_line(client)],
                               skip_rc_files=False)
        self.installation = Installation(self.root / "gatepass")
        self.installation.root.mkdir()
        self.installation.set_up(self.target, vault)
        self.grant = self.installation.first_grant()
        self.write_ssh_config()

    def write_ssh_config(self) -> None:
        assert self.target is not None
        assert self.jump is not None
        assert self.installation is not None
        known_hosts = self.root / "known_hosts"
        known_hosts.write_text(f"{self.target.known_hosts_line}\n{self.jump.known_hosts_line}\n")
        user = pwd.getpwuid(os.getuid()).pw_name
        common = [f"IdentityFile {self.client_key}", "IdentitiesOnly yes", f"UserKnownHostsFile {known_hosts}",
                  "GlobalKnownHostsFile /dev/null", "StrictHostKeyChecking yes"]
        blocks = [
            ("direct", self.target.port, []),
            ("jump", self.jump.port, []),
            ("direct-rc", self.jump.port, []),
            ("proxyjump", self.target.port, ["ProxyJump jump"]),
        ]
        text = ["# written by bench/harness.py", "Host *", "    BatchMode yes", "    LogLevel ERROR", ""]
        for host, port, extra in blocks:
            text += [f"Host {host}", "    HostName 127.0.0.1", f"    Port {port}", f"    User {user}",
                     *(f"    {line}" for line in common + extra), ""]
        text.append(self.installation.ssh_config)
        self.ssh_config.write_text("\n".join(text))

    def ssh(self, host: str, *command: str, options: Sequence[str] = (), config: Path | None = None) -> list[str]:
        """argv of stock ssh for one of the config's hosts: ``direct``, ``proxyjump``, ``direct-rc``, or
        ``gateway`` (the ``ASSET.gatepass`` block `gatepass ssh-config` printed)."""
        name = f"{ASSET}.gatepass" if host == "gateway" else host
        return ["ssh", "-F", str(config or self.ssh_config), *options, name, *command]

    def config_with(self, *lines: str) -> Path:
        """The same ssh config with ``lines`` (e.g. ``Ciphers aes128-gcm@openssh.com``) set for every host,
        jump hops included (a ``-o`` on the command line would not reach the ProxyJump's own ssh)."""
        tag = "_".join(line.split()[-1] for line in lines).replace(",", "_").replace("@", "_")
        path = self.root / f"ssh_config-{tag}"
        path.write_text("Host *\n" + "".join(f"    {line}\n" for line in lines) + "\n" + self.ssh_config.read_text())
        return path

    def gatepass_ssh(self, *command: str) -> tuple[list[str], dict[str, str]]:
        assert self.installation is not None
        inst = self.installation
        return [GATEPASS, "ssh", ASSET, "--", *command], inst.env(inst.vendor)

    def close(self) -> None:
        if self.installation is not None:
            self.installation.stop()
        for server in (self.jump, self.target):
            if server is not None:
                server.stop()
        reap_orphans()
        if os.environ.get("BENCH_KEEP"):  # keep serve.log and the sshd logs to look at a run
            print(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- negotiated ciphers ------------------------------------------------------------------------

    def negotiated(self, host: str, config: Path | None = None) -> str:
        """Key exchange / cipher of each SSH hop for one `ssh HOST true`: client-side from `ssh -v`, and for
        the gateway's own hop to the target from the target sshd's log (needs LogLevel DEBUG1 there)."""
        assert self.target is not None
        offset = self.target.log_size()
        done = subprocess.run(self.ssh(host, "true", options=["-v"], config=config), capture_output=True,
                              text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
        hops = _hops(done.stderr)
        if host == "gateway":
            time.sleep(0.2)
            upstream = _hops(self.target.log_since(offset))
            return f"client->gateway {hops[0] if hops else '?'}; gateway->target {upstream[0] if upstream else '?'}"
        if host == "proxyjump":
            return f"client->jump {hops[0] if hops else '?'}; client->target (inside) " \
                   f"{hops[1] if len(hops) > 1 else '?'}"
        return hops[0] if hops else "?"


def _hops(log: str) -> list[str]:
    """``kex/cipher`` per SSH connection in an OpenSSH debug log, in order."""
    kex = re.findall(r"kex: algorithm: (\S+)", log)
    ciphers = re.findall(r"kex: server->client cipher: (\S+)", log)
    return [f"{k.removesuffix('@openssh.com')}/{c.removesuffix('@openssh.com')}"
            for k, c in zip(kex, ciphers, strict=False)]


# ---------------------------------------------------------------------------------------------------
# timing and tables


def timed_run(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 60,
              stdout: int | None = subprocess.DEVNULL, check: bool = True) -> tuple[float, int, str]:
    """Wall seconds from just before the fork to the exit of ``argv``, its exit code and its stderr."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE,
                          timeout=timeout, check=False)
    elapsed = time.perf_counter() - start
    stderr = done.stderr.decode(errors="replace")
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {stderr}")
    return elapsed, done.returncode, stderr


@dataclass
class Timeline:
    """stderr lines of `ssh -v`, each stamped (seconds after the start) as it arrived."""

    lines: list[tuple[float, str]]
    total: float

    def first(self, pattern: str) -> float | None:
        for stamp, line in self.lines:
            if re.search(pattern, line):
                return stamp
        return None


def ssh_timeline(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 30) -> Timeline:
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, bufsize=1)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append((time.perf_counter() - start, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    total = time.perf_counter() - start
    reader.join(timeout=5)
    return Timeline(lines=lines, total=total)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = []
    for index, row in enumerate(cells):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                strict=True))))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def machine_line() -> str:
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
    serve = os.environ.get("BENCH_SERVE_COMMAND")
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {ssh_version.split(',')[0]}" + \
        (f", serve: {serve}" if serve else "")

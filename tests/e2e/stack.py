"""A whole Gatepass installation driven the way a user drives it: the `gatepass` command, `gatepass serve`
in its own process, the stock `ssh` client, and a real OpenSSH sshd as the plant machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from tests.fixtures import database as test_databases
from tests.fixtures.ports import free_port

GATEPASS = str(Path(sys.executable).with_name("gatepass"))


@dataclass
class Stack:
    root: Path
    http_port: int
    ssh_port: int
    database_url: str
    process: subprocess.Popen[bytes] | None = None
    users: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.root / "serve.log"

    def env(self, home: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEPASS_")}
        env.update({
            "GATEPASS_DATA": str(self.data),
            "GATEPASS_DATABASE_URL": self.database_url,
            "GATEPASS_HTTP": f"127.0.0.1:{self.http_port}",
            "GATEPASS_SSH": f"127.0.0.1:{self.ssh_port}",
            "GATEPASS_SERVER": self.base_url,
            "GATEPASS_HOME": str(home or self.root / "home-admin"),
        })
        return env

    def gatepass(self, *args: str, user: str | None = None, check: bool = True, timeout: float = 60,
                 stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([GATEPASS, *args], env=self.env(self.home(user) if user else None), text=True,
                                capture_output=True, timeout=timeout, input=stdin, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"gatepass {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def gatepass_many(self, *commands: list[str], users: list[str | None] | None = None,
                      timeout: float = 120) -> list[str]:
        """Run several commands one after the other in ONE process, each through the real command line
        (``cli.main.main``: argparse, the command, its output; ``users[i]``: command i runs with that user's
        GATEPASS_HOME, as ``gatepass(..., user=)``), and return each one's stdout; fails like ``gatepass`` on the
        first that exits non-zero. For set-up only: a process per command costs a Python start-up and the imports
        each time (most of an e2e module's set-up)."""
        homes = [str(self.home(user)) if user else None for user in (users or [None] * len(commands))]
        result = subprocess.run([sys.executable, "-c", _MANY_COMMANDS], env=self.env(), text=True,
                                capture_output=True, timeout=timeout, input=json.dumps(list(zip(commands, homes,
                                                                                                strict=True))),
                                check=False)
        if result.returncode != 0:
            raise AssertionError(f"gatepass (several commands) exited {result.returncode}:\n{result.stdout}\n"
                                 f"{result.stderr}")
        outputs: list[str] = json.loads(result.stdout)
        return outputs

    def home(self, user: str) -> Path:
        path = self.root / f"home-{user}"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    # --- set-up, as an operator would -------------------------------------------------------------
    def init(self) -> None:
        self.users["admin"] = json.loads(self.gatepass("init", "--json").stdout)["admin"]

    def add_user(self, name: str, role: str, *sites: str) -> None:
        self.users[name] = json.loads(self.gatepass(*self.add_user_args(name, role, *sites)).stdout)

    @staticmethod
    def add_user_args(name: str, role: str, *sites: str) -> list[str]:
        args = ["admin", "user", "add", name, "--role", role, "--json", "--org", "ACME Automation"]
        for site in sites:
            args += ["--site", site]
        return args

    def add_users(self, *users: tuple[str, ...]) -> None:
        """``add_user`` for each (name, role, *sites), in one process (gatepass_many)."""
        outputs = self.gatepass_many(*(self.add_user_args(*user) for user in users))
        for user, output in zip(users, outputs, strict=True):
            self.users[user[0]] = json.loads(output)

    def start(self, command: str = "serve") -> None:
        """`gatepass serve` (broker, web and gateway), or `gatepass broker` alone."""
        ready = "SSH gateway:" if command == "serve" else "Gatepass is running."
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            earlier = log.tell()  # a restart appends: only this run's lines say it is ready
            self.process = subprocess.Popen([GATEPASS, command], env=self.env(), stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gatepass {command} exited early:\n{self.log_path.read_text()}")
            if ready.encode() in self.log_path.read_bytes()[earlier:]:
                return
            time.sleep(0.05)
        raise AssertionError(f"gatepass {command} did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        stop_process(self.process)

    # --- what vendors and supervisors do -----------------------------------------------------------
    def login(self, name: str) -> None:
        self.gatepass(*self._login_args(name), user=name)

    def login_all(self, *names: str) -> None:
        """``login`` for each user, in one process (gatepass_many)."""
        self.gatepass_many(*(self._login_args(name) for name in names), users=list(names))

    def _login_args(self, name: str) -> list[str]:
        creds = self.users[name]
        password_file = self.home(name) / "password"
        password_file.write_text(creds["password"] + "\n")
        return ["login", "--server", self.base_url, "--user", name, "--password-file", str(password_file),
                "--totp", pyotp.TOTP(creds["totp_secret"]).now(), "--enrolment-code", creds["enrolment_code"]]

    def request(self, user: str, asset: str, *args: str) -> dict[str, Any]:
        result = self.gatepass("request", asset, *args, "--json", user=user)
        loaded: dict[str, Any] = json.loads(result.stdout)
        return loaded

    def approve(self, user: str, request_id: str) -> None:
        self.gatepass("approve", request_id, "--comment", "ok from the plant", user=user)

    def fresh_grant(self, asset: str, *args: str, approver: str = "sup-a1") -> dict[str, Any]:
        """vendor1's only usable grant on ``asset``: the ones before revoked, then requested with ``args``
        (``--for``, ``--reason``, ``--port`` …) and approved by ``approver``."""
        for old in self.api_get("vendor1", f"/grants?asset={asset}&usable=true"):
            self.gatepass("revoke", old["id"], user="vendor1")
        request = self.request("vendor1", asset, *args)
        self.approve(approver, request["id"])
        return self.grant_of("vendor1", request["id"])

    def grant_of(self, user: str, request_id: str) -> dict[str, Any]:
        requests = json.loads(self.gatepass("requests", "--json", user=user).stdout)
        grant: dict[str, Any] = next(r for r in requests if r["id"] == request_id)["grant"]
        return grant

    def api_get(self, user: str, path: str) -> Any:
        """GET an API path with the user's saved session, as the CLI would."""
        token = json.loads((self.home(user) / "session.json").read_text())["token"]
        response = httpx.get(f"{self.base_url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"},
                             timeout=10)
        response.raise_for_status()
        return response.json()

    def audit_events(self, user: str = "security1") -> list[dict[str, Any]]:
        """Read the trail as a security reviewer does: `gatepass audit export --format jsonl`."""
        lines = self.gatepass("audit", "export", "--format", "jsonl", user=user).stdout.splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def grant_events(self, action: str, grant_id: str, *, count: int = 1,
                     timeout: float = 15) -> list[dict[str, Any]]:
        """The trail's ``action`` events of this grant, once there are ``count`` of them or ``timeout`` passed
        (the gateway reports sessions in the background); the caller asserts on what came."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.audit_events() if e["action"] == action and e["details"].get("grant") == grant_id]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def grant_event(self, action: str, grant_id: str, *, timeout: float = 15) -> dict[str, Any]:
        """The first ``action`` event of this grant; fails with the tail of the server's log if none comes."""
        found = self.grant_events(action, grant_id, timeout=timeout)
        if not found:
            raise AssertionError(f"no {action} for {grant_id}: {self.log_path.read_text()[-3000:]}")
        return found[0]


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """TERM a `gatepass` process and wait for it (it reports what it cut first); KILL it if it does not go."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def new_installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Stack on its own database (PostgreSQL under GATEPASS_TEST_POSTGRES, else SQLite) and free ports, not
    initialised yet; stopped and its database dropped afterwards."""
    root = tmp_path_factory.mktemp("gatepass")
    server = test_databases.postgres_server_url()
    database = test_databases.create_postgres_database(server) if server else \
        test_databases.create_sqlite_database(root)
    stack = Stack(root=root, http_port=free_port(), ssh_port=free_port(), database_url=database.url)
    try:
        yield stack
    finally:
        stack.stop()
        if server:
            test_databases.drop_postgres_database(server, database.name)


# What gatepass_many runs: argv lists as JSON on stdin, each through cli.main.main with its output captured; the
# outputs as a JSON list on stdout, or the failing command's words and output on stderr with its exit code.
_MANY_COMMANDS = """
import contextlib, io, json, os, sys
from cli.context import Context
from cli.main import main
from cli.state import ClientState
outputs = []
for argv, home in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    environ = dict(os.environ, GATEPASS_HOME=home) if home else dict(os.environ)
    context = Context(environ=environ, state=ClientState.from_environ(environ), out=out, err=err)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv, context=context)
    if code != 0:
        sys.stderr.write(f"gatepass {' '.join(argv)} exited {code}:\\n{out.getvalue()}\\n{err.getvalue()}")
        sys.exit(code)
    outputs.append(out.getvalue())
json.dump(outputs, sys.stdout)
"""

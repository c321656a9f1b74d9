"""Helpers for the tests of `gatepass admin asset scan|rotate`: an asset in the plant whose SSH service is a real sshd,
and ways to look at what the vault and the sshd hold."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from broker.inventory.sites import credential_purpose
from tests.fixtures.broker import ACTOR, Plant
from tests.fixtures.ports import wait_for_port
from tests.fixtures.sshd import OpenSSHServer

ASSET = "hmi-ssh"


def add_sshd_asset(plant: Plant, sshd: OpenSSHServer, *, name: str = ASSET, host_key: str | None = None,
                   private_key: str | None = None) -> None:
    """``name`` in plant-a: the sshd's SSH service, logged in with its client key, its host key pinned."""
    from broker.inventory import sites

    with plant.session() as session:
        sites.create_asset(session, vault=plant.vault, now=plant.clock.now(), actor=ACTOR, name=name,
                           site="plant-a", host=sshd.host, ssh_port=sshd.port, ssh_user=sshd.username,
                           ssh_private_key=private_key or sshd.client_private_key_text,
                           host_key=host_key or sshd.host_key)


def vaulted(plant: Plant, name: str = ASSET) -> tuple[str, str]:
    """(credential kind, the secret) the vault holds for ``name``."""
    kind, sealed = plant.row("SELECT credential_kind, credential_ciphertext FROM assets WHERE name = :name",
                             name=name)
    return kind, plant.vault.open(bytes(sealed), purpose=credential_purpose(name)).decode()


def pinned(plant: Plant, name: str = ASSET) -> str:
    return str(plant.row("SELECT host_key FROM assets WHERE name = :name", name=name)[0])


def logs_in(sshd: OpenSSHServer, key: Path) -> bool:
    """Whether the stock OpenSSH client logs in to ``sshd`` with ``key`` (what sshd itself decides)."""
    done = subprocess.run(sshd.ssh_command("true", key=key), capture_output=True, timeout=30, check=False,
                          stdin=subprocess.DEVNULL)
    return done.returncode == 0


def write_key(directory: Path, name: str, private_text: str) -> Path:
    """A private key in a 0600 file, for the stock ssh client of a test (never what Gatepass does)."""
    path = directory / name
    path.write_text(private_text)
    path.chmod(0o600)
    return path


def read_authorized_keys_from(sshd: OpenSSHServer, *files: Path) -> None:
    """Make ``sshd`` read these authorized_keys files (in this order) instead of its one: its config rewritten,
    then SIGHUP, on which sshd -D executes itself again and reads it."""
    config = sshd.directory / "sshd_config"
    lines = [line for line in config.read_text().splitlines() if not line.startswith("AuthorizedKeysFile ")]
    config.write_text("\n".join([*lines, "AuthorizedKeysFile " + " ".join(str(f) for f in files), ""]))
    started = sshd.log_text().count("Server listening on")
    os.kill(sshd.process.pid, signal.SIGHUP)
    # Until it logs that it listens again, the port may still be the old run's.
    deadline = time.monotonic() + 10
    while sshd.log_text().count("Server listening on") == started:
        assert time.monotonic() < deadline, f"sshd did not restart on SIGHUP:\n{sshd.log_text()}"
        time.sleep(0.01)
    wait_for_port(sshd.host, sshd.port, timeout=10, banner_prefix=b"SSH-", alive=sshd.is_running)


@contextlib.contextmanager
def tcp_listener(*, reply: bytes | None) -> Iterator[int]:
    """A loopback TCP port that answers each connection with ``reply`` and closes it, or (None) never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if reply is None:
                held.append(connection)
            else:
                with connection:
                    connection.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        for connection in held:
            connection.close()

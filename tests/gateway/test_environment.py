"""Client environment variables reach the target only by name, when the asset allows them (issue 9), checked
against a real sshd that accepts them (AcceptEnv); and the authorize answer's policy fields as the gateway reads
them, from this broker and from an older one."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import BrokerProtocolError
from gateway.models import Authorization
from tests.fixtures.ports import wait_for_port
from tests.fixtures.sshd import OpenSSHServer, start_sshd
from tests.gateway.conftest import GrantFactory, sshd_credential
from tests.gateway.fake_broker import FakeBroker
from tests.gateway.test_exec_guard import run, ssh_argv

pytestmark = pytest.mark.anyio

PROBE = 'echo "LC_ALL=[${LC_ALL-unset}] LANG=[${LANG-unset}]"'
SEND = ("-o", "SetEnv=LC_ALL=C.UTF-8 LANG=C.UTF-8")


@pytest.fixture
def sshd_accepting_env(tmp_path: Path) -> Iterator[OpenSSHServer]:
    """The sshd fixture with ``AcceptEnv LANG LC_*`` (Debian's stock sshd_config has the same line)."""
    server = start_sshd(tmp_path / "sshd")
    try:
        config = server.directory / "sshd_config"
        config.write_text(config.read_text() + "AcceptEnv LANG LC_*\n")
        os.kill(server.process.pid, signal.SIGHUP)  # sshd -D re-executes itself with the new config
        deadline = time.monotonic() + 10
        while server.log_text().count("Server listening on") < 2:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
        wait_for_port(server.host, server.port, timeout=10, banner_prefix=b"SSH-", alive=server.is_running)
        yield server
    finally:
        server.stop()


async def test_the_target_accepts_the_variables_when_the_client_talks_to_it_directly(
    sshd_accepting_env: OpenSSHServer,
) -> None:
    """The control: without the gateway in between, the client's LC_ALL and LANG arrive."""
    process = await asyncio.create_subprocess_exec(
        *sshd_accepting_env.ssh_command(PROBE, options=SEND), stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert stdout == b"LC_ALL=[C.UTF-8] LANG=[C.UTF-8]\n"


async def test_no_client_variable_reaches_the_target_by_default(
    grant_for: GrantFactory, sshd_accepting_env: OpenSSHServer, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_accepting_env))

    code, stdout, stderr = await run(ssh_argv(vendor, tmp_path, PROBE, options=SEND))

    assert code == 0, stderr
    assert stdout == b"LC_ALL=[unset] LANG=[unset]\n"


async def test_a_variable_the_asset_allows_arrives_and_the_others_do_not(
    grant_for: GrantFactory, sshd_accepting_env: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_accepting_env))
    fake_broker.grants[vendor.grant.grant_id].passed_env = ["LC_ALL"]

    code, stdout, stderr = await run(ssh_argv(vendor, tmp_path, PROBE, options=SEND))

    assert code == 0, stderr
    assert stdout == b"LC_ALL=[C.UTF-8] LANG=[unset]\n"


# -- the authorize answer as the gateway reads it --------------------------------------------------------------


def _answer(**fields: Any) -> dict[str, Any]:
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    return {"grant_id": "grt-1", "identity": "vendor1", "identity_kind": "human", "asset": "hmi-01",
            "site": "plant-a", "starts_at": now.isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat(),
            "ssh": True, "interactive": True, "ports": [], "target": None, **fields}


def test_an_older_broker_without_the_fields_gets_the_safe_defaults() -> None:
    auth = Authorization.from_json(_answer())
    assert (auth.download_only, auth.exec_upload_limit, auth.passed_env) == (True, 65536, ())


def test_the_fields_are_read_from_the_answer() -> None:
    auth = Authorization.from_json(_answer(transfers="download_only", exec_upload_limit=1000,
                                           passed_env=["LC_ALL", "TZ"]))
    assert (auth.exec_upload_limit, auth.passed_env) == (1000, ("LC_ALL", "TZ"))


@pytest.mark.parametrize("fields", [
    {"exec_upload_limit": -1}, {"exec_upload_limit": "64k"}, {"exec_upload_limit": True},
    {"passed_env": "LC_ALL"}, {"passed_env": ["lc_all"]}, {"passed_env": ["LC ALL"]}, {"passed_env": [1]},
])  # fmt: skip
def test_a_malformed_field_is_a_protocol_error(fields: dict[str, Any]) -> None:
    with pytest.raises(BrokerProtocolError):
        Authorization.from_json(_answer(**fields))

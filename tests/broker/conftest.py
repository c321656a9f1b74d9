"""Fixtures for the broker's tests: a real installation on a fresh database, served on a real port.

- ``plant`` / ``server`` / ``api``: a new installation for this test (state matters: lockouts, decisions, clock),
  copied from ``plant_template``, which is built once per run with the same domain functions `gatepass` uses
- ``shared_plant`` / ``shared_api``: one installation per test module, for tests that only read or get refused
  (each such test checks that it changed nothing); it saves the ~0.5 s an installation and a server cost
- ``admin_cli``: runs `gatepass admin …` in-process on the ``plant``'s data directory, on the plant's clock
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest

from cli.context import Context
from cli.main import main
from tests.fixtures import database as test_databases
from tests.fixtures.broker import Api, BrokerServer, Plant, PlantTemplate
from tests.fixtures.sshd import OpenSSHServer


@pytest.fixture(scope="module")
def shared_plant(plant_template: PlantTemplate, postgres_server: str | None,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    installation, database_name = plant_template.copy(tmp_path_factory.mktemp("shared-plant"))
    try:
        yield installation
    finally:
        installation.close()
        if database_name is not None:
            assert postgres_server is not None
            test_databases.drop_postgres_database(postgres_server, database_name)


@pytest.fixture(scope="module")
def shared_api(shared_plant: Plant) -> Iterator[Api]:
    running = BrokerServer(shared_plant.settings).start()
    clients = Api(running, shared_plant)
    try:
        yield clients
    finally:
        clients.close()
        running.stop()


AdminCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def admin_cli(plant: Plant, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> AdminCli:
    """Run `gatepass admin …` on the plant's data directory and database; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("GATEPASS_DATABASE_URL", plant.settings.effective_database_url)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        # The command runs on the plant's clock, like the API the test also talks to: one clock per test.
        context = dataclasses.replace(Context.from_process(), clock=plant.clock.now, replace_process_with_ssh=False)
        code = main([*argv, "--data", str(plant.settings.data_dir)], context=context)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def sshd(sshd_target: OpenSSHServer) -> OpenSSHServer:
    """A plant machine for the broker's own SSH work (admin asset scan, rotate): tests/conftest.py's real sshd."""
    return sshd_target

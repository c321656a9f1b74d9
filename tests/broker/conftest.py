"""Fixtures for the broker's tests: a real installation on a fresh database, served on a real port.

- ``plant`` / ``server`` / ``api``: a new installation for this test (state matters: lockouts, decisions, clock),
  copied from ``plant_template``, which is built once per run with the same domain functions `gatepass` uses
- ``shared_plant`` / ``shared_api``: one installation per test module, for tests that only read or get refused
  (each such test checks that it changed nothing); it saves the ~0.5 s an installation and a server cost
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures import database as test_databases
from tests.fixtures.broker import Api, BrokerServer, Plant, PlantTemplate


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

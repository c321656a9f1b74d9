"""Shared fixtures: real peers on free loopback ports (OpenSSH sshd, the demo target, PostgreSQL).

Fixtures and what they give (helpers in ``tests/fixtures/`` work without pytest too):

- ``free_port``      → ``free_port()``: a callable returning an unused 127.0.0.1 TCP port
- ``database``       → ``TestDatabase(url, backend, name)``: a fresh database for this test
- ``database_url``   → ``str``: its SQLAlchemy URL, ``sqlite:///…/gatepass.db`` or ``postgresql+psycopg://…/gp_test_…``
- ``ssh_keypair``    → ``ssh_keypair(name="id_ed25519") -> SSHKeyPair``: keys made by ``ssh-keygen``
- ``sshd_target``    → ``OpenSSHServer``: a real sshd logging in the current user with a fresh key
- ``demo_target``    → ``ThreadedDemoTarget``: ``demo.target.DemoTarget`` with a key and a password
- ``plant``          → ``Plant``: a fresh copy of the standard plant (``plant_template``) on its own database
- ``broker``         → ``BrokerServer``: the real broker app over ``plant`` under uvicorn (``broker.url``);
                       tests/gateway overrides it with its fake broker
- ``api``            → ``Api``: httpx clients on it, ``api.as_user("vendor1")``, ``api.gateway()``, ``api.anonymous``

PostgreSQL: set ``GATEPASS_TEST_POSTGRES=postgresql+psycopg://postgres@127.0.0.1:5432`` (a server URL
without a database, as `make test` does in its second pass) and every ``database`` is a new PostgreSQL
database, dropped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.fixtures import database as test_databases
from tests.fixtures.broker import Api, BrokerServer, Plant, PlantTemplate, Reaper
from tests.fixtures.demo import ThreadedDemoTarget
from tests.fixtures.keys import SSHKeyPair, generate_ssh_keypair
from tests.fixtures.ports import free_port as _free_port
from tests.fixtures.sshd import OpenSSHServer, start_sshd


def pytest_report_header(config: pytest.Config) -> str:
    server = test_databases.postgres_server_url()
    if server is None:
        return "gatepass database: SQLite (set GATEPASS_TEST_POSTGRES to run on PostgreSQL)"
    return f"gatepass database: PostgreSQL at {server} (a new database per test)"


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A callable returning an unused loopback TCP port; the same as ``tests.fixtures.free_port``."""
    return _free_port


@pytest.fixture(scope="session")
def postgres_server() -> str | None:
    """The PostgreSQL server URL from GATEPASS_TEST_POSTGRES, checked once per run; None means SQLite."""
    server = test_databases.postgres_server_url()
    if server is not None:
        test_databases.check_postgres_server(server)
    return server


@pytest.fixture
def database(postgres_server: str | None, tmp_path: Path) -> Iterator[test_databases.TestDatabase]:
    """A new, empty database for this test (no schema): a SQLite file, or a PostgreSQL database."""
    if postgres_server is None:
        yield test_databases.create_sqlite_database(tmp_path)
        return
    created = test_databases.create_postgres_database(postgres_server)
    try:
        yield created
    finally:
        test_databases.drop_postgres_database(postgres_server, created.name)


@pytest.fixture
def database_url(database: test_databases.TestDatabase) -> str:
    """The SQLAlchemy URL of this test's fresh database."""
    return database.url


@pytest.fixture
def ssh_keypair(tmp_path: Path) -> Callable[..., SSHKeyPair]:
    """A factory: ``ssh_keypair()`` or ``ssh_keypair("vendor1")`` makes a new ed25519 key in tmp_path/keys."""
    made: list[str] = []

    def make(name: str | None = None, comment: str = "gatepass-test") -> SSHKeyPair:
        key_name = name or f"id_ed25519_{len(made) + 1}"
        made.append(key_name)
        return generate_ssh_keypair(tmp_path / "keys", key_name, comment)

    return make


@pytest.fixture
def sshd_target(tmp_path: Path) -> Iterator[OpenSSHServer]:
    """A real OpenSSH sshd on 127.0.0.1 logging in the current user with ``client_key`` (keys only)."""
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def demo_target(tmp_path: Path) -> Iterator[ThreadedDemoTarget]:
    """The built-in demo target (asyncssh) accepting user ``operator`` with ``client_key`` or ``password``."""
    client_key = generate_ssh_keypair(tmp_path / "demo-client", "operator_ed25519")
    target = ThreadedDemoTarget.start(
        state_dir=tmp_path / "demo-target", client_key=client_key, password="demo-password-" + tmp_path.name
    )
    try:
        yield target
    finally:
        target.stop()


# The standard plant, built once per run and copied for each broker, CLI and API test.
@pytest.fixture(scope="session")
def reaper() -> Iterator[Reaper]:
    """Stops servers and drops databases of finished tests while the next ones run."""
    running = Reaper()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def plant_template(postgres_server: str | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlantTemplate]:
    """``gatepass init``, two plants, four assets and the standard users, built once per run."""
    directory = tmp_path_factory.mktemp("plant-template")
    if postgres_server is None:
        created = test_databases.create_sqlite_database(directory)
    else:
        created = test_databases.create_postgres_database(postgres_server)
    template = PlantTemplate.build(directory / "data", created.url, backend=created.backend,
                                   database_name=created.name)
    if postgres_server is not None:
        template.start_cloning(postgres_server)
    try:
        yield template
    finally:
        template.close()
        if postgres_server is not None:
            test_databases.drop_postgres_database(postgres_server, created.name)


@pytest.fixture
def plant(plant_template: PlantTemplate, postgres_server: str | None, tmp_path: Path,
          reaper: Reaper) -> Iterator[Plant]:
    """A fresh copy of the standard plant (see ``standard_plant``) on its own new database, at ``T0``."""
    installation, database_name = plant_template.copy(tmp_path / "plant")
    try:
        yield installation
    finally:
        installation.close()
        if database_name is not None:
            assert postgres_server is not None
            reaper.add(partial(test_databases.drop_postgres_database, postgres_server, database_name))


@pytest.fixture
def broker(plant: Plant, reaper: Reaper) -> Iterator[BrokerServer]:
    """The real broker app over ``plant`` under uvicorn on 127.0.0.1 (``broker.url``)."""
    running = BrokerServer(plant.settings).start()
    try:
        yield running
    finally:
        running.server.should_exit = True
        reaper.add(running.stop)


@pytest.fixture
def api(broker: BrokerServer, plant: Plant) -> Iterator[Api]:
    """httpx clients for the test's own moves: ``api.as_user("sup-a1")``, ``api.gateway()``, ``api.anonymous``."""
    clients = Api(broker, plant)
    try:
        yield clients
    finally:
        clients.close()

"""The database fixtures: a fresh database per test, on SQLite or (GATEPASS_TEST_POSTGRES) on PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from tests.fixtures import database as test_databases

on_postgres = pytest.mark.skipif(
    test_databases.postgres_server_url() is None, reason="needs GATEPASS_TEST_POSTGRES (make test-postgres)"
)


def test_database_url_is_usable_with_sqlalchemy(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE site (name VARCHAR(40) PRIMARY KEY)"))
            connection.execute(sa.text("INSERT INTO site (name) VALUES ('plant-a')"))
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT name FROM site")).scalars().all() == ["plant-a"]
    finally:
        engine.dispose()


def test_each_test_starts_empty(database_url: str) -> None:
    # Runs after the test above in the same session: its table must not be here.
    engine = sa.create_engine(database_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_backend_matches_the_environment(database: test_databases.TestDatabase) -> None:
    if test_databases.postgres_server_url() is None:
        assert database.backend == "sqlite"
        assert database.url.startswith("sqlite:///")
    else:
        assert database.backend == "postgresql"
        assert database.url.startswith("postgresql")
        assert database.name.startswith(test_databases.DATABASE_PREFIX)
        assert database.url.rsplit("/", 1)[1] == database.name


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (
            "postgresql+psycopg://postgres@127.0.0.1:5432",
            "postgresql+psycopg://postgres@127.0.0.1:5432/gp_test_x",
        ),
        ("postgresql+psycopg://u:p@db:5432/postgres", "postgresql+psycopg://u:p@db:5432/gp_test_x"),
        ("postgresql://u@db/admin?sslmode=require", "postgresql://u@db/gp_test_x?sslmode=require"),
    ],
)
def test_database_url_from_server_url(server: str, expected: str) -> None:
    assert test_databases._with_database(server, "gp_test_x") == expected


def test_maintenance_connection_uses_libpq_scheme() -> None:
    assert test_databases._maintenance_url("postgresql+psycopg://u@db:5432") == "postgresql://u@db:5432/postgres"
    assert test_databases._maintenance_url("postgresql+psycopg://u@db/admin") == "postgresql://u@db/admin"


def test_refuses_a_non_postgres_server_url() -> None:
    with pytest.raises(ValueError, match="GATEPASS_TEST_POSTGRES"):
        test_databases._with_database("mysql://root@127.0.0.1", "gp_test_x")


@on_postgres
def test_postgres_database_is_dropped_even_with_open_connections() -> None:
    server = test_databases.postgres_server_url()
    assert server is not None
    created = test_databases.create_postgres_database(server)
    lingering = psycopg.connect(created.libpq_url)  # a connection the test "forgot"
    try:
        test_databases.drop_postgres_database(server, created.name)
    finally:
        lingering.close()
    with psycopg.connect(test_databases._maintenance_url(server)) as connection:
        found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (created.name,)).fetchall()
    assert found == []

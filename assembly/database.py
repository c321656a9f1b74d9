"""Bring a database to the newest schema with alembic (the only way the schema changes), and initialise a new
installation on it. Here rather than in broker/: migrations import the broker's models, so the broker must not
import migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

import migrations
from broker import bootstrap
from broker.db import make_engine
from broker.settings import Settings


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate in one transaction. On SQLite a migration changes a table by rebuilding it, and with foreign
    keys enforced, dropping the old copy of a table that others point at would fail (or empty it): so, as the
    SQLite manual's procedure for schema changes says (https://www.sqlite.org/lang_altertable.html, "Making
    Other Kinds Of Table Schema Changes"), enforcement is off for the migration, every reference is checked
    before the commit, and enforcement is back on before the connection returns to the pool."""
    config = alembic_config()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # On the driver's own connection, outside any transaction: inside one SQLite ignores the pragma.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration left {len(broken)} broken references, first: {broken[0]}")
        finally:
            if sqlite:
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def migrate(settings: Settings) -> None:
    """The installation's database at the newest schema (run at every start: a no-op when it is already)."""
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def initialise(settings: Settings) -> bootstrap.InitResult:
    """`gatepass init`: a new data directory and database with the newest schema (``broker.bootstrap``)."""
    return bootstrap.initialise(settings, create_schema=upgrade)

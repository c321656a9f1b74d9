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


def upgrade(engine: Engine) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


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

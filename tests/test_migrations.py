"""The migrations are the only way the schema changes: walked to the head they give exactly the schema the models
describe, on both databases, and a migration that moves data keeps it (up and down)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from assembly.database import alembic_config, upgrade
from broker.db import make_engine
from broker.models import Base


def _to(engine: sa.Engine, revision: str, *, down: bool = False) -> None:
    if not down:
        upgrade(engine, revision)
        return
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _inserter(db: sa.Connection) -> Callable[..., None]:
    """Insert a row at the schema this database has now, filling each required column the test does not name
    with a plain value of its type (the old schema's columns are not the models' any more)."""
    metadata = sa.MetaData()

    def insert(table_name: str, **values: Any) -> None:
        table = sa.Table(table_name, metadata, autoload_with=db) if table_name not in metadata.tables \
            else metadata.tables[table_name]
        row = dict(values)
        for column in table.columns:
            if column.name in row or column.nullable or column.server_default is not None:
                continue
            if column.primary_key and isinstance(column.type, sa.Integer):
                continue
            python_type = column.type.python_type if not isinstance(column.type, sa.JSON) else list
            row[column.name] = {bool: False, int: 0, str: "x", list: [],
                                dt.datetime: dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)}.get(python_type, "x")
        for name, value in row.items():
            if isinstance(value, list | dict) and not isinstance(table.columns[name].type, sa.JSON):
                row[name] = json.dumps(value)
        db.execute(table.insert().values(**row))

    return insert


def test_the_migrations_build_the_schema_the_models_describe(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    # Types are compared loosely by alembic already; anything listed here is a real drift (a table, a column,
    # an index, a constraint the models have and the migrations do not, or the reverse).
    assert differences == []


def test_extension_decisions_move_from_the_json_list_into_rows_and_back(database_url: str) -> None:
    engine = make_engine(database_url)
    when = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    try:
        _to(engine, "0008")
        with engine.begin() as db:
            insert = _inserter(db)
            insert("sites", id=1, name="plant-a", approvals_required=2)
            for number, name in ((1, "vendor1"), (2, "sup-a1"), (3, "sup-a2")):
                insert("identities", id=number, username=name, kind="human")
            insert("assets", id=1, name="hmi-01", site_id=1)
            insert("access_requests", id="req-1", requester_id=1, asset_id=1, status="approved")
            insert("grants", id="grt-1", request_id="req-1", identity_id=1, asset_id=1, serial=7)
            approvals = [{"approver": "sup-a1", "approver_id": 2, "comment": "ok",
                          "decided_at": (when + dt.timedelta(minutes=1)).isoformat()}]
            insert("grant_extensions", id="ext-1", grant_id="grt-1", requester_id=1, status="pending",
                   approvals=approvals, created_at=when)
            insert("grant_extensions", id="ext-2", grant_id="grt-1", requester_id=1, status="denied", approvals=[],
                   denied_by="sup-a2", denial_comment="no", created_at=when,
                   decided_at=when + dt.timedelta(minutes=2))
        _to(engine, "0009")
        with engine.connect() as db:
            rows = db.execute(sa.text("SELECT extension_id, approver_id, verdict, comment, decided_at "
                                      "FROM extension_decisions ORDER BY extension_id")).all()
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("ext-1", 2, "approve", "ok"), ("ext-2", 3, "deny", "no")]
        moments = [r[4] if isinstance(r[4], dt.datetime) else dt.datetime.fromisoformat(r[4]) for r in rows]
        # SQLite hands back naive timestamps (UTC by our type decorator's convention), PostgreSQL aware ones.
        assert [m if m.tzinfo else m.replace(tzinfo=dt.UTC) for m in moments] == [
            when + dt.timedelta(minutes=1), when + dt.timedelta(minutes=2)]

        _to(engine, "0008", down=True)
        with engine.connect() as db:
            back = db.execute(sa.text("SELECT id, approvals, denied_by, denial_comment FROM grant_extensions "
                                      "ORDER BY id")).all()
        first = json.loads(back[0][1]) if isinstance(back[0][1], str) else back[0][1]
        assert [(a["approver"], a["approver_id"], a["comment"]) for a in first] == [("sup-a1", 2, "ok")]
        assert (back[1][2], back[1][3]) == ("sup-a2", "no")
    finally:
        engine.dispose()


def _checks_in_models() -> dict[tuple[str, str], str]:
    return {(table.name, constraint.name): str(constraint.sqltext)
            for table in Base.metadata.tables.values() for constraint in table.constraints
            if isinstance(constraint, sa.CheckConstraint) and isinstance(constraint.name, str)}


def test_every_closed_set_of_values_is_a_check_in_the_migrated_database(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        inspector = sa.inspect(engine)
        in_database = {(table, check["name"]): check["sqltext"]
                       for table in inspector.get_table_names() for check in inspector.get_check_constraints(table)
                       if check["name"]}
        expected = _checks_in_models()
        assert len(expected) >= 14
        assert set(expected) <= set(in_database), "a model's CHECK is missing from the migrations"
        for key, condition in expected.items():
            # The same values, however the database writes the condition back (PostgreSQL: = ANY (ARRAY[...])).
            assert set(re.findall(r"'([^']*)'", condition)) == set(re.findall(r"'([^']*)'", in_database[key])), key
        # And it holds: a role outside the set is refused by the database itself.
        with engine.begin() as db:
            db.execute(sa.text("INSERT INTO identities (username, kind, status, totp_last_step, failed_logins, "
                               "created_at) VALUES ('someone', 'human', 'active', 0, 0, CURRENT_TIMESTAMP)"))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as db:
            db.execute(sa.text("INSERT INTO role_assignments (identity_id, role) SELECT id, 'root' FROM identities"))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as db:
            db.execute(sa.text("UPDATE identities SET kind = 'robot'"))
    finally:
        engine.dispose()


def test_this_sessions_migrations_go_down_and_up_again(database_url: str) -> None:
    """Each migration since 0009 can be undone (a failed upgrade is rolled back by hand with alembic downgrade)
    and redone, leaving the schema the models describe."""
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        _to(engine, "0009", down=True)
        upgrade(engine)
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_sites_that_exist_before_0018_do_not_start_supervising_their_high_criticality_assets(
        database_url: str) -> None:
    """An upgrade must not start holding a plant's sessions: the sites already there get the switch off, their
    assets follow the site; only sites made afterwards (create_site) have it on."""
    engine = make_engine(database_url)
    try:
        _to(engine, "0017")
        with engine.begin() as db:
            insert = _inserter(db)
            insert("sites", id=1, name="plant-a", approvals_required=1)
            insert("assets", id=1, name="plc-01", site_id=1, host="10.0.0.1", criticality="high", tcp_ports=[502],
                   passed_env=[])
        upgrade(engine)
        with engine.connect() as db:
            assert db.execute(sa.text("SELECT supervise_high_criticality FROM sites")).scalar_one() in (False, 0)
            assert db.execute(sa.text("SELECT supervision_required FROM assets")).scalar_one() is None
    finally:
        engine.dispose()

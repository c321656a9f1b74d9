"""What the gateways are told waits for the outermost commit: a callback registered inside a savepoint
(``begin_nested``, as a playbook suspends each identity) runs only when the whole transaction commits, is dropped
with a savepoint rolled back, and one registered before a failed savepoint still runs. On the real database."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from broker.db import after_commit, make_engine, make_session_factory


def _session(database_url: str) -> tuple[sa.Engine, Session]:
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE marks (name VARCHAR(20) PRIMARY KEY)"))
    return engine, make_session_factory(engine)()


def test_a_callback_inside_a_released_savepoint_waits_for_the_outer_commit(database_url: str) -> None:
    engine, session = _session(database_url)
    told: list[str] = []
    try:
        session.execute(sa.text("INSERT INTO marks VALUES ('outer')"))
        with session.begin_nested():
            session.execute(sa.text("INSERT INTO marks VALUES ('inner')"))
            after_commit(session, lambda: told.append("inner"))
        assert told == []  # released, not committed: the gateways must not hear of it yet
        session.commit()
        assert told == ["inner"]
    finally:
        session.close()
        engine.dispose()


def test_a_savepoint_rolled_back_drops_only_its_own_callbacks(database_url: str) -> None:
    engine, session = _session(database_url)
    told: list[str] = []
    try:
        session.execute(sa.text("INSERT INTO marks VALUES ('outer')"))
        after_commit(session, lambda: told.append("before"))
        nested = session.begin_nested()
        session.execute(sa.text("INSERT INTO marks VALUES ('inner')"))
        after_commit(session, lambda: told.append("inside"))
        with session.begin_nested():
            after_commit(session, lambda: told.append("deeper"))
        nested.rollback()
        after_commit(session, lambda: told.append("after"))
        session.commit()
        assert told == ["before", "after"]
        assert session.scalars(sa.text("SELECT name FROM marks")).all() == ["outer"]
    finally:
        session.close()
        engine.dispose()


def test_an_outer_rollback_drops_everything(database_url: str) -> None:
    engine, session = _session(database_url)
    told: list[str] = []
    try:
        after_commit(session, lambda: told.append("outer"))
        with session.begin_nested():
            after_commit(session, lambda: told.append("inner"))
        session.rollback()
        session.commit()
        assert told == []
    finally:
        session.close()
        engine.dispose()

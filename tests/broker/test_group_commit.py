"""Group commit (broker.db.GroupCommit) on the real database, both backends: units that wait for the connection
share one COMMIT; each still succeeds or fails alone; nobody returns before the COMMIT holding their change is
done; after-commit callbacks see the committed state; a COMMIT that fails fails every unit of its group."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from broker.audit import trail
from broker.db import READ_ONLY_OPTION, GroupCommit, GroupCommitFailed, after_commit, make_engine
from tests.fixtures.broker import Plant

PARENT = "CREATE TABLE parents (id INTEGER PRIMARY KEY)"
# Checked at COMMIT, not at the statement: the way to make a real COMMIT fail on both databases.
CHILD = ("CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parents (id) "
         "DEFERRABLE INITIALLY DEFERRED)")


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sa.text(PARENT))
        connection.execute(sa.text(CHILD))
    yield engine
    engine.dispose()


def _count(engine: sa.Engine) -> int:
    """What another connection sees: only what is committed (a reader's transaction, no write lock)."""
    with engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM parents")).scalar_one())


def _until_waiting(group: GroupCommit, count: int) -> None:
    deadline = time.monotonic() + 10
    while group.waiting < count:
        assert time.monotonic() < deadline, f"only {group.waiting} of {count} units queued up"
        time.sleep(0.01)


def test_a_lone_unit_commits_at_once_and_its_callback_sees_it_committed(engine: sa.Engine) -> None:
    group = GroupCommit(engine)
    seen: list[int] = []
    with group.unit() as session:
        session.execute(sa.text("INSERT INTO parents (id) VALUES (1)"))
        after_commit(session, lambda: seen.append(_count(engine)))
        assert _count(engine) == 0
    assert seen == [1]
    assert _count(engine) == 1
    assert (group.groups, group.units) == (1, 1)
    group.close()


def test_units_waiting_for_the_connection_share_one_commit_and_each_fails_alone(engine: sa.Engine) -> None:
    group = GroupCommit(engine)
    inside, release = threading.Event(), threading.Event()
    visible_on_return: dict[int, int] = {}
    errors: dict[int, BaseException] = {}

    def unit(number: int) -> None:
        try:
            with group.unit() as session:
                session.execute(sa.text("INSERT INTO parents (id) VALUES (:id)"), {"id": number})
                if number == 0:
                    inside.set()
                    assert release.wait(10)
                if number == 3:
                    raise ValueError("this one changes its mind")
        except ValueError as error:
            errors[number] = error
        with engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as connection:
            visible_on_return[number] = int(connection.execute(
                sa.text("SELECT count(*) FROM parents WHERE id = :id"), {"id": number}).scalar_one())

    first = threading.Thread(target=unit, args=(0,))
    first.start()
    assert inside.wait(10)
    others = [threading.Thread(target=unit, args=(n,)) for n in range(1, 6)]
    for thread in others:
        thread.start()
    _until_waiting(group, 5)
    release.set()
    for thread in [first, *others]:
        thread.join(20)
    assert list(errors) == [3]
    # Nobody returned before the COMMIT holding its change: every row is there when its caller returns.
    assert visible_on_return == {0: 1, 1: 1, 2: 1, 3: 0, 4: 1, 5: 1}
    assert (group.groups, group.units) == (1, 6)  # one COMMIT for the six
    group.close()


def test_a_commit_that_fails_fails_every_unit_of_its_group_and_tells_nobody(engine: sa.Engine) -> None:
    group = GroupCommit(engine)
    inside, release = threading.Event(), threading.Event()
    told: list[str] = []
    outcome: dict[str, str] = {}

    def unit(name: str, statement: str) -> None:
        try:
            with group.unit() as session:
                session.execute(sa.text(statement))
                after_commit(session, lambda: told.append(name))
                if name == "first":
                    inside.set()
                    assert release.wait(10)
            outcome[name] = "ok"
        except GroupCommitFailed as failed:
            outcome[name] = str(failed)

    first = threading.Thread(target=unit, args=("first", "INSERT INTO parents (id) VALUES (7)"))
    first.start()
    assert inside.wait(10)
    # A child of a parent that does not exist: its savepoint is released, the COMMIT refuses it.
    orphan = threading.Thread(target=unit, args=("orphan", "INSERT INTO children (id, parent_id) VALUES (1, 99)"))
    orphan.start()
    _until_waiting(group, 1)
    release.set()
    first.join(20)
    orphan.join(20)
    assert set(outcome) == {"first", "orphan"}
    assert all(text.startswith("the database did not commit") for text in outcome.values())
    assert told == []
    assert _count(engine) == 0
    # The next unit starts afresh.
    with group.unit() as session:
        session.execute(sa.text("INSERT INTO parents (id) VALUES (8)"))
    assert _count(engine) == 1
    group.close()


def test_the_audit_chain_stays_whole_under_concurrent_group_commits(plant: Plant) -> None:
    """Thirty-two writers appending audit events through one group commit: every event is there, once, and
    the hash chain verifies."""
    plant_engine = plant.engine
    group = GroupCommit(plant_engine)
    start = dt.datetime(2027, 1, 4, 9, 0, tzinfo=dt.UTC)

    def writer(number: int) -> None:
        for index in range(10):
            with group.unit() as session:
                trail.record(session, now=start + dt.timedelta(seconds=index), action=trail.Action.SESSION_STARTED,
                             actor=f"vendor{number}", subject=f"ses-{number}-{index}", details={"n": index})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with plant_engine.connect() as connection:
        subjects = connection.execute(sa.text(
            "SELECT subject FROM audit_events WHERE action = 'gateway:session:started'")).scalars().all()
    assert sorted(subjects) == sorted(f"ses-{n}-{i}" for n in range(32) for i in range(10))
    with Session(plant_engine) as session:
        assert trail.verify_chain(session).ok
    assert group.units == 320
    assert group.groups <= 320
    group.close()


class _Base(DeclarativeBase):
    pass


class _Parent(_Base):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.mark.parametrize("failure", ["flush", "statement"])
def test_a_unit_failing_in_the_database_undoes_only_itself(engine: sa.Engine, failure: str) -> None:
    """A duplicate key, found when the session flushes (the ORM) or when a statement runs: the group's other
    units are not rolled back with it."""
    group = GroupCommit(engine)
    inside, release = threading.Event(), threading.Event()
    outcome: dict[str, str] = {}

    def first() -> None:
        with group.unit() as session:
            session.execute(sa.text("INSERT INTO parents (id) VALUES (1)"))
            inside.set()
            assert release.wait(10)
        outcome["first"] = "ok"

    def duplicate() -> None:
        try:
            with group.unit() as session:
                session.execute(sa.text("INSERT INTO parents (id) VALUES (2)"))
                if failure == "flush":
                    session.add(_Parent(id=1))
                else:
                    session.execute(sa.text("INSERT INTO parents (id) VALUES (1)"))
            outcome["duplicate"] = "ok"
        except sa.exc.IntegrityError:
            outcome["duplicate"] = "refused"

    def last() -> None:
        with group.unit() as session:
            session.execute(sa.text("INSERT INTO parents (id) VALUES (3)"))
        outcome["last"] = "ok"

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert inside.wait(10)
    for work, waiting in ((duplicate, 1), (last, 2)):
        threads.append(threading.Thread(target=work))
        threads[-1].start()
        _until_waiting(group, waiting)
    release.set()
    for thread in threads:
        thread.join(20)
    assert outcome == {"first": "ok", "duplicate": "refused", "last": "ok"}
    with engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as connection:
        assert connection.execute(sa.text("SELECT id FROM parents ORDER BY id")).scalars().all() == [1, 3]
    group.close()

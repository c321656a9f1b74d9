"""The audit chain through the group commit (broker.db.GroupCommit, broker.audit.trail.record), both backends:
a group's events are written together just before its COMMIT, in the transaction that holds their units'
changes, chained in unit order; what a unit rolls back takes its events with it; an audited refusal keeps its
event; a value the database would refuse fails its own unit only; a group whose events cannot be written fails
whole; and the rows are the ones ``record`` writes outside a group."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.db import READ_ONLY_OPTION, GroupCommit, after_commit, make_session_factory, unit_of_work
from broker.errors import Forbidden
from tests.fixtures.broker import Plant

AT = dt.datetime(2027, 1, 4, 9, 0, tzinfo=dt.UTC)
MARK = "CREATE TABLE marks (name VARCHAR(64) PRIMARY KEY)"


@pytest.fixture
def group(plant: Plant) -> Iterator[GroupCommit]:
    with plant.engine.begin() as connection:
        connection.execute(sa.text(MARK))
    commit = GroupCommit(plant.engine)
    yield commit
    commit.close()


def _record(session: Session, subject: str, **fields: Any) -> None:
    trail.record(session, now=AT, action=trail.Action.SESSION_STARTED, subject=subject, **fields)


def _mark(session: Session, name: str) -> None:
    """A change of the unit's own, to be found (or not) beside its event."""
    session.execute(sa.text("INSERT INTO marks (name) VALUES (:name)"), {"name": name})


def _committed(plant: Plant, sql: str) -> list[Any]:
    """What another connection sees: only what is committed (a reader's transaction, no write lock)."""
    with plant.engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as connection:
        return list(connection.execute(sa.text(sql)).scalars())


def _since(plant: Plant, seq: int) -> list[str]:
    return _committed(plant, f"SELECT subject FROM audit_events WHERE seq > {seq} ORDER BY seq")  # noqa: S608


def _verifies(plant: Plant) -> None:
    with Session(plant.engine) as session:
        result = trail.verify_chain(session)
    assert result.ok, result.problem


def _until_waiting(group: GroupCommit, count: int) -> None:
    deadline = time.monotonic() + 10
    while group.waiting < count:
        assert time.monotonic() < deadline, f"only {group.waiting} of {count} units queued up"
        time.sleep(0.01)


def _one_group(group: GroupCommit, units: list[Callable[[Session], None]]) -> dict[int, str]:
    """Run ``units`` as one group: the first holds the connection until the others wait behind it. Returns how
    each ended ("ok" or the error's class name)."""
    inside, release = threading.Event(), threading.Event()
    outcome: dict[int, str] = {}

    def run(number: int) -> None:
        try:
            with group.unit() as session:
                units[number](session)
                if number == 0:
                    inside.set()
                    assert release.wait(10)
            outcome[number] = "ok"
        except Exception as error:  # each unit's own outcome is what the test looks at
            outcome[number] = type(error).__name__

    threads = [threading.Thread(target=run, args=(0,))]
    threads[0].start()
    assert inside.wait(10)
    for number in range(1, len(units)):
        threads.append(threading.Thread(target=run, args=(number,)))
        threads[-1].start()
    _until_waiting(group, len(units) - 1)
    release.set()
    for thread in threads:
        thread.join(20)
    return outcome


def test_a_groups_events_commit_with_their_changes_in_unit_order_and_what_a_unit_undoes_goes(
        plant: Plant, group: GroupCommit) -> None:
    start = plant.last_seq()
    ran: list[str] = []
    seen_while_open: list[list[str]] = []

    def plain(name: str) -> Callable[[Session], None]:
        def unit(session: Session) -> None:
            ran.append(name)
            _mark(session, name)
            _record(session, name)
            _record(session, f"{name}+")
            seen_while_open.append(_since(plant, start))  # nothing of the group is committed yet
        return unit

    def fails(session: Session) -> None:
        ran.append("fails")
        _mark(session, "fails")
        _record(session, "fails")
        raise ValueError("this one changes its mind")

    def refused(session: Session) -> None:
        ran.append("refused")
        _record(session, "refused", outcome="refused")  # an audited refusal: its event stays, nothing else
        raise Forbidden("not yours")

    def inner_rollback(session: Session) -> None:
        ran.append("inner")
        _record(session, "inner")
        nested = session.begin_nested()
        _mark(session, "inner-nested")
        _record(session, "inner-nested")
        nested.rollback()
        _mark(session, "inner")

    def rolled_back_then_on(session: Session) -> None:
        ran.append("again")
        _record(session, "again-dropped")  # before any statement: still dropped by the rollback
        session.rollback()
        _record(session, "again")
        _mark(session, "again")

    outcome = _one_group(group, [plain("first"), fails, refused, inner_rollback, rolled_back_then_on,
                                 plain("last")])

    assert outcome == {0: "ok", 1: "ValueError", 2: "Forbidden", 3: "ok", 4: "ok", 5: "ok"}
    assert (group.groups, group.units) == (1, 6)  # one COMMIT for the six
    assert seen_while_open == [[], []]
    kept = {"first": ["first", "first+"], "fails": [], "refused": ["refused"], "inner": ["inner"],
            "again": ["again"], "last": ["last", "last+"]}
    assert _since(plant, start) == [subject for name in ran for subject in kept[name]]
    assert sorted(_committed(plant, "SELECT name FROM marks")) == ["again", "first", "inner", "last"]
    seqs = _committed(plant, f"SELECT seq FROM audit_events WHERE seq > {start} ORDER BY seq")  # noqa: S608
    assert seqs == list(range(start + 1, start + 8))
    assert _committed(plant, "SELECT seq FROM audit_head") == [start + 7]
    _verifies(plant)


def test_after_commit_callbacks_see_their_event_committed(plant: Plant, group: GroupCommit) -> None:
    start = plant.last_seq()
    seen: list[list[str]] = []
    with group.unit() as session:
        _record(session, "told")
        after_commit(session, lambda: seen.append(_since(plant, start)))
    assert seen == [["told"]]


def test_a_value_the_database_refuses_fails_its_own_unit_only(plant: Plant, group: GroupCommit) -> None:
    """PostgreSQL refuses an actor longer than its column and a NUL character; written with the group, such a
    row would fail every unit of it, so ``record`` refuses it in the unit, with the database's own error class.
    SQLite stores both, in a group as outside one."""
    start = plant.last_seq()
    long_actor = "a" * 65

    def good(name: str) -> Callable[[Session], None]:
        def unit(session: Session) -> None:
            _mark(session, name)
            _record(session, name)
        return unit

    def bad(name: str, actor: str) -> Callable[[Session], None]:
        def unit(session: Session) -> None:
            _mark(session, name)
            _record(session, name, actor=actor)
        return unit

    outcome = _one_group(group, [good("one"), bad("long", long_actor), bad("nul", "x\x00y"), good("two")])

    if plant.backend == "postgresql":
        assert outcome == {0: "ok", 1: "DataError", 2: "DataError", 3: "ok"}
        assert sorted(_since(plant, start)) == ["one", "two"]
        assert sorted(_committed(plant, "SELECT name FROM marks")) == ["one", "two"]
        # The same class as the database's own refusal outside a group.
        with pytest.raises(sa.exc.DataError), unit_of_work(make_session_factory(plant.engine)) as session:
            _record(session, "plain", actor=long_actor)
    else:
        assert outcome == {0: "ok", 1: "ok", 2: "ok", 3: "ok"}
        assert sorted(_since(plant, start)) == ["long", "nul", "one", "two"]
    _verifies(plant)


def test_a_group_whose_events_cannot_be_written_fails_whole_and_tells_nobody(
        plant: Plant, group: GroupCommit) -> None:
    """What the database refuses only when the group's events are written (here a trigger) fails the group:
    none of its changes or events commit, every caller gets GroupCommitFailed, no callback runs."""
    with plant.engine.begin() as connection:
        if plant.backend == "postgresql":
            connection.execute(sa.text(
                "CREATE FUNCTION poisoned() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.subject = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$"))
            connection.execute(sa.text("CREATE TRIGGER poisoned BEFORE INSERT ON audit_events FOR EACH ROW "
                                       "EXECUTE FUNCTION poisoned()"))
        else:
            connection.execute(sa.text("CREATE TRIGGER poisoned BEFORE INSERT ON audit_events "
                                       "WHEN NEW.subject = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"))
    start = plant.last_seq()
    told: list[str] = []

    def unit(name: str) -> Callable[[Session], None]:
        def run(session: Session) -> None:
            _mark(session, name)
            _record(session, name)
            after_commit(session, lambda: told.append(name))
        return run

    outcome = _one_group(group, [unit("first"), unit("poison"), unit("last")])

    assert outcome == {0: "GroupCommitFailed", 1: "GroupCommitFailed", 2: "GroupCommitFailed"}
    assert told == []
    assert _since(plant, start) == []
    assert _committed(plant, "SELECT name FROM marks") == []
    assert _committed(plant, "SELECT seq FROM audit_head") == [start]
    # The next group starts afresh from the head as it was.
    with group.unit() as session:
        _record(session, "after")
    assert _since(plant, start) == ["after"]
    _verifies(plant)


def test_a_group_commit_that_fails_after_its_events_are_written_keeps_the_chain(
        plant: Plant, group: GroupCommit) -> None:
    """The events are written, then the COMMIT itself fails (a deferred foreign key): nothing of the group stays,
    the head included, and the next group chains from the head as it was."""
    with plant.engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE parents (id INTEGER PRIMARY KEY)"))
        connection.execute(sa.text("CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES "
                                   "parents (id) DEFERRABLE INITIALLY DEFERRED)"))
    start = plant.last_seq()

    def orphan(session: Session) -> None:
        _record(session, "orphan")
        session.execute(sa.text("INSERT INTO children (id, parent_id) VALUES (1, 99)"))

    outcome = _one_group(group, [lambda session: _record(session, "first"), orphan])

    assert outcome == {0: "GroupCommitFailed", 1: "GroupCommitFailed"}
    assert _since(plant, start) == []
    with group.unit() as session:
        _record(session, "after")
    assert _since(plant, start) == ["after"]
    _verifies(plant)


def test_outside_a_group_the_event_is_written_at_once(plant: Plant) -> None:
    """A plain unit of work is as before: the row is there inside the transaction, right after ``record``."""
    start = plant.last_seq()
    with unit_of_work(make_session_factory(plant.engine)) as session:
        _record(session, "plain")
        assert session.execute(sa.text(
            f"SELECT subject FROM audit_events WHERE seq > {start}")).scalars().all() == ["plain"]  # noqa: S608
    assert _since(plant, start) == ["plain"]


def test_the_group_writes_the_rows_record_writes_alone(plant: Plant, group: GroupCommit) -> None:
    """The same events, once through plain units of work and once through the group (several per unit), give
    the same rows but for seq and the hashes, which chain on; each set hashes by the chain's definition."""
    events = [{"subject": f"s{n}", "actor": f"vendor{n % 3}" if n % 4 else None, "site": "plant-a" if n % 2 else None,
               "outcome": "refused" if n % 5 == 0 else "success",
               "details": {"n": n, "reason": "Störung — Fernwartung" if n % 3 == 0 else "check", "at": AT}}
              for n in range(12)]

    def write(session: Session, fields: dict[str, Any], n: int) -> None:
        trail.record(session, now=AT + dt.timedelta(microseconds=1371 * n), action=trail.Action.GATEWAY_AUTHORIZED,
                     **fields)

    start = plant.last_seq()
    for n, fields in enumerate(events):
        with unit_of_work(make_session_factory(plant.engine)) as session:
            write(session, fields, n)
    middle = plant.last_seq()
    for first in range(0, len(events), 4):
        with group.unit() as session:
            for n in range(first, first + 4):
                write(session, events[n], n)
    columns = "occurred_at, action, outcome, actor, subject, site, details"
    with plant.engine.connect() as connection:
        plain_rows = connection.execute(sa.text(
            f"SELECT {columns} FROM audit_events WHERE seq > {start} AND seq <= {middle} ORDER BY seq")).all()  # noqa: S608
        group_rows = connection.execute(sa.text(
            f"SELECT {columns} FROM audit_events WHERE seq > {middle} ORDER BY seq")).all()  # noqa: S608
    assert len(plain_rows) == len(events)
    assert group_rows == plain_rows
    _verifies(plant)


def test_group_and_plain_writers_at_once_keep_one_chain(plant: Plant, group: GroupCommit) -> None:
    """Sixteen writers through the group and four with a transaction each (as the API's requests), at once:
    every event is there once, in one unbroken chain."""
    start = plant.last_seq()
    factory = make_session_factory(plant.engine)

    def writer(number: int) -> None:
        for index in range(10):
            if number < 16:
                with group.unit() as session:
                    _record(session, f"g{number}-{index}")
            else:
                with unit_of_work(factory) as session:
                    _record(session, f"p{number}-{index}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    expected = [f"{'g' if n < 16 else 'p'}{n}-{i}" for n in range(20) for i in range(10)]
    assert sorted(_since(plant, start)) == sorted(expected)
    _verifies(plant)


def test_a_connection_lost_in_a_group_fails_the_units_released_before_it(plant: Plant, group: GroupCommit) -> None:
    """The group's connection is lost in its second unit (as SQLAlchemy invalidates it on a disconnect): the
    first unit, already released into the lost transaction, must be told its group failed, and the next unit
    starts a new group on a new connection (without the lost units' events)."""
    start = plant.last_seq()
    first_inside, second_inside = threading.Event(), threading.Event()
    release_first, release_second = threading.Event(), threading.Event()
    outcome: dict[str, str] = {}

    def run(name: str) -> None:
        try:
            with group.unit() as session:
                _mark(session, name)
                _record(session, name)
                if name == "first":
                    first_inside.set()
                    assert release_first.wait(10)
                if name == "second":
                    session.connection().invalidate()
                    second_inside.set()
                    assert release_second.wait(10)
            outcome[name] = "ok"
        except Exception as error:  # each unit's own outcome is what the test looks at
            outcome[name] = type(error).__name__

    threads = {name: threading.Thread(target=run, args=(name,)) for name in ("first", "second", "third")}
    threads["first"].start()
    assert first_inside.wait(10)
    threads["second"].start()
    _until_waiting(group, 1)
    release_first.set()
    assert second_inside.wait(10)
    threads["third"].start()
    _until_waiting(group, 1)
    release_second.set()
    for thread in threads.values():
        thread.join(20)
    assert outcome["first"] == "GroupCommitFailed"
    assert outcome["second"] != "ok"
    assert outcome["third"] == "ok"
    assert _committed(plant, "SELECT name FROM marks") == ["third"]
    assert _since(plant, start) == ["third"]
    _verifies(plant)

"""Database engine and sessions: one transaction per unit of work, UTC-aware timestamps on every backend."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction, sessionmaker
from sqlalchemy.types import TypeDecorator


class Base(DeclarativeBase):
    pass


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes everywhere: SQLite hands back naive values, psycopg its own tzinfo."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database: every time must carry its timezone")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _serialise_sqlite_transactions(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    _plain_savepoints(engine)
    return engine


def _plain_savepoints(engine: Engine) -> None:
    """SAVEPOINT, RELEASE and ROLLBACK TO as plain SQL strings.

    SQLAlchemy's default dialect compiles a fresh ``SavepointClause`` for every savepoint (it has no cache
    key): about 60 us each here, ten times the statement itself. The group commit takes one savepoint per
    unit of work (``GroupCommit``), so this is most of its cost per event. The names are SQLAlchemy's own
    (``sa_savepoint_N``), never user input."""
    dialect: Any = engine.dialect
    dialect.do_savepoint = lambda connection, name: connection.exec_driver_sql(f"SAVEPOINT {name}")
    dialect.do_release_savepoint = lambda connection, name: connection.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
    dialect.do_rollback_to_savepoint = (
        lambda connection, name: connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}"))


def _serialise_sqlite_transactions(engine: Engine) -> None:
    """Start every SQLite transaction with BEGIN IMMEDIATE.

    pysqlite's deferred transactions let two writers read the same audit-chain head and then fail (or,
    worse, fork the chain) when they upgrade to a write lock; taking the write lock up front serialises
    them, which is what the embedded single-host mode wants. See SQLAlchemy's "Serializable isolation /
    Savepoints / Transactional DDL" recipe for pysqlite.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let us issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=FULL (https://sqlite.org/pragma.html#pragma_synchronous): every commit is on disk
        # before it is acknowledged. NORMAL would be 2-3x faster here (bench/bench_audit.py: ~1,100-1,500
        # audited commits/s with FULL, ~3,000-4,000/s with NORMAL) but after a power cut or kernel crash it
        # rolls back the last commits -- a revocation or a lockdown among them, which the gateways have
        # already acted on, would silently come undone. Security state must be durable; batching (many
        # events per transaction) is the way to a higher append rate.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A reader (read_only_unit) takes no write lock: under WAL it sees one consistent snapshot and
        # never holds up writers, so `gatepass audit verify` over a million events does not stall the API.
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


READ_ONLY_OPTION = "gatepass_read_only"


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once this session's transaction has committed (never on rollback).

    Used to push revocations to gateways only when the revocation is durable: inside a savepoint
    (``begin_nested``) the callback waits for the outermost commit, and is dropped if that savepoint is
    rolled back (SQLAlchemy's own ``after_commit`` event also fires when a savepoint is released, and
    ``after_soft_rollback`` when one is rolled back: both are sorted out here).
    """
    session.info.setdefault("after_commit", []).append((session.get_nested_transaction(), callback))


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: nothing is durable until the outermost transaction commits
    callbacks = [callback for _registered_in, callback in session.info.pop("after_commit", [])]
    group = session.info.get(GROUP_COMMIT)
    if group is not None:
        # The unit's savepoint is released: its writes for the group join the group's (in unit order), its
        # callbacks wait for the group's durable COMMIT.
        group.defer(callbacks, [(writer, item) for _registered_in, writer, item in session.info.pop(GROUP_WORK, [])])
        return
    for callback in callbacks:
        callback()


def _within(transaction: SessionTransaction | None, ended: SessionTransaction) -> bool:
    """Whether ``transaction`` is ``ended`` or nested inside it."""
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_commit(session: Session, previous_transaction: SessionTransaction) -> None:
    if not previous_transaction.nested:
        session.info.pop("after_commit", None)
        session.info.pop(GROUP_WORK, None)
        return
    # A savepoint rolled back: only what was registered inside it goes; the outer transaction's stay.
    for key in ("after_commit", GROUP_WORK):
        if key in session.info:
            session.info[key] = [entry for entry in session.info[key] if not _within(entry[0], previous_transaction)]


# session.info key: a callable(error) -> bool deciding whether a refused transaction keeps its audit event.
REFUSAL_GATE = "refusal_gate"


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on error (audited refusals excepted)."""
    with _settled(factory()) as session:
        yield session


@contextmanager
def _settled(session: Session) -> Iterator[Session]:
    """Commit when the block ends, roll back on error; a refusal's own audit event is kept (BrokerError with
    keep_changes), unless the caller's gate says the source's flood is over its cap (broker.audit.refusals:
    then it is counted in a summary instead)."""
    from broker.errors import BrokerError

    try:
        yield session
        session.commit()
    except BrokerError as error:
        gate = session.info.get(REFUSAL_GATE)
        if error.keep_changes and (gate is None or gate(error)):
            session.commit()
        else:
            session.rollback()
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# session.info key: the GroupCommit a session's unit belongs to (its after-commit callbacks wait for the group).
GROUP_COMMIT = "group_commit"
# session.info key: what a group's unit left for the group to write, [(registered in, writer, item)].
GROUP_WORK = "group_work"
# Writes a group's items, in the order their units were released, on the group's connection just before its COMMIT.
GroupWriter = Callable[[Connection, list[Any]], None]


def defer_to_group(session: Session, writer: GroupWriter, item: Any) -> bool:
    """In a ``GroupCommit`` unit: leave ``item`` for ``writer``, which writes the whole group's items at once in
    the group's transaction, just before its COMMIT; returns False (nothing kept) in any other session.

    The item is the unit's as its other changes are: handed to the group when the unit's savepoint is released,
    dropped when the savepoint (or a savepoint inside it, where the item was left) rolls back. The audit trail
    appends a group's events this way (``broker.audit.trail.record``): one hold of the chain's head per group."""
    if GROUP_COMMIT not in session.info:
        return False
    if not session.in_transaction():
        # Begun (no SQL yet: the savepoint waits for a statement), so that a rollback before the unit's end drops
        # the item as it would drop a row written at once.
        session.begin()
    session.info.setdefault(GROUP_WORK, []).append((session.get_nested_transaction(), writer, item))
    return True


# A group is committed by the unit that finds nobody waiting behind it, or at this many units.
MAX_GROUP = 64


class GroupCommitFailed(Exception):
    """The group's COMMIT failed: none of its units is durable, each of their callers gets this."""


class GroupCommit:
    """Group commit for the busiest writers (the gateways' reports: sessions starting and ending, events).

    Their units of work run one after another on one connection, inside one open transaction, each in a
    savepoint of its own (taken at the unit's first statement); one COMMIT then makes the whole group durable:
    one disk flush (SQLite ``synchronous=FULL``, PostgreSQL's WAL flush) for many units. What the units leave
    for the group (``defer_to_group``: their audit events) is written just before that COMMIT, in the same
    transaction: the audit chain's head is taken once per group, its events inserted at once. The guarantees
    of ``unit_of_work`` stay:

    - a unit succeeds or fails alone: an error rolls back its savepoint only (an audited refusal keeps its
      event, as elsewhere), and every change commits together with its audit event;
    - its caller returns only after the COMMIT that contains it is durable, and gets ``GroupCommitFailed`` if
      that COMMIT failed;
    - its after-commit callbacks (telling the gateways) run only after that durable COMMIT.

    What fails the group as a whole, as a failed COMMIT does: the group's writes failing (``record`` refuses in
    the unit what the database would refuse in an event row, so in practice only the database itself failing),
    and the group's connection being lost in one of its units (those released before are told, not reconnected).

    The unit that finds nobody waiting for the connection commits, so a lone request pays one commit as
    before; under load the group grows to at most ``max_group`` units. Units only — reads and the rest of
    the API keep their own connections; between groups no transaction (and on SQLite no write lock) is held.
    """

    def __init__(self, engine: Engine, *, max_group: int = MAX_GROUP) -> None:
        self._engine = engine
        self._max_group = max_group
        self._turn = threading.Lock()  # one unit at a time on the shared connection
        self._state = threading.Condition()  # guards everything below
        self._connection: Connection | None = None
        self._queued = 0  # units waiting for their turn
        self._in_group = 0  # units done in the open transaction
        self._generation = 0  # how many groups have ended (committed or failed)
        self._failed: dict[int, BaseException] = {}
        self._callbacks: list[Callable[[], None]] = []
        self._work: dict[GroupWriter, list[Any]] = {}  # released units' items, per writer, in unit order
        self._last_group = 0  # units in the group that ended last
        self.groups = 0  # committed groups, and the units they held (for the benchmark's figures)
        self.units = 0

    @contextmanager
    def unit(self) -> Iterator[Session]:
        with self._state:
            self._queued += 1
        self._turn.acquire()
        with self._state:
            self._queued -= 1
        try:
            connection = self._open()  # may end a group whose transaction was lost: this unit starts the next
        except BaseException:
            self._turn.release()
            raise
        generation = self._generation
        try:
            # The unit's own savepoint: its commit releases it, its rollback (an error, or a flush SQLAlchemy
            # rolls back itself) returns to it, and the group's transaction is never touched by the session.
            session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
            session.info[GROUP_COMMIT] = self
            with _settled(session):
                yield session
        finally:
            self._finish(generation)

    @property
    def waiting(self) -> int:
        """Units waiting for their turn on the connection now."""
        with self._state:
            return self._queued

    def defer(self, callbacks: list[Callable[[], None]], work: list[tuple[GroupWriter, Any]]) -> None:
        """What a unit whose savepoint was released leaves: its after-commit callbacks, run after the group's
        COMMIT, and its items for the group's writers (``defer_to_group``), written just before it."""
        with self._state:
            self._callbacks.extend(callbacks)
            for writer, item in work:
                self._work.setdefault(writer, []).append(item)

    def close(self) -> None:
        with self._turn, self._state:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _open(self) -> Connection:
        if self._connection is not None and self._connection.invalidated:
            # Lost in an earlier unit of this group (a disconnect SQLAlchemy noticed): the transaction that held
            # the units released so far went with it, so their group has failed; on a new connection they would
            # be told it committed (and their audit events would commit without their changes).
            self._connection = None
            if self._in_group:
                self._end_group(ConnectionError("the connection holding the group's transaction was lost"))
        if self._connection is None:
            self._connection = self._engine.connect()
        if not self._connection.in_transaction():
            self._connection.begin()  # lazily: between groups nothing is held
        return self._connection

    def _finish(self, generation: int) -> None:
        """Commit the group if nobody waits behind this unit (or the group is full); else leave the commit to
        the last of them. Either way return once the group's COMMIT is over, and raise if it failed."""
        with self._state:
            self._in_group += 1
            full = self._in_group >= self._max_group
            lead = self._queued == 0 or full
            under_load = self._last_group > 1
        if lead and not full and under_load:
            # Under load, let the callers the last COMMIT answered reach the queue before deciding: they are
            # runnable, but while this thread holds the interpreter (the GIL) they cannot get there, and the
            # groups would settle at half the callers (16 of 32 clients on PostgreSQL, measured). sleep(0)
            # hands the interpreter on once; a lone caller (last group of one) does not pay it.
            time.sleep(0)
            with self._state:
                lead = self._queued == 0
        if lead:
            try:
                self._commit()
            finally:
                self._turn.release()
        else:
            self._turn.release()
            with self._state:
                while self._generation == generation:
                    self._state.wait()
        with self._state:
            failure = self._failed.get(generation)
        if failure is not None:
            raise GroupCommitFailed(f"the database did not commit: {failure.__class__.__name__}") from failure

    def _commit(self) -> None:
        error: BaseException | None = None
        connection = self._connection
        with self._state:
            work, self._work = self._work, {}
        try:
            if connection is not None and connection.in_transaction():
                # The released units' writes, in the transaction that holds their changes: whatever goes wrong
                # here fails the whole group, as a failed COMMIT would.
                for writer, items in work.items():
                    writer(connection, items)
                connection.commit()
            elif work:
                raise RuntimeError("a group's units left writes but its transaction is gone")
        except Exception as exc:  # the group is lost, not the process: every caller in it is told
            error = exc
            if connection is not None:
                connection.invalidate()
            self._connection = None
        callbacks = self._end_group(error)
        if error is None:
            for callback in callbacks:
                callback()

    def _end_group(self, error: BaseException | None) -> list[Callable[[], None]]:
        """The group's units are answered: committed (``error`` None) or failed; returns its callbacks."""
        with self._state:
            callbacks, self._callbacks = self._callbacks, []
            self._work = {}
            if error is not None:
                self._failed[self._generation] = error
            else:
                self.groups += 1
                self.units += self._in_group
            self._failed = {g: e for g, e in self._failed.items() if g > self._generation - 1000}
            self._generation += 1
            self._last_group, self._in_group = self._in_group, 0
            self._state.notify_all()
        return callbacks


@contextmanager
def read_only_unit(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that only reads and is always rolled back; on SQLite it takes no write lock."""
    session = factory()
    try:
        session.connection(execution_options={READ_ONLY_OPTION: True})
        yield session
    finally:
        session.rollback()
        session.close()

"""Database engine and sessions: one transaction per unit of work, UTC-aware timestamps on every backend."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event
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
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


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
    callbacks = session.info.pop("after_commit", [])
    for _registered_in, callback in callbacks:
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
        return
    # A savepoint rolled back: only what was registered inside it goes; the outer transaction's stay.
    kept = [(where, callback) for where, callback in session.info.get("after_commit", [])
            if not _within(where, previous_transaction)]
    session.info["after_commit"] = kept


# session.info key: a callable(error) -> bool deciding whether a refused transaction keeps its audit event.
REFUSAL_GATE = "refusal_gate"


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on error (audited refusals excepted)."""
    from broker.errors import BrokerError

    session = factory()
    try:
        yield session
        session.commit()
    except BrokerError as error:
        # A refusal's own audit event is kept, unless the caller's gate says the source's flood is over its cap
        # (broker.audit.refusals: then it is counted in a summary instead).
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

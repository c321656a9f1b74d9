"""Audit trail: append rate with the hash chain (target, issue 14: at least 5,000 events/s with 32 concurrent clients
through the group commit, on SQLite and PostgreSQL) and `gatepass audit verify` over 1,000,000 events (target: under
10 s).

Append: a fresh data directory made by the broker's own `gatepass init` code (alembic migrations included),
then `trail.record` exactly as the API calls it, timed two ways, interleaved in rounds:
  1 per transaction    each event commits on its own (every API call commits its own event): the realistic case
  100 per transaction  the same events batched (what a bulk import or a busy transaction costs per event)
With `--postgres URL` (a server URL without a database, as GATEPASS_TEST_POSTGRES) the same on a scratch
PostgreSQL database, created and dropped here.

Concurrent append: `--clients` writers (32 by default) at once, one event per unit of work, each unit in its own
transaction (as the API's requests commit) beside the group commit (`broker.db.GroupCommit`, as the gateways'
reports commit: the units waiting for the writer share one COMMIT, each in its own savepoint, their events written
together just before it), interleaved in rounds, with the events per COMMIT the group reached and this process's
CPU per event; every trail verified afterwards. The target applies to the group commit rows. `--profile` adds a
cProfile of one group-commit round (every client thread's profile merged).

Verify: a second data directory filled with N events (1,000,000 by default) by a bulk writer that builds rows
with the product's own hash and canonical form (`trail.event_hash`) and inserts them in big transactions. It
is shown to be faithful before it is used: the same 2,000 events written once with `trail.record` and once with
the bulk writer into two fresh databases must give identical rows and heads; and the filled trail must pass the
real `verify_chain`, with 100 more events appended by `trail.record` on top of it. The group commit's own
writer is held to the same rows: the 2,000 events written through `GroupCommit` units (several per unit) into a
third database must give the same rows and head. Then timed:
  verify_chain       in this process, a fresh engine and transaction (as `gatepass audit verify` opens them)
  CLI                `gatepass audit verify --data DIR` from fork to exit, interpreter start-up included
`--append-only` stops after the append figures (no 1M-event fill; the equivalence proof still runs).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import io
import json
import os
import pstats
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from assembly.database import initialise, upgrade
from bench.harness import GATEPASS, heading, machine_line, median, table
from broker.audit import trail
from broker.db import GroupCommit, make_engine, make_session_factory, unit_of_work
from broker.models import AuditEvent, AuditHead
from broker.settings import Settings

APPEND_TARGET = 5000.0  # events/s, 32 concurrent clients through the group commit, SQLite and PostgreSQL
VERIFY_TARGET = 10.0  # seconds for 1,000,000 events
VERIFY_EVENTS = 1_000_000
BATCH = 100
FILL_TRANSACTION = 50_000
EQUIVALENCE_EVENTS = 2000
START = dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.UTC)
ACTIONS = (trail.Action.LOGIN_SUCCEEDED, trail.Action.REQUEST_CREATED, trail.Action.REQUEST_APPROVAL,
           trail.Action.REQUEST_APPROVED, trail.Action.GRANT_CREATED, trail.Action.CERTIFICATE_ISSUED,
           trail.Action.GATEWAY_AUTHORIZED, trail.Action.SESSION_STARTED, trail.Action.SESSION_ENDED,
           trail.Action.LOGIN_FAILED)


def sample(index: int) -> dict[str, Any]:
    """The keyword arguments of ``trail.record`` for event ``index``: shaped like the API's events (an actor,
    a subject id, a site, a few details, now and then a non-ASCII reason or a refusal)."""
    action = ACTIONS[index % len(ACTIONS)]
    details: dict[str, Any] = {"asset": f"hmi-{index % 40:02d}", "grant": f"gr_{index // 10:012x}",
                               "serial": 100000 + index // 10, "address": f"10.0.{index % 7}.{index % 250}"}
    if index % 10 == 1:
        details["reason"] = "Störung an Förderband 3 — Fernwartung" if index % 20 == 1 else "routine check"
    return {
        "now": START + dt.timedelta(microseconds=1371 * index),
        "action": action,
        "outcome": "failure" if action is trail.Action.LOGIN_FAILED else "success",
        "actor": f"vendor{index % 97}",
        "subject": f"req_{index // 10:016x}",
        "site": f"plant-{'abc'[index % 3]}",
        "details": details,
    }


# ---------------------------------------------------------------------------------------------------
# writers


def append(factory: sessionmaker[Session], *, start: int, count: int, per_transaction: int) -> None:
    """``count`` events through ``trail.record``, ``per_transaction`` per committed unit of work."""
    index = start
    while index < start + count:
        with unit_of_work(factory) as session:
            for _ in range(min(per_transaction, start + count - index)):
                trail.record(session, **sample(index))
                index += 1


def append_in_group(group: GroupCommit, *, start: int, count: int, per_unit: int) -> None:
    """``count`` events through ``trail.record`` in group-commit units, ``per_unit`` per unit, from one thread."""
    for first in range(start, start + count, per_unit):
        with group.unit() as session:
            for index in range(first, min(first + per_unit, start + count)):
                trail.record(session, **sample(index))


def append_concurrently(engine: Engine, *, start: int, count: int, clients: int, group: GroupCommit | None,
                        profilers: list[cProfile.Profile] | None = None) -> tuple[float, float]:
    """``count`` events from ``clients`` threads, one event per unit of work each: every unit its own transaction
    (``group`` None), or through the group commit; returns the seconds it took and this process's CPU seconds.
    With ``profilers``, each client thread profiles itself into one appended there."""
    factory = make_session_factory(engine)
    share = count // clients
    barrier = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        profiler = cProfile.Profile() if profilers is not None else None
        if profiler is not None and profilers is not None:
            profilers.append(profiler)
        barrier.wait()
        if profiler is not None:
            profiler.enable()
        for index in range(start + number * share, start + (number + 1) * share):
            with (group.unit() if group is not None else unit_of_work(factory)) as session:
                trail.record(session, **sample(index))
        if profiler is not None:
            profiler.disable()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, time.process_time() - cpu_started


def measure_concurrent(engine: Engine, label: str, *, events: int, clients: int, rounds: int,
                       profile: bool = False) -> dict[str, Any]:
    """Events/s with ``clients`` concurrent writers, one event per unit of work: each in its own transaction (as
    the API's requests are) beside the group commit (as the gateways' reports are); the trail must verify.
    With ``profile``, one more group-commit round under cProfile (not counted in the figures)."""
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        index = int(session.execute(select(AuditHead.seq)).scalar_one()) + 10_000_000
    rates: dict[str, list[float]] = {"own": [], "group": []}
    cpu: dict[str, list[float]] = {"own": [], "group": []}  # this process's CPU seconds per event
    loads: list[float] = []
    sizes: list[float] = []
    written = events // clients * clients
    for number in range(rounds):
        for mode in ("own", "group") if number % 2 == 0 else ("group", "own"):
            group = GroupCommit(engine) if mode == "group" else None
            elapsed, cpu_s = append_concurrently(engine, start=index, count=events, clients=clients, group=group)
            if group is not None:
                sizes.append(group.units / max(group.groups, 1))
                group.close()
            rates[mode].append(written / elapsed)
            cpu[mode].append(cpu_s / written)
            loads.append(os.getloadavg()[0])
            index += events
    profile_report = ""
    if profile:
        profilers: list[cProfile.Profile] = []
        group = GroupCommit(engine)
        append_concurrently(engine, start=index, count=events, clients=clients, group=group, profilers=profilers)
        group.close()
        out = io.StringIO()
        stats = pstats.Stats(profilers[0], stream=out)
        for profiler in profilers[1:]:
            stats.add(profiler)
        stats.sort_stats("tottime").print_stats(25)
        profile_report = out.getvalue()
    with unit_of_work(factory) as session:
        result = trail.verify_chain(session)
    if not result.ok:
        raise RuntimeError(f"{label}: the trail written concurrently does not verify: {result.problem}")
    own, grouped = median(rates["own"]), median(rates["group"])
    load = f"{min(loads):.2f}-{max(loads):.2f}"
    rows = [[label, f"{clients}, each its own transaction", f"{own:,.0f}", f"{min(rates['own']):,.0f}", "1",
             f"{median(cpu['own']) * 1e6:.0f}", "", load, ""],
            [label, f"{clients}, group commit", f"{grouped:,.0f}", f"{min(rates['group']):,.0f}",
             f"{median(sizes):.1f}", f"{median(cpu['group']) * 1e6:.0f}", f"{grouped / own:.2f}", load,
             f"{grouped / APPEND_TARGET:.2f}"]]
    return {"label": label, "clients": clients, "own": own, "group": grouped, "ratio": grouped / own,
            "mean_group": median(sizes), "rows": rows, "verified": result.events_checked,
            "cpu_us_per_event": {mode: median(values) * 1e6 for mode, values in cpu.items()},
            "load": [min(loads), max(loads)], "met": grouped >= APPEND_TARGET, "profile": profile_report}


def bulk_rows(prev_hash: str, first_seq: int, first_index: int, count: int) -> tuple[list[dict[str, Any]], str]:
    """Rows as ``trail.record`` writes them, chained from ``prev_hash``; returns them and the last hash."""
    rows = []
    for offset in range(count):
        fields = sample(first_index + offset)
        details = json.dumps(fields["details"] or {}, sort_keys=True, separators=(",", ":"), default=str)
        row = {"seq": first_seq + offset, "occurred_at": fields["now"].astimezone(dt.UTC),
               "action": str(fields["action"]), "outcome": fields["outcome"], "actor": fields["actor"],
               "subject": fields["subject"], "site": fields["site"], "details": details, "prev_hash": prev_hash}
        row["hash"] = prev_hash = trail.event_hash(
            prev_hash, seq=row["seq"], occurred_at=row["occurred_at"], action=row["action"], outcome=row["outcome"],
            actor=row["actor"], subject=row["subject"], site=row["site"], details=details)
        rows.append(row)
    return rows, prev_hash


def bulk_fill(factory: sessionmaker[Session], *, start: int, count: int, progress: bool = False) -> None:
    """``count`` events straight into the table, ``FILL_TRANSACTION`` per transaction, head kept in step."""
    done = 0
    started = time.monotonic()
    while done < count:
        size = min(FILL_TRANSACTION, count - done)
        with unit_of_work(factory) as session:
            seq, prev_hash = session.execute(select(AuditHead.seq, AuditHead.last_hash).where(AuditHead.id == 1)).one()
            rows, last_hash = bulk_rows(prev_hash, seq + 1, start + done, size)
            session.execute(insert(AuditEvent), rows)
            session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=seq + size, last_hash=last_hash))
        done += size
        if progress and (done % 200_000 == 0 or done == count):
            print(f"  filled {done:,} of {count:,} ({time.monotonic() - started:.0f} s)", flush=True)


def reference_hash(event: AuditEvent) -> str:
    """The chain's hash as first defined (json.dumps of a dict): what every stored trail was hashed with."""
    body = {"seq": event.seq, "occurred_at": event.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
            "action": event.action, "outcome": event.outcome, "actor": event.actor, "subject": event.subject,
            "site": event.site, "details": event.details}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(event.prev_hash.encode() + b"\n" + canonical).hexdigest()


def dump(engine: Engine) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    with engine.connect() as connection:
        events = [tuple(row) for row in connection.execute(text("SELECT * FROM audit_events ORDER BY seq"))]
        head = tuple(connection.execute(text("SELECT * FROM audit_head")).one())
    return events, head


# ---------------------------------------------------------------------------------------------------
# databases


def init_data_dir(path: Path) -> Settings:
    """A data directory as `gatepass init` makes it (the same function: migrations, CA, admin, gateway)."""
    settings = Settings(data_dir=path)
    initialise(settings)
    return settings


def bare_sqlite(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return engine


def _with_database(server_url: str, database: str) -> str:
    parts = urlsplit(server_url)
    if not parts.scheme.startswith("postgresql"):
        raise SystemExit(f"--postgres must be a postgresql+psycopg:// server URL, not {server_url!r}")
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


@contextmanager
def scratch_postgres(server_url: str) -> Iterator[Engine]:
    """A migrated scratch database ``gp_bench_<random>`` on the server, dropped afterwards."""
    import psycopg
    from psycopg import sql

    def maintenance() -> psycopg.Connection[Any]:
        parts = urlsplit(_with_database(server_url, urlsplit(server_url).path.lstrip("/") or "postgres"))
        return psycopg.connect(urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, "")),
                               autocommit=True, connect_timeout=10)

    name = "gp_bench_" + secrets.token_hex(6)
    with maintenance() as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    engine = make_engine(_with_database(server_url, name))
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with maintenance() as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# ---------------------------------------------------------------------------------------------------
# measurements


def measure_append(engine: Engine, label: str, *, events: int, rounds: int, budget: float) -> dict[str, Any]:
    """Events/s for 1 and BATCH events per transaction, ``rounds`` interleaved rounds of ``events`` each
    (fewer if a mode would pass ``budget`` seconds); then the trail must still verify."""
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        index = int(session.execute(select(AuditHead.seq)).scalar_one())
    rates: dict[int, list[float]] = {1: [], BATCH: []}
    cpu: dict[int, list[float]] = {1: [], BATCH: []}  # this process's CPU seconds per event
    spent: dict[int, float] = {1: 0.0, BATCH: 0.0}
    for number in range(rounds):
        for per in (1, BATCH) if number % 2 == 0 else (BATCH, 1):
            if spent[per] > budget:
                continue
            started, cpu_started = time.perf_counter(), time.process_time()
            append(factory, start=index, count=events, per_transaction=per)
            elapsed = time.perf_counter() - started
            cpu[per].append((time.process_time() - cpu_started) / events)
            spent[per] += elapsed
            rates[per].append(events / elapsed)
            index += events
    with unit_of_work(factory) as session:
        result = trail.verify_chain(session)
    if not result.ok:
        raise RuntimeError(f"{label}: the appended trail does not verify: {result.problem}")
    rows = []
    for per, values in rates.items():
        rows.append([label, f"{per}", len(values), f"{median(values):,.0f}", f"{min(values):,.0f}",
                     f"{median(cpu[per]) * 1e6:.0f}", f"{1 / median(cpu[per]):,.0f}",
                     f"{median(values) / APPEND_TARGET:.2f}" if per == 1 else ""])
    return {"label": label, "events_per_round": events, "rates": {str(k): v for k, v in rates.items()},
            "median": {str(k): median(v) for k, v in rates.items()}, "rows": rows,
            "cpu_us_per_event": {str(k): median(v) * 1e6 for k, v in cpu.items()},
            "verified": result.events_checked}


def prove_bulk_writer(root: Path) -> None:
    """The bulk writer must write exactly what ``trail.record`` writes, or the verify figure means nothing; and
    ``trail.record`` in group-commit units (its events written with their group) must write the same again."""
    root.mkdir(parents=True, exist_ok=True)
    by_record, by_bulk = bare_sqlite(root / "record.db"), bare_sqlite(root / "bulk.db")
    by_group = bare_sqlite(root / "group.db")
    try:
        append(make_session_factory(by_record), start=0, count=EQUIVALENCE_EVENTS, per_transaction=BATCH)
        bulk_fill(make_session_factory(by_bulk), start=0, count=EQUIVALENCE_EVENTS)
        group = GroupCommit(by_group)
        append_in_group(group, start=0, count=EQUIVALENCE_EVENTS, per_unit=7)
        group.close()
        if dump(by_record) != dump(by_bulk):
            raise RuntimeError("the bulk writer does not write what trail.record writes: the verify figure would "
                               "not be about the real trail")
        if dump(by_group) != dump(by_record):
            raise RuntimeError("trail.record through the group commit does not write what it writes alone")
        with Session(by_record) as session:  # and trail.record hashes by the chain's written definition
            for event in session.scalars(select(AuditEvent).order_by(AuditEvent.seq)):
                if reference_hash(event) != event.hash:
                    raise RuntimeError(f"event {event.seq}: trail.record no longer hashes the canonical form")
    finally:
        by_record.dispose()
        by_bulk.dispose()
        by_group.dispose()


def timed_verify(settings: Settings, profile: bool) -> tuple[float, float, trail.VerifyResult, str]:
    """Wall and CPU seconds of one verify_chain in a fresh engine and transaction."""
    engine = make_engine(settings.effective_database_url)
    profiler = cProfile.Profile() if profile else None
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        with unit_of_work(make_session_factory(engine)) as session:
            if profiler is not None:
                profiler.enable()
            result = trail.verify_chain(session)
            if profiler is not None:
                profiler.disable()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        engine.dispose()
    report = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        report = out.getvalue()
    return elapsed, cpu, result, report


def timed_cli(*args: str, timeout: float = 600) -> tuple[float, float, int, str]:
    """Wall seconds of `gatepass ARGS` from fork to exit, its CPU seconds (user + system), exit code, output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEPASS_")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([GATEPASS, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu, done.returncode, done.stdout + done.stderr


def prove(root: Path) -> None:
    prove_bulk_writer(root / "equivalence")
    print(f"  bulk writer and group commit: {EQUIVALENCE_EVENTS:,} events identical to trail.record's (rows and "
          "head), and hashed by the chain's first definition (json.dumps of a dict)", flush=True)


def measure_verify(root: Path, *, events: int, runs: int, profile: bool) -> dict[str, Any]:
    prove(root)
    settings = init_data_dir(root / "verify-data")
    engine = make_engine(settings.effective_database_url)
    try:
        factory = make_session_factory(engine)
        with unit_of_work(factory) as session:
            initial = int(session.execute(select(AuditHead.seq)).scalar_one())
        started = time.monotonic()
        bulk_fill(factory, start=0, count=events - initial - 100, progress=True)
        append(factory, start=events, count=100, per_transaction=10)  # the real path on top of the bulk chain
        fill_s = time.monotonic() - started
    finally:
        engine.dispose()
    size_mb = (root / "verify-data" / "gatepass.db").stat().st_size / 1e6
    heading(f"`audit verify` over {events:,} events (SQLite file {size_mb:.0f} MB; filled in {fill_s:.0f} s, "
            f"load average {os.getloadavg()[0]:.2f})")
    in_process: list[float] = []
    in_process_cpu: list[float] = []
    cli: list[float] = []
    cli_cpu: list[float] = []
    profile_report = ""
    for number in range(runs):
        elapsed, cpu, result, report = timed_verify(settings, profile and number == 0)
        if not result.ok or result.events_checked != events:
            raise RuntimeError(f"verify_chain: {result.events_checked} events, {result.problem}")
        in_process.append(elapsed)
        in_process_cpu.append(cpu)
        profile_report = profile_report or report
        elapsed, cpu, code, output = timed_cli("audit", "verify", "--data", str(settings.data_dir))
        if code != 0 or "intact" not in output:
            raise RuntimeError(f"gatepass audit verify exited {code}: {output}")
        cli.append(elapsed)
        cli_cpu.append(cpu)
    start_ups = [timed_cli("--version") for _ in range(3)]
    start_up, start_up_cpu = median([r[0] for r in start_ups]), median([r[1] for r in start_ups])
    scale = VERIFY_EVENTS / events

    # Scaled to 1M events when the trail is smaller: verify_chain linearly; the CLI as that plus what it costs
    # beyond verify_chain (interpreter, imports, engine: its wall time minus the in-process run's).
    verify_1m = median(in_process) * scale
    verify_cpu_1m = median(in_process_cpu) * scale
    cli_1m = verify_1m + max(0.0, median(cli) - median(in_process))
    cli_cpu_1m = verify_cpu_1m + max(0.0, median(cli_cpu) - median(in_process_cpu))

    def row(label: str, wall: list[float], cpu: list[float], wall_1m: float, cpu_1m: float) -> list[object]:
        return [label, len(wall), f"{median(wall):.2f}", f"{max(wall):.2f}", f"{median(cpu):.2f}",
                f"{events / median(wall):,.0f}", f"{wall_1m:.2f}", f"{cpu_1m:.2f}", f"{wall_1m / VERIFY_TARGET:.2f}"]

    rows = [row("verify_chain (in process)", in_process, in_process_cpu, verify_1m, verify_cpu_1m),
            row("`gatepass audit verify --data DIR`", cli, cli_cpu, cli_1m, cli_cpu_1m),
            ["`gatepass --version` (CLI start-up)", 3, f"{start_up:.2f}", "", f"{start_up_cpu:.2f}", "", "", "", ""]]
    print(table(["what", "runs", "median s", "worst s", "CPU s", "events/s", "s per 1M", "CPU s per 1M",
                 "vs target (<= 1)"], rows))
    print("(CPU s: user + system of the verifying process; on a busy machine it is what wall time would be on an "
          "idle one, the work being single-threaded and the file in the page cache)")
    if scale != 1:
        print(f"(s per 1M: verify_chain scaled linearly from {events:,} events; the CLI row is that plus the CLI's "
              "own cost beyond verify_chain, its time minus the in-process run's)")
    if profile_report:
        heading("cProfile of the first verify_chain (top 15 by own time)")
        print(profile_report)
    return {"events": events, "db_mb": size_mb, "fill_s": fill_s, "verify_s": in_process, "cli_s": cli,
            "verify_cpu_s": in_process_cpu, "cli_cpu_s": cli_cpu,
            "cli_start_up_s": start_up, "verify_s_per_million": verify_1m, "cli_s_per_million": cli_1m,
            "cli_cpu_s_per_million": cli_cpu_1m, "met": cli_1m < VERIFY_TARGET}


def run(*, events: int, append_events: int, rounds: int, runs: int, postgres: str | None, profile: bool,
        budget: float, directory: Path | None, clients: int = 32, append_only: bool = False) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="gatepass-bench-audit-", dir=directory))
    results: dict[str, Any] = {}
    try:
        heading(f"audit append rate, {rounds} interleaved rounds of {append_events:,} events per mode "
                f"({machine_line()}, load average {os.getloadavg()[0]:.2f}, data in {root})")
        settings = init_data_dir(root / "append-data")
        engine = make_engine(settings.effective_database_url)
        try:
            with engine.connect() as connection:
                pragmas = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                           for name in ("journal_mode", "synchronous")}
        finally:
            engine.dispose()

        def on_each_backend(key: str, measure: Callable[[Engine, str], dict[str, Any]]) -> list[list[Any]]:
            """``measure`` on the SQLite data directory and, with --postgres, on a scratch PostgreSQL database;
            results under ``key``_sqlite / ``key``_postgres; returns their table rows."""
            sqlite_engine = make_engine(settings.effective_database_url)
            try:
                results[f"{key}_sqlite"] = measure(sqlite_engine, "SQLite")
            finally:
                sqlite_engine.dispose()
            rows = list(results[f"{key}_sqlite"]["rows"])
            if postgres:
                with scratch_postgres(postgres) as pg_engine:
                    results[f"{key}_postgres"] = measure(pg_engine, "PostgreSQL")
                rows += results[f"{key}_postgres"]["rows"]
            return rows

        rows = on_each_backend("append", lambda engine, label: measure_append(
            engine, label, events=append_events, rounds=rounds, budget=budget))
        results["append_sqlite"]["pragmas"] = pragmas
        print(table(["backend", "events per transaction", "rounds", "events/s (median)", "events/s (worst)",
                     "CPU us/event", "events per CPU s", "vs target (>= 1)"], rows))
        print(f"(SQLite pragmas: journal_mode={pragmas['journal_mode']}, synchronous={pragmas['synchronous']} "
              "[0 OFF, 1 NORMAL, 2 FULL]; every appended trail verified afterwards)")
        print("(1 event per transaction, one client: each audited API call commits its own event; kept for "
              "comparison, the target is the concurrent group commit's below)")

        heading(f"audit append with {clients} concurrent clients, one event per unit of work, {rounds} interleaved "
                f"rounds of {append_events:,} events per mode (load average {os.getloadavg()[0]:.2f})")
        rows = on_each_backend("concurrent", lambda engine, label: measure_concurrent(
            engine, label, events=append_events, clients=clients, rounds=rounds, profile=profile))
        print(table(["backend", "clients", "events/s (median)", "events/s (worst)", "events per commit",
                     "CPU us/event", "group / own", "load average", "vs target (>= 1)"], rows))
        print("(group commit: the units waiting for the writer share one COMMIT, each in its own savepoint, their "
              "events written together just before it, each caller answered once that COMMIT is durable — "
              "broker.db.GroupCommit, used for the gateways' reports. CPU us/event: this process's, all threads)")
        for backend in ("sqlite", "postgres"):
            if f"concurrent_{backend}" not in results:
                continue
            measured = results[f"concurrent_{backend}"]
            print(f"\nappend, {clients} clients, group commit, {measured['label']}: {measured['group']:,.0f} "
                  f"events/s  target >= {APPEND_TARGET:,.0f}  {'MET' if measured['met'] else 'NOT MET'}")
            if measured["profile"]:
                heading(f"cProfile of one group-commit round, {measured['label']} (all {clients} client threads "
                        "merged, top 25 by own time; lock waits are the threads' turns)")
                print(measured["profile"])
        results["append_met"] = all(results[key]["met"] for key in results if key.startswith("concurrent_"))
        if append_only:
            heading("equivalence of the writers")
            prove(root)
            return results
        heading(f"filling {events:,} events for `audit verify`")
        results["verify"] = measure_verify(root, events=events, runs=runs, profile=profile)
        per_million = results["verify"]["cli_s_per_million"]
        note = "" if events == VERIFY_EVENTS else f" (scaled from {events:,} events)"
        print(f"\n`gatepass audit verify`, 1M events: {per_million:.2f} s{note}  target < {VERIFY_TARGET:.0f} s  "
              f"{'MET' if results['verify']['met'] else 'NOT MET'}  (CPU "
              f"{results['verify']['cli_cpu_s_per_million']:.2f} s)")
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=VERIFY_EVENTS,
                        help=f"events in the trail `audit verify` walks (default {VERIFY_EVENTS:,})")
    parser.add_argument("--append-events", type=int, default=5000, help="events per append round (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="append rounds per mode (default 3)")
    parser.add_argument("--runs", type=int, default=3, help="verify runs, in process and CLI (default 3)")
    parser.add_argument("--postgres", metavar="URL", help="also append on PostgreSQL: a server URL such as "
                        "postgresql+psycopg://postgres@127.0.0.1:5432 (a scratch database is created and dropped)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent writers for the group commit figure "
                        "(default 32)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the first verify_chain and of "
                        "one group-commit round per backend")
    parser.add_argument("--append-only", action="store_true", help="stop after the append figures and the writers' "
                        "equivalence proof: no verify fill (a short run)")
    parser.add_argument("--dir", type=Path, help="where the temporary data directories go (default: $TMPDIR)")
    parser.add_argument("--quick", action="store_true", help="100,000 events, 2,000 per append round, 1 verify run")
    args = parser.parse_args(argv)
    if args.quick:
        return run(events=100_000, append_events=2000, rounds=2, runs=1, postgres=args.postgres,
                   profile=args.profile, budget=20, directory=args.dir, clients=max(1, min(args.clients, 256)),
                   append_only=args.append_only)
    return run(events=max(EQUIVALENCE_EVENTS, min(args.events, 20_000_000)),
               append_events=max(100, min(args.append_events, 1_000_000)), rounds=max(1, min(args.rounds, 10)),
               runs=max(1, min(args.runs, 10)), postgres=args.postgres, profile=args.profile, budget=60,
               directory=args.dir, clients=max(1, min(args.clients, 256)), append_only=args.append_only)


if __name__ == "__main__":
    main()

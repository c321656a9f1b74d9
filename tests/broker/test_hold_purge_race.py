"""A recording hold racing the retention purge: a hold that arrives after the purge read what is due but before its
write unit commits wins (the file stays, no ``retention:recording:purged`` event claims it, nobody's transaction
is aborted); a hold that arrives after the purge committed is refused (409, "was purged") or, for a playbook run,
passed over. On PostgreSQL the two transactions really overlap (each test holds one open while the other waits on
its lock, observed in ``pg_stat_activity``); on SQLite BEGIN IMMEDIATE serialises them, so only the orders are
tested there."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from broker.db import make_session_factory
from broker.models import AccessSession
from broker.recordings import holds, purge, retention, store
from broker.respond import runner
from tests.broker.test_recordings_verify import record_session
from tests.fixtures.broker import Api, Plant, assert_refusal

PURGED = "retention:recording:purged"
HELD = "review:recording:held"
DAY = dt.timedelta(days=1)


def due_recordings(api: Api, plant: Plant, count: int, identity: str = "vendor1") -> list[str]:
    """``count`` recordings at plant-a, past its 30-day retention."""
    with plant.session() as session:
        from broker.inventory import sites

        sites.update_site(session, now=plant.clock.now(), actor="test", name="plant-a", recording_retention_days=30)
    made = [record_session(api, plant, api.grant(identity, "sup-a1")["id"], f"output {n}\r\n$ ") for n in range(count)]
    plant.clock.advance(31 * DAY)
    return made


def path_of(plant: Plant, session_id: str) -> Path:
    return store.recordings_dir(plant.settings) / f"{session_id}.cast"


def run_purge(plant: Plant) -> purge.PurgeReport:
    return purge.purge(make_session_factory(plant.engine), now=plant.clock.now(), default_days=0,
                       directory=store.recordings_dir(plant.settings))


def purged_subjects(plant: Plant) -> list[str]:
    return [e["subject"] for e in plant.audit(PURGED)]


def holds_on(plant: Plant, session_id: str) -> int:
    return plant.count("evidence_holds", f"WHERE session_id = '{session_id}' AND released_at IS NULL")


def hold_by_reviewer(api: Api, plant: Plant, session_id: str) -> None:
    answer = api.as_user("sec1").post(f"/recordings/{session_id}/hold", json={"reason": "incident 4711"})
    assert answer.status_code == 200, answer.text


def hold_by_playbook_step(api: Api, plant: Plant, session_id: str) -> None:
    """What a playbook's preserve_evidence step does, in a unit of its own."""
    with plant.session() as session:
        held = holds.hold_for_run(session, now=plant.clock.now(), actor="sec1", run_id="run-race",
                                  session_ids=[session_id], reason="playbook compromised-vendor-account")
    assert held == [session_id]


@pytest.mark.parametrize("take_hold", [hold_by_reviewer, hold_by_playbook_step], ids=["reviewer", "playbook"])
def test_a_hold_taken_after_the_purge_read_what_is_due_keeps_the_recording(
        api: Api, plant: Plant, monkeypatch: pytest.MonkeyPatch, take_hold: Callable[[Api, Plant, str], None]) -> None:
    held, other = due_recordings(api, plant, 2)
    real_due = retention.due

    def due_then_hold(session: Session, **kwargs: Any) -> list[retention.Candidate]:
        # The hold lands exactly in the window: after the read (which saw both due and neither held) and before
        # the write unit that claims them. Wrapping the real step is the only way to put it there every time.
        found = real_due(session, **kwargs)
        assert sorted(c.session_id for c in found if c.problem is None) == sorted([held, other])
        take_hold(api, plant, held)
        return found

    monkeypatch.setattr(retention, "due", due_then_hold)
    report = run_purge(plant)

    assert [c.session_id for c in report.purged] == [other]  # the write unit ran, and claimed the other one only
    assert purged_subjects(plant) == [other]
    assert path_of(plant, held).is_file()
    assert not path_of(plant, other).exists()
    assert plant.row("SELECT recording_purged_at FROM sessions WHERE id = :id", id=held)[0] is None
    assert holds_on(plant, held) == 1


def test_a_hold_after_the_purge_committed_is_refused_and_a_playbook_passes_it_over(api: Api, plant: Plant) -> None:
    [gone] = due_recordings(api, plant, 1)
    assert [c.session_id for c in run_purge(plant).purged] == [gone]

    refused = assert_refusal(api.as_user("sec1").post(f"/recordings/{gone}/hold", json={"reason": "too late"}), 409)
    assert f"the recording of session {gone} was purged under retention" in refused["message"]
    assert "no file left to hold" in refused["message"]
    with plant.session() as session:
        assert holds.hold_for_run(session, now=plant.clock.now(), actor="sec1", run_id="run-late",
                                  session_ids=[gone], reason="playbook") == []
    assert plant.count("evidence_holds") == 0
    assert plant.audit(HELD) == []


# --- PostgreSQL: two transactions at once ----------------------------------------------------------------------


@pytest.fixture
def postgres(plant: Plant) -> Plant:
    if plant.backend != "postgresql":
        pytest.skip("on SQLite BEGIN IMMEDIATE serialises whole write transactions: the orders above are all there is")
    return plant


def lock_waits(plant: Plant) -> list[tuple[int, float, str]]:
    """The connections to this test's database waiting on a lock: (pid, seconds waited, statement)."""
    with plant.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT a.pid, extract(epoch FROM now() - min(l.waitstart)), a.query FROM pg_stat_activity a "
            "JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted "
            "WHERE a.datname = current_database() AND a.wait_event_type = 'Lock' GROUP BY a.pid, a.query"))
        return [(int(pid), float(waited or 0), str(query)) for pid, waited, query in rows]


def wait_for_lock_wait(plant: Plant, thread: threading.Thread, *, longer_than: float = 0.0,
                       timeout: float = 15.0) -> str:
    """Wait until a connection waits on a lock for more than ``longer_than`` seconds; returns its statement."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = [query for _pid, waited, query in lock_waits(plant) if waited > longer_than]
        if waiting:
            return waiting[0]
        assert thread.is_alive(), "the other transaction finished instead of waiting on a lock"
        assert time.monotonic() < deadline, f"no lock wait after {timeout} s"
        time.sleep(0.02)


class Background(threading.Thread):
    """A call in a thread of its own, with its result or its error kept for the test."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call, self.result, self.error = call, None, None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as error:  # handed to the test, which asserts on it
            self.error = error

    def outcome(self, timeout: float = 30.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), f"still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


def test_a_hold_in_flight_makes_the_purge_wait_and_wins(api: Api, postgres: Plant) -> None:
    plant = postgres
    held, other = due_recordings(api, plant, 2)
    with plant.session() as session:
        holds.hold(session, now=plant.clock.now(), actor=holds.Actor("cli:test"), session_id=held, reason="case 12")
        session.flush()
        purging = Background(lambda: run_purge(plant))
        purging.start()
        wait_for_lock_wait(plant, purging)  # the purge's write unit waits for this transaction
    report = purging.outcome()
    assert [c.session_id for c in report.purged] == [other]
    assert purged_subjects(plant) == [other]
    assert path_of(plant, held).is_file()
    assert holds_on(plant, held) == 1


def test_a_hold_that_waits_for_a_committing_purge_is_refused(
        api: Api, postgres: Plant, monkeypatch: pytest.MonkeyPatch) -> None:
    plant = postgres
    [gone] = due_recordings(api, plant, 1)
    before = api.as_user("sec1").get(f"/recordings/{gone}")  # signed in: the hold request below only holds
    assert before.status_code == 200, before.text
    assert before.json()["purged_at"] is None
    claimed, go_on = threading.Event(), threading.Event()
    real_mark_purged = retention.mark_purged

    def mark_then_pause(session: Session, **kwargs: Any) -> list[retention.Candidate]:
        # Claimed, not yet committed: the hold request arrives now and must wait for this transaction.
        done = real_mark_purged(session, **kwargs)
        claimed.set()
        assert go_on.wait(30)
        return done

    monkeypatch.setattr(retention, "mark_purged", mark_then_pause)
    purging = Background(lambda: run_purge(plant))
    purging.start()
    assert claimed.wait(30)
    holding = Background(lambda: api.as_user("sec1").post(f"/recordings/{gone}/hold", json={"reason": "late"}))
    holding.start()
    # Waiting for the row the purge claimed (not for something else of the request, such as a sign-in's event).
    assert "FROM sessions" in wait_for_lock_wait(plant, holding)
    go_on.set()
    assert [c.session_id for c in purging.outcome().purged] == [gone]
    refused = assert_refusal(holding.outcome(), 409)
    assert "was purged under retention" in refused["message"]
    assert plant.count("evidence_holds") == 0
    assert plant.audit(HELD) == []


@pytest.fixture
def deadlock_timeout(postgres: Plant) -> float:
    with postgres.engine.connect() as connection:
        shown = str(connection.execute(text("SHOW deadlock_timeout")).scalar_one())
    units = {"ms": 0.001, "s": 1.0, "min": 60.0}
    number = shown.rstrip("abcdefghijklmnopqrstuvwxyz")
    return float(number) * units[shown[len(number):]]


def run_playbook(api: Api) -> Background:
    call = Background(lambda: api.as_user("sec1").post(
        "/playbooks/compromised-vendor-account/run", json={"identity": "vendor1", "reason": "credential leaked"}))
    call.start()
    return call


def test_a_playbook_run_holding_a_recording_the_purge_is_claiming_is_not_aborted(
        api: Api, postgres: Plant, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run commits its containment at once (the gateways cut on committed changes) and holds the evidence after
    it. A purge that comes in between must neither deadlock with the run nor take the evidence: the identity is
    suspended by then, and the recordings of a suspended identity (or of a locked-down site) are not purged while
    that lasts. The run's hold then keeps the recording."""
    plant = postgres
    [held] = due_recordings(api, plant, 1)
    at_evidence, go_on = threading.Event(), threading.Event()
    real_sessions_of_target = holds.sessions_of_target

    def pause_before_holding(session: Session, **kwargs: Any) -> list[str]:
        at_evidence.set()
        assert go_on.wait(30)
        return real_sessions_of_target(session, **kwargs)

    monkeypatch.setattr(holds, "sessions_of_target", pause_before_holding)
    running = run_playbook(api)
    assert at_evidence.wait(30)
    try:
        assert plant.row("SELECT status FROM identities WHERE username = 'vendor1'") == ("suspended",)  # committed
        purging = Background(lambda: run_purge(plant))
        purging.start()
        assert purging.outcome().purged == []  # done without waiting for the run, and without the evidence
    finally:
        go_on.set()
    answer = running.outcome()
    assert answer.status_code == 200, answer.text
    assert holds_on(plant, held) == 1
    assert path_of(plant, held).is_file()
    assert purged_subjects(plant) == []


def test_a_recording_purged_while_a_playbook_planned_is_passed_over_not_held(
        api: Api, postgres: Plant, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's plan reads the recordings (into its session) before it writes anything; a purge that commits
    between that read and the preserve_evidence step must be seen there (the lock reads the row afresh), or the
    run would hold, and the trail claim, a file that is gone."""
    plant = postgres
    [gone] = due_recordings(api, plant, 1)
    real_plan = runner.plan
    # Kept referenced, as any code of the run that has it loaded would (the identity map holds unchanged objects
    # only weakly: one nobody refers to is simply read again).
    loaded: list[AccessSession | None] = []

    def plan_then_purge(session: Session, **kwargs: Any) -> list[runner.StepPlan]:
        planned = real_plan(session, **kwargs)
        loaded.append(session.get(AccessSession, gone))
        assert loaded[0] is not None
        assert loaded[0].recording_purged_at is None
        assert [c.session_id for c in run_purge(plant).purged] == [gone]
        return planned

    monkeypatch.setattr(runner, "plan", plan_then_purge)
    answer = run_playbook(api).outcome()
    assert answer.status_code == 200, answer.text
    [preserved] = plant.audit("respond:evidence:preserved")
    assert gone in [r["session"] for r in preserved["details"]["recordings"]]  # planned...
    assert gone not in preserved["details"]["held"]  # ...but not held: its file was gone
    assert holds_on(plant, gone) == 0
    assert sorted(e["subject"] for e in plant.audit(HELD)) == sorted(preserved["details"]["held"])
    assert purged_subjects(plant) == [gone]



def test_an_open_incident_keeps_its_recordings_from_the_purge_until_it_is_closed(api: Api, plant: Plant) -> None:
    """A locked-down site's recordings and a suspended identity's wait, whatever their retention, until the
    lockdown is lifted or the identity resumed (the purge after that takes them as usual)."""
    from broker.containment import lockdown
    from broker.identity import lifecycle
    from broker.inventory.gateway_events import NullPublisher

    at_site, of_vendor = due_recordings(api, plant, 1)[0], due_recordings(api, plant, 1, identity="vendor2")[0]
    now = plant.clock.now()
    with plant.session() as session:
        lockdown.lock_down_site(session, now=now, events=NullPublisher(), actor=lockdown.LocalOperator("test"),
                                site_name="plant-a", reason="incident 4711")
    assert run_purge(plant).purged == []
    with plant.session() as session:
        lockdown.lift_lockdown(session, now=now, actor=lockdown.LocalOperator("test"), site_name="plant-a")
        lifecycle.suspend(session, now=now, events=NullPublisher(), actor="test", username="vendor2",
                          reason="incident 4712")
    assert [c.session_id for c in run_purge(plant).purged] == [at_site]
    assert path_of(plant, of_vendor).is_file()
    with plant.session() as session:
        lifecycle.resume(session, now=now, actor="test", username="vendor2", reason="cleared")
    assert [c.session_id for c in run_purge(plant).purged] == [of_vendor]

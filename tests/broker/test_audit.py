"""The audit trail (DESIGN invariant 6): written with the change it describes, append-only, and any edit of
a past event — even by someone who can drop the database's triggers — is detected by `gatepass audit verify`."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import text

import broker
from broker.audit import trail
from tests.fixtures import database as test_databases
from tests.fixtures.broker import Api, Installation, Plant, PlantTemplate, assert_refusal, drop_audit_triggers


def _verify(installation: Installation) -> trail.VerifyResult:
    with installation.session() as session:
        return trail.verify_chain(session)


def test_a_whole_flow_lands_in_the_trail_in_order(api: Api, plant: Plant) -> None:
    start = plant.last_seq()
    assert api.login_response("vendor1", password="wrong").status_code == 401
    api.login("vendor1")
    request = api.create_request("vendor1")
    api.login("sup-a1")
    response = api.approve("sup-a1", request["id"], comment="ok")
    grant_id = response.json()["grant"]["id"]
    serial = plant.row("SELECT serial FROM grants")[0]
    gateway = api.gateway()
    assert gateway.post("/gateway/authorize", json={"grant_id": grant_id, "serial": serial,
                                                    "asset": "hmi-01"}).status_code == 200
    session_id = gateway.post("/gateway/sessions", json={"grant_id": grant_id, "kind": "shell"}).json()["session_id"]
    assert api.as_user("vendor1").post(f"/grants/{grant_id}/revoke").status_code == 200
    assert gateway.post(f"/gateway/sessions/{session_id}/end", json={"reason": "revoked", "bytes_in": 10,
                                                                     "bytes_out": 20}).status_code == 204
    assert api.as_user("vendor1").post("/auth/logout").status_code == 204

    events = [(e["action"], e["actor"], e["subject"]) for e in plant.audit(after_seq=start)]

    assert events == [
        ("auth:login:failed", "vendor1", None),
        ("auth:login:succeeded", "vendor1", None),
        ("access:request:created", "vendor1", request["id"]),
        ("auth:login:succeeded", "sup-a1", None),
        ("access:request:approval", "sup-a1", request["id"]),
        ("access:request:approved", "sup-a1", request["id"]),
        ("access:grant:created", "vendor1", grant_id),
        ("ca:certificate:issued", "vendor1", grant_id),
        ("gateway:connection:authorized", "vendor1", grant_id),
        ("gateway:session:started", "vendor1", session_id),
        ("access:grant:revoked", "vendor1", grant_id),
        ("gateway:session:ended", "vendor1", session_id),
        ("auth:token:revoked", "vendor1", None),
    ]
    result = _verify(plant)
    assert result.ok, result.problem
    assert result.events_checked == plant.last_seq() == plant.row("SELECT seq FROM audit_head")[0]


def test_security_and_admins_read_the_trail_over_the_api(api: Api, plant: Plant) -> None:
    for reader in ("sec1", "admin"):
        events = api.as_user(reader).get("/audit/events").json()
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert {"seq", "occurred_at", "action", "outcome", "actor", "subject", "site", "details", "prev_hash",
                "hash"} <= set(events[0])
    page = api.as_user("sec1").get("/audit/events", params={"after_seq": 3, "limit": 2}).json()
    assert [e["seq"] for e in page] == [4, 5]
    since = (plant.clock.now() + dt.timedelta(seconds=1)).isoformat()
    assert api.as_user("sec1").get("/audit/events", params={"since": since}).json() == []
    for reader in ("vendor1", "sup-a1"):
        assert_refusal(api.as_user(reader).get("/audit/events"), 403, "forbidden")


def test_refusals_leave_no_trace_of_the_change_they_refused(api: Api, plant: Plant) -> None:
    """The event is written in the same transaction as the change: no change, no event (and vice versa)."""
    vendor = api.as_user("vendor1")
    supervisor = api.as_user("sup-a1")
    api.as_user("sup-a2")
    seq = plant.last_seq()

    assert vendor.post("/requests", json={"asset": "hmi-01", "duration": "2h", "reason": "x", "ssh": True,
                                          "public_key": "garbage"}).status_code == 400
    request = api.create_request("vendor1", asset="rtu-01")  # needs two approvers
    assert supervisor.post(f"/requests/{request['id']}/approve", json={}).status_code == 200
    assert supervisor.post(f"/requests/{request['id']}/approve", json={}).status_code == 409
    # Who may decide is checked before what the decision says: this approver has decided already.
    assert supervisor.post(f"/requests/{request['id']}/deny", json={"comment": ""}).status_code == 409
    assert api.as_user("sup-a2").post(f"/requests/{request['id']}/deny", json={"comment": ""}).status_code == 400

    actions = [e["action"] for e in plant.audit(after_seq=seq)]
    # The two 409s leave a refusal event each, written apart from (after) the refused change's rolled-back one.
    assert [a for a in actions if a != "api:request:refused"] == ["access:request:created", "access:request:approval"]
    assert actions.count("api:request:refused") == 2
    assert plant.count("access_requests") == 1
    assert plant.count("decisions") == 1
    assert plant.count("grants") == 0


@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET details = '{}' WHERE seq = 2",
    "UPDATE audit_events SET actor = 'nobody'",
    "DELETE FROM audit_events WHERE seq = 2",
    "DELETE FROM audit_events",
])
def test_the_database_refuses_to_change_or_delete_audit_events(shared_plant: Plant, statement: str) -> None:
    before = shared_plant.audit()

    with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"), shared_plant.engine.begin() as connection:
        connection.execute(text(statement))

    assert shared_plant.audit() == before


def test_the_database_refuses_to_empty_the_audit_trail_wholesale(plant: Plant) -> None:
    """TRUNCATE fires no row-level DELETE trigger on PostgreSQL; it must be refused all the same."""
    before = plant.audit()
    statement = "TRUNCATE audit_events" if plant.backend == "postgresql" else "DELETE FROM audit_events"

    with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"), plant.engine.begin() as connection:
        connection.execute(text(statement))

    assert plant.audit() == before


# --- tampering by someone with the database owner's rights ----------------------------------------------


CONTENT = ("occurred_at", "action", "outcome", "actor", "subject", "site", "details")


def _edit_details(installation: Installation) -> int:
    seq = 5
    with installation.engine.begin() as connection:
        details = connection.execute(text("SELECT details FROM audit_events WHERE seq = :s"), {"s": seq}).scalar_one()
        connection.execute(text("UPDATE audit_events SET details = :d WHERE seq = :s"),
                           {"d": details.replace("}", ',"note":"nothing to see"}', 1), "s": seq})
    return seq


def _delete_middle(installation: Installation) -> int:
    seq = installation.last_seq() // 2
    with installation.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": seq})
    return seq


def _swap_two(installation: Installation) -> int:
    first, second = 3, 7
    columns = ", ".join(CONTENT)
    with installation.engine.begin() as connection:
        rows = {row.seq: row for row in connection.execute(
            text(f"SELECT seq, {columns} FROM audit_events WHERE seq IN (:a, :b)"),  # noqa: S608
            {"a": first, "b": second})}
        assert rows[first].action != rows[second].action
        assignments = ", ".join(f"{c} = :{c}" for c in CONTENT)
        for target, source in ((first, second), (second, first)):
            connection.execute(text(f"UPDATE audit_events SET {assignments} WHERE seq = :seq"),  # noqa: S608
                               {**{c: getattr(rows[source], c) for c in CONTENT}, "seq": target})
    return first


def _cut_tail(installation: Installation) -> int:
    last = installation.last_seq()
    with installation.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events WHERE seq > :s"), {"s": last - 3})
    return last - 2


TAMPERING: dict[str, Callable[[Installation], int]] = {
    "edit one event's details": _edit_details,
    "delete a middle event": _delete_middle,
    "swap two events' content": _swap_two,
    "cut the tail": _cut_tail,
}

# What verify_chain says for each: the event it names, or what happened.
SAYS = {
    "edit one event's details": "event {seq} (admin:site:created) was altered",
    "delete a middle event": "event {seq} is missing",
    "swap two events' content": "event {seq} (admin:asset:created) was altered",  # event 7's content
    "cut the tail": "removed from the end",
}


@dataclass
class Tampered:
    installation: Plant
    bad_seq: int
    database_name: str | None


def _tampered_installation(template: PlantTemplate, directory: Path, how: str) -> Tampered:
    installation, database_name = template.copy(directory)
    installation.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    assert _verify(installation).ok
    drop_audit_triggers(installation)
    return Tampered(installation, TAMPERING[how](installation), database_name)


@pytest.fixture
def tamper(plant_template: PlantTemplate, postgres_server: str | None,
           tmp_path: Path) -> Iterator[Callable[[str], Tampered]]:
    """``tamper(how)``: a copy of the standard plant with a grant in its trail, tampered with ``how``."""
    made: list[Tampered] = []

    def make(how: str) -> Tampered:
        made.append(_tampered_installation(plant_template, tmp_path / f"tampered-{len(made)}", how))
        return made[-1]

    yield make
    for tampered in made:
        tampered.installation.close()
        if tampered.database_name is not None:
            assert postgres_server is not None
            test_databases.drop_postgres_database(postgres_server, tampered.database_name)


@pytest.mark.parametrize("how", list(TAMPERING))
def test_verify_chain_detects_tampering(tamper: Callable[[str], Tampered], how: str) -> None:
    tampered = tamper(how)

    result = _verify(tampered.installation)

    assert not result.ok
    assert result.first_bad_seq == tampered.bad_seq
    assert result.problem is not None
    assert SAYS[how].format(seq=tampered.bad_seq) in result.problem


def _cli(data_dir: Path, database_url: str) -> subprocess.Popen[str]:
    gatepass = Path(sys.executable).with_name("gatepass")
    # The same code as this test run (the package may be checked out elsewhere than the installed one).
    source_root = str(Path(broker.__file__).resolve().parent.parent)
    env = {**os.environ, "GATEPASS_DATABASE_URL": database_url,
           "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
    env.pop("GATEPASS_DATA", None)
    return subprocess.Popen([str(gatepass), "audit", "verify", "--data", str(data_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_gatepass_audit_verify_reports_an_intact_trail_and_each_kind_of_tampering(
        plant: Plant, tamper: Callable[[str], Tampered]) -> None:
    tampered = {how: tamper(how) for how in TAMPERING}
    # All at once: each CLI start costs about a second of imports.
    running = {"intact": _cli(plant.settings.data_dir, plant.settings.effective_database_url)}
    for how, case in tampered.items():
        settings = case.installation.settings
        running[how] = _cli(settings.data_dir, settings.effective_database_url)
    results = {name: (process.wait(timeout=60), *process.communicate()) for name, process in running.items()}

    code, out, err = results.pop("intact")
    assert (code, err) == (0, ""), err
    assert "intact" in out
    for how, (code, _out, err) in results.items():
        bad_seq = tampered[how].bad_seq
        assert code == 1, f"{how}: exit {code}, stderr {err!r}"
        assert f"AUDIT TRAIL BROKEN at event {bad_seq}" in err, f"{how}: {err!r}"
        assert "Traceback" not in err


def test_an_anchor_kept_outside_catches_a_chain_rewritten_from_an_edit_onward(
        plant_template: PlantTemplate, postgres_server: str | None, tmp_path: Path) -> None:
    installation, database_name = plant_template.copy(tmp_path / "rewritten")
    try:
        installation.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
        before = _verify(installation)
        assert before.anchor is not None
        anchor = trail.Anchor.parse(before.anchor)
        drop_audit_triggers(installation)
        # Someone with database rights edits event 3 and recomputes every hash after it, head included.
        with installation.session() as session:
            events = session.scalars(sqlalchemy.select(trail.AuditEvent).order_by(trail.AuditEvent.seq)).all()
            events[2].details = '{"rewritten":true}'
            previous = events[1].hash
            for event in events[2:]:
                event.prev_hash = previous
                event.hash = trail.compute_hash(previous, event)
                previous = event.hash
            session.execute(sqlalchemy.update(trail.AuditHead).values(last_hash=previous))

        assert _verify(installation).ok  # the chain alone cannot tell
        with installation.session() as session:
            result = trail.verify_chain(session, anchors=(anchor,))
        assert not result.ok
        assert result.first_bad_seq == anchor.seq
        assert result.problem is not None
        assert "anchor" in result.problem
    finally:
        installation.close()
        if database_name is not None:
            assert postgres_server is not None
            test_databases.drop_postgres_database(postgres_server, database_name)


@pytest.mark.parametrize("text", ["", "12", "x:" + "0" * 64, "0:" + "0" * 64, "3:" + "g" * 64, "3:abc"])
def test_a_malformed_anchor_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match="SEQ:HASH"):
        trail.Anchor.parse(text)


def test_verifying_takes_no_write_lock(plant: Plant) -> None:
    """`gatepass audit verify` reads in a read-only transaction: writers go on meanwhile (on SQLite a
    write-locked walk over a million events would hold every API call for seconds)."""
    import threading

    from broker.db import make_session_factory, read_only_unit, unit_of_work

    factory = make_session_factory(plant.engine)
    before = plant.last_seq()
    with read_only_unit(factory) as reader:
        assert trail.verify_chain(reader).ok
        writer = threading.Thread(target=lambda: _append_one(factory, plant, unit_of_work))
        writer.start()
        writer.join(timeout=5)
        assert not writer.is_alive(), "a writer waited for the verifying reader"
    assert plant.last_seq() == before + 1


def _append_one(factory: Any, plant: Plant, unit: Any) -> None:
    with unit(factory) as session:
        trail.record(session, now=plant.clock.now(), action=trail.Action.SYSTEM_INITIALISED, actor="test")

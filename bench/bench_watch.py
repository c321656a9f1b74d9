"""Watch: a replayable scenario through the real watcher on a real database (SQLite), with a fixed seed.

Four weeks of benign history for twelve identities (six vendors, three service accounts, three AI agents), each
with its own habits (weekdays and hours, assets, source address, transfer sizes, the Modbus registers read on
PLCs), then four held-out benign weeks, then injected misbehaviour: off-hours access, a first access to a new
asset, an upload spike, a burst of refused Modbus writes, a first Modbus write on a PLC, an AI agent refused a
command outside its delegation, and one credential used from two addresses at once. Everything goes through the
broker's own functions (grants, the gateway API's session and event reports), so the watcher reads the audit
trail exactly as in production.

Figures: the share of injected cases flagged with the expected signal (target: all), false flags per 1,000
benign sessions in the held-out week (target: at most 5), and the watcher's rate in events per second beside
the audit append rate of the same run (target: the watcher keeps up without halving it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select, update

from assembly.database import initialise
from bench.harness import heading, machine_line, table
from broker.access import workflow
from broker.clock import FixedClock
from broker.db import make_engine, make_session_factory, unit_of_work
from broker.identity import identities
from broker.inventory import gateways, sites
from broker.inventory.gateway_events import NullPublisher
from broker.keys.vault import Vault
from broker.models import AuditEvent, Flag, Grant, Identity, Site
from broker.settings import Settings
from broker.watch import watcher

START = dt.datetime(2027, 2, 1, 0, 0, tzinfo=dt.UTC)  # a Monday
ASSETS = ("hmi-01", "hmi-02", "plc-01", "plc-02", "historian")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bench"


@dataclass
class Habit:
    name: str
    kind: str
    days: tuple[int, ...]
    hours: tuple[int, int]
    assets: tuple[str, ...]
    source: str
    upload: int
    per_day: int


class World:
    def __init__(self, root: Path, seed: int) -> None:
        self.random = random.Random(seed)  # noqa: S311 (a replayable scenario, not a secret)
        self.clock = FixedClock(START - dt.timedelta(days=1))
        self.settings = Settings(data_dir=root / "data", database_url=f"sqlite:///{root}/watch.db", clock=self.clock)
        result = initialise(self.settings)
        self.gateway_token = result.gateway_token_path.read_text().strip()
        self.vault = Vault.from_key_file(self.settings.master_key_path)
        self.engine = make_engine(self.settings.effective_database_url)
        self.sessions = make_session_factory(self.engine)
        self.grants: dict[tuple[str, str], str] = {}
        self.appended = 0
        self.append_seconds = 0.0

    def unit(self) -> Any:
        return unit_of_work(self.sessions)

    def set_up(self, habits: list[Habit]) -> None:
        now = self.clock.now()
        with self.unit() as session:
            sites.create_site(session, now=now, actor="bench", name="plant-a", approvals_required=1,
                              max_window="8h")
            session.execute(update(Site).values(learning_days=14))  # the default, said out loud
            for asset in ASSETS:
                sites.create_asset(session, vault=self.vault, now=now, actor="bench", name=asset, site="plant-a",
                                   host="127.0.0.1", tcp_ports=[502], ssh_port=22, ssh_user="root",
                                   ssh_password="bench-only", host_key=KEY)  # noqa: S106 (no machine behind it)
            identities.create_identity(session, vault=self.vault, now=now, actor="bench", username="sup-a1",
                                       role="supervisor", site_names=["plant-a"])
            for habit in habits:
                extra: dict[str, Any] = {}
                if habit.kind != "human":
                    extra = {"owner": "sup-a1", "purpose": "bench"}
                    if habit.kind == "ai_agent":
                        extra["sponsor"] = "vendor-00"
                identities.create_identity(session, vault=self.vault, now=now, actor="bench", username=habit.name,
                                           role="vendor", kind=habit.kind, **extra)

    def grant(self, who: str, asset: str) -> str:
        """One long grant per identity and asset (the bench is about behaviour, not approvals)."""
        if (who, asset) not in self.grants:
            with self.unit() as session:
                requester = identities.get_identity(session, who)
                holder = requester
                if requester.kind == "ai_agent":
                    # An AI agent holds grants only by delegation; what the watcher reads is the same either way,
                    # so the bench asks as the sponsor and hands the grant to the agent.
                    requester = identities.get_identity(session, "vendor-00")
                made = workflow.create_request(session, now=self.clock.now(), decide_within=dt.timedelta(hours=1),
                                               requester=requester, asset_name=asset, duration="1h", reason="bench",
                                               ssh=True, ports=[502], start=None, public_key=KEY)
                approver = identities.get_identity(session, "sup-a1")
                approved = workflow.approve(session, vault=self.vault, now=self.clock.now(), approver=approver,
                                            request_id=made.id, comment=None)
                assert approved.grant is not None
                grant_id = approved.grant.id
                session.execute(update(Grant).where(Grant.id == grant_id).values(
                    identity_id=holder.id, starts_at=START - dt.timedelta(days=1),
                    ends_at=START + dt.timedelta(days=90)))
            self.grants[(who, asset)] = grant_id
        return self.grants[(who, asset)]

    def _timed(self, work: Any) -> Any:
        before = time.perf_counter()
        with self.unit() as session:
            result = work(session, gateways.authenticate_gateway(session, self.gateway_token))
        self.append_seconds += time.perf_counter() - before
        self.appended += 1
        return result

    def session(self, who: str, asset: str, *, at: dt.datetime, source: str, upload: int, minutes: float,
                events: list[tuple[str, dict[str, Any]]] = (), ends: bool = True) -> str:  # type: ignore[assignment]
        grant_id = self.grant(who, asset)
        self.clock.set(at)
        peer = f"{source}:{40000 + self.appended % 20000}"
        session_id: str = self._timed(lambda s, g: gateways.start_session(
            s, now=self.clock.now(), gateway=g, grant_id=grant_id, kind="exec", peer=peer, command="backup-logs",
            port=None).id)
        for kind, detail in events:
            self._timed(lambda s, g, kind=kind, detail=detail: gateways.record_session_event(
                s, now=self.clock.now(), gateway=g, session_id=session_id, kind=kind, detail=detail))
        if ends:
            self.clock.set(at + dt.timedelta(minutes=minutes))
            self._timed(lambda s, g: gateways.end_session(
                s, now=self.clock.now(), gateway=g, session_id=session_id, reason="client_closed", bytes_in=upload,
                bytes_out=upload * 3, detail=None))
        return session_id

    def watch(self) -> tuple[int, float]:
        read, started = 0, time.perf_counter()
        while True:
            with self.unit() as session:
                count = watcher.watch_once(session, now=self.clock.now(), events=NullPublisher(), vault=self.vault)
            read += count
            if count < watcher.BATCH:
                return read, time.perf_counter() - started

    def flags(self) -> list[Flag]:
        with self.sessions() as session:
            found = list(session.scalars(select(Flag).order_by(Flag.created_at)))
            for flag in found:
                session.expunge(flag)
            return found


def habits(rng: random.Random) -> list[Habit]:
    made = []
    for index in range(12):
        kind = "human" if index < 6 else "service" if index < 9 else "ai_agent"
        start = rng.choice((6, 7, 8, 9))
        made.append(Habit(
            name=f"{'vendor' if kind == 'human' else kind.replace('_', '-')}-{index:02d}", kind=kind,
            days=(0, 1, 2, 3, 4) if kind == "human" else tuple(range(7)),
            hours=(start, start + rng.choice((6, 8, 10))) if kind == "human" else (0, 24),
            assets=tuple(rng.sample(ASSETS, rng.choice((1, 2)))), source=f"10.0.{index}.{rng.randint(2, 250)}",
            upload=rng.choice((2_000, 20_000, 200_000)), per_day=rng.choice((1, 2, 3))))
    return made


def plc_reads(world: World, asset: str) -> list[tuple[str, dict[str, Any]]]:
    """On a PLC, what a benign connection asks (as the gateway reports it at the end): holding registers read
    from the block 0-19, now and then input registers too."""
    if not asset.startswith("plc"):
        return []
    start = world.random.randrange(0, 10)
    reads = world.random.randint(5, 50)
    functions, registers = f"3:{reads}", f"3:{start}-{start + 9}"
    if world.random.random() < 0.3:
        functions, registers = f"{functions},4:{reads // 2 + 1}", f"{registers};4:0-3"
    return [("modbus_activity", {"requests": reads, "functions": functions, "registers": registers})]


def day_of(world: World, habits_: list[Habit], day: int) -> int:
    """One day of benign behaviour for everyone; returns how many sessions it made."""
    made = 0
    date = START + dt.timedelta(days=day)
    for habit in habits_:
        if date.weekday() not in habit.days:
            continue
        for _ in range(habit.per_day):
            hour = world.random.randrange(habit.hours[0], habit.hours[1] - 1) if habit.hours[1] - habit.hours[0] > 1 \
                else habit.hours[0]
            at = date + dt.timedelta(hours=hour, minutes=world.random.randrange(0, 60))
            upload = max(0, int(world.random.lognormvariate(0, 0.5) * habit.upload))
            asset = world.random.choice(habit.assets)
            world.session(habit.name, asset, at=at, source=habit.source, upload=upload,
                          minutes=world.random.uniform(10, 90), events=plc_reads(world, asset))
            made += 1
    return made


def run(*, weeks: int = 4, held_out: int = 4, seed: int = 20270201) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="gatepass-bench-watch-"))
    world = World(root, seed)
    people = habits(world.random)
    world.set_up(people)
    heading(f"watch: {len(people)} identities, {weeks} weeks of history, {held_out} held-out weeks, seven injected "
            f"cases, seed {seed} ({machine_line()})")
    history = sum(day_of(world, people, day) for day in range(7 * weeks))
    events_read, watch_seconds = world.watch()
    history_flags = len(world.flags())
    benign = sum(day_of(world, people, 7 * weeks + day) for day in range(7 * held_out))
    world.watch()
    benign_flags = len(world.flags()) - history_flags
    false_signals: dict[str, int] = {}
    for flag in world.flags()[history_flags:]:
        for signal in flag.signals:
            false_signals[signal["signal"]] = false_signals.get(signal["signal"], 0) + 1

    # The injected cases, one identity each, on the Monday after the held-out week.
    monday = START + dt.timedelta(days=7 * (weeks + held_out))
    vendor, other, service, agent = people[0], people[1], people[6], people[9]
    unused = next(a for a in ASSETS if a not in vendor.assets)
    cases: dict[str, tuple[str, set[str]]] = {}
    cases["off-hours access"] = (world.session(vendor.name, vendor.assets[0], at=monday - dt.timedelta(hours=20),
                                               source=vendor.source, upload=vendor.upload, minutes=20),
                                 {"unusual_time"})
    cases["first access to a new asset"] = (world.session(other.name, next(a for a in ASSETS if a not in other.assets),
                                                          at=monday + dt.timedelta(hours=other.hours[0] + 1),
                                                          source=other.source, upload=other.upload, minutes=20),
                                            {"first_asset"})
    cases["upload spike"] = (world.session(service.name, service.assets[0], at=monday + dt.timedelta(hours=10),
                                           source=service.source, upload=service.upload * 60, minutes=20),
                             {"upload_spike"})
    burst = [("modbus_write_refused", {"function": 6, "address": 40001 + i}) for i in range(4)]
    cases["Modbus write burst"] = (world.session(people[2].name, people[2].assets[0],
                                                 at=monday + dt.timedelta(hours=people[2].hours[0] + 1),
                                                 source=people[2].source, upload=people[2].upload, minutes=20,
                                                 events=burst), {"modbus_write_burst"})
    # Someone who reads a PLC every day (a vendor if there is one; the burst case above has its own identity).
    plc_users = [h for h in people if h is not people[2] and any(a.startswith("plc") for a in h.assets)]
    plc_user = next((h for h in plc_users if h.kind == "human"), plc_users[0])
    plc = next(a for a in plc_user.assets if a.startswith("plc"))
    write = [("modbus_activity", {"requests": 12, "functions": "3:10,16:2", "registers": "3:0-9;16:500-509"})]
    cases["first Modbus write on a PLC"] = (world.session(plc_user.name, plc,
                                                          at=monday + dt.timedelta(hours=plc_user.hours[0] + 2),
                                                          source=plc_user.source, upload=plc_user.upload, minutes=20,
                                                          events=write), {"new_modbus_function"})
    with world.unit() as session:
        gateway = gateways.authenticate_gateway(session, world.gateway_token)
        world.clock.set(monday + dt.timedelta(hours=11))
        gateways.record_refusal(session, now=world.clock.now(), gateway=gateway,
                                grant_id=world.grant(agent.name, agent.assets[0]), kind="exec",
                                reason="command not in the delegation: rm -rf /data", host="127.0.0.1", port=None)
    cases["AI agent outside its delegation"] = ("", {"outside_delegation"})
    first = world.session(vendor.name, vendor.assets[0], at=monday + dt.timedelta(hours=vendor.hours[0] + 1),
                          source=vendor.source, upload=vendor.upload, minutes=30, ends=False)
    second = world.session(vendor.name, vendor.assets[0], at=monday + dt.timedelta(hours=vendor.hours[0] + 1,
                                                                                    minutes=5),
                           source="203.0.113.66", upload=vendor.upload, minutes=30, ends=False)
    cases["one credential in two places"] = (second, {"credential_two_places"})
    del first, unused
    world.watch()
    injected = world.flags()[history_flags + benign_flags:]
    rows, caught = [], 0
    with world.sessions() as session:
        names = {i.id: i.username for i in session.scalars(select(Identity))}
    for label, (session_id, expected) in cases.items():
        hits = [f for f in injected if (session_id and f.session_id == session_id)
                or (not session_id and any(s["signal"] in expected for s in f.signals))]
        signals = {s["signal"] for f in hits for s in f.signals}
        found = bool(expected & signals)
        caught += found
        example = hits[0].summary if hits else "-"
        rows.append([label, "yes" if found else "NO", ", ".join(sorted(signals)) or "-",
                     example[:90] + ("…" if len(example) > 90 else ""), names.get(hits[0].identity_id, "-")
                     if hits else "-"])
    print(table(["injected case", "flagged", "signals", "explanation", "identity"], rows))
    per_thousand = 1000 * benign_flags / benign if benign else 0.0
    with world.sessions() as session:
        total_events = len(session.scalars(select(AuditEvent.seq)).all())
    watch_rate = events_read / watch_seconds if watch_seconds else 0.0
    append_rate = world.appended / world.append_seconds if world.append_seconds else 0.0
    print()
    print(table(["figure", "value", "target"], [
        ["injected cases flagged with the expected signal", f"{caught} of {len(cases)}", "all"],
        ["false flags per 1,000 benign sessions (held-out weeks)",
         f"{per_thousand:.1f} ({benign_flags} in {benign} sessions)", "<= 5"],
        ["false flags' signals", ", ".join(f"{k} {v}" for k, v in sorted(false_signals.items())) or "-", "-"],
        ["flags while building the history", f"{history_flags} in {history} sessions", "-"],
        ["watcher: audit events read per second", f"{watch_rate:,.0f} ({events_read} events)", "-"],
        ["gateway reports appended per second (same run, one per transaction)", f"{append_rate:,.0f}", "-"],
        ["watcher rate / append rate", f"{watch_rate / append_rate:.1f}" if append_rate else "-", ">= 1 (keeps up)"],
    ]))
    world.engine.dispose()
    return {"cases": len(cases), "caught": caught, "benign_sessions": benign, "benign_flags": benign_flags,
            "false_per_1000": per_thousand, "history_sessions": history, "history_flags": history_flags,
            "watch_events_per_s": watch_rate, "append_per_s": append_rate, "audit_events": total_events,
            "met": caught == len(cases) and per_thousand <= 5}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=20270201)
    parser.add_argument("--held-out", type=int, default=4, help="benign weeks after the history (default 4)")
    parser.add_argument("--quick", action="store_true", help="two weeks of history, one held out")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    results = run(weeks=2 if args.quick else args.weeks, held_out=1 if args.quick else args.held_out, seed=args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

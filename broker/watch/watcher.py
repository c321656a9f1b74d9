"""The watcher: reads the audit trail from its cursor as events arrive (the trail is the queue, as for the
SIEM forwarder), keeps each identity's baseline up to date, and raises explainable flags — within a second or
two of the event, so a flag on a live session reaches the supervisor's page while the session runs.

Always-high, whatever the baseline: a download-only violation attempt, a burst of refused Modbus writes, a
service or AI identity refused by the gateway (outside its delegation or policy), and one credential in two
places (a copied workload credential, or one identity connected from two addresses at once). While a site's
baselines learn (the site's ``learning_days``, default 14), baseline flags are shown but never act.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import BrokerError
from broker.ids import new_id
from broker.inventory.gateway_events import EventPublisher
from broker.keys.vault import Vault
from broker.models import AccessSession, AuditEvent, Baseline, Flag, Grant, Identity, Site, WatchCursor
from broker.vocabulary import FlagSeverity, FlagStatus, IdentityKind, SessionKind
from broker.watch import profile, typed
from broker.watch.profile import Observation, Signal

CURSOR = "baselines"
BATCH = 500
# A burst: this many refused Modbus writes by one identity within the window.
WRITE_BURST = 3
WRITE_BURST_WINDOW = dt.timedelta(seconds=60)
DEFAULT_LEARNING = dt.timedelta(days=14)
FAILED_SIGNIN_WINDOW = dt.timedelta(hours=1)
RANK = {FlagSeverity.LOW: 0, FlagSeverity.MEDIUM: 1, FlagSeverity.HIGH: 2}
WATCHED = (Action.SESSION_STARTED, Action.SESSION_ENDED, Action.FILE_TRANSFERRED, Action.FILE_REFUSED,
           Action.MODBUS_WRITE_REFUSED, Action.MODBUS_ACTIVITY, Action.GATEWAY_REFUSED, Action.LOGIN_FAILED,
           Action.WORKLOAD_INSTANCE_LOCKED, Action.RECORDING_RECEIVED)


@dataclass
class Finding:
    """What one event tells: signals (novelty and always-high), and the observation for the baseline."""

    identity: Identity
    site: Site | None
    session_id: str | None
    novelty: list[Signal]
    always_high: list[Signal]
    observation: Observation | None


def _source(peer: object) -> str | None:
    """The client's address without its port ("10.0.0.5:50122" -> "10.0.0.5"; IPv6 in brackets kept whole)."""
    if not isinstance(peer, str) or not peer:
        return None
    if peer.startswith("["):
        return peer.split("]")[0] + "]"
    return peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer


def _modbus_activity(details: dict[str, Any]) -> tuple[dict[int, int], dict[int, list[tuple[int, int]]]]:
    """The gateway's "3:12,6:2" and "3:0-9,100-109;6:40" as numbers; what does not parse is left out (the
    trail keeps the text as the gateway sent it)."""
    functions: dict[int, int] = {}
    ranges: dict[int, list[tuple[int, int]]] = {}
    for part in str(details.get("functions") or "").split(","):
        code, _, count = part.partition(":")
        if code.strip().isdigit() and count.strip().isdigit():
            functions[int(code)] = int(count)
    for part in str(details.get("registers") or "").split(";"):
        code, _, spans = part.partition(":")
        if not code.strip().isdigit():
            continue
        for span in spans.split(","):
            low, _, high = span.partition("-")
            if low.strip().isdigit() and (not high or high.strip().isdigit()):
                ranges.setdefault(int(code), []).append((int(low), int(high or low)))
    return functions, ranges


def _program(command: object) -> str | None:
    if not isinstance(command, str) or not command.strip():
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return words[0].rsplit("/", 1)[-1][:64] if words else None


class Watcher:
    """One pass over new audit events, in the caller's transaction."""

    def __init__(self, session: Session, *, now: dt.datetime, events: EventPublisher, vault: Vault | None,
                 typed: dict[str, list[str]] | None = None) -> None:
        self.session, self.now, self.events, self.vault = session, now, events, vault
        # Programs typed in recorded sessions, read from the recordings before this transaction (``typed_ahead``).
        self.typed = typed or {}
        self._identities: dict[str, Identity | None] = {}
        self._sites: dict[str, Site | None] = {}

    # --- lookups ----------------------------------------------------------------------------------------

    def identity(self, username: str | None) -> Identity | None:
        if not username:
            return None
        if username not in self._identities:
            self._identities[username] = self.session.scalar(select(Identity).where(Identity.username == username))
        return self._identities[username]

    def site(self, name: str | None) -> Site | None:
        if not name:
            return None
        if name not in self._sites:
            self._sites[name] = self.session.scalar(select(Site).where(Site.name == name))
        return self._sites[name]

    def baseline(self, identity: Identity, site: Site | None, at: dt.datetime) -> Baseline:
        row = find_baseline(self.session, identity.id, site.id if site is not None else None)
        if row is None:
            row = Baseline(identity_id=identity.id, site_id=site.id if site else None, profile=profile.empty(),
                           observations=0, started_at=at, updated_at=at)
            self.session.add(row)
            self.session.flush()  # one row per (identity, site): the next event of this batch must find it
        return row

    # --- reading events ---------------------------------------------------------------------------------

    def run(self, *, limit: int = BATCH) -> int:
        cursor = self.session.get(WatchCursor, CURSOR, with_for_update={"skip_locked": True})
        if cursor is None:
            if self.session.get(WatchCursor, CURSOR) is not None:
                return 0  # another replica holds it this round
            cursor = WatchCursor(name=CURSOR, last_seq=0, updated_at=self.now)
            self.session.add(cursor)
        rows = self.session.scalars(select(AuditEvent).where(AuditEvent.seq > cursor.last_seq)
                                    .order_by(AuditEvent.seq).limit(limit)).all()
        for event in rows:
            if event.action in WATCHED:
                self.consider(event)
        if rows:
            cursor.last_seq, cursor.updated_at = rows[-1].seq, self.now
        return len(rows)

    def consider(self, event: AuditEvent) -> None:
        details: dict[str, Any] = json.loads(event.details)
        if event.action == Action.RECORDING_RECEIVED:
            self.consider_received(event)
            return
        finding = self.read(event, details)
        if finding is None:
            return
        self.weigh(finding, event)
        programs = self.typed.get(event.subject or "") if event.action == Action.SESSION_ENDED else None
        if programs:
            self.weigh(Finding(finding.identity, finding.site, finding.session_id, [], [], Observation(
                at=event.occurred_at, kind="typed", asset=details.get("asset"), programs=programs)), event)

    def consider_received(self, event: AuditEvent) -> None:
        """A separate gateway's recording arrived after its session's end (broker.recordings.intake): what was
        typed in it is weighed now, for the session's identity (the event's actor is the gateway)."""
        programs = self.typed.get(event.subject or "")
        record = self.session.get(AccessSession, event.subject) if programs else None
        if record is None or not programs:
            return
        grant = record.grant
        self.weigh(Finding(grant.identity, grant.asset.site, record.id, [], [], Observation(
            at=event.occurred_at, kind="typed", asset=grant.asset.name, programs=programs)), event)

    def weigh(self, finding: Finding, event: AuditEvent) -> None:
        """Compare what was seen with the baseline, learn it (or hold it back for a reviewer), flag it."""
        baseline = self.baseline(finding.identity, finding.site, event.occurred_at) \
            if finding.observation is not None else None
        novelty = profile.compare(baseline.profile, finding.observation) \
            if baseline is not None and finding.observation is not None else []
        signals = finding.always_high + novelty
        learning = baseline is not None and self._learning(baseline, finding.site, event.occurred_at)
        if baseline is not None and finding.observation is not None and (not novelty or learning):
            # Learn what raised nothing — and, while the site's baselines still learn, everything. After that a
            # flagged observation waits for a reviewer's "benign" (a confirmed one never enters the baseline).
            learn_into(baseline, [finding.observation], at=event.occurred_at)
        if signals:
            self.raise_flag(finding, signals, learning=learning and not finding.always_high,
                            observation=finding.observation if novelty and not learning else None, event=event)

    def read(self, event: AuditEvent, details: dict[str, Any]) -> Finding | None:
        if event.action == Action.WORKLOAD_INSTANCE_LOCKED:
            identity = self.identity(details.get("identity"))
            if identity is None:
                return None
            return Finding(identity, None, None, [], [Signal(
                "credential_two_places", f"a copy of instance {event.subject}'s credential was used",
                f"cause: {details.get('cause')}")], None)
        identity = self.identity(event.actor)
        if identity is None:
            return None
        site = self.site(event.site)
        session_id = event.subject if event.action != Action.GATEWAY_REFUSED else None
        at = event.occurred_at
        if event.action == Action.SESSION_STARTED:
            source = _source(details.get("peer"))
            open_elsewhere = self._open_sessions(identity, event.subject, at)
            always = self._two_places(source, open_elsewhere)
            observation = Observation(at=at, kind="session", asset=details.get("asset"), port=details.get("port"),
                                      protocol=details.get("kind"), command=_program(details.get("command")),
                                      source=source, amounts={"concurrent_sessions": float(len(open_elsewhere) + 1)})
            return Finding(identity, site, session_id, [], always, observation)
        if event.action == Action.MODBUS_ACTIVITY:
            functions, ranges = _modbus_activity(details)
            if not functions:
                return None
            return Finding(identity, site, session_id, [], [],
                           Observation(at=at, kind="modbus", asset=details.get("asset"), port=details.get("port"),
                                       protocol="modbus", modbus_functions=functions, modbus_ranges=ranges))
        if event.action == Action.SESSION_ENDED:
            amounts = {key: float(details[key]) for key in ("duration_seconds", "bytes_in", "bytes_out")
                       if isinstance(details.get(key), int | float)}
            return Finding(identity, site, session_id, [], [],
                           Observation(at=at, kind="session_end", asset=details.get("asset"), amounts=amounts))
        if event.action == Action.FILE_TRANSFERRED:
            amounts = {"upload_bytes": float(details.get("bytes_written") or 0),
                       "download_bytes": float(details.get("bytes_read") or 0)}
            return Finding(identity, site, session_id, [], [],
                           Observation(at=at, kind="transfer", asset=details.get("asset"), amounts=amounts))
        if event.action == Action.FILE_REFUSED:
            what = details.get("path") or details.get("operation") or "a file"
            return Finding(identity, site, session_id, [], [Signal(
                "download_only_violation", f"tried to write {str(what)[:120]} on a download-only site",
                "downloads only are allowed there")], None)
        if event.action == Action.MODBUS_WRITE_REFUSED:
            burst = self._writes_refused(event)
            if burst < WRITE_BURST:
                return None
            return Finding(identity, site, session_id, [], [Signal(
                "modbus_write_burst", f"{burst} Modbus writes refused within a minute",
                f"the grant is read-only; {WRITE_BURST} or more is a burst")], None)
        if event.action == Action.GATEWAY_REFUSED and identity.kind != IdentityKind.HUMAN:
            what = details.get("kind") or "a connection"
            return Finding(identity, site, None, [], [Signal(
                "outside_delegation", f"the gateway refused {what}: {str(details.get('reason', ''))[:160]}",
                f"a {identity.kind} acts only within its delegation and policy")], None)
        if event.action == Action.LOGIN_FAILED:
            recent = self._count_recent(event, FAILED_SIGNIN_WINDOW)
            return Finding(identity, None, None, [], [], Observation(at=at, kind="signin_failed",
                                                                     amounts={"failed_last_hour": float(recent)}))
        return None

    def _open_sessions(self, identity: Identity, session_id: str | None, at: dt.datetime) -> list[str | None]:
        """The peers of the identity's other sessions open when this one started (the watcher may read the event
        later, when more have opened)."""
        return list(self.session.scalars(select(AccessSession.peer).join(Grant).where(
            Grant.identity_id == identity.id, AccessSession.id != session_id, AccessSession.started_at < at,
            (AccessSession.ended_at.is_(None)) | (AccessSession.ended_at > at))))

    @staticmethod
    def _two_places(source: str | None, open_elsewhere: list[str | None]) -> list[Signal]:
        """The same identity connected from two addresses at once: one credential in two hands."""
        if source is None:
            return []
        elsewhere = sorted({address for peer in open_elsewhere
                            if (address := _source(peer)) is not None and address != source})
        if not elsewhere:
            return []
        return [Signal("credential_two_places", f"connected from {source}",
                       f"while also connected from {', '.join(elsewhere)}")]

    def _writes_refused(self, event: AuditEvent) -> int:
        return self._count_recent(event, WRITE_BURST_WINDOW)

    def _count_recent(self, event: AuditEvent, window: dt.timedelta) -> int:
        """Events like this one (same action, same actor) within ``window`` up to it, it included."""
        return int(self.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == event.action, AuditEvent.actor == event.actor,
            AuditEvent.seq <= event.seq, AuditEvent.occurred_at >= event.occurred_at - window)) or 0)

    def _learning(self, baseline: Baseline, site: Site | None, at: dt.datetime) -> bool:
        """Whether the event happened while the baseline still learnt (the event's time, not the watcher's: a
        backlog read late is judged as it happened)."""
        days = dt.timedelta(days=site.learning_days) if site is not None else DEFAULT_LEARNING
        return baseline.started_at + days > at

    # --- flags --------------------------------------------------------------------------------------------

    def raise_flag(self, finding: Finding, signals: list[Signal], *, learning: bool, observation: Observation | None,
                   event: AuditEvent) -> Flag:
        severity = (FlagSeverity.HIGH if finding.always_high else
                    FlagSeverity.MEDIUM if len(signals) >= 2 else FlagSeverity.LOW)
        flag = None
        if finding.session_id is not None:
            flag = self.session.scalar(select(Flag).where(Flag.session_id == finding.session_id,
                                                          Flag.status == FlagStatus.OPEN))
        if flag is not None and any(s["signal"] == signals[0].name for s in flag.signals) and finding.always_high:
            return flag  # a burst already flagged: one flag, not one per refused write
        if flag is None:
            flag = Flag(id=new_id("flg"), identity_id=finding.identity.id, identity=finding.identity,
                        site_id=finding.site.id if finding.site else None, site=finding.site,
                        session_id=finding.session_id, severity=severity, signals=[], summary="", learning=learning,
                        observations=[], status=FlagStatus.OPEN, created_at=self.now, updated_at=self.now)
            self.session.add(flag)
        elif RANK[FlagSeverity(flag.severity)] < RANK[severity]:
            flag.severity = severity
        flag.signals = [*flag.signals, *(s.as_dict() for s in signals)]
        if observation is not None:
            flag.observations = [*flag.observations, observation.as_dict()]
        flag.learning = flag.learning and learning
        flag.updated_at = self.now
        flag.summary = summary(finding.identity.username, flag.signals)
        trail.record(self.session, now=self.now, action=Action.FLAG_RAISED, actor="watch",
                     subject=flag.id, site=finding.site.name if finding.site else None,
                     details={"identity": finding.identity.username, "session": finding.session_id,
                              "severity": flag.severity, "learning": flag.learning,
                              "signals": [s.as_dict() for s in signals], "event": event.seq})
        self.respond(flag, finding)
        return flag

    def respond(self, flag: Flag, finding: Finding) -> None:
        """The site's automatic response, if it chose one for flags this severe (off by default; never while
        learning)."""
        site = finding.site
        if site is None or not site.auto_response or flag.learning or self.vault is None:
            return
        if RANK[FlagSeverity(flag.severity)] < RANK[FlagSeverity(site.auto_response_severity)]:
            return
        from broker.respond import playbooks, runner

        try:
            playbook = playbooks.get_playbook(self.session, site.auto_response)
            with self.session.begin_nested():
                runner.run(self.session, now=self.now, vault=self.vault, events=self.events, actor="watch",
                           playbook=playbook, site_name=site.name if playbook.needs_site else None,
                           username=finding.identity.username if playbook.needs_identity else None,
                           reason=f"flag {flag.id}: {flag.summary}")
        except BrokerError as refused:
            trail.record(self.session, now=self.now, action=Action.FLAG_RAISED, actor="watch", outcome="failure",
                         subject=flag.id, site=site.name,
                         details={"auto_response": site.auto_response, "not_run": refused.message})


def find_baseline(session: Session, identity_id: int, site_id: int | None) -> Baseline | None:
    return session.scalar(select(Baseline).where(
        Baseline.identity_id == identity_id,
        Baseline.site_id == site_id if site_id is not None else Baseline.site_id.is_(None)))


def learn_into(baseline: Baseline, observations: list[Observation], *, at: dt.datetime) -> None:
    """Fold observations into a stored baseline (in place; the JSON column is marked changed)."""
    for observation in observations:
        profile.learn(baseline.profile, observation)
    flag_modified(baseline, "profile")
    baseline.observations += len(observations)
    baseline.updated_at = at


def summary(username: str, signals: list[dict[str, str]]) -> str:
    parts = [f"{s['observed']}, {s['usual']}" if s.get("usual") else s["observed"] for s in signals]
    return f"{username}: " + "; ".join(parts)


def has_new_events(session: Session) -> bool:
    """Whether the trail has grown past the watcher's cursor (a cheap read, no lock)."""
    last = session.scalar(select(WatchCursor.last_seq).where(WatchCursor.name == CURSOR)) or 0
    return session.scalar(select(AuditEvent.seq).where(AuditEvent.seq > last).limit(1)) is not None


def typed_ahead(session: Session, recordings: Path, *, limit: int = BATCH) -> dict[str, list[str]]:
    """The programs typed in the recorded sessions among the next ``limit`` events, read from their recordings
    (before the watcher's write transaction: reading files must not hold the database's write lock)."""
    last = session.scalar(select(WatchCursor.last_seq).where(WatchCursor.name == CURSOR)) or 0
    # The same events the watcher will read next (sequence numbers may have gaps: not "last + limit").
    # A recording a separate gateway still holds at its session's end is read when it arrives instead (its
    # gateway:recording:received event), and only then: read at both, its programs would be weighed twice.
    ended = [subject for action, subject, details in session.execute(
        select(AuditEvent.action, AuditEvent.subject, AuditEvent.details).where(AuditEvent.seq > last)
        .order_by(AuditEvent.seq).limit(limit))
        if action == Action.RECORDING_RECEIVED or (action == Action.SESSION_ENDED and '"uploads":true' not in details)]
    if not ended:
        return {}
    found: dict[str, list[str]] = {}
    for session_id, name in session.execute(select(AccessSession.id, AccessSession.recording_name).where(
            AccessSession.id.in_([s for s in ended if s]), AccessSession.recording_name.is_not(None),
            AccessSession.kind == SessionKind.SHELL)):
        path = recordings / str(name)
        if path.parent == recordings and (programs := typed.typed_programs(path)):
            found[session_id] = programs
    return found


def watch_once(session: Session, *, now: dt.datetime, events: EventPublisher, vault: Vault | None,
               limit: int = BATCH, typed_programs: dict[str, list[str]] | None = None) -> int:
    """Read up to ``limit`` new audit events; returns how many were read."""
    return Watcher(session, now=now, events=events, vault=vault, typed=typed_programs).run(limit=limit)

"""Refusals that changed nothing, put in the audit trail in a transaction of their own, capped per source.

IEC 62443-3-3 SR 2.8 (auditable events) and SR 6.2 (continuous monitoring) ask that access refused is as
visible as access granted: a vendor probing another vendor's grant, a supervisor ending another site's
session, an approval of a request already decided. The refused request's own transaction is rolled back
(nothing of it may stay), so its refusal is written here, afterwards, in one short transaction.

A flood must not fill the trail: per source address and minute, the first ``cap`` refusals are recorded one
by one; the rest are counted, and one ``audit:refusals:summarised`` event says how many there were, what kinds
and from where, once that minute is over (when the next refusal from the source arrives, or at ``flush``).

The refusals the domain audits itself (``Forbidden`` raised with its event, in the refused request's own
transaction: an attestation, a playbook run, a flag decision by someone not allowed) share the same cap: the API
and the pages put a ``gate`` on their transaction, and past the cap the refused transaction is rolled back whole
and counted in the summary instead of committing its event.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from broker.audit import trail
from broker.audit.trail import Action
from broker.clock import Clock
from broker.db import REFUSAL_GATE, unit_of_work
from broker.errors import BrokerError, Forbidden

log = logging.getLogger("gatepass.broker.refusals")

# Refusals recorded one by one per source and minute; the rest of that minute is summarised in one event.
DEFAULT_CAP_PER_MINUTE = 20
_WINDOW = dt.timedelta(minutes=1)


@dataclass
class _Window:
    started_at: dt.datetime
    recorded: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)


# Refusals worth a trail entry when the domain did not write one: someone else's object (404), not allowed (403),
# a state that does not allow it (409: approving twice, a decided request).
_RECORDED_STATUSES = frozenset({403, 404, 409})


def unrecorded_refusal(error: BrokerError) -> bool:
    """Whether ``error`` refused access and the domain did not audit it itself (the API and the pages ask this)."""
    return not error.audited and error.status_code in _RECORDED_STATUSES


@dataclass(frozen=True)
class Refusal:
    """One refused action: what (an audit action), who (actor, or the key that was presented), from where, why."""

    action: Action
    reason: str
    actor: str | None = None
    source: str | None = None
    subject: str | None = None
    site: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class RefusalRecorder:
    """Thread-safe (the web pages run in a thread pool): one instance per broker process."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, *,
                 cap_per_minute: int = DEFAULT_CAP_PER_MINUTE) -> None:
        self._sessions = sessions
        self._clock = clock
        self._cap = cap_per_minute
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def record(self, refusal: Refusal) -> bool:
        """Write the refusal (or count it, past the cap) in a transaction of its own; True when it was written
        one by one. Never call it while a transaction of the same request is open (SQLite: one writer)."""
        now = self._clock.now()
        events, write = self._count(now, refusal)
        self._write(now, events)
        return write

    def record_in(self, session: Session, refusal: Refusal) -> bool:
        """``record``, inside the caller's transaction: for a report that is the request's whole change."""
        now = self._clock.now()
        events, write = self._count(now, refusal)
        for event in events:
            trail.record(session, now=now, **event)
        return write

    def _count(self, now: dt.datetime, refusal: Refusal) -> tuple[list[dict[str, Any]], bool]:
        summaries, write = self._admit(now, refusal.source, str(refusal.action))
        return [*summaries, *([self._event(refusal)] if write else [])], write

    def _admit(self, now: dt.datetime, source: str | None, action: str) -> tuple[list[dict[str, Any]], bool]:
        """Count one refusal in its source's minute: whether it is written one by one, and the summaries of the
        source's minute that just ended (only ever when it is written: a new minute starts with none recorded)."""
        key = source or "unknown"
        with self._lock:
            summaries = self._close_windows(now, only=key)
            window = self._windows.setdefault(key, _Window(started_at=now))
            write = window.recorded < self._cap
            if write:
                window.recorded += 1
            else:
                window.suppressed[action] += 1
        return summaries, write

    def gate(self, session: Session, source: str | None) -> None:
        """Cap, on this transaction, the refusals the domain audits itself (see the module's docstring)."""

        def admit(error: BrokerError) -> bool:
            if not isinstance(error, Forbidden) or not error.audited:
                return True  # sign-in failures keep their counters whatever happens: the throttles need them
            now = self._clock.now()
            summaries, write = self._admit(now, source, f"{error.code} (audited by the domain)")
            for event in summaries:
                trail.record(session, now=now, **event)
            return write

        session.info[REFUSAL_GATE] = admit

    def flush(self) -> None:
        """Summarise every window that is over (a background task calls this once in a while)."""
        now = self._clock.now()
        with self._lock:
            summaries = self._close_windows(now, only=None)
        self._write(now, summaries)

    def _close_windows(self, now: dt.datetime, *, only: str | None) -> list[dict[str, Any]]:
        """Drop the windows that are over and return one summary event for each that suppressed anything."""
        summaries = []
        keys = [only] if only is not None else list(self._windows)
        for key in keys:
            window = self._windows.get(key)
            if window is None or now - window.started_at < _WINDOW:
                continue
            del self._windows[key]
            if window.suppressed:
                total = sum(window.suppressed.values())
                summaries.append({
                    "action": Action.REFUSALS_SUMMARISED, "outcome": "refused", "actor": None, "subject": None,
                    "site": None,
                    "details": {"source": key, "from": window.started_at.isoformat(),
                                "until": (window.started_at + _WINDOW).isoformat(), "refusals": total,
                                "recorded_one_by_one": window.recorded, "by_action": dict(window.suppressed),
                                "reason": f"{total} more refusals from {key} within one minute were counted, "
                                          "not recorded one by one"},
                })
        return summaries

    @staticmethod
    def _event(refusal: Refusal) -> dict[str, Any]:
        details = {"reason": refusal.reason, **refusal.details}
        if refusal.source:
            details["source"] = refusal.source
        return {"action": refusal.action, "outcome": "refused", "actor": refusal.actor[:64] if refusal.actor else None,
                "subject": refusal.subject and refusal.subject[:128], "site": refusal.site, "details": details}

    def _write(self, now: dt.datetime, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        try:
            with unit_of_work(self._sessions) as session:
                for event in events:
                    trail.record(session, now=now, **event)
        except SQLAlchemyError as error:
            # The refused action changed nothing; losing its trace must not turn the refusal into a 500.
            log.warning("could not record %d refusal event(s): %s", len(events), error.__class__.__name__)

"""The system use notice's line about silent observers (issue 13): where any site lets supervisors and security
watch sessions without the vendor's terminal announcing them, the sign-in page says so before anyone signs in.

It names no site: the page is shown to anyone, and which plants allow it is not theirs to learn before signing in
(each session at such a site says so at its start). The answer is kept for a few seconds, so the anonymous page
costs the database at most one small query per interval however often it is loaded.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from broker.db import read_only_unit
from broker.models import Site

SILENT_OBSERVERS_LINE = (
    "At some sites, supervisors and security may watch a session live without your terminal announcing it (the "
    "site's policy); every session at such a site says so when it starts.")
# How long a policy change may take to reach the sign-in page.
CACHE_SECONDS = 10.0


class SilentObserversNotice:
    """``line()``: SILENT_OBSERVERS_LINE while any site allows silent observers, else None."""

    def __init__(self, sessions: sessionmaker[Session], *, ttl: float = CACHE_SECONDS) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._allowed = False

    def line(self) -> str | None:
        with self._lock:
            if time.monotonic() - self._checked_at >= self._ttl:
                with read_only_unit(self._sessions) as session:
                    self._allowed = bool(session.scalar(select(exists().where(Site.silent_observers.is_(True)))))
                self._checked_at = time.monotonic()
            return SILENT_OBSERVERS_LINE if self._allowed else None

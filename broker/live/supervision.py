"""Who may watch a live session, and the audit trail of watching: join, leave, refusal, message, end.

Supervisors watch their own sites' sessions, security reviewers any site's; nobody else (an admin, a vendor, a
supervisor of another plant) is refused, and the refusal is audited. Every function checks that itself, in the
caller's transaction (a domain function enforces its own preconditions).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from broker.access import workflow
from broker.audit import trail
from broker.audit.trail import Action
from broker.db import after_commit
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound, audited
from broker.identity.assurance import signed_in_without_mfa
from broker.identity.identities import has_role, may_act_for_site
from broker.inventory.gateway_events import EventPublisher
from broker.models import AccessSession, Grant, Identity
from broker.vocabulary import IdentityKind

# A line on the vendor's terminal: one line, short enough to read at a glance.
MAX_MESSAGE = 300
MAX_REASON = 300
# Session kinds with a terminal stream to follow, and a TCP tunnel (its connection, bytes, Modbus requests).
WATCHABLE_KINDS = frozenset({"shell", "exec", "tcp"})
TERMINAL_KINDS = frozenset({"shell", "exec"})
# Unicode's line and paragraph separators (categories Zl, Zp): a second line as surely as a newline.
_SEPARATORS = frozenset({"Zl", "Zp"})


@dataclass(frozen=True)
class WatchTarget:
    """A session someone may watch, as plain values (nothing of the database leaves the transaction)."""

    session_id: str
    gateway_id: int
    grant_id: str
    vendor: str
    asset: str
    site: str
    kind: str
    command: str | None
    observer: str
    label: str  # "bob (supervisor, plant-a)"
    supervises: bool = False  # a supervisor of the site: what a site that requires supervision waits for
    # The vendor's terminal says who joins and leaves (False: the site allows silent observers, or a tunnel, which
    # has no terminal to say it on).
    announced: bool = True
    port: int | None = None  # a tunnel's port on the asset
    terminal: bool = True  # False for a tunnel: nothing can be written to the vendor (no Send message)


def observer_label(identity: Identity, site_id: int, site: str) -> str:
    """How the vendor's terminal names an observer: their name, and why they may watch."""
    if may_act_for_site(identity, "supervisor", site_id):
        return f"{identity.username} (supervisor, {site})"
    return f"{identity.username} (security)"


def find_watchable(session: Session, *, now: dt.datetime, viewer: Identity, session_id: str) -> WatchTarget:
    """The session ``viewer`` asks to watch, if they may; else Forbidden (audited), NotFound or Conflict."""
    record = session.get(AccessSession, session_id[:16])
    if record is None:
        raise NotFound(f"session {session_id[:16]} does not exist")
    asset = record.grant.asset
    site = asset.site
    why = None
    if viewer.kind != IdentityKind.HUMAN:
        # Watching is a person's job (DESIGN invariant 5): a service's or AI agent's role must neither let it
        # follow a vendor's screen nor count as the plant's supervisor that a supervised session waits for.
        why = (f"only people watch live sessions; {viewer.username} is a {viewer.kind} identity and may not watch "
               f"session {record.id}")
    elif not (has_role(viewer, "security") or may_act_for_site(viewer, "supervisor", site.id)):
        why = (f"only supervisors of {site.name} and security reviewers may watch session {record.id}; "
               f"{viewer.username} is neither")
    elif viewer.id in _session_holders(session, record):
        # Four eyes (as a requester never approves their own request): someone who also supervises the site must
        # not watch, and so release, a session run under their own grant (or one they delegated to an AI agent).
        why = (f"{viewer.username} may not watch session {record.id}: it runs under their own grant, and "
               "supervision is by someone else")
    if why is not None:
        trail.record(session, now=now, action=Action.LIVE_WATCH_REFUSED, outcome="refused", actor=viewer.username,
                     subject=record.id, site=site.name, details={"reason": why, "grant": record.grant_id})
        raise audited(Forbidden(why))
    if record.ended_at is not None:
        raise Conflict(f"session {record.id} has ended ({record.end_reason}); its recording is on the review "
                       "pages")
    if record.kind not in WATCHABLE_KINDS:
        raise Conflict(f"session {record.id} is a {record.kind} session: only shell, exec and tcp (tunnel) sessions "
                       "can be watched live")
    terminal = record.kind in TERMINAL_KINDS
    return WatchTarget(session_id=record.id, gateway_id=record.gateway_id, grant_id=record.grant_id,
                       vendor=record.grant.identity.username, asset=asset.name, site=site.name, kind=record.kind,
                       command=record.command, observer=viewer.username,
                       label=observer_label(viewer, site.id, site.name),
                       # Releasing a supervised session opens a plant machine to the vendor: it takes what approving
                       # takes, a second factor at sign-in. Without one a supervisor may still watch, as an observer.
                       supervises=may_act_for_site(viewer, "supervisor", site.id)
                       and not signed_in_without_mfa(session, viewer),
                       announced=terminal and not site.silent_observers, port=record.port, terminal=terminal)


def _session_holders(session: Session, record: AccessSession) -> set[int]:
    """The identities the session's grant belongs to: its holder and, for a delegated grant, whoever it was
    delegated from (up the chain)."""
    holders: set[int] = set()
    seen: set[str] = set()
    grant: Grant | None = record.grant
    while grant is not None and grant.id not in seen:
        seen.add(grant.id)
        holders.add(grant.identity_id)
        grant = session.get(Grant, grant.parent_grant_id) if grant.parent_grant_id else None
    return holders


def recheck(session: Session, *, now: dt.datetime, viewer: Identity, target: WatchTarget) -> None:
    """Raise (as find_watchable) when ``viewer`` may no longer watch ``target``, asked again while they watch. Also
    when they joined as a supervisor of the site and are no longer one: a security reviewer may watch on, but must
    not keep holding a supervised session open, so they join again as who they are now."""
    current = find_watchable(session, now=now, viewer=viewer, session_id=target.session_id)
    if target.supervises and not current.supervises:
        raise Forbidden(f"{viewer.username} is no longer a supervisor of {target.site}; watch session "
                        f"{target.session_id} again to follow it as {current.label}")


def join(session: Session, *, now: dt.datetime, viewer: Identity, session_id: str, via: str) -> WatchTarget:
    """``viewer`` starts watching (audited); ``via`` says where from (``web``, ``cli``)."""
    target = find_watchable(session, now=now, viewer=viewer, session_id=session_id)
    trail.record(session, now=now, action=Action.LIVE_WATCH_JOINED, actor=viewer.username, subject=target.session_id,
                 site=target.site, details={"grant": target.grant_id, "vendor": target.vendor, "via": via,
                                            "announced": target.announced})
    return target


def leave(session: Session, *, now: dt.datetime, target: WatchTarget, seconds: float, dropped: int) -> None:
    """The observer stopped watching (closed the page, lost the connection, the session ended): audited."""
    trail.record(session, now=now, action=Action.LIVE_WATCH_LEFT, actor=target.observer, subject=target.session_id,
                 site=target.site, details={"grant": target.grant_id, "seconds": round(seconds, 1),
                                            "frames_dropped": dropped})


def one_line(text: str, *, label: str, limit: int) -> str:
    """A line for the vendor's terminal: no control or formatting characters (an escape sequence from a web
    form must not drive the vendor's terminal; nor a line or paragraph separator, U+2028/U+2029, which some
    terminals and log viewers break the line at), trimmed, not empty, not too long."""
    text = text.strip()
    if not text:
        raise InvalidInput(f"{label} is empty")
    if len(text) > limit:
        raise InvalidInput(f"{label} is too long ({len(text)} characters, at most {limit})")
    if any(unicodedata.category(char)[0] == "C" or unicodedata.category(char) in _SEPARATORS for char in text):
        raise InvalidInput(f"{label} holds control characters or line breaks; it must be one line of plain text")
    return text


def send_message(session: Session, *, now: dt.datetime, viewer: Identity, session_id: str, text: str,
                 deliver: Callable[[int, str, str], None]) -> str:
    """A line from ``viewer`` on the vendor's terminal (recorded there, audited here). ``deliver(gateway_id,
    session_id, line)`` runs once the audit event has committed. Returns the line."""
    target = find_watchable(session, now=now, viewer=viewer, session_id=session_id)
    if not target.terminal:
        raise Conflict(f"session {target.session_id} is a TCP tunnel: it has no terminal to show a message on")
    message = one_line(text, label="The message", limit=MAX_MESSAGE)
    line = f"gatepass: message from {target.label}: {message}"
    trail.record(session, now=now, action=Action.LIVE_MESSAGE_SENT, actor=viewer.username, subject=target.session_id,
                 site=target.site, details={"grant": target.grant_id, "vendor": target.vendor, "message": message})
    after_commit(session, lambda: deliver(target.gateway_id, target.session_id, line))
    return line


def end_session(session: Session, *, now: dt.datetime, events: EventPublisher, viewer: Identity, session_id: str,
                reason: str, cut: Callable[[int, str, str], None]) -> str:
    """End the session from the watch view: the grant is revoked (the cut path every revocation takes: audited,
    every connection of the grant cut within a second, no new one), and the gateway is told first to cut this
    session with the observer's reason on the vendor's screen. Returns that line."""
    target = find_watchable(session, now=now, viewer=viewer, session_id=session_id)
    why = one_line(reason, label="The reason", limit=MAX_REASON)
    line = f"gatepass: {target.label} ended this session: {why}"
    # Registered before the revocation's own push, so the gateway hears this one first (after_commit keeps the
    # order, and both reach the event loop in that order): the vendor reads the observer's reason.
    after_commit(session, lambda: cut(target.gateway_id, target.session_id, line))
    workflow.revoke_grant(session, now=now, events=events, actor=viewer, grant_id=target.grant_id,
                          reason=f"session {target.session_id} ended from the watch view: {why}")
    return line

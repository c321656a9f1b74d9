"""Security reviewer pages: read-only, filterable views of requests, grants, sessions and the audit trail,
with the verification status of the audit hash chain; session search (also by the text in recordings),
a session's detail with its file transfers, and playback of its recording."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session

from approvals.web import Viewer, render, secure, signed_in, web_of
from broker.access import oversight
from broker.audit import trail
from broker.db import read_only_unit
from broker.errors import Forbidden, InvalidInput, NotFound
from broker.models import Identity
from broker.recordings import asciicast, holds, retention, store, terminal

router = APIRouter(include_in_schema=False)

FILTER_FIELDS = ("identity", "site", "asset", "since", "until", "action")


def _time(value: str, label: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{label} '{value[:40]}' is not a date: write it like 2026-11-27 or "
                           "2026-11-27T14:00") from None
    # Dates typed into the form are UTC, like everything the broker stores.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _details(canonical: str) -> list[tuple[str, str]]:
    """An event's details as ``key, JSON value`` pairs (null/false as JSON, not Python, spells them)."""
    loaded = json.loads(canonical)
    if not isinstance(loaded, dict):
        return [("details", canonical)]
    return [(key, value if isinstance(value, str) else json.dumps(value)) for key, value in sorted(loaded.items())]


def parse_filter(params: dict[str, str]) -> oversight.ReviewFilter:
    values = {name: params.get(name, "").strip()[:128] for name in FILTER_FIELDS}
    return oversight.ReviewFilter(
        identity=values["identity"] or None, site=values["site"] or None, asset=values["asset"] or None,
        since=_time(values["since"], "From"), until=_time(values["until"], "Until"),
        action=values["action"] or None)


@router.get("/review")
async def review_page(request: Request) -> Response:
    params = {k: v for k, v in request.query_params.items() if k in FILTER_FIELDS}

    def work(session: Session, identity: Identity, viewer: Viewer, _now: dt.datetime) -> Response:
        _reviewer(identity)
        flt = parse_filter(params)
        chain, checked_at = _chain_status(request)
        context: dict[str, object] = {
            "requests": oversight.review_requests(session, flt),
            "grants": oversight.review_grants(session, flt),
            "sessions": oversight.review_sessions(session, flt),
            "events": [(event, _details(event.details)) for event in oversight.review_events(session, flt)],
        }
        return render(web_of(request), "review.html", title="Security review", viewer=viewer, filters=params,
                      chain=chain, chain_checked_at=checked_at, limit=oversight.REVIEW_LIMIT, listings=context)

    return await signed_in(request, work)


# A full walk of the chain costs about 5 s per million events: page views share one result for a while instead
# of each walking it (and on SQLite the walk runs in its own read-only transaction, so writers never wait).
CHAIN_STATUS_TTL = dt.timedelta(seconds=30)
_chain_lock = threading.Lock()


def _chain_status(request: Request) -> tuple[trail.VerifyResult, dt.datetime]:
    web = web_of(request)
    now = web.state.settings.clock.now()
    with _chain_lock:
        cached: tuple[trail.VerifyResult, dt.datetime] | None = getattr(request.app.state, "chain_status", None)
        if cached is None or now - cached[1] >= CHAIN_STATUS_TTL or now < cached[1]:
            with read_only_unit(web.state.sessions) as session:
                cached = (trail.verify_chain(session), now)
            request.app.state.chain_status = cached
        return cached


# --- sessions: search, detail, playback ----------------------------------------------------------------------

SESSION_FIELDS = ("identity", "site", "asset", "since", "until", "kind", "text")


def _reviewer(identity: Identity) -> None:
    if not oversight.may_review(identity):
        raise Forbidden("the review pages are for security reviewers and admins; your account has neither role")


def _recordings_dir(request: Request) -> Path:
    return store.recordings_dir(web_of(request).state.settings)


@router.get("/review/sessions")
async def sessions_page(request: Request) -> Response:
    params = {k: v.strip()[:128] for k, v in request.query_params.items() if k in SESSION_FIELDS}
    directory = _recordings_dir(request)

    def work(session: Session, identity: Identity, viewer: Viewer, _now: dt.datetime) -> Response:
        _reviewer(identity)
        kind = params.get("kind") or None
        if kind is not None and kind not in oversight.SESSION_KINDS:
            raise InvalidInput(f"kind '{kind[:20]}' is not one of {', '.join(oversight.SESSION_KINDS)}")
        found = oversight.search_sessions(session, parse_filter(params), kind=kind, text=params.get("text") or None,
                                          recordings_dir=directory)
        return render(web_of(request), "review_sessions.html", title="Sessions · Security review", viewer=viewer,
                      filters=params, kinds=oversight.SESSION_KINDS, found=found, limit=oversight.REVIEW_LIMIT,
                      scan_limit=oversight.TRANSCRIPT_SCAN_LIMIT)

    return await signed_in(request, work)


@router.get("/review/sessions/{session_id}")
async def session_page(request: Request, session_id: str) -> Response:
    directory = _recordings_dir(request)

    def work(session: Session, identity: Identity, viewer: Viewer, _now: dt.datetime) -> Response:
        _reviewer(identity)
        review = oversight.review_session(session, session_id=session_id, recordings_dir=directory)
        events = [(event, _details(event.details)) for event in review.events]
        transfers = [(event, dict(_details(event.details))) for event in review.transfers]
        # Retention and evidence holds (issue 12): how long the recording is kept, and who keeps it past that.
        kept = retention.retention_of(review.record, web_of(request).state.settings.recording_retention_days)
        evidence = [(item, holds.hold_line(item)) for item in holds.active_holds(session, review.record.id)]
        return render(web_of(request), "review_session.html", title=f"Session {review.record.id} · Security review",
                      viewer=viewer, review=review, record=review.record, events=events, transfers=transfers,
                      retention=kept, purge_after=kept.until(review.record.ended_at), evidence=evidence)

    return await signed_in(request, work)


def _recording_path(session: Session, session_id: str, directory: Path) -> Path:
    record = store.load(session, session_id)
    if not record.recording_name:
        raise NotFound(f"session {record.id} has no recording (only shell and exec sessions are recorded)")
    path = store.resolve(directory, record.recording_name)
    if not path.is_file() and record.recording_purged_at is not None:
        raise NotFound(f"the recording of session {record.id} was purged under retention on "
                       f"{record.recording_purged_at:%Y-%m-%d} (the audit trail keeps its SHA-256 and size)")
    if not path.is_file():
        raise NotFound(f"the recording of session {record.id} is missing from the recordings directory")
    return path


def _audit_viewed(session: Session, identity: Identity, session_id: str, now: dt.datetime, what: str) -> None:
    """Recordings show what a vendor typed and saw: who reviewed which one is itself part of the trail."""
    trail.record(session, now=now, action=trail.Action.RECORDING_VIEWED, actor=identity.username,
                 subject=session_id, details={"view": what})


@router.get("/review/sessions/{session_id}/recording")
async def session_recording(request: Request, session_id: str) -> Response:
    """The .cast file itself, for the player (and for a reviewer who wants to keep a copy)."""
    directory = _recordings_dir(request)

    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime) -> Response:
        _reviewer(identity)
        path = _recording_path(session, session_id, directory)
        _audit_viewed(session, identity, session_id, now, "recording")
        return secure(FileResponse(path, media_type="application/x-asciicast", filename=path.name,
                                   content_disposition_type="inline"))

    return await signed_in(request, work)


@router.get("/review/sessions/{session_id}/transcript")
async def session_transcript(request: Request, session_id: str) -> Response:
    """What the terminal showed, as plain text on a page (for screen readers and for copying)."""
    directory = _recordings_dir(request)

    def work(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime) -> Response:
        _reviewer(identity)
        path = _recording_path(session, session_id, directory)
        _audit_viewed(session, identity, session_id, now, "transcript")
        try:
            cast = asciicast.read_cast(path)
        except asciicast.RecordingFormatError as error:
            raise InvalidInput(f"the recording of session {session_id} cannot be read: {error}") from None
        return render(web_of(request), "review_transcript.html", title=f"Transcript of {session_id}",
                      viewer=viewer, session_id=session_id, transcript=terminal.transcript(cast), cast=cast)

    return await signed_in(request, work)

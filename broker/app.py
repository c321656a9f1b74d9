"""The broker's API as an ASGI application: ``create_api(settings)`` wires the routes, error handling, the outbox
relay and the lifecycle. assembly.app adds the web pages and the other background jobs."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from broker.api import (
    access_routes,
    audit_routes,
    auth_routes,
    delegation_routes,
    extension_routes,
    flag_routes,
    gateway_routes,
    identity_routes,
    oidc_routes,
    playbook_routes,
    posture_routes,
    recording_routes,
    site_routes,
    watch_routes,
    workload_routes,
)
from broker.api.errors import error_response, install_error_handlers
from broker.api.input_guard import ControlCharacterGuard
from broker.api.security_headers import SecurityHeaders
from broker.api.state import BrokerState
from broker.audit.refusals import Refusal, RefusalRecorder
from broker.audit.trail import Action
from broker.db import GroupCommit, make_engine, make_session_factory, read_only_unit, unit_of_work
from broker.identity import attestation, lifecycle
from broker.inventory import report_receipts
from broker.inventory.gateway_events import RELAY_INTERVAL_SECONDS, EventHub, GrantEvent, recent_changes
from broker.keys.vault import Vault
from broker.live.hub import LiveHub
from broker.metrics import render_metrics
from broker.recordings import intake, purge
from broker.recordings.store import recordings_dir
from broker.settings import Settings
from broker.sources import client_address
from broker.watch import watcher

API_PREFIX = "/api/v1"
T = TypeVar("T")
REFUSAL_FLUSH_SECONDS = 15.0
# End dates and review deadlines are days long: a minute late is on time.
IDENTITY_SWEEP_SECONDS = 60.0
WATCH_INTERVAL_SECONDS = 0.5
# About 50 ms of work per transaction at the watcher's measured rate (bench/bench_watch.py).
WATCH_BATCH = 25
WATCH_BREATH_SECONDS = 0.05


# A background job of the broker's process: started by the lifespan with the app, cancelled when it stops.
BackgroundJobs = Callable[[FastAPI], list[asyncio.Task[None]]]


def create_api(settings: Settings, *, hub: EventHub | None = None,
               background: Sequence[BackgroundJobs] = ()) -> FastAPI:
    engine = make_engine(settings.effective_database_url)
    sessions = make_session_factory(engine)
    state = BrokerState(settings=settings, engine=engine, sessions=sessions,
                        vault=Vault.from_key_file(settings.master_key_path), hub=hub or EventHub(),
                        refusals=RefusalRecorder(sessions, settings.clock), group=GroupCommit(engine))
    live = LiveHub()  # who watches which live session (broker.live), in this process

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.hub.attach(asyncio.get_running_loop())
        live.attach(asyncio.get_running_loop())
        tasks = [asyncio.create_task(relay_outbox(state)), asyncio.create_task(summarise_refusals(state)),
                 asyncio.create_task(govern_identities(state)), asyncio.create_task(watch_trail(state)),
                 asyncio.create_task(purge_recordings(state))]
        for jobs in background:
            tasks += jobs(_app)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await finish_in_thread(state.refusals.flush)
            await finish_in_thread(state.group.close)
            engine.dispose()

    # No /docs or /redoc: FastAPI's pages load their script from a CDN, which a plant network does not reach
    # and the pages' CSP would refuse anyway. The API is mapped by /openapi.json and docs/API.md.
    app = FastAPI(title="Gatepass broker", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Just-in-time, plant-approved, time-bound remote access to OT assets.")
    app.state.broker = state
    app.state.live = live
    install_error_handlers(app)
    app.add_middleware(ControlCharacterGuard)
    app.add_middleware(SecurityHeaders)  # outermost: also on the guard's own refusals
    for module in (auth_routes, oidc_routes, access_routes, delegation_routes, extension_routes, site_routes,
                   gateway_routes, audit_routes, identity_routes, playbook_routes, flag_routes, posture_routes,
                   workload_routes, watch_routes, recording_routes):
        app.include_router(module.router, prefix=API_PREFIX)

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # the health check's whole job is to say "not healthy" instead of failing
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics(request: Request) -> Response:
        # How many grants and sessions are live is reconnaissance for an attacker: a scrape needs its own token.
        if settings.metrics_token is None:
            return error_response(404, "not_found", "metrics are off: set GATEPASS_METRICS_TOKEN to a secret and "
                                  "scrape /metrics with 'Authorization: Bearer <that secret>'")
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(),
                                                                  settings.metrics_token.encode()):
            state.refusals.record(Refusal(action=Action.API_REFUSED, reason="metrics scrape without the right token",
                                          source=client_address(request, settings), subject="/metrics",
                                          details={"method": request.method, "status": 401}))
            return error_response(401, "not_authenticated", "a metrics scrape needs 'Authorization: Bearer <the "
                                  "GATEPASS_METRICS_TOKEN secret>'")
        return PlainTextResponse(render_metrics(state))

    return app


async def summarise_refusals(state: BrokerState) -> None:
    """Close the refusal-flood windows that are over, so a flood's summary lands even if the flood stopped."""
    while True:
        await asyncio.sleep(REFUSAL_FLUSH_SECONDS)
        await finish_in_thread(state.refusals.flush)


async def finish_in_thread(work: Callable[[], T]) -> T:
    """Run database work in the thread pool and let it finish even if the job is cancelled (at shutdown): a
    thread cannot be stopped, and the engine must not be disposed under its open connection."""
    running = asyncio.ensure_future(run_in_threadpool(work))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await running
        raise


async def watch_trail(state: BrokerState) -> None:
    """Baselines and flags, from the audit trail as it grows: often enough that a flag on a live session
    reaches the supervisor's page (which refreshes every 2 s) within about 2 s of its event."""
    log = logging.getLogger("gatepass.broker.watch")

    def one_pass() -> int:
        # Look first in a read-only transaction: on SQLite a write transaction every half second would make
        # every request wait behind the watcher, mostly for nothing.
        with read_only_unit(state.sessions) as session:
            if not watcher.has_new_events(session):
                return 0
            # Typed programs are read from the recordings here, outside the write transaction below.
            typed = watcher.typed_ahead(session, recordings_dir(state.settings), limit=WATCH_BATCH)
        with unit_of_work(state.sessions) as session:
            return watcher.watch_once(session, now=state.settings.clock.now(), events=state.hub, vault=state.vault,
                                      limit=WATCH_BATCH, typed_programs=typed)

    while True:
        await asyncio.sleep(WATCH_INTERVAL_SECONDS)
        try:
            while await finish_in_thread(one_pass) >= WATCH_BATCH:
                # A backlog (a burst of session ends, a restart): read on in short transactions with a breath
                # between them, so a revoke or a playbook never waits behind the watcher for the write lock
                # (SQLite has one) — containment comes before keeping baselines current.
                await asyncio.sleep(WATCH_BREATH_SECONDS)
        except SQLAlchemyError as error:  # the next round retries from the same cursor
            log.warning("could not watch the trail: %s", error.__class__.__name__)


async def govern_identities(state: BrokerState) -> None:
    """The clock's part of identity governance: end dates, owners gone past their grace, overdue reviews (each
    replica may run it; the changes are idempotent and row-locked by the database)."""
    log = logging.getLogger("gatepass.broker.identities")

    def sweep() -> None:
        with unit_of_work(state.sessions) as session:
            now = state.settings.clock.now()
            lifecycle.sweep(session, now=now, events=state.hub)
            attestation.sweep_overdue(session, now=now, events=state.hub)

    while True:
        await asyncio.sleep(IDENTITY_SWEEP_SECONDS)
        try:
            await finish_in_thread(sweep)
        except SQLAlchemyError as error:  # the next round retries
            log.warning("could not sweep identities: %s", error.__class__.__name__)


async def purge_recordings(state: BrokerState) -> None:
    """Recordings past their site's retention and not on hold are deleted, one audit event each (each replica
    may run it: a recording is claimed by one conditional update, broker.recordings.retention); partial uploads
    and gateway report receipts past their keep go in the same round."""
    log = logging.getLogger("gatepass.broker.retention")
    settings = state.settings

    def sweep() -> None:
        purge.purge(state.sessions, now=settings.clock.now(), default_days=settings.recording_retention_days,
                    directory=recordings_dir(settings))
        intake.remove_abandoned(recordings_dir(settings), now=time.time())  # uploads a dead broker left behind
        with state.sessions.begin() as session:  # and the gateways' report receipts past their keep
            report_receipts.forget_old(session, now=settings.clock.now())

    while True:
        await asyncio.sleep(settings.retention_sweep_interval.total_seconds())
        try:
            await finish_in_thread(sweep)
        except (SQLAlchemyError, OSError) as error:  # the next round retries
            log.warning("could not purge recordings: %s", error.__class__.__name__)


async def relay_outbox(state: BrokerState) -> None:
    """Relay grant changes made elsewhere (another replica, `gatepass admin`) to this process's gateways."""
    log = logging.getLogger("gatepass.broker.events")

    def fetch() -> list[GrantEvent]:
        with state.sessions() as session:
            return recent_changes(session, now=state.settings.clock.now())

    while True:
        await asyncio.sleep(RELAY_INTERVAL_SECONDS)
        if not state.hub.subscriber_count:
            continue  # gateways resync when they connect; nobody to tell now
        try:
            for event in await finish_in_thread(fetch):
                state.hub.publish(event)
        except SQLAlchemyError as error:  # a database hiccup must not end the relay; the next round retries
            log.warning("could not read grant changes: %s", error.__class__.__name__)

"""The broker's ASGI application: ``create_app(settings)`` wires API, error handling and lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

import approvals
from broker.api import (
    access_routes,
    audit_routes,
    auth_routes,
    extension_routes,
    gateway_routes,
    site_routes,
)
from broker.api.errors import install_error_handlers
from broker.api.input_guard import ControlCharacterGuard
from broker.api.state import BrokerState
from broker.db import make_engine, make_session_factory
from broker.events import RELAY_INTERVAL_SECONDS, EventHub, GrantEvent, recent_changes
from broker.metrics import render_metrics
from broker.settings import Settings
from broker.vault import Vault

API_PREFIX = "/api/v1"


def create_app(settings: Settings, *, hub: EventHub | None = None) -> FastAPI:
    engine = make_engine(settings.effective_database_url)
    state = BrokerState(settings=settings, engine=engine, sessions=make_session_factory(engine),
                        vault=Vault.from_key_file(settings.master_key_path), hub=hub or EventHub())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.hub.attach(asyncio.get_running_loop())
        tasks = [asyncio.create_task(relay_outbox(state)), *approvals.background_tasks(_app)]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            engine.dispose()

    app = FastAPI(title="Gatepass broker", version="0.1.0", lifespan=lifespan,
                  description="Just-in-time, plant-approved, time-bound remote access to OT assets.")
    app.state.broker = state
    install_error_handlers(app)
    app.add_middleware(ControlCharacterGuard)
    for module in (auth_routes, access_routes, extension_routes, site_routes, gateway_routes, audit_routes):
        app.include_router(module.router, prefix=API_PREFIX)
    # The web pages (approvals/): sign-in, approvals, vendor requests, security review, /static.
    approvals.mount(app, state)

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # the health check's whole job is to say "not healthy" instead of failing
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> str:
        return render_metrics(state)

    return app


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
            for event in await run_in_threadpool(fetch):
                state.hub.publish(event)
        except SQLAlchemyError as error:  # a database hiccup must not end the relay; the next round retries
            log.warning("could not read grant changes: %s", error.__class__.__name__)

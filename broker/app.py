"""The broker's ASGI application: ``create_app(settings)`` wires API, error handling and lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from broker.api import access_routes, audit_routes, auth_routes, gateway_routes
from broker.api.errors import install_error_handlers
from broker.api.state import BrokerState
from broker.db import make_engine, make_session_factory
from broker.events import EventHub
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
        yield
        engine.dispose()

    app = FastAPI(title="Gatepass broker", version="0.1.0", lifespan=lifespan,
                  description="Just-in-time, plant-approved, time-bound remote access to OT assets.")
    app.state.broker = state
    install_error_handlers(app)
    for module in (auth_routes, access_routes, gateway_routes, audit_routes):
        app.include_router(module.router, prefix=API_PREFIX)

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # the health check's whole job is to say "not healthy" instead of failing
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["health"])
    def metrics() -> Any:
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse(f"gatepass_gateway_event_subscribers {state.hub.subscriber_count}\n")

    return app

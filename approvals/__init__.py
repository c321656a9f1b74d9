"""The human-facing web pages, mounted into the broker's ASGI app: sign-in, the supervisor's approval queue,
live sessions and plant lockdown, the vendor's request page, and the security reviewer's read-only views.

Server-rendered (Jinja2, autoescaping on), no front-end build step; the one script is a static file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from approvals.notifier import NotifierSettings, run_notifier
from approvals.use_notice import SilentObserversNotice
from approvals.web import Web, WebSettings, make_templates
from broker.api.state import BrokerState
from broker.identity import web_sessions

STATIC_DIR = Path(__file__).parent / "static"


def mount(app: FastAPI, state: BrokerState, settings: WebSettings, notifier: NotifierSettings) -> None:
    """Add the web pages and their static files to the broker's app (assembly.app does, with its settings)."""
    from approvals import (
        flag_routes,
        identity_routes,
        oidc_routes,
        playbook_routes,
        posture_routes,
        review_routes,
        signin_routes,
        supervisor_routes,
        vendor_routes,
        watch_routes,
    )

    app.state.approvals = Web(state=state, settings=settings,
                              csrf_key=web_sessions.derive_csrf_key(state.settings.master_key_path),
                              templates=make_templates(), notifier=notifier,
                              silent_observers=SilentObserversNotice(state.sessions))
    for module in (signin_routes, oidc_routes, supervisor_routes, vendor_routes, review_routes, identity_routes,
                   playbook_routes, flag_routes, posture_routes, watch_routes):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def background_tasks(app: FastAPI) -> list[asyncio.Task[None]]:
    """Started by the broker's lifespan: the notifier, when a webhook or e-mail target is configured."""
    web: Web = app.state.approvals
    if not web.notifier.targets.any:
        return []
    return [asyncio.create_task(run_notifier(web.state, web.notifier), name="gatepass-notifier")]

"""The broker's whole application, assembled from one ``AppSettings``: the API (broker.app), the web pages
(approvals), and the background jobs that run beside them (outbox relay, refusal summaries, notifier)."""

from __future__ import annotations

from fastapi import FastAPI

import approvals
from assembly.settings import AppSettings
from broker.app import create_api
from broker.inventory.gateway_events import EventHub


def create_app(settings: AppSettings, *, hub: EventHub | None = None) -> FastAPI:
    app = create_api(settings.broker, hub=hub, background=[approvals.background_tasks])
    # The web pages: sign-in, approvals, vendor requests, security review, /static.
    approvals.mount(app, app.state.broker, settings.web, settings.effective_notifier)
    return app

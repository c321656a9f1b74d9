"""Continuous SIEM forwarding beside the broker: the audit trail to a syslog collector, in a thread, for as long
as the process runs (broker/siem_forward.py does the work)."""

from __future__ import annotations

import asyncio
import logging
import threading

from assembly.settings import AppSettings
from broker.audit import siem_forward
from broker.db import make_engine, make_session_factory

log = logging.getLogger("gatepass")


def start_forwarding(settings: AppSettings, stop: threading.Event) -> asyncio.Task[None] | None:
    """With ``settings.siem`` (GATEPASS_SYSLOG=tcp://HOST:PORT or tls://HOST:PORT, CA file in GATEPASS_SYSLOG_CA),
    forward until ``stop`` is set; None when no collector is configured."""
    if settings.siem is None:
        return None
    destination = siem_forward.Destination.parse(settings.siem.url)
    ssl_context = destination.ssl_context(settings.siem.ca_file)
    engine = make_engine(settings.broker.effective_database_url)
    forwarder = siem_forward.Forwarder(session_factory=make_session_factory(engine), destination=destination,
                                       clock=settings.broker.clock, ssl_context=ssl_context)

    def forward() -> None:
        try:
            forwarder.run(stop)
        finally:
            engine.dispose()

    log.info("forwarding the audit trail to %s", destination.url)
    return asyncio.create_task(asyncio.to_thread(forward))

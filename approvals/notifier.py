"""Delivers the notifications outbox (broker.notifications): webhook JSON over HTTPS and e-mail over SMTP,
from a background task of each broker process. Configured from the environment:

    GATEPASS_NOTIFY_WEBHOOK   URL that receives {"text": …, "request": {…}} (Slack- and Teams-compatible text);
                              when a shell or exec session of the grant starts, {"text": …, "watch_url": …,
                              "session": {…}} with the link to watch it live
    GATEPASS_NOTIFY_EMAIL     site:address pairs, comma-separated: plant-a:ops@plant-a.example,plant-b:…
                              (extra addresses, on top of the approvers' own)
    GATEPASS_SMTP             host:port of the mail relay (default 127.0.0.1:25); GATEPASS_SMTP_STARTTLS=1.
                              With a relay configured (GATEPASS_SMTP or GATEPASS_NOTIFY_EMAIL set), each new
                              request is also mailed to the e-mail address of every supervisor of its site
                              (`gatepass admin user add … --email` / `admin user set NAME --email`).
    GATEPASS_SMTP_FROM        sender address (default gatepass@localhost)
    GATEPASS_PUBLIC_URL       the web address put in links (default http://HOST:PORT of the broker)
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage

import httpx
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from broker.access import notifications
from broker.access.notifications import Delivery, Targets
from broker.api.state import BrokerState
from broker.db import unit_of_work

log = logging.getLogger("gatepass.approvals.notifier")
POLL_SECONDS = 1.0
SEND_TIMEOUT = 5.0


@dataclass(frozen=True)
class NotifierSettings:
    targets: Targets = field(default_factory=Targets)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_from: str = "gatepass@localhost"
    public_url: str = "http://127.0.0.1:8080"


def send(settings: NotifierSettings, delivery: Delivery) -> str | None:
    """Deliver one notification; the error in words, or None when it was accepted."""
    try:
        if delivery.channel == "webhook":
            answer = httpx.post(delivery.target, json=delivery.payload, timeout=SEND_TIMEOUT)
            if answer.status_code >= 300:
                return f"the webhook answered HTTP {answer.status_code}"
            return None
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = settings.smtp_from, delivery.target, delivery.subject
        message.set_content(delivery.text + "\n")
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SEND_TIMEOUT) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            smtp.send_message(message)
        return None
    except (httpx.HTTPError, smtplib.SMTPException, OSError) as error:
        return f"{error.__class__.__name__}: {error}"


def deliver_round(state: BrokerState, settings: NotifierSettings) -> int:
    """One pass: enqueue new requests, session starts and review reminders, claim what is due, send, record.
    Returns how many were attempted."""
    with unit_of_work(state.sessions) as session:
        notifications.enqueue_new_requests(session, now=state.settings.clock.now(), targets=settings.targets,
                                           within=state.settings.decide_within)
        notifications.enqueue_session_starts(session, now=state.settings.clock.now(), targets=settings.targets)
        notifications.enqueue_review_reminders(session, now=state.settings.clock.now(), targets=settings.targets)
        notifications.enqueue_playbook_messages(session, now=state.settings.clock.now(), targets=settings.targets)
    with unit_of_work(state.sessions) as session:
        due = notifications.claim_due(session, now=state.settings.clock.now(), public_url=settings.public_url)
    for delivery in due:
        error = send(settings, delivery)
        with unit_of_work(state.sessions) as session:
            notifications.record_result(session, now=state.settings.clock.now(), delivery_id=delivery.id,
                                        error=error)
    return len(due)


async def run_notifier(state: BrokerState, settings: NotifierSettings) -> None:
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            await run_in_threadpool(deliver_round, state, settings)
        except SQLAlchemyError as error:  # a database hiccup must not end the notifier; the next round retries
            log.warning("notifications round failed: %s", error.__class__.__name__)

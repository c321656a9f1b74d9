"""New requests, and the sessions that start under their grants (with the link to watch them), reach the site's
approvers by webhook and e-mail: a real local SMTP server (aiosmtpd) and a real local HTTP receiver; failures are
retried with backoff and audited, and never touch the request."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from approvals.notifier import NotifierSettings, deliver_round
from assembly.settings import AppSettings, load
from broker.access import workflow
from broker.access.notifications import MAX_ATTEMPTS, SESSION_NOTICE_WINDOW, Targets
from broker.api.state import BrokerState
from broker.audit.refusals import RefusalRecorder
from broker.clock import SystemClock
from broker.db import GroupCommit, make_session_factory
from broker.identity import identities
from broker.inventory import sites
from broker.inventory.gateway_events import EventHub
from broker.keys.vault import Vault
from broker.models import AccessSession, Grant, Identity
from tests.approvals.conftest import make_request
from tests.fixtures.broker import BrokerServer, Plant
from tests.fixtures.ports import free_port


class WebhookReceiver:
    """An HTTP server on loopback that records JSON bodies; it answers 500 to the first ``fail_first`` posts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(500)
                else:
                    receiver.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/secret-path"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


def state_of(plant: Plant) -> BrokerState:
    sessions = make_session_factory(plant.engine)
    return BrokerState(settings=plant.settings, engine=plant.engine, sessions=sessions,
                       vault=Vault.from_key_file(plant.settings.master_key_path), hub=EventHub(),
                       refusals=RefusalRecorder(sessions, plant.settings.clock), group=GroupCommit(plant.engine))


def test_new_request_reaches_webhook_and_email(web_plant: Plant, webhook: WebhookReceiver,
                                               smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    settings = NotifierSettings(targets=Targets(webhook_url=webhook.url, emails_by_site={
        "plant-a": ["ops-a@plant-a.example"], "plant-b": ["ops-b@plant-b.example"]}),
        smtp_port=port, public_url="https://gatepass.example")
    request_id = make_request(web_plant, "vendor-a", reason="replace HMI firmware")
    assert deliver_round(state_of(web_plant), settings) == 2
    [body] = webhook.bodies
    assert body["request"]["id"] == request_id
    assert body["request"]["site"] == "plant-a"
    assert "vendor-a (acme-automation) asks for hmi-01" in body["text"]
    assert f"https://gatepass.example/approvals#{request_id}" in body["text"]
    [(recipients, message)] = mailbox.messages
    assert recipients == ["ops-a@plant-a.example"]  # plant-b's approvers hear nothing of plant-a
    assert "hmi-01" in message["Subject"]
    assert f"https://gatepass.example/approvals#{request_id}" in message.get_payload(decode=True).decode()
    sent = web_plant.audit("notify:delivery:sent")
    assert {e["details"]["channel"] for e in sent} == {"webhook", "email"}
    assert all("secret-path" not in json.dumps(e) for e in sent)  # a webhook's path may be a credential
    # Delivered once: the next round has nothing to do.
    assert deliver_round(state_of(web_plant), settings) == 0
    assert len(webhook.bodies) == 1


def test_failures_are_retried_audited_and_never_touch_the_request(web_plant: Plant) -> None:
    receiver = WebhookReceiver(fail_first=1)
    try:
        settings = NotifierSettings(targets=Targets(webhook_url=receiver.url,
                                                    emails_by_site={"plant-a": ["ops@plant-a.example"]}),
                                    smtp_port=free_port())  # nothing listens there: every e-mail attempt fails
        request_id = make_request(web_plant, "vendor-a")
        state = state_of(web_plant)
        deliver_round(state, settings)
        failed = web_plant.audit("notify:delivery:failed")
        assert {e["details"]["channel"] for e in failed} == {"webhook", "email"}
        assert "HTTP 500" in next(e for e in failed if e["details"]["channel"] == "webhook")["details"]["error"]
        # The retry waits (backoff): nothing is due right away, then the webhook goes through.
        assert deliver_round(state, settings) == 0
        for _ in range(MAX_ATTEMPTS):
            web_plant.clock.advance(dt.timedelta(hours=1))
            deliver_round(state, settings)
        assert len(receiver.bodies) == 1
        gave_up = web_plant.audit("notify:delivery:gave_up")
        assert len(gave_up) == 1
        assert gave_up[0]["details"]["attempt"] == MAX_ATTEMPTS
        assert web_plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0] == "pending"
    finally:
        receiver.close()


def test_the_running_broker_notifies_on_its_own(web_plant: Plant, webhook: WebhookReceiver) -> None:
    settings = dataclasses.replace(web_plant.settings, clock=SystemClock())
    notifier = NotifierSettings(targets=Targets(webhook_url=webhook.url))
    server = BrokerServer(AppSettings(broker=settings, notifier=notifier)).start()
    try:
        request_id = make_request(web_plant, "vendor-a")
        deadline = time.monotonic() + 10
        while not webhook.bodies and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [b["request"]["id"] for b in webhook.bodies] == [request_id]
    finally:
        server.stop()


def test_only_sites_with_a_target_are_announced(web_plant: Plant, smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    settings = NotifierSettings(targets=Targets(emails_by_site={"plant-b": ["ops-b@plant-b.example"]}),
                                smtp_port=port)
    make_request(web_plant, "vendor-a", asset="hmi-01")  # plant-a: nobody to tell
    b_request = make_request(web_plant, "vendor1", asset="hmi-b1")
    assert deliver_round(state_of(web_plant), settings) == 1
    [(recipients, message)] = mailbox.messages
    assert recipients == ["ops-b@plant-b.example"]
    assert b_request in message.get_payload(decode=True).decode()
    assert web_plant.count("notifications") == 1


def set_email(plant: Plant, username: str, email: str) -> None:
    with plant.session() as session:
        identities.set_email(session, now=plant.clock.now(), actor="test", username=username, email=email)


def test_new_request_is_mailed_to_the_sites_approvers(web_plant: Plant, smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    set_email(web_plant, "sup-a1", "sup-a1@plant-a.example")
    set_email(web_plant, "sup-a2", "Ops@Plant-A.example")  # the same as a configured address, in other case
    set_email(web_plant, "sup-b", "sup-b@plant-b.example")
    settings = NotifierSettings(targets=Targets(emails_by_site={"plant-a": ["ops@plant-a.example"]},
                                                approver_emails=True), smtp_port=port)
    request_id = make_request(web_plant, "vendor-a")
    assert deliver_round(state_of(web_plant), settings) == 2
    recipients = sorted(r for rcpts, _message in mailbox.messages for r in rcpts)
    # plant-a's approvers and the configured fallback, each once; plant-b's supervisor hears nothing.
    assert recipients == ["Ops@Plant-A.example", "sup-a1@plant-a.example"]
    assert all(request_id in m.get_payload(decode=True).decode() for _r, m in mailbox.messages)
    assert {e["details"]["to"] for e in web_plant.audit("notify:delivery:sent")} == set(recipients)


def test_approver_emails_alone_are_enough_and_skip_disabled_approvers(web_plant: Plant,
                                                                      smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    set_email(web_plant, "sup-a1", "sup-a1@plant-a.example")
    set_email(web_plant, "sup-a2", "sup-a2@plant-a.example")
    web_plant.set_disabled("sup-a2")
    settings = NotifierSettings(targets=Targets(approver_emails=True), smtp_port=port)
    make_request(web_plant, "vendor-a")
    make_request(web_plant, "vendor1", asset="hmi-b1")  # plant-b: no approver with an address
    assert deliver_round(state_of(web_plant), settings) == 1
    [(recipients, _message)] = mailbox.messages
    assert recipients == ["sup-a1@plant-a.example"]


def test_a_mail_relay_in_the_environment_turns_approver_emails_on() -> None:
    assert not load({}).effective_notifier.targets.approver_emails
    settings = load({"GATEPASS_SMTP": "mail.plant.example:587"}).effective_notifier
    assert settings.targets.approver_emails
    assert settings.targets.any
    assert (settings.smtp_host, settings.smtp_port) == ("mail.plant.example", 587)


def test_a_review_due_within_14_days_reminds_its_owner_once(web_plant: Plant, smtp: tuple[Mailbox, int],
                                                          webhook: WebhookReceiver) -> None:
    from sqlalchemy import update

    from broker.models import Identity

    mailbox, port = smtp
    set_email(web_plant, "sup-a1", "sup-a1@plant-a.example")
    web_plant.add_user("historian-export", role="vendor", kind="service", owner="sup-a1")
    with web_plant.session() as session:
        session.execute(update(Identity).where(Identity.username == "historian-export").values(
            attestation_due_at=web_plant.clock.now() + dt.timedelta(days=10)))
    settings = NotifierSettings(targets=Targets(webhook_url=webhook.url, approver_emails=True), smtp_port=port)
    assert deliver_round(state_of(web_plant), settings) == 2
    [(recipients, message)] = mailbox.messages
    assert recipients == ["sup-a1@plant-a.example"]
    assert message["Subject"].startswith("Gatepass: access review of historian-export due")
    [body] = webhook.bodies
    assert body["review"]["identity"] == "historian-export"
    assert body["review"]["link"].endswith("/reviews")
    # Once per identity and due date: the next round sends nothing new.
    assert deliver_round(state_of(web_plant), settings) == 0
    sent = web_plant.audit("notify:delivery:sent")
    assert any(e["subject"] == "review:historian-export" for e in sent)


# --- a session's start, with the link to watch it (issue 13) ------------------------------------------------------


def start(plant: Plant, grant_id: str, kind: str = "shell", *, command: str | None = None,
          port: int | None = None) -> str:
    """A session under the grant, reported the way the gateway reports one; returns its id."""
    from broker.inventory import gateways

    with plant.session() as session:
        gateway = gateways.authenticate_gateway(session, plant.gateway_token)
        return gateways.start_session(session, now=plant.clock.now(), gateway=gateway, grant_id=grant_id,
                                      kind=kind, peer="127.0.0.1:50000", command=command, port=port).id


def test_a_session_start_reaches_the_request_targets_with_the_link_to_watch_it(
        web_plant: Plant, webhook: WebhookReceiver, smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    set_email(web_plant, "sup-a1", "sup-a1@plant-a.example")
    set_email(web_plant, "vendor-a", "vendor-a@acme.example")  # the vendor is told nothing about their own session
    settings = NotifierSettings(targets=Targets(webhook_url=webhook.url, approver_emails=True),
                                smtp_port=port, public_url="https://gatepass.example/")
    grant_id = web_plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01")
    assert deliver_round(state_of(web_plant), settings) == 0  # approved already: no request announcement
    session_id = start(web_plant, grant_id, command="cat /etc/motd")
    assert deliver_round(state_of(web_plant), settings) == 2
    link = f"https://gatepass.example/approvals/sessions/{session_id}/watch"
    [body] = webhook.bodies
    assert body["watch_url"] == link
    assert (body["session"]["id"], body["session"]["asset"], body["session"]["site"], body["session"]["vendor"],
            body["session"]["grant"], body["session"]["kind"]) == (
        session_id, "hmi-01", "plant-a", "vendor-a", grant_id, "shell")
    assert body["session"]["supervision_required"] is False
    assert f"Watch it live: {link}" in body["text"]
    assert "/etc/motd" not in json.dumps(body)  # the command line may hold a secret: only the trail has it
    [(recipients, message)] = mailbox.messages
    assert recipients == ["sup-a1@plant-a.example"]
    assert " ".join(message["Subject"].split()) == (  # a long header comes folded
        "Gatepass: vendor-a (acme-automation) started a session on hmi-01 at plant-a")
    assert link in message.get_payload(decode=True).decode()
    sent = web_plant.audit("notify:delivery:sent")
    assert {(e["subject"], e["site"], e["details"]["channel"]) for e in sent} == {
        (session_id, "plant-a", "webhook"), (session_id, "plant-a", "email")}
    # One announcement per session start: the next rounds send nothing.
    assert deliver_round(state_of(web_plant), settings) == 0
    assert deliver_round(state_of(web_plant), settings) == 0
    assert len(webhook.bodies) == 1


def test_a_supervised_assets_session_start_says_it_waits_for_a_supervisor(web_plant: Plant,
                                                                          webhook: WebhookReceiver) -> None:
    with web_plant.session() as session:
        sites.update_site(session, now=web_plant.clock.now(), actor="test", name="plant-a",
                          supervise_high_criticality=True)
    settings = NotifierSettings(targets=Targets(webhook_url=webhook.url))
    request_id = make_request(web_plant, "vendor-a", asset="rtu-01")  # high criticality: two approvals
    with web_plant.session() as session:
        for approver in ("sup-a1", "sup-a2"):
            person = session.scalars(select(Identity).where(Identity.username == approver)).one()
            workflow.approve(session, vault=web_plant.vault, now=web_plant.clock.now(), approver=person,
                             request_id=request_id, comment=None)
        grant_id = session.scalars(select(Grant.id).where(Grant.request_id == request_id)).one()
    deliver_round(state_of(web_plant), settings)  # the request's own announcement
    webhook.bodies.clear()
    session_id = start(web_plant, grant_id)
    assert deliver_round(state_of(web_plant), settings) == 1
    [body] = webhook.bodies
    assert body["session"]["supervision_required"] is True
    assert f"It waits until a supervisor of plant-a watches it. Watch it live: {body['watch_url']}" in body["text"]
    assert body["watch_url"].endswith(f"/approvals/sessions/{session_id}/watch")


def test_tunnels_ended_sessions_and_sites_without_targets_are_not_announced(web_plant: Plant,
                                                                           smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    settings = NotifierSettings(targets=Targets(emails_by_site={"plant-b": ["ops-b@plant-b.example"]}),
                                smtp_port=port)
    tunnel = web_plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01", ssh=False, ports=[502])
    start(web_plant, tunnel, "tcp", port=502)  # a tunnel's connections are sessions too: never announced
    elsewhere = web_plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01")
    start(web_plant, elsewhere)  # plant-a: nobody to tell
    grant_b = web_plant.request_and_approve("vendor1", "sup-b", asset="hmi-b1")
    ended = start(web_plant, grant_b)
    with web_plant.session() as session:
        record = session.get(AccessSession, ended)
        assert record is not None
        record.ended_at = web_plant.clock.now()  # it ended before the notifier looked
    assert deliver_round(state_of(web_plant), settings) == 0
    assert web_plant.count("notifications") == 0
    live = start(web_plant, grant_b, "exec", command="uptime")
    assert deliver_round(state_of(web_plant), settings) == 1
    [(recipients, message)] = mailbox.messages
    assert recipients == ["ops-b@plant-b.example"]
    assert f"/approvals/sessions/{live}/watch" in message.get_payload(decode=True).decode()


def test_a_tunnel_to_a_supervised_asset_is_announced_as_it_waits_for_a_supervisor(
        web_plant: Plant, webhook: WebhookReceiver) -> None:
    """A tunnel's connection to a supervised asset is held until a supervisor watches it: unlike other tunnel
    connections it is announced, with its watch link."""
    settings = NotifierSettings(targets=Targets(webhook_url=webhook.url))
    tunnel = web_plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01", ssh=False, ports=[502])
    deliver_round(state_of(web_plant), settings)  # the request's own announcement
    webhook.bodies.clear()
    relayed = start(web_plant, tunnel, "tcp", port=502)
    assert deliver_round(state_of(web_plant), settings) == 0  # hmi-01 is not supervised: not announced
    with web_plant.session() as session:
        record = session.get(AccessSession, relayed)
        assert record is not None
        record.ended_at = web_plant.clock.now()
    with web_plant.session() as session:
        sites.update_asset(session, now=web_plant.clock.now(), actor="test", name="hmi-01", supervision="required")
    held = start(web_plant, tunnel, "tcp", port=502)
    assert deliver_round(state_of(web_plant), settings) == 1
    [body] = webhook.bodies
    assert (body["session"]["id"], body["session"]["kind"], body["session"]["supervision_required"]) == (
        held, "tcp", True)
    assert body["watch_url"].endswith(f"/approvals/sessions/{held}/watch")
    assert "It waits until a supervisor of plant-a watches it." in body["text"]


def test_a_grant_running_many_commands_is_announced_at_most_three_times_an_hour(web_plant: Plant,
                                                                               webhook: WebhookReceiver) -> None:
    settings = NotifierSettings(targets=Targets(webhook_url=webhook.url))
    grant_id = web_plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01", duration="4h")
    other = web_plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    first = [start(web_plant, grant_id, "exec", command=f"task {n}") for n in range(2)]
    assert deliver_round(state_of(web_plant), settings) == 2
    later = [start(web_plant, grant_id, "exec", command=f"task {n}") for n in range(2, 6)]  # an ansible run
    others = start(web_plant, other)  # another grant's session is not held back by this one's
    deliver_round(state_of(web_plant), settings)
    assert [b["session"]["id"] for b in webhook.bodies] == [*first, later[0], others]
    assert deliver_round(state_of(web_plant), settings) == 0  # the rest stay unannounced, and cost nothing more
    web_plant.clock.advance(SESSION_NOTICE_WINDOW + dt.timedelta(minutes=1))
    assert deliver_round(state_of(web_plant), settings) == 0  # too old to announce now
    fresh = start(web_plant, grant_id, "exec", command="task 7")
    assert deliver_round(state_of(web_plant), settings) == 1
    assert webhook.bodies[-1]["session"]["id"] == fresh

"""Flags live on the web: with the real broker running (its watcher reading the trail every half second), a
flag on a live session shows next to that session on the supervisor's page within 2 s of the event; security
decides it on /flags in Chromium."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import expect

from broker.access import workflow
from broker.inventory import gateways
from broker.models import Identity
from tests.approvals.conftest import confirm_totp, screenshot
from tests.approvals.test_pages import sign_in
from tests.fixtures.broker import BrokerServer, Plant, new_public_key

SignIn = Callable[[Any, str], None]


def _two_places(plant: Plant) -> str:
    """vendor-a connected from two addresses at once; returns the second session's id."""
    grant_id = plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01")
    with plant.session() as session:
        gateway = gateways.authenticate_gateway(session, plant.gateway_token)
        gateways.start_session(session, now=plant.clock.now(), gateway=gateway, grant_id=grant_id, kind="shell",
                               peer="10.0.0.5:50000", command=None, port=None)
    plant.clock.advance(dt.timedelta(seconds=1))
    with plant.session() as session:
        gateway = gateways.authenticate_gateway(session, plant.gateway_token)
        return gateways.start_session(session, now=plant.clock.now(), gateway=gateway, grant_id=grant_id,
                                      kind="shell", peer="198.51.100.7:40000", command=None, port=None).id


def test_a_flag_on_a_live_session_reaches_the_supervisors_page_within_two_seconds(
        web_plant: Plant, web_server: BrokerServer) -> None:
    with httpx.Client(base_url=web_server.url, follow_redirects=False, timeout=10) as client:
        sign_in(client, web_plant, "sup-a1")
        session_id = _two_places(web_plant)
        started = time.monotonic()
        while time.monotonic() - started < 5:
            sessions = client.get("/approvals/live").json()["sessions"]
            if "credential_two_places" in sessions or "while also connected from" in sessions:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    assert "while also connected from 10.0.0.5" in sessions
    assert session_id in sessions
    assert elapsed < 2.0, f"the flag took {elapsed:.2f} s to reach the page"


def test_security_confirms_a_flag_on_the_flags_page(page: Any, web_plant: Plant, web_server: BrokerServer,
                                                    signed_in: SignIn) -> None:
    _two_places(web_plant)
    confirm_totp(web_plant, "sec1")
    signed_in(page, "sec1")
    page.get_by_role("link", name="Flags").click()
    # The page shows what the watcher has raised when it loads: look again until it has caught up (bounded).
    deadline = time.monotonic() + 10
    while not page.locator("section.flag-card").count() and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    card = page.locator("section.flag-card").first
    expect(card).to_contain_text("credential_two_places")
    expect(card).to_contain_text("while also connected from 10.0.0.5")
    screenshot(page, "flags")
    card.get_by_label("Why").fill("the vendor shared the laptop; account reset")
    card.get_by_role("button", name="Confirmed").click()
    expect(page.get_by_role("status")).to_contain_text("confirmed")
    assert web_plant.row("SELECT status, decided_by FROM flags") == ("confirmed", "sec1")


def test_a_flagged_identitys_new_request_shows_its_open_flags_in_the_queue(
        web_plant: Plant, web_server: BrokerServer) -> None:
    _two_places(web_plant)
    with web_plant.session() as session:
        requester = session.query(Identity).filter_by(username="vendor-a").one()
        request_id = workflow.create_request(
            session, now=web_plant.clock.now(), decide_within=web_plant.settings.decide_within, requester=requester,
            asset_name="hmi-01", duration="1h", reason="one more look", ssh=True, ports=[], start=None,
            public_key=new_public_key(), read_only=False).id
    with httpx.Client(base_url=web_server.url, follow_redirects=False, timeout=10) as client:
        sign_in(client, web_plant, "sup-a1")
        deadline = time.monotonic() + 10  # until the watcher (every half second) has read the sessions
        while "flag on vendor-a" not in (queue := client.get("/approvals/live").json()["queue"]) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    card = queue[queue.index(f'id="{request_id}"'):]
    assert "high flag on vendor-a" in card
    assert "connected from 198.51.100.7" in card
    assert "while also connected from 10.0.0.5" in card
    assert 'href="/flags#flag-flg' in card

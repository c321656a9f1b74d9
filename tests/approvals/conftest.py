"""Fixtures for the approvals pages: the real broker app under uvicorn on the real clock, and headless Chromium.

- ``web_plant``  → ``Plant``: the standard plant (``standard_plant``) whose server runs on the system clock,
  so one-time codes from ``pyotp.TOTP(secret).now()`` are accepted (a ``FixedClock`` would need codes of its time)
- ``web_server`` → ``BrokerServer``: ``create_app`` over ``web_plant`` with ``SystemClock``
- ``browser``    → a Playwright Chromium (Debian's ``/usr/bin/chromium``), one per run
- ``page``       → a fresh browser context and page for this test (phone-sized when asked)
- ``signed_in``  → ``signed_in(page, "sup-a1")`` signs a user in through the sign-in form
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from broker.access import workflow
from broker.clock import SystemClock
from broker.inventory import gateways
from broker.models import Identity
from tests.fixtures.broker import BrokerServer, Plant, new_public_key, standard_plant
from tests.fixtures.browser import launch_chromium

# The README's screenshots are retaken on request (`make screenshots`), so an ordinary test run leaves the
# working tree clean; otherwise every page is still rendered and captured, into a temporary folder.
SCREENSHOTS = (Path(__file__).resolve().parents[2] / "docs" / "screenshots" if os.environ.get("GATEPASS_SCREENSHOTS")
               else Path(tempfile.gettempdir()) / "gatepass-screenshots")


@pytest.fixture
def web_plant(tmp_path: Path, database_url: str) -> Iterator[Plant]:
    # The fixed clock starts at the real time: requests made through the domain get sensible timestamps.
    plant = standard_plant(tmp_path / "data", database_url, start=dt.datetime.now(dt.UTC).replace(microsecond=0))
    plant.ensure("vendor-a", "vendor1", "sup-a1", "sup-a2", "sup-b", "sec1")
    try:
        yield plant
    finally:
        plant.close()


@pytest.fixture
def web_server(web_plant: Plant) -> Iterator[BrokerServer]:
    running = BrokerServer(dataclasses.replace(web_plant.settings, clock=SystemClock())).start()
    try:
        yield running
    finally:
        running.stop()


# Package scope, not session: Playwright's sync API keeps an asyncio loop marked as running in this thread
# while it is open, and the anyio-based tests that run after this package need the thread to themselves.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    with launch_chromium() as launched:
        yield launched


def _page(browser: Any, viewport: dict[str, int]) -> Iterator[Any]:
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(10_000)
    opened = context.new_page()
    # Confirmation prompts (lock down, end session) are accepted, as a supervisor who means it would.
    opened.on("dialog", lambda dialog: dialog.accept())
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from _page(browser, {"width": 1280, "height": 900})


@pytest.fixture
def phone_page(browser: Any) -> Iterator[Any]:
    """A phone-sized page (390 x 844 CSS pixels), as a supervisor on the plant floor sees it."""
    yield from _page(browser, {"width": 390, "height": 844})


def make_request(plant: Plant, requester: str, *, asset: str = "hmi-01", duration: str = "1h",
                 reason: str = "replace HMI firmware", ports: list[int] | None = None, ssh: bool = True) -> str:
    """A pending request made through the domain (as `gatepass request` would); returns its id."""
    now = plant.clock.now()
    with plant.session() as session:
        identity = session.scalars(select(Identity).where(Identity.username == requester)).one()
        made = workflow.create_request(
            session, now=now, decide_within=plant.settings.decide_within, requester=identity, asset_name=asset,
            duration=duration, reason=reason, ssh=ssh, ports=ports or [], start=None, public_key=new_public_key())
        return made.id


def open_session(plant: Plant, grant_id: str) -> str:
    """A live session under the grant, reported the way the gateway reports one."""
    with plant.session() as session:
        gateway = gateways.authenticate_gateway(session, plant.gateway_token)
        started = gateways.start_session(session, now=plant.clock.now(), gateway=gateway, grant_id=grant_id,
                                         kind="shell", peer="127.0.0.1:50000", command=None, port=None)
        return started.id


def confirm_totp(plant: Plant, *usernames: str) -> None:
    """Mark users' TOTP secrets as confirmed, as if they had enrolled already (new users start unconfirmed and
    would be offered the enrolment page instead of a refusal when their code is wrong)."""
    with plant.session() as session:
        for username in usernames:
            identity = session.scalars(select(Identity).where(Identity.username == username)).one()
            identity.totp_confirmed_at = plant.clock.now()


def one_time_code(plant: Plant, username: str) -> str:
    """A fresh code for the real clock; waits for the next step if this user already used the current one."""
    return pyotp.TOTP(plant.creds(username).totp_secret).now()


@pytest.fixture
def signed_in(web_plant: Plant, web_server: BrokerServer) -> Callable[[Any, str], None]:
    def sign_in(page: Any, username: str) -> None:
        creds = web_plant.creds(username)
        page.goto(web_server.url + "/sign-in")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(creds.password)
        page.get_by_label("One-time code").fill(one_time_code(web_plant, username))
        # Ignored once the user's codes are set up; needed at their first sign-in.
        page.get_by_label("Enrolment code").fill(creds.enrolment_code)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        assert "/sign-in" not in page.url, page.locator("main").inner_text()

    return sign_in


def screenshot(page: Any, name: str) -> None:
    """Capture the page as NAME.png (into docs/screenshots/ with GATEPASS_SCREENSHOTS=1, for the README)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

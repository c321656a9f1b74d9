"""The identity pages in real headless Chromium: security filters the inventory by flag and suspends an
identity with a reason; an owner keeps one of their identities on the review page; a vendor is refused the
inventory (and the refusal is in the trail). Screenshots land in docs/screenshots/ for the README."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import update

from broker.models import Identity
from tests.approvals.conftest import confirm_totp, screenshot
from tests.fixtures.broker import BrokerServer, Plant

SignIn = Callable[[Any, str], None]


def _robots(plant: Plant) -> None:
    plant.add_user("historian-export", role="vendor", kind="service", owner="sup-a1", sites=["plant-a"])
    plant.add_user("alarm-triage", role="vendor", kind="service", owner="sup-a1", sites=["plant-a"])
    with plant.session() as session:
        # One of them is past its review date: the inventory flags it.
        session.execute(update(Identity).where(Identity.username == "alarm-triage").values(
            attestation_due_at=plant.clock.now() - dt.timedelta(days=2)))


def test_security_filters_the_inventory_and_suspends_an_identity(page: Any, web_plant: Plant,
                                                                  web_server: BrokerServer, signed_in: SignIn) -> None:
    _robots(web_plant)
    confirm_totp(web_plant, "sec1")
    signed_in(page, "sec1")
    page.get_by_role("link", name="Identities").click()
    expect(page.get_by_role("heading", name="Identities", exact=True)).to_be_visible()
    expect(page.locator("tbody")).to_contain_text("historian-export")
    screenshot(page, "identities")

    page.get_by_label("Flag").select_option("attestation_overdue")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("alarm-triage")
    expect(rows.first).to_contain_text("access review overdue")

    rows.first.get_by_label("Reason for suspending alarm-triage").fill("review overdue, owner unreachable")
    rows.first.get_by_role("button", name="Suspend").click()
    expect(page.get_by_role("status")).to_contain_text("Suspended")
    assert web_plant.row("SELECT status, status_reason FROM identities WHERE username = 'alarm-triage'") == (
        "suspended", "review overdue, owner unreachable")
    assert web_plant.audit("identity:lifecycle:suspended")[-1]["actor"] == "sec1"


def test_an_owner_keeps_an_identity_on_the_review_page(page: Any, web_plant: Plant, web_server: BrokerServer,
                                                        signed_in: SignIn) -> None:
    _robots(web_plant)
    confirm_totp(web_plant, "sup-a1")
    signed_in(page, "sup-a1")
    page.get_by_role("link", name="Access reviews").click()
    section = page.locator("section.review", has_text="alarm-triage")
    expect(section).to_contain_text("overdue")
    expect(section).to_contain_text("you own it")
    screenshot(page, "reviews")
    section.get_by_label("What you checked").fill("still triages the alarm log nightly")
    section.get_by_role("button", name="Keep").click()
    expect(page.get_by_role("status")).to_contain_text("Kept")
    assert web_plant.row("SELECT outcome, comment FROM attestations") == (
        "keep", "still triages the alarm log nightly")


def test_a_vendor_is_refused_the_inventory_and_the_refusal_is_recorded(page: Any, web_plant: Plant,
                                                                        web_server: BrokerServer,
                                                                        signed_in: SignIn) -> None:
    confirm_totp(web_plant, "vendor-a")
    signed_in(page, "vendor-a")
    expect(page.get_by_role("link", name="Identities")).to_have_count(0)
    page.goto(web_server.url + "/identities")
    expect(page.locator("main")).to_contain_text("security reviewers and admins")
    refused = web_plant.audit("web:page:refused")
    assert refused[-1]["actor"] == "vendor-a"
    assert refused[-1]["subject"] == "/identities"

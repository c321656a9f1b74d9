"""The supervisor's list of live sessions says which ones wait for a supervisor watching: the policy in force for
the asset (its own, else its site's, with high-criticality assets supervised where the site says so), in Chromium."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect

from broker.inventory import sites
from tests.approvals.conftest import confirm_totp, open_session
from tests.fixtures.broker import Plant

SignIn = Callable[[Any, str], None]
NOTE = "supervision required: the session waits for a supervisor of the site watching"


def test_the_live_sessions_list_marks_sessions_to_supervised_assets(
        page: Any, web_plant: Plant, signed_in: SignIn) -> None:
    with web_plant.session() as session:
        sites.update_site(session, now=web_plant.clock.now(), actor="test", name="plant-a",
                          supervise_high_criticality=True)
        sites.update_asset(session, now=web_plant.clock.now(), actor="test", name="hmi-01", supervision="required")
    supervised = open_session(web_plant, web_plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01"))
    with web_plant.session() as session:
        sites.update_asset(session, now=web_plant.clock.now(), actor="test", name="hmi-b1", supervision="optional")
    plain = open_session(web_plant, web_plant.request_and_approve("vendor1", "sup-b", asset="hmi-b1"))
    confirm_totp(web_plant, "sec1", "sup-a1")
    signed_in(page, "sup-a1")
    expect(page.locator(f"tr#{supervised}")).to_contain_text(NOTE)
    # plant-b's supervisor: an asset set to optional is not marked (and plant-b requires nothing).
    page.context.clear_cookies()
    confirm_totp(web_plant, "sup-b")
    signed_in(page, "sup-b")
    expect(page.locator(f"tr#{plain}")).to_be_visible()
    expect(page.locator(f"tr#{plain}")).not_to_contain_text(NOTE)

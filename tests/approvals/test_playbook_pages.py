"""Playbooks on the web in real headless Chromium: the site's supervisor runs one from the approvals page (with
a confirmation), security reads the run with its steps on the review pages; a supervisor sees no playbook
button for a site that is not theirs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect

from tests.approvals.conftest import confirm_totp, open_session, screenshot
from tests.fixtures.broker import BrokerServer, Plant

SignIn = Callable[[Any, str], None]


def test_a_supervisor_runs_the_ransomware_playbook_and_security_reads_the_run(
        page: Any, browser: Any, web_plant: Plant, web_server: BrokerServer, signed_in: SignIn) -> None:
    grant_id = web_plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01")
    open_session(web_plant, grant_id)
    confirm_totp(web_plant, "sup-a1", "sec1")
    signed_in(page, "sup-a1")
    site = page.locator(".site", has_text="plant-a")
    site.get_by_label("Playbook").select_option("ransomware-suspected")
    site.get_by_label("Why").fill("ransom note on the historian")
    site.get_by_role("button", name="Run playbook").click()
    expect(page.get_by_role("status")).to_contain_text("Playbook run")
    assert web_plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]
    assert web_plant.row("SELECT status FROM identities WHERE username = 'vendor-a'") == ("suspended",)
    assert page.locator(".site", has_text="plant-b").count() == 0  # sup-a1 supervises plant-a only

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    security = context.new_page()
    try:
        signed_in(security, "sec1")
        security.goto(web_server.url + "/review/playbooks")
        row = security.locator("tbody tr").first
        expect(row).to_contain_text("ransomware-suspected v1")
        expect(row).to_contain_text("sup-a1")
        expect(row).to_contain_text("suspend_recent_identities")
        screenshot(security, "playbooks")
    finally:
        context.close()


def test_security_reads_the_posture_report_with_its_charts(page: Any, web_plant: Plant, web_server: BrokerServer,
                                                           signed_in: SignIn) -> None:
    for vendor in ("vendor-a", "vendor1"):
        grant_id = web_plant.request_and_approve(vendor, "sup-a1", asset="hmi-01")
        open_session(web_plant, grant_id)
    confirm_totp(web_plant, "sec1")
    signed_in(page, "sec1")
    page.goto(web_server.url + "/review/posture?days=30")
    expect(page.get_by_role("heading", name="Posture: the last 30 days")).to_be_visible()
    expect(page.get_by_role("img", name="Grants per site")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Sessions outside maintenance windows")
    screenshot(page, "posture")

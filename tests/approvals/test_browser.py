"""The approvals pages in real headless Chromium against the real broker under uvicorn.

Each test drives the pages by their visible labels (the public contract), then checks the database and the
audit trail; screenshots of each page land in docs/screenshots/ for the README.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import select

from broker.access import extensions
from broker.models import Identity
from tests.approvals.conftest import confirm_totp, make_request, open_session, screenshot
from tests.fixtures.broker import BrokerServer, Plant, new_public_key

SignIn = Callable[[Any, str], None]


def test_sign_in_page_shows_the_use_notice_and_the_contract_labels(page: Any, web_server: BrokerServer) -> None:
    page.goto(web_server.url + "/")
    assert page.url.endswith("/sign-in")
    expect(page.get_by_role("heading", name="System use notice")).to_be_visible()
    expect(page.get_by_text("authorised use only")).to_be_visible()
    for label in ("Username", "Password", "One-time code"):
        expect(page.get_by_label(label)).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    screenshot(page, "sign-in")


def test_wrong_code_is_refused_with_the_reason(page: Any, web_plant: Plant, web_server: BrokerServer) -> None:
    confirm_totp(web_plant, "sup-a1")  # enrolled already (an unconfirmed user is offered the QR code instead)
    page.goto(web_server.url + "/sign-in")
    page.get_by_label("Username").fill("sup-a1")
    page.get_by_label("Password").fill(web_plant.creds("sup-a1").password)
    page.get_by_label("One-time code").fill("000000")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("sign-in refused")
    assert web_plant.audit("auth:mfa:failed")[-1]["actor"] == "sup-a1"


def test_supervisor_signs_in_with_totp_and_approves_a_request(page: Any, web_plant: Plant, signed_in: SignIn) -> None:
    signed_in(page, "sup-a1")
    assert page.url.endswith("/approvals")
    expect(page.get_by_text("No pending requests at your plants.")).to_be_visible()
    # A vendor asks (as `gatepass request` would): the open page shows it within the 2 s refresh.
    request_id = make_request(web_plant, "vendor-a", reason="replace HMI firmware")
    card = page.locator(f"article#{request_id}")
    expect(card).to_be_visible(timeout=6_000)
    expect(card).to_contain_text("vendor-a")
    expect(card).to_contain_text("acme-automation")
    expect(card).to_contain_text("replace HMI firmware")
    expect(card).to_contain_text("first access to this asset")
    screenshot(page, "queue")

    card.get_by_label("Shorter window (optional, e.g. 30m)").fill("30m")
    card.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_contain_text("Approval recorded")
    expect(page.locator(f"article#{request_id}")).to_have_count(0)
    assert web_plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0] == "approved"
    approved = web_plant.audit("access:request:approved")
    assert approved[-1]["subject"] == request_id
    assert approved[-1]["actor"] == "sup-a1"
    grant = web_plant.audit("access:grant:created")[-1]["details"]
    assert grant["request"] == request_id
    # Shortened to 30 minutes from approval.
    starts, ends = (dt.datetime.fromisoformat(grant[k]) for k in ("starts_at", "ends_at"))
    assert ends - starts == dt.timedelta(minutes=30)


def test_supervisor_denies_with_a_comment(page: Any, web_plant: Plant, signed_in: SignIn) -> None:
    request_id = make_request(web_plant, "vendor-a")
    signed_in(page, "sup-a1")
    card = page.locator(f"article#{request_id}")
    card.get_by_label("Why deny? (required)").fill("not during the night shift")
    card.get_by_role("button", name="Deny").click()
    expect(page.get_by_role("status")).to_contain_text("Request denied")
    assert web_plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0] == "denied"
    assert web_plant.audit("access:request:denied")[-1]["details"]["comment"] == "not during the night shift"


def test_vendor_requests_from_the_page(page: Any, web_plant: Plant, signed_in: SignIn) -> None:
    key = new_public_key()
    signed_in(page, "vendor-a")
    assert page.url.endswith("/vendor")
    page.get_by_label("Asset").select_option("hmi-01")
    page.get_by_label("TCP ports (comma-separated, e.g. 502, 4840)").fill("502")
    page.get_by_label("Duration (e.g. 30m, 2h)").fill("30m")
    page.get_by_label("Reason").fill("read the alarm log")
    page.get_by_label("SSH public key (.pub)").fill(key + " vendor@laptop")
    screenshot(page, "vendor-request")
    page.get_by_role("button", name="Send request").click()
    expect(page.get_by_role("status")).to_contain_text("Request sent")
    row = web_plant.row("SELECT id, status, ssh, ports, duration_seconds, reason FROM access_requests "
                        "WHERE reason = 'read the alarm log'")
    assert row.status == "pending"
    assert bool(row.ssh)
    assert row.duration_seconds == 1800
    assert "502" in str(row.ports)
    expect(page.locator(f"tr#{row.id}")).to_contain_text("pending")
    # The key is remembered for the next request.
    expect(page.get_by_label("SSH public key (.pub)")).to_have_value(key)


def test_vendor_sees_why_a_request_is_refused(page: Any, web_plant: Plant, signed_in: SignIn) -> None:
    signed_in(page, "vendor-a")
    page.get_by_label("Asset").select_option("hmi-01")
    page.get_by_label("Duration (e.g. 30m, 2h)").fill("3 weeks")
    page.get_by_label("Reason").fill("too long")
    page.get_by_label("SSH public key (.pub)").fill(new_public_key())
    page.get_by_role("button", name="Send request").click()
    expect(page.get_by_role("alert")).to_contain_text("is not a duration")
    # What was typed is still there.
    expect(page.get_by_label("Reason")).to_have_value("too long")
    assert web_plant.count("access_requests") == 0


def test_vendor_gets_copyable_connection_commands(page: Any, web_plant: Plant, signed_in: SignIn) -> None:
    web_plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01", ssh=True, ports=[502])
    signed_in(page, "vendor-a")
    commands = page.locator("ul.commands")
    expect(commands).to_contain_text("gatepass ssh hmi-01")
    expect(commands).to_contain_text(re.compile(r"ssh -p \d+ -i ~/.ssh/id_ed25519 -o CertificateFile=~/.ssh/"
                                                r"id_ed25519-cert.pub hmi-01@"))
    expect(commands).to_contain_text("gatepass tunnel hmi-01 --port 502")
    expect(page.get_by_role("button", name="Copy").first).to_be_visible()
    screenshot(page, "vendor-connect")


def test_supervisor_of_another_plant_neither_sees_nor_decides(page: Any, web_plant: Plant, web_server: BrokerServer,
                                                              signed_in: SignIn) -> None:
    request_id = make_request(web_plant, "vendor-a")
    signed_in(page, "sup-b")
    expect(page.get_by_text("No pending requests at your plants.")).to_be_visible()
    expect(page.locator(f"article#{request_id}")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("plant-a")
    # Even with a valid form token of their own session, a decision on plant-a's request is refused.
    csrf = page.locator("form[action='/sign-out'] input[name=csrf]").get_attribute("value")
    response = page.request.post(f"{web_server.url}/approvals/requests/{request_id}/approve",
                                 form={"csrf": csrf, "comment": "sure"}, max_redirects=0)
    assert response.status == 403
    assert "only approvers of site plant-a" in response.text()
    assert web_plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0] == "pending"
    refused = web_plant.audit("access:decision:refused")[-1]
    assert refused["actor"] == "sup-b"
    assert refused["subject"] == request_id


def test_forged_post_without_csrf_token_is_refused(page: Any, web_plant: Plant, web_server: BrokerServer,
                                                   signed_in: SignIn) -> None:
    request_id = make_request(web_plant, "vendor-a")
    signed_in(page, "sup-a1")
    before = web_plant.last_seq()
    for form in ({"comment": "forged"}, {"comment": "forged", "csrf": "0" * 64}):
        response = page.request.post(f"{web_server.url}/approvals/requests/{request_id}/approve", form=form,
                                     max_redirects=0)
        assert response.status == 403
        assert "did not carry this session&#39;s security token" in response.text()
    assert web_plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0] == "pending"
    events = web_plant.audit(after_seq=before)
    assert [e["action"] for e in events] == ["web:form:csrf_refused"] * 2
    assert events[0]["actor"] == "sup-a1"
    assert events[0]["subject"] == f"/approvals/requests/{request_id}/approve"


def test_lockdown_button_ends_the_sites_grants(page: Any, web_plant: Plant, signed_in: SignIn) -> None:
    grant_a = web_plant.request_and_approve("vendor-a", "sup-a2", asset="hmi-01")
    grant_b = web_plant.request_and_approve("vendor1", "sup-b", asset="hmi-b1")
    open_session(web_plant, grant_a)
    signed_in(page, "sup-a1")
    sessions = page.locator("#sessions")
    expect(sessions.get_by_role("button", name="End session")).to_have_count(1)
    screenshot(page, "live-sessions")

    page.get_by_label("Reason (optional)").fill("ransomware alarm in the office network")
    page.get_by_role("button", name="Lock down plant").click()
    expect(page.get_by_role("status")).to_contain_text("Plant locked down")
    expect(page.get_by_role("button", name="Lift lockdown")).to_be_visible()
    assert web_plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]
    revoked = web_plant.row("SELECT revoked_at, revoked_by FROM grants WHERE id = :id", id=grant_a)
    assert revoked.revoked_at is not None
    assert revoked.revoked_by == "sup-a1"
    assert web_plant.row("SELECT revoked_at FROM grants WHERE id = :id", id=grant_b)[0] is None
    locked = web_plant.audit("containment:site:locked_down")[-1]
    assert locked["actor"] == "sup-a1"
    assert locked["details"]["reason"] == "ransomware alarm in the office network"
    assert web_plant.audit("access:grant:revoked")[-1]["details"]["cause"] == "lockdown"
    assert web_plant.row("SELECT count(*) FROM grant_changes WHERE grant_id = :id", id=grant_a)[0] == 1

    page.get_by_role("button", name="Lift lockdown").click()
    expect(page.get_by_role("status")).to_contain_text("Lockdown lifted")
    assert not web_plant.row("SELECT locked_down FROM sites WHERE name = 'plant-a'")[0]
    assert web_plant.audit("containment:site:lockdown_lifted")[-1]["actor"] == "sup-a1"


def test_end_session_revokes_the_grant(phone_page: Any, web_plant: Plant, signed_in: SignIn) -> None:
    grant_id = web_plant.request_and_approve("vendor-a", "sup-a2", asset="hmi-01")
    open_session(web_plant, grant_id)
    signed_in(phone_page, "sup-a1")
    # On a phone the page must not scroll sideways: everything fits the 390-pixel-wide screen.
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(phone_page, "approvals-phone")
    phone_page.locator("#sessions").get_by_role("button", name="End session").click()
    expect(phone_page.get_by_role("status")).to_contain_text("Access ended")
    expect(phone_page.get_by_text("No live sessions at your plants.")).to_be_visible()
    row = web_plant.row("SELECT revoked_at, revoked_by FROM grants WHERE id = :id", id=grant_id)
    assert row.revoked_at is not None
    assert row.revoked_by == "sup-a1"
    assert web_plant.audit("access:grant:revoked")[-1]["subject"] == grant_id
    # The change is in the outbox the gateways follow (they cut the session within a second).
    assert web_plant.row("SELECT count(*) FROM grant_changes WHERE grant_id = :id", id=grant_id)[0] == 1


def test_security_reviewer_filters_and_sees_the_chain_verified(page: Any, web_plant: Plant, web_server: BrokerServer,
                                                               signed_in: SignIn) -> None:
    web_plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01")
    make_request(web_plant, "vendor1", asset="hmi-b1")
    signed_in(page, "sec1")
    assert page.url.endswith("/review")
    expect(page.get_by_role("status")).to_contain_text("Audit chain verified")
    page.get_by_label("Identity").fill("vendor-a")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#r-requests")).to_contain_text("(1)")
    expect(page.locator("main")).not_to_contain_text("hmi-b1")
    page.get_by_label("Identity").fill("")
    page.get_by_label("Site").fill("plant-a")
    page.get_by_label("Action (prefix, e.g. access:request)").fill("access:")
    page.get_by_role("button", name="Filter").click()
    screenshot(page, "security-review")
    assert "site=plant-a" in page.url
    expect(page.locator("section[aria-labelledby=r-audit]")).to_contain_text("access:request:approved")


def test_review_pages_are_for_security_only(page: Any, web_server: BrokerServer, signed_in: SignIn) -> None:
    signed_in(page, "sup-a1")
    response = page.goto(web_server.url + "/review")
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("for security reviewers and admins")


def test_pending_extension_appears_without_a_reload(page: Any, web_plant: Plant, signed_in: SignIn) -> None:
    grant_id = web_plant.request_and_approve("vendor-a", "sup-a2", asset="hmi-01")
    signed_in(page, "sup-a1")
    expect(page.get_by_text("No pending extensions at your plants.")).to_be_visible()
    with web_plant.session() as session:
        vendor = session.scalars(select(Identity).where(Identity.username == "vendor-a")).one()
        extension_id = extensions.request_extension(session, now=web_plant.clock.now(), requester=vendor,
                                                    grant_id=grant_id, duration="30m", reason="firmware slow").id
    card = page.locator(f"article#{extension_id}")
    expect(card).to_be_visible(timeout=6_000)  # the 2 s refresh brought it in
    expect(card).to_contain_text("firmware slow")
    card.get_by_role("button", name="Approve extension").click()
    expect(page.get_by_role("status")).to_contain_text("Extension approved")

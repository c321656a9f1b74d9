"""Company sign-in on the web pages, in real headless Chromium, through a real OpenID provider
(tests/fixtures/oidc_provider.py) to the real broker under uvicorn: the sign-in page's link, the provider's page,
the way back; a supervisor of plant-a whose provider reports MFA lands on /approvals and approves; without MFA
the same page refuses approving, denying and lockdown with the reason, audited; a directory move changes the
role at the next sign-in."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from broker.clock import SystemClock
from broker.identity.oidc_config import OidcSettings, parse_groups
from tests.approvals.conftest import make_request, screenshot
from tests.fixtures.broker import BrokerServer, Plant
from tests.fixtures.oidc_provider import OidcProvider


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    started = OidcProvider(tmp_path_factory.mktemp("oidc") / "provider.log").start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def oidc_server(web_plant: Plant, provider: OidcProvider) -> Iterator[BrokerServer]:
    settings = OidcSettings(issuer=provider.issuer, client_id="gatepass-web", client_secret="web-secret-at-the-idp",
                            groups=parse_groups("ot-sup-plant-a=supervisor:plant-a;ot-security=security"))
    running = BrokerServer(dataclasses.replace(web_plant.settings, clock=SystemClock(), oidc=settings)).start()
    try:
        yield running
    finally:
        running.stop()


def sign_in_with_company_account(page: Any, server: BrokerServer, sub: str) -> None:
    page.goto(server.url + "/sign-in")
    page.get_by_role("link", name="Sign in with your company account").click()
    # The provider's own page (it asks only for the subject; a real one asks for a password and a second factor).
    page.get_by_placeholder("sub").fill(sub)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_load_state()


def test_a_supervisor_with_mfa_lands_on_the_approvals_and_approves(
        page: Any, web_plant: Plant, provider: OidcProvider, oidc_server: BrokerServer) -> None:
    provider.set_person("sub-olga", preferred_username="olga", email="olga@corp.example",
                        groups=["ot-sup-plant-a"], amr=["pwd", "hwk"])
    page.goto(oidc_server.url + "/sign-in")
    expect(page.get_by_role("link", name="Sign in with your company account")).to_be_visible()
    expect(page.get_by_label("Username")).to_be_visible()  # vendors' local sign-in is still there, unchanged
    screenshot(page, "sign-in-company")

    request_id = make_request(web_plant, "vendor-a", reason="replace HMI firmware")
    sign_in_with_company_account(page, oidc_server, "sub-olga")
    page.wait_for_url("**/approvals")
    expect(page.locator(".who")).to_have_text("olga")
    card = page.locator(f"article#{request_id}")
    expect(card).to_contain_text("vendor-a")
    card.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_contain_text("Approval recorded")
    assert web_plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0] == "approved"
    assert web_plant.audit("access:request:approved")[-1]["actor"] == "olga"
    login = web_plant.audit("auth:login:succeeded")[-1]
    assert login["actor"] == "olga"
    assert login["details"]["method"] == "oidc"
    assert login["details"]["mfa"] is True


def test_without_mfa_the_supervisor_sees_the_queue_but_approving_denying_and_lockdown_are_refused(
        page: Any, web_plant: Plant, provider: OidcProvider, oidc_server: BrokerServer) -> None:
    provider.set_person("sub-piet", preferred_username="piet", groups=["ot-sup-plant-a"], amr=["pwd"])
    request_id = make_request(web_plant, "vendor-a", reason="replace HMI firmware")
    sign_in_with_company_account(page, oidc_server, "sub-piet")
    expect(page.get_by_role("heading", name="No second factor")).to_be_visible()
    screenshot(page, "company-sign-in-without-mfa")
    page.get_by_role("link", name="Continue").click()
    page.wait_for_url("**/approvals")
    card = page.locator(f"article#{request_id}")
    expect(card).to_contain_text("replace HMI firmware")  # looking is allowed

    seq = web_plant.last_seq()
    card.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("alert")).to_contain_text("you cannot approve requests without a second factor")
    screenshot(page, "approve-refused-without-mfa")
    page.go_back()
    page.reload()
    card = page.locator(f"article#{request_id}")
    card.get_by_label("Why deny? (required)").fill("not today")
    card.get_by_role("button", name="Deny").click()
    expect(page.get_by_role("alert")).to_contain_text("you cannot deny requests without a second factor")
    page.go_back()
    page.reload()
    page.get_by_role("button", name="Lock down plant").first.click()
    expect(page.get_by_role("alert")).to_contain_text("you cannot lock down or lift plant-a without a second factor")

    assert web_plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0] == "pending"
    refusals = [e for e in web_plant.audit(after_seq=seq) if e["outcome"] == "refused"]
    assert [e["action"] for e in refusals] == ["access:decision:refused", "access:decision:refused",
                                               "containment:site:refused"]
    assert {e["actor"] for e in refusals} == {"piet"}
    assert all(e["details"]["mfa"] is False for e in refusals)


def test_a_move_out_of_the_supervisors_group_drops_the_role_at_the_next_sign_in(
        page: Any, web_plant: Plant, provider: OidcProvider, oidc_server: BrokerServer) -> None:
    provider.set_person("sub-quin", preferred_username="quin", groups=["ot-sup-plant-a"], amr=["mfa"])
    sign_in_with_company_account(page, oidc_server, "sub-quin")
    page.wait_for_url("**/approvals")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/sign-in")

    provider.set_person("sub-quin", preferred_username="quin", groups=["ot-security"], amr=["mfa"])
    sign_in_with_company_account(page, oidc_server, "sub-quin")
    page.wait_for_url("**/review")
    expect(page.get_by_role("link", name="Approvals")).to_have_count(0)
    page.goto(oidc_server.url + "/approvals")
    expect(page.get_by_role("alert")).to_contain_text("no supervisor role")
    changed = web_plant.audit("auth:oidc:roles_changed")[-1]
    assert changed["subject"] == "quin"
    assert changed["details"]["removed"] == ["supervisor:plant-a"]
    assert changed["details"]["added"] == ["security"]

    # Out of every mapped group: the sign-in is refused with the reason, on the sign-in page.
    provider.set_person("sub-quin", preferred_username="quin", groups=["canteen"], amr=["mfa"])
    page.goto(oidc_server.url + "/review")
    page.get_by_role("button", name="Sign out").click()
    sign_in_with_company_account(page, oidc_server, "sub-quin")
    expect(page.get_by_role("alert")).to_contain_text("none of the groups that give a Gatepass role")
    assert "/sign-in" in page.url

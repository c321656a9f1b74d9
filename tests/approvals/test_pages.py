"""The approvals pages over plain HTTP (httpx against the real app under uvicorn): headers, cookies, CSRF on
the sign-in form, sign-out, and bad input answered with a 4xx page that says why — never a 500."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pyotp
import pytest
from sqlalchemy import select, text

from approvals.web import DEFAULT_USE_NOTICE, SESSION_COOKIE
from assembly.settings import load
from broker.access import extensions
from broker.inventory import sites
from broker.models import Identity
from tests.approvals.conftest import make_request
from tests.fixtures.broker import BrokerServer, Plant, drop_audit_triggers

CSRF_FIELD = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@pytest.fixture
def client(web_server: BrokerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_server.url, follow_redirects=False, timeout=10) as made:
        yield made


def sign_in(client: httpx.Client, plant: Plant, username: str) -> str:
    """Sign in through the form; returns the page's CSRF token for later posts."""
    form_page = client.get("/sign-in")
    csrf = CSRF_FIELD.search(form_page.text)
    assert csrf is not None
    creds = plant.creds(username)
    answer = client.post("/sign-in", data={"csrf": csrf.group(1), "username": username, "password": creds.password,
                                           "code": pyotp.TOTP(creds.totp_secret).now(),
                                           "enrolment_code": creds.enrolment_code})
    assert answer.status_code == 303, answer.text
    page = client.get(answer.headers["location"])
    token = CSRF_FIELD.search(page.text)
    assert token is not None
    return token.group(1)


def test_pages_carry_the_security_headers(client: httpx.Client) -> None:
    page = client.get("/sign-in")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text  # no inline script: the one script is /static/app.js
    assert client.get("/static/app.js").status_code == 200


def test_session_cookie_is_httponly_and_strict(client: httpx.Client, web_plant: Plant) -> None:
    form_page = client.get("/sign-in")
    csrf = CSRF_FIELD.search(form_page.text)
    assert csrf is not None
    creds = web_plant.creds("sup-a1")
    answer = client.post("/sign-in", data={"csrf": csrf.group(1), "username": "sup-a1", "password": creds.password,
                                           "code": pyotp.TOTP(creds.totp_secret).now(),
                                           "enrolment_code": creds.enrolment_code})
    assert answer.status_code == 303
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain http on loopback; behind TLS the cookie is Secure


def test_sign_in_without_the_form_token_is_refused(client: httpx.Client, web_plant: Plant) -> None:
    creds = web_plant.creds("sup-a1")
    answer = client.post("/sign-in", data={"username": "sup-a1", "password": creds.password,
                                           "code": pyotp.TOTP(creds.totp_secret).now(),
                                           "enrolment_code": creds.enrolment_code})
    assert answer.status_code == 403
    assert SESSION_COOKIE not in answer.cookies
    assert web_plant.audit("web:form:csrf_refused")[-1]["subject"] == "/sign-in"
    assert web_plant.audit("auth:login:succeeded") == []


def test_sign_out_revokes_the_session(client: httpx.Client, web_plant: Plant) -> None:
    csrf = sign_in(client, web_plant, "sup-a1")
    token = client.cookies[SESSION_COOKIE]
    answer = client.post("/sign-out", data={"csrf": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in"
    assert web_plant.audit("auth:token:revoked")[-1]["actor"] == "sup-a1"
    # The old cookie is worth nothing now, on the pages and on the API.
    stale = httpx.Client(base_url=str(client.base_url), cookies={SESSION_COOKIE: token})
    with stale:
        assert stale.get("/approvals").headers["location"] == "/sign-in"
        assert stale.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_strangers_are_sent_to_sign_in(client: httpx.Client) -> None:
    for path in ("/", "/approvals", "/approvals/live", "/vendor", "/review"):
        answer = client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/sign-in"


def test_bad_input_gets_a_page_that_says_why(client: httpx.Client, web_plant: Plant) -> None:
    request_id = make_request(web_plant, "vendor-a")
    csrf = sign_in(client, web_plant, "sup-a1")
    cases = [
        (f"/approvals/requests/{request_id}/deny", {"csrf": csrf, "comment": " "}, 400, "is required"),
        (f"/approvals/requests/{request_id}/approve", {"csrf": csrf, "shorten_to": "soon"}, 400, "is not a duration"),
        (f"/approvals/requests/{request_id}/approve", {"csrf": csrf, "comment": "x" * 1001}, 400, "too long"),
        (f"/approvals/requests/{request_id}/approve", {"csrf": csrf, "comment": "nul\x00"}, 400, "control characters"),
        ("/approvals/requests/req-nothere/approve", {"csrf": csrf}, 404, "there is no request"),
        ("/approvals/grants/grt-nothere/end", {"csrf": csrf}, 404, "no grant"),
        ("/approvals/sites/plant-b/lockdown", {"csrf": csrf}, 403, "only supervisors of plant-b"),
        ("/approvals/sites/plant-a/lift", {"csrf": csrf}, 409, "not locked down"),
        ("/vendor/requests", {"csrf": csrf}, 403, "for vendor accounts"),
    ]
    for path, form, status, words in cases:
        answer = client.post(path, data=form)
        assert answer.status_code == status, (path, answer.text)
        assert words in answer.text, (path, answer.text)
        assert answer.headers["content-type"].startswith("text/html")
    # A body that is not a form at all.
    answer = client.post(f"/approvals/requests/{request_id}/approve", content=b"\xff\xfe",
                         headers={"content-type": "multipart/form-data; boundary=x"})
    assert answer.status_code in (400, 403)
    assert web_plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0] == "pending"
    assert web_plant.audit("containment:site:refused")[-1]["actor"] == "sup-a1"


def test_live_lists_endpoint_gives_escaped_fragments(client: httpx.Client, web_plant: Plant) -> None:
    make_request(web_plant, "vendor-a", reason="<script>alert(1)</script>")
    sign_in(client, web_plant, "sup-a1")
    answer = client.get("/approvals/live")
    assert answer.status_code == 200
    body = answer.json()
    # The pending extensions refresh with the queue (a deliberate addition to the live endpoint).
    assert set(body) == {"version", "queue", "extensions", "sessions", "sites"}
    assert "<script>alert(1)</script>" not in body["queue"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body["queue"]
    assert answer.headers["cache-control"] == "no-store"


def test_use_notice_is_configurable() -> None:
    assert load({"GATEPASS_USE_NOTICE": "Property of ACME Water. Monitored."}).web.use_notice == (
        "Property of ACME Water. Monitored.")
    assert load({"GATEPASS_USE_NOTICE": "  "}).web.use_notice == DEFAULT_USE_NOTICE


def test_grant_access_now_in_one_step(client: httpx.Client, web_plant: Plant) -> None:
    earlier = make_request(web_plant, "vendor-a", reason="earlier job")  # puts vendor-a's SSH key on file
    csrf = sign_in(client, web_plant, "sup-a1")
    answer = client.post("/approvals/grant-now", data={"csrf": csrf, "vendor": "vendor-a", "asset": "plc-01",
                                                       "ports": "502", "duration": "30m", "reason": "pump trip"})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/approvals?done=granted"
    row = web_plant.row("SELECT r.id, r.status, r.public_key, g.id AS grant_id FROM access_requests r "
                        "JOIN grants g ON g.request_id = r.id WHERE r.reason = 'pump trip'")
    assert row.status == "approved"
    assert row.public_key == web_plant.row("SELECT public_key FROM access_requests WHERE id = :id", id=earlier)[0]
    made = web_plant.audit("access:request:made_by_approver")[-1]
    assert made["actor"] == "sup-a1"
    assert made["subject"] == row.id
    assert web_plant.audit("access:request:approved")[-1]["actor"] == "sup-a1"


def test_grant_access_now_keeps_the_two_approver_rule(client: httpx.Client, web_plant: Plant) -> None:
    make_request(web_plant, "vendor-a")
    csrf = sign_in(client, web_plant, "sup-a1")
    answer = client.post("/approvals/grant-now", data={"csrf": csrf, "vendor": "vendor-a", "asset": "rtu-01",
                                                       "ssh": "on", "duration": "1h", "reason": "firmware"})
    assert answer.headers["location"] == "/approvals?done=granted-first"
    row = web_plant.row("SELECT id, status FROM access_requests WHERE reason = 'firmware'")
    assert row.status == "pending"
    assert web_plant.count("grants") == 0
    assert web_plant.count("decisions", f"WHERE request_id = '{row.id}' AND verdict = 'approve'") == 1


def test_grant_access_now_refusals_say_why(client: httpx.Client, web_plant: Plant) -> None:
    csrf = sign_in(client, web_plant, "sup-a1")
    base = {"csrf": csrf, "ssh": "on", "duration": "1h", "reason": "x"}
    cases = [
        ({"vendor": "vendor-a", "asset": "hmi-01"}, 409, "no SSH public key on file"),
        ({"vendor": "nobody", "asset": "hmi-01"}, 404, "no user named"),
        ({"vendor": "sup-a2", "asset": "hmi-01"}, 400, "not a vendor account"),
        ({"vendor": "vendor-a", "asset": "hmi-b1"}, 403, "only approvers of site plant-b"),
        ({"vendor": "vendor-a", "asset": "hmi-01", "ports": "http"}, 400, "is not a TCP port"),
    ]
    for fields, status, words in cases:
        answer = client.post("/approvals/grant-now", data={**base, **fields})
        assert answer.status_code == status, (fields, answer.text)
        assert words in answer.text, (fields, answer.text)
    assert web_plant.count("access_requests") == 0
    assert web_plant.count("grants") == 0


def test_vendor_cancels_a_pending_request(client: httpx.Client, web_plant: Plant) -> None:
    request_id = make_request(web_plant, "vendor-a")
    csrf = sign_in(client, web_plant, "vendor-a")
    answer = client.post(f"/vendor/requests/{request_id}/cancel", data={"csrf": csrf})
    assert answer.headers["location"] == "/vendor?done=cancelled"
    assert web_plant.row("SELECT status FROM access_requests WHERE id = :id", id=request_id)[0] == "cancelled"
    again = client.post(f"/vendor/requests/{request_id}/cancel", data={"csrf": csrf})
    assert again.status_code == 409
    assert "already cancelled" in again.text


def test_live_lists_include_pending_extensions(client: httpx.Client, web_plant: Plant) -> None:
    sign_in(client, web_plant, "sup-a1")
    before = client.get("/approvals/live").json()
    assert "No pending extensions" in before["extensions"]
    grant_id = web_plant.request_and_approve("vendor-a", "sup-a2", asset="hmi-01")
    with web_plant.session() as session:
        vendor = session.scalars(select(Identity).where(Identity.username == "vendor-a")).one()
        asked = extensions.request_extension(session, now=web_plant.clock.now(), requester=vendor,
                                             grant_id=grant_id, duration="30m", reason="<b>firmware</b> slow")
        extension_id = asked.id
    after = client.get("/approvals/live").json()
    assert after["version"] != before["version"]
    assert f'id="{extension_id}"' in after["extensions"]
    assert "&lt;b&gt;firmware&lt;/b&gt; slow" in after["extensions"]  # escaped like every fragment
    assert "Approve extension" in after["extensions"]


def test_supervisor_sees_the_sites_policy(client: httpx.Client, web_plant: Plant) -> None:
    with web_plant.session() as session:
        sites.update_site(session, now=web_plant.clock.now(), actor="test", name="plant-a",
                              maintenance_windows=["Sat 06:00-14:00"], transfers="download_only")
    sign_in(client, web_plant, "sup-a1")
    shown = client.get("/approvals/live").json()["sites"]
    assert "Maintenance windows (UTC): Sat 06:00-14:00" in shown
    assert "file transfers: download only" in shown


def test_the_review_page_shows_a_broken_chain(client: httpx.Client, web_plant: Plant) -> None:
    # Someone with the database owner's rights drops the append-only triggers and edits a past event.
    drop_audit_triggers(web_plant)
    with web_plant.engine.begin() as connection:
        connection.execute(text("UPDATE audit_events SET actor = 'nobody' WHERE seq = 2"))
    sign_in(client, web_plant, "sec1")
    page = client.get("/review")
    assert page.status_code == 200
    assert "Audit chain BROKEN" in page.text
    assert "rechecked at most every 30 s" in page.text

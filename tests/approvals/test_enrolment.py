"""TOTP enrolment on the web: a person whose secret is new (or was reset) signs in with username, password and
the one-time enrolment code, sees the secret as a QR code (and as text), and confirms it with a code; the
password alone never shows it. Over plain HTTP (cookies, the signed single-use pending state, throttling) and in
real Chromium (the page a new user sees, screenshot "enrol")."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pyotp
import pytest
from playwright.sync_api import expect
from sqlalchemy import text

from approvals.signin_routes import ENROL_COOKIE, ENROL_PATH
from approvals.web import SESSION_COOKIE
from broker.access import oversight, workflow
from broker.identity import identities
from broker.inventory import sites
from broker.models import Identity
from tests.approvals.conftest import confirm_totp, make_request, screenshot
from tests.fixtures.broker import BrokerServer, Plant, new_public_key

CSRF_FIELD = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
SECRET_TEXT = re.compile(r'<code class="secret" id="totp-secret">([A-Z2-7 ]+)</code>')


@pytest.fixture
def client(web_server: BrokerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_server.url, follow_redirects=False, timeout=10) as made:
        yield made


def csrf_of(page: httpx.Response) -> str:
    found = CSRF_FIELD.search(page.text)
    assert found is not None, page.text
    return found.group(1)


def post_sign_in(client: httpx.Client, username: str, password: str, code: str = "",
                 enrolment_code: str = "") -> httpx.Response:
    csrf = csrf_of(client.get("/sign-in"))
    return client.post("/sign-in", data={"csrf": csrf, "username": username, "password": password, "code": code,
                                         "enrolment_code": enrolment_code})


def open_enrolment(client: httpx.Client, plant: Plant, username: str,
                   enrolment_code: str | None = None) -> tuple[str, str]:
    """Sign in with password and enrolment code, without a one-time code; returns the enrolment form's CSRF
    token and the secret the page shows."""
    creds = plant.creds(username)
    answer = post_sign_in(client, username, creds.password,
                          enrolment_code=creds.enrolment_code if enrolment_code is None else enrolment_code)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == ENROL_PATH
    page = client.get(ENROL_PATH)
    assert page.status_code == 200, page.text
    secret = SECRET_TEXT.search(page.text)
    assert secret is not None
    return csrf_of(page), secret.group(1).replace(" ", "")


def confirmed_at(plant: Plant, username: str) -> Any:
    return plant.row("SELECT totp_confirmed_at FROM identities WHERE username = :u", u=username)[0]


def test_a_new_user_is_shown_a_qr_code_and_confirms_it(client: httpx.Client, web_plant: Plant) -> None:
    creds = web_plant.creds("vendor-a")
    # Written as handed over, in lower case with spaces: the code is read forgivingly.
    answer = post_sign_in(client, "vendor-a", creds.password,
                          enrolment_code=" " + creds.enrolment_code.lower().replace("-", " ") + " ")
    assert answer.status_code == 303
    assert answer.headers["location"] == ENROL_PATH  # no secret and no token in any URL
    assert SESSION_COOKIE not in answer.cookies  # not signed in yet
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(ENROL_COOKIE + "="))
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert f"Path={ENROL_PATH}" in cookie
    assert creds.totp_secret not in cookie

    page = client.get(ENROL_PATH)
    assert page.status_code == 200
    assert 'src="data:image/svg+xml' in page.text  # the QR code, drawn on the server
    secret = SECRET_TEXT.search(page.text)
    assert secret is not None
    assert secret.group(1).replace(" ", "") == creds.totp_secret
    assert page.headers["cache-control"] == "no-store"
    assert web_plant.audit("auth:mfa:enrolment_shown")[-1]["actor"] == "vendor-a"

    confirm = client.post(ENROL_PATH, data={"csrf": csrf_of(page), "code": pyotp.TOTP(creds.totp_secret).now()})
    assert confirm.status_code == 303, confirm.text
    assert confirm.headers["location"] == "/vendor"
    assert SESSION_COOKIE in confirm.cookies
    assert confirmed_at(web_plant, "vendor-a") is not None
    actions = [e["action"] for e in web_plant.audit() if e["actor"] == "vendor-a"]
    assert actions[-3:] == ["auth:enrolment_code:used", "auth:mfa:enrolled", "auth:login:succeeded"]
    assert client.get("/vendor").status_code == 200
    # Used up in the same transaction that bound the factor.
    assert web_plant.row("SELECT enrolment_code_hash, enrolment_code_expires_at FROM identities "
                         "WHERE username = 'vendor-a'") == (None, None)


def test_the_password_alone_never_shows_or_binds_the_secret(client: httpx.Client, web_plant: Plant) -> None:
    """DESIGN invariant 4: whoever has only the password (a phished one, a shoulder-surfed one) never sees the
    secret and so can never bind their own authenticator to the account."""
    creds = web_plant.creds("vendor-a")
    wrong_password = post_sign_in(client, "vendor-a", "not-the-password", enrolment_code=creds.enrolment_code)
    answers = {
        "no enrolment code given": post_sign_in(client, "vendor-a", creds.password),
        "wrong enrolment code": post_sign_in(client, "vendor-a", creds.password, enrolment_code="AAAA-BBBB-CCCC"),
        # Even a right one-time code (computed from the secret, which an attacker would not have) does not bind.
        "no enrolment code given ": post_sign_in(client, "vendor-a", creds.password,
                                                 code=pyotp.TOTP(creds.totp_secret).now()),
    }
    for answer in [*answers.values(), wrong_password]:
        assert answer.status_code == 401
        assert "sign-in refused: wrong username, password or one-time code" in answer.text
        assert ENROL_COOKIE not in answer.cookies
        assert SESSION_COOKIE not in answer.cookies
        assert creds.totp_secret not in answer.text
    assert web_plant.audit("auth:mfa:enrolment_shown") == []
    assert confirmed_at(web_plant, "vendor-a") is None
    refused = [e["details"]["reason"] for e in web_plant.audit("auth:enrolment_code:refused")]
    assert refused == [reason.strip() for reason in answers]
    # The refusals look alike from outside: the form comes back the same as for a wrong password.
    assert len({re.sub(CSRF_FIELD, "", a.text) for a in [*answers.values(), wrong_password]}) == 1


def test_an_expired_enrolment_code_opens_nothing(web_plant: Plant, client: httpx.Client) -> None:
    creds = web_plant.creds("vendor-a")
    with web_plant.engine.begin() as connection:
        connection.execute(text("UPDATE identities SET enrolment_code_expires_at = :t WHERE username = 'vendor-a'"),
                           {"t": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)})
    answer = post_sign_in(client, "vendor-a", creds.password, enrolment_code=creds.enrolment_code)
    assert answer.status_code == 401
    assert ENROL_COOKIE not in answer.cookies
    assert web_plant.audit("auth:enrolment_code:refused")[-1]["details"]["reason"] == "enrolment code expired"


def test_a_user_name_with_a_line_break_is_refused_on_the_form(client: httpx.Client, web_plant: Plant) -> None:
    answer = post_sign_in(client, "vendor-a\nadmin signed in", "x")
    assert answer.status_code == 400
    assert "user names contain no control characters" in answer.text
    event = web_plant.audit("auth:login:failed")[-1]
    assert event["actor"] == "vendor-a\\u000aadmin signed in"
    # An escape sequence (refused by the form reader before any sign-in runs) is a refused sign-in all the same.
    answer = post_sign_in(client, "vendor-a\x1b[2J", "x")
    assert answer.status_code == 400
    assert "user names contain no control characters" in answer.text
    assert web_plant.audit("auth:login:failed")[-1]["actor"] == "vendor-a\\u001b[2J"
    # Not from a genuine form (no CSRF token): refused as a forgery would be, and nothing in the trail.
    before = web_plant.last_seq()
    forged = client.post("/sign-in", data={"username": "vendor-a\x1b[2J", "password": "x"})
    assert forged.status_code == 400
    assert web_plant.last_seq() == before


def test_the_pending_state_is_single_use(client: httpx.Client, web_plant: Plant) -> None:
    csrf, secret = open_enrolment(client, web_plant, "vendor-a")
    token = client.cookies[ENROL_COOKIE]
    assert client.post(ENROL_PATH, data={"csrf": csrf, "code": pyotp.TOTP(secret).now()}).status_code == 303
    # The same pending state again (a copied cookie, a replayed form): refused, nothing issued.
    replay = httpx.Client(base_url=str(client.base_url), cookies={ENROL_COOKIE: token}, follow_redirects=False)
    with replay:
        answer = replay.post(ENROL_PATH, data={"csrf": csrf, "code": pyotp.TOTP(secret).now()})
        assert answer.status_code == 401
        assert "expired or was already used" in answer.text
        assert SESSION_COOKIE not in answer.cookies
        assert replay.get(ENROL_PATH).status_code == 401


def test_wrong_codes_on_the_enrolment_page_are_throttled(client: httpx.Client, web_plant: Plant) -> None:
    csrf, _secret = open_enrolment(client, web_plant, "vendor-a")
    used = client.cookies[ENROL_COOKIE]
    answer = client.post(ENROL_PATH, data={"csrf": csrf, "code": "000000"})
    assert answer.status_code == 303
    assert answer.headers["location"] == ENROL_PATH + "?retry=1"
    assert client.cookies[ENROL_COOKIE] != used  # a fresh pending state; the used one is dead
    [failure] = web_plant.audit("auth:mfa:failed")
    assert failure["details"]["step"] == "enrolment"
    page = client.get(answer.headers["location"])
    assert "That code did not match" in page.text
    for _ in range(web_plant.settings.sign_in.account_source_max_failures - 1):
        answer = client.post(ENROL_PATH, data={"csrf": csrf_of(page), "code": "000000"})
        if answer.status_code == 303:
            page = client.get(answer.headers["location"])
    assert answer.status_code == 401
    assert "too many wrong codes from here" in answer.text
    [block] = [e for e in web_plant.audit("auth:login:throttled") if "until" in e["details"]]
    assert (block["actor"], block["details"]["scope"]) == ("vendor-a", "account_source")
    assert confirmed_at(web_plant, "vendor-a") is None
    # Held back from here: the sign-in form does not show the QR code either, and says when to try again.
    creds = web_plant.creds("vendor-a")
    again = post_sign_in(client, "vendor-a", creds.password, enrolment_code=creds.enrolment_code)
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) > 0
    assert ENROL_COOKIE not in again.cookies


def test_no_enrolment_without_the_password_or_for_confirmed_users(client: httpx.Client, web_plant: Plant) -> None:
    answer = post_sign_in(client, "vendor-a", "wrong password",
                          enrolment_code=web_plant.creds("vendor-a").enrolment_code)
    assert answer.status_code == 401
    assert ENROL_COOKIE not in answer.cookies
    assert web_plant.audit("auth:mfa:enrolment_shown") == []
    confirm_totp(web_plant, "vendor1")
    # Confirmed: the enrolment code is ignored, and without a one-time code the answer is a refusal.
    answer = post_sign_in(client, "vendor1", web_plant.creds("vendor1").password,
                          enrolment_code=web_plant.creds("vendor1").enrolment_code)
    assert answer.status_code == 401
    assert "sign-in refused" in answer.text
    assert ENROL_COOKIE not in answer.cookies


def test_forged_or_tampered_pending_state_is_refused(client: httpx.Client, web_plant: Plant) -> None:
    csrf, secret = open_enrolment(client, web_plant, "vendor-a")
    token = client.cookies[ENROL_COOKIE]
    # Another user's id under the same signature, and a made-up token.
    other = web_plant.row("SELECT id FROM identities WHERE username = 'sup-a1'")[0]
    for forged in (f"{other}." + token.split(".", 1)[1], "1.9999999999.abc.def", "junk"):
        with httpx.Client(base_url=str(client.base_url), cookies={ENROL_COOKIE: forged},
                          follow_redirects=False) as stranger:
            assert stranger.get(ENROL_PATH).status_code == 401
    # Without the form token: a forgery, audited, nothing confirmed.
    answer = client.post(ENROL_PATH, data={"code": pyotp.TOTP(secret).now()})
    assert answer.status_code == 403
    assert confirmed_at(web_plant, "vendor-a") is None
    assert csrf  # the real form token was there to use


def test_a_reset_sends_the_user_through_enrolment_again(client: httpx.Client, web_plant: Plant) -> None:
    confirm_totp(web_plant, "vendor-a")
    with web_plant.session() as session:
        issued = identities.reset_totp(session, vault=web_plant.vault, now=web_plant.clock.now(), actor="test",
                                       username="vendor-a")
    # The code issued with the account opens nothing any more; the new one does.
    old = post_sign_in(client, "vendor-a", web_plant.creds("vendor-a").password,
                       enrolment_code=web_plant.creds("vendor-a").enrolment_code)
    assert old.status_code == 401
    assert ENROL_COOKIE not in old.cookies
    _csrf, shown = open_enrolment(client, web_plant, "vendor-a", enrolment_code=issued.enrolment_code)
    assert shown == issued.totp_secret


# --- in the browser -------------------------------------------------------------------------------------


def test_new_supervisor_enrols_with_the_qr_code_in_the_browser(page: Any, web_plant: Plant,
                                                               web_server: BrokerServer) -> None:
    web_plant.add_user("sup-new", role="supervisor", sites=["plant-a"], organisation="Plant A")
    creds = web_plant.users["sup-new"]
    assert creds is not None
    page.goto(web_server.url + "/sign-in")
    page.get_by_label("Username").fill("sup-new")
    page.get_by_label("Password").fill(creds.password)
    page.get_by_role("button", name="Sign in").click()  # the password alone: refused, no QR code
    expect(page.get_by_role("alert")).to_contain_text("sign-in refused")
    expect(page.get_by_role("img", name=re.compile("QR code"))).to_have_count(0)
    assert creds.totp_secret not in page.content()

    page.get_by_label("Password").fill(creds.password)
    page.get_by_label("Enrolment code").fill(creds.enrolment_code)
    page.get_by_role("button", name="Sign in").click()  # One-time code left empty: first sign-in

    expect(page.get_by_role("heading", name="Set up your one-time codes")).to_be_visible()
    assert page.url.endswith(ENROL_PATH)
    qr = page.get_by_role("img", name=re.compile("QR code"))
    expect(qr).to_be_visible()
    assert qr.get_attribute("src").startswith("data:image/svg+xml")
    assert qr.evaluate("img => img.naturalWidth") > 0  # the browser could decode it (CSP allows data: images)
    shown = page.locator("#totp-secret").inner_text().replace(" ", "")
    assert shown == creds.totp_secret
    screenshot(page, "enrol")

    page.get_by_label("One-time code").fill(pyotp.TOTP(shown).now())
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(re.compile(r"/approvals$"))
    expect(page.get_by_role("heading", name="Pending requests")).to_be_visible()
    assert confirmed_at(web_plant, "sup-new") is not None


def test_queue_flags_a_request_outside_the_maintenance_window(page: Any, web_plant: Plant,
                                                              signed_in: Any) -> None:
    # A window on another weekday than today: a request that starts at approval (now) is outside it.
    other_day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[(dt.datetime.now(dt.UTC).weekday() + 3) % 7]
    with web_plant.session() as session:
        sites.update_site(session, now=web_plant.clock.now(), actor="test", name="plant-a",
                              maintenance_windows=[f"{other_day} 06:00-14:00"])
    request_id = make_request(web_plant, "vendor-a", duration="1h")
    signed_in(page, "sup-a1")
    card = page.locator(f"article#{request_id}")
    expect(card).to_contain_text("outside the site's maintenance window")
    # Whole day, every day: the same request is inside, and the flag goes away on the next refresh.
    with web_plant.session() as session:
        sites.update_site(session, now=web_plant.clock.now(), actor="test", name="plant-a",
                              maintenance_windows=["daily 00:00-24:00"])
    expect(card).not_to_contain_text("outside the site's maintenance window", timeout=6_000)


def test_queue_flag_uses_the_requested_start(web_plant: Plant) -> None:
    """A request with a start inside the window is not flagged even though it is asked for outside it."""
    now = web_plant.clock.now()
    window_day = (now + dt.timedelta(days=2)).strftime("%a")
    start = (now + dt.timedelta(days=2)).replace(hour=7, minute=0, second=0)
    with web_plant.session() as session:
        sites.update_site(session, now=now, actor="test", name="plant-a",
                              maintenance_windows=[f"{window_day} 06:00-14:00"])
        vendor = session.query(Identity).filter_by(username="vendor-a").one()
        inside = workflow.create_request(
            session, now=now, decide_within=web_plant.settings.decide_within, requester=vendor,
            asset_name="hmi-01", duration="2h", reason="planned", ssh=True, ports=[], start=start,
            public_key=new_public_key())
        inside_id = inside.id
    outside_id = make_request(web_plant, "vendor-a", asset="rtu-01", duration="1h")
    with web_plant.session() as session:
        supervisor = session.query(Identity).filter_by(username="sup-a1").one()
        flags = {item.request.id: item.flags for item in oversight.pending_queue(session, supervisor=supervisor,
                                                                                   now=now)}
    assert "outside the site's maintenance window" not in flags[inside_id]
    assert "outside the site's maintenance window" in flags[outside_id]

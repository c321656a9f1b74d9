"""Pages and actions refused to a signed-in person are in the audit trail (IEC 62443-3-3 SR 2.8): a vendor opening
the review pages, a supervisor ending another site's access or deciding twice; and free text on the decision pages
shows control characters as visible escapes. Real app under uvicorn, plain HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.approvals.conftest import make_request
from tests.approvals.test_pages import sign_in
from tests.fixtures.broker import BrokerServer, Plant


@pytest.fixture
def client(web_server: BrokerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_server.url, follow_redirects=False, timeout=10) as made:
        yield made


def test_a_vendor_opening_the_review_pages_is_audited(client: httpx.Client, web_plant: Plant) -> None:
    sign_in(client, web_plant, "vendor-a")
    seq = web_plant.last_seq()

    answer = client.get("/review/sessions")

    assert answer.status_code == 403
    [event] = web_plant.audit("web:page:refused", after_seq=seq)
    assert (event["actor"], event["subject"], event["outcome"]) == ("vendor-a", "/review/sessions", "refused")
    assert event["details"]["source"] == "127.0.0.1"
    assert "security reviewers" in event["details"]["reason"]


def test_ending_access_at_another_site_and_deciding_twice_are_audited(client: httpx.Client,
                                                                      web_plant: Plant) -> None:
    request_id = make_request(web_plant, "vendor-a")
    csrf = sign_in(client, web_plant, "sup-b")
    seq = web_plant.last_seq()

    other_site = client.post(f"/approvals/requests/{request_id}/approve", data={"csrf": csrf})
    no_grant = client.post("/approvals/grants/grt-nothere/end", data={"csrf": csrf})

    assert (other_site.status_code, no_grant.status_code) == (403, 404)
    refused = web_plant.audit(after_seq=seq)
    actions = [(e["action"], e["actor"]) for e in refused]
    # The domain audits the decision refusal itself; the web adds only what the domain did not record.
    assert actions == [("access:decision:refused", "sup-b"), ("web:page:refused", "sup-b")]
    assert refused[1]["subject"] == "/approvals/grants/grt-nothere/end"


def test_the_supervisor_and_vendor_pages_show_controls_in_free_text_as_escapes(client: httpx.Client,
                                                                               web_plant: Plant) -> None:
    """DESIGN invariant 10 on the decision pages: a reason or command with ESC, C1 or U+2028 (the API refuses C0
    in reasons, not C1 or U+2028; a gateway reports commands as typed) shows as visible escapes, never raw."""
    make_request(web_plant, "vendor-a", reason="fix pump\x85now\u2028\x1b[31mred")
    sign_in(client, web_plant, "sup-a1")

    pages = [client.get("/approvals").text, client.get("/approvals/live").text]

    for page in pages:
        assert not RAW_CONTROL.search(page), RAW_CONTROL.findall(page)
    assert "fix pump\\x85now\\u2028\\x1b[31mred" in pages[0]


RAW_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")

"""The live watch view draws a session's frames with the recordings player's terminal (player.js's
``GatepassScreen``: ``apply`` and ``draw``), so what a supervisor watches is what a reviewer later plays and what
the transcript (broker.recordings.terminal, in Python) says: output, output that was not text, an escape split
across frames, wide characters and a resize, in Chromium, from frames posted the way a gateway posts them."""

from __future__ import annotations

import time
from typing import Any

import httpx
from playwright.sync_api import expect

from broker.api.watch_routes import FEED_HEADER
from broker.app import API_PREFIX
from broker.recordings import asciicast, terminal
from tests.approvals.conftest import open_session
from tests.approvals.test_review_sessions import SignIn, cast_bytes
from tests.fixtures.broker import BrokerServer, Plant

FRAMES: list[list[object]] = [
    [0.1, "o", "before\r\n"],
    [0.2, "ob", "AAECAwQ="], [0.3, "ob", "/w=="],  # 5 and 1 bytes that were not UTF-8
    [0.4, "o", "ab\x1b["], [0.5, "o", "2Dc"],  # a cursor move cut across two frames
    [0.6, "i", "typed input changes nothing on the screen"],
    [0.7, "o", "café 漢字 🙂 ok\r\n\x1b[1;4H!"],
    [0.8, "r", "30x6"],
    [0.9, "o", "\x1b[6;1Hafter the resize a long line wraps at thirty\r\nend"],
]


def feed_token(server: BrokerServer, plant: Plant, session_id: str) -> str:
    """What the gateway is told on its live link when somebody watches one of its sessions: the feed's token."""
    headers = {"Authorization": f"Bearer {plant.gateway_token}"}
    with httpx.Client(base_url=server.url, timeout=10) as client, \
            client.stream("GET", f"{API_PREFIX}/gateway/live", headers=headers) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "watch":
                data = httpx.Response(200, content=line.removeprefix("data: ")).json()
                if data["session_id"] == session_id:
                    return str(data["feed"])
    raise AssertionError("the gateway's live link ended without a watch for the session")


def test_the_watch_view_draws_frames_as_the_player_and_the_transcript_do(
        page: Any, web_plant: Plant, web_server: BrokerServer, signed_in: SignIn) -> None:
    session_id = open_session(web_plant, web_plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01"))
    signed_in(page, "sup-a2")
    page.goto(f"{web_server.url}/approvals/sessions/{session_id}/watch")
    expect(page.locator(".watch")).to_have_attribute("data-state", "live")

    token = feed_token(web_server, web_plant, session_id)
    posted = httpx.post(f"{web_server.url}{API_PREFIX}/gateway/live/{session_id}/frames", headers={FEED_HEADER: token},
                        json={"frames": FRAMES}, timeout=10)
    assert posted.status_code == 200, posted.text
    assert posted.json() == {"watching": True}

    expected = terminal.play(asciicast.parse_cast(cast_bytes(FRAMES, width=80, height=24).decode().splitlines()))
    wanted = expected.text(scrollback=False).split("\n")
    # What the comparison is about is on the screen at the end: a binary marker, the resized width's wrap.
    assert "[binary output: 1 bytes]" in wanted
    assert "raps at thirty" in wanted
    screen = page.locator("[data-watch=screen]")
    expect(screen).to_contain_text("end")

    rows = [line.rstrip() for line in str(screen.text_content()).split("\n")]
    while rows and not rows[-1]:
        rows.pop()
    assert rows == wanted
    assert screen.evaluate("element => element.style.width") == "30ch"  # drawn at the resized width
    expect(screen.locator("span.cursor")).to_have_count(1)

    # The session ends: the view says so and closes its stream, and the broker audits the leave (in a task of its
    # own) before the test's server stops, so no request is cut off in the middle of its transaction.
    ended = httpx.post(f"{web_server.url}{API_PREFIX}/gateway/live/{session_id}/frames", headers={FEED_HEADER: token},
                       json={"frames": [], "ended": True}, timeout=10)
    assert ended.status_code == 200, ended.text
    expect(page.locator(".watch")).to_have_attribute("data-state", "ended")
    expect(screen).to_contain_text("raps at thirty")  # the last screen stays
    deadline = time.monotonic() + 10
    while not web_plant.audit("live:watch:left"):
        assert time.monotonic() < deadline, "the leave was not audited within 10 s"
        time.sleep(0.05)

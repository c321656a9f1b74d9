"""Security review of sessions in real Chromium: search by the text in recordings, a session's page with its
file transfers and the live state of its recording, playback that reproduces what the terminal showed, and
the pages closed to everyone but security reviewers and admins (including the recording file itself)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import expect
from sqlalchemy import text

from approvals.web import CONTENT_SECURITY_POLICY
from broker.access import oversight
from broker.inventory import gateways
from broker.recordings import asciicast, store, terminal
from tests.approvals.conftest import screenshot
from tests.fixtures.broker import BrokerServer, Plant

SignIn = Callable[[Any, str], None]

WIDTH, HEIGHT = 30, 6
# A shell session with what a terminal must get right: a wrapped long line, scrolling past the screen, CR
# overwriting a progress line, cursor left + erase to end of line, colours (ignored), cursor up/right and
# absolute positioning (H) that draw over earlier lines, and a long idle gap that playback shortens.
EVENTS: list[list[object]] = [
    [0.05, "o", "\x1b[?2004hoperator@hmi-01:~$ "],
    [0.4, "o", "cat plant.conf\r\n"],
    [0.5, "o", "line=7\r\nspeed=1200\r\nmode=AUTO\r\n"],
    [0.8, "o", "progress 10%\rprogress 100%\r\n"],
    [1.0, "o", "pump P-101: stale\x1b[5D\x1b[Kok\r\n"],
    [1.2, "o", "\x1b[1;31mALARM\x1b[0m cleared\r\n"],
    [9.0, "o", "\x1b[3A\x1b[4C#\x1b[3B\r\x1b[1;1H>\x1b[6;1H"],
    [9.3, "o", "operator@hmi-01:~$ exit\r\nlogout\r\n"],
    [9.4, "m", "exit 0"],
]
# What a 30x6 terminal shows at the end, worked out by hand: ">" went onto "speed=1200", which scrolled away.
SCREEN_AT_END = ["prog#ess 100%", "pump P-101: ok", "ALARM cleared", "operator@hmi-01:~$ exit", "logout", ""]
# Everything the terminal showed, scrollback included (the plain-text transcript page).
TRANSCRIPT = ["operator@hmi-01:~$ cat plant.c", "onf", "line=7", ">peed=1200", "mode=AUTO", *SCREEN_AT_END[:-1]]


def cast_bytes(events: list[list[object]], *, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    header = {"version": 2, "width": width, "height": height, "timestamp": 1795000000,
              "env": {"TERM": "xterm-256color"}, "title": "hmi-01",
              "gatepass": {"kind": "shell", "command": None, "input_recorded": False}}
    return ("\n".join(json.dumps(line) for line in [header, *events]) + "\n").encode()


def recorded_session(plant: Plant, *, events: list[list[object]] = EVENTS, requester: str = "vendor-a",
                     asset: str = "hmi-01", approver: str = "sup-a1") -> str:
    """A shell session reported the way the gateway reports one, with its .cast file and two file events."""
    grant_id = plant.request_and_approve(requester, approver, asset=asset)
    data = cast_bytes(events)
    with plant.session() as session:
        gateway = gateways.authenticate_gateway(session, plant.gateway_token)
        session_id = gateways.start_session(session, now=plant.clock.now(), gateway=gateway, grant_id=grant_id,
                                            kind="shell", peer="192.0.2.10:50000", command=None, port=None).id
        gateways.record_session_event(session, now=plant.clock.now(), gateway=gateway, session_id=session_id,
                                      kind="file_transferred", detail={
                                          "protocol": "sftp", "path": "/var/log/plant/alarms.log", "mode": "read",
                                          "bytes_read": 48213, "bytes_written": 0, "sha256_read": "ab" * 32,
                                          "size": 48213, "status": "ok"})
        gateways.record_session_event(session, now=plant.clock.now(), gateway=gateway, session_id=session_id,
                                      kind="file_refused", detail={
                                          "protocol": "sftp", "operation": "open", "path": "/opt/plant/fw-2.4.bin",
                                          "reason": "site plant-a allows downloads only: writing "
                                                    "/opt/plant/fw-2.4.bin is refused"})
    directory = store.recordings_dir(plant.settings)
    directory.mkdir(exist_ok=True)
    (directory / f"{session_id}.cast").write_bytes(data)
    with plant.session() as session:
        gateway = gateways.authenticate_gateway(session, plant.gateway_token)
        gateways.end_session(session, now=plant.clock.now(), gateway=gateway, session_id=session_id,
                             reason="client_closed", bytes_in=40, bytes_out=len(data), detail=None,
                             recording={"name": f"{session_id}.cast", "sha256": hashlib.sha256(data).hexdigest(),
                                        "bytes": len(data)})
    return session_id


def screen_lines(page: Any) -> list[str]:
    content = page.locator("[data-player=screen]").text_content()
    return [line.rstrip() for line in content.split("\n")]


def test_reviewer_finds_a_session_by_its_transcript_and_plays_it_to_the_end(
        page: Any, web_plant: Plant, web_server: BrokerServer, signed_in: SignIn) -> None:
    wanted = recorded_session(web_plant)
    recorded_session(web_plant, events=[[0.1, "o", "nothing of interest\r\n"]])
    signed_in(page, "sec1")
    page.get_by_role("link", name="Search sessions and play recordings →").click()

    page.get_by_label("Text in transcript").fill("p-101: STALE")  # case-insensitive, and drawn over later
    page.get_by_role("button", name="Search").click()

    results = page.locator("section[aria-labelledby=s-results]")
    expect(results).to_contain_text("Sessions found (1)")
    expect(results.get_by_role("link", name=wanted)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("newest 2 session(s)")
    screenshot(page, "review-sessions")

    results.get_by_role("link", name=wanted).click()
    expect(page.get_by_role("heading", name=f"Session {wanted}")).to_be_visible()
    expect(page.locator("#recording-status")).to_have_text("intact")
    transfers = page.locator("section[aria-labelledby=r-transfers]")
    expect(transfers).to_contain_text("/var/log/plant/alarms.log")
    expect(transfers).to_contain_text("bytes_read=48213")
    expect(transfers.locator("tr.outcome-refused")).to_contain_text("/opt/plant/fw-2.4.bin")
    player = page.locator(".player")
    expect(player).to_have_attribute("data-state", "ready")
    assert screen_lines(page) == [""] * HEIGHT

    page.get_by_role("button", name="Speed 4x").click()
    expect(page.get_by_role("button", name="Speed 4x")).to_have_attribute("aria-pressed", "true")
    page.get_by_role("button", name="Play").click()
    # 9.4 s of recording with the 7.8 s idle gap cut to 2 s is about 3.6 s: at 4x under a second.
    expect(player).to_have_attribute("data-state", "ended", timeout=5_000)
    assert screen_lines(page) == SCREEN_AT_END
    expect(page.locator("[data-player=status]")).to_have_text("Played to the end.")
    screenshot(page, "review-playback")

    # Keyboard: focus the screen, Space plays again from the start, End jumps to the end.
    page.locator("[data-player=screen]").focus()
    page.keyboard.press("Space")
    page.keyboard.press("End")
    expect(player).to_have_attribute("data-state", "ended")
    assert screen_lines(page) == SCREEN_AT_END

    page.get_by_role("link", name="Plain-text transcript").click()
    expect(page.get_by_role("heading", name=f"Transcript of session {wanted}")).to_be_visible()
    assert page.locator("pre.transcript").text_content().split("\n") == TRANSCRIPT


def test_jump_to_end_shows_the_final_screen_without_waiting(page: Any, web_plant: Plant, web_server: BrokerServer,
                                                           signed_in: SignIn) -> None:
    session_id = recorded_session(web_plant)
    signed_in(page, "sec1")
    page.goto(f"{web_server.url}/review/sessions/{session_id}")
    expect(page.locator(".player")).to_have_attribute("data-state", "ready")

    page.get_by_role("button", name="Jump to end").click()

    expect(page.locator(".player")).to_have_attribute("data-state", "ended")
    assert screen_lines(page) == SCREEN_AT_END
    # The Python screen behind the transcript page and the player agree on the same recording.
    assert terminal.play(asciicast.parse_cast(cast_bytes(EVENTS).decode().splitlines())).text(
        scrollback=False).split("\n") == SCREEN_AT_END[:-1]


def test_an_edited_or_missing_recording_shows_on_the_session_page(page: Any, web_plant: Plant,
                                                                  web_server: BrokerServer, signed_in: SignIn) -> None:
    edited, missing = recorded_session(web_plant), recorded_session(web_plant)
    directory = store.recordings_dir(web_plant.settings)
    path = directory / f"{edited}.cast"
    path.write_bytes(path.read_bytes().replace(b"ALARM", b"ALARN"))
    (directory / f"{missing}.cast").unlink()
    signed_in(page, "sec1")

    page.goto(f"{web_server.url}/review/sessions/{edited}")
    expect(page.locator("#recording-status")).to_have_text("edited")
    expect(page.get_by_text("it was changed after the session")).to_be_visible()
    page.goto(f"{web_server.url}/review/sessions/{missing}")
    expect(page.locator("#recording-status")).to_have_text("missing")
    expect(page.locator(".player")).to_have_count(0)
    assert page.request.get(f"{web_server.url}/review/sessions/{missing}/recording").status == 404


def test_a_recording_still_on_its_gateway_says_so_instead_of_missing(page: Any, web_plant: Plant,
                                                                     web_server: BrokerServer,
                                                                     signed_in: SignIn) -> None:
    session_id = recorded_session(web_plant)
    (store.recordings_dir(web_plant.settings) / f"{session_id}.cast").unlink()  # never here: a separate gateway's
    with web_plant.engine.begin() as connection:
        connection.execute(text("UPDATE sessions SET recording_on_gateway = :yes WHERE id = :id"),
                           {"yes": True, "id": session_id})
    signed_in(page, "sec1")

    page.goto(f"{web_server.url}/review/sessions/{session_id}")

    expect(page.locator("#recording-status")).to_have_text("on gateway")
    expect(page.get_by_text("Still on gateway embedded, which sends it here after the session ends")).to_be_visible()
    expect(page.locator(".player")).to_have_count(0)


def test_the_search_says_when_it_stopped_at_its_bound(page: Any, web_plant: Plant, web_server: BrokerServer,
                                                      signed_in: SignIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oversight, "TRANSCRIPT_SCAN_LIMIT", 2)
    oldest = recorded_session(web_plant)
    web_plant.clock.advance(dt.timedelta(minutes=1))
    recorded_session(web_plant, events=[[0.1, "o", "one\r\n"]])
    web_plant.clock.advance(dt.timedelta(minutes=1))
    recorded_session(web_plant, events=[[0.1, "o", "two\r\n"]])
    signed_in(page, "sec1")

    page.goto(f"{web_server.url}/review/sessions?text=P-101")

    expect(page.locator("section[aria-labelledby=s-results]")).to_contain_text("Sessions found (0)")
    expect(page.get_by_role("status")).to_contain_text("More sessions match the other filters than the 2 searched")
    # Narrowing the time range brings the oldest one within the bound.
    page.goto(f"{web_server.url}/review/sessions?text=P-101&until="
              f"{(web_plant.clock.now() - dt.timedelta(seconds=30)).strftime('%Y-%m-%dT%H:%M:%S')}")
    expect(page.locator("section[aria-labelledby=s-results]").get_by_role("link", name=oldest)).to_be_visible()


@pytest.mark.parametrize("username", ["vendor-a", "sup-a1"])
def test_vendors_and_supervisors_cannot_open_session_reviews_or_recordings(
        page: Any, web_plant: Plant, web_server: BrokerServer, signed_in: SignIn, username: str) -> None:
    session_id = recorded_session(web_plant)
    signed_in(page, username)
    for path in ("/review/sessions", f"/review/sessions/{session_id}", f"/review/sessions/{session_id}/recording",
                 f"/review/sessions/{session_id}/transcript"):
        response = page.request.get(web_server.url + path, max_redirects=0)
        assert response.status == 403, (path, response.status)
        assert "for security reviewers and admins" in response.text()
        assert "pump P-101" not in response.text()


def test_strangers_are_sent_to_sign_in(page: Any, web_plant: Plant, web_server: BrokerServer) -> None:
    session_id = recorded_session(web_plant)
    response = page.request.get(f"{web_server.url}/review/sessions/{session_id}/recording", max_redirects=0)
    assert response.status == 303
    assert response.headers["location"] == "/sign-in"


def test_the_recording_endpoint_serves_the_file_and_refuses_paths(page: Any, web_plant: Plant,
                                                                  web_server: BrokerServer,
                                                                  signed_in: SignIn) -> None:
    session_id = recorded_session(web_plant)
    signed_in(page, "sec1")

    served = page.request.get(f"{web_server.url}/review/sessions/{session_id}/recording")
    assert served.status == 200
    assert served.headers["content-type"] == "application/x-asciicast"
    assert served.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert served.body() == cast_bytes(EVENTS)
    # Who watched which recording is itself in the trail.
    viewed = web_plant.audit("review:recording:viewed")
    assert [(event["actor"], event["subject"], event["details"]) for event in viewed] == [
        ("sec1", session_id, {"view": "recording"})]

    database = web_plant.settings.data_dir / "gatepass.db"
    for attempt in ("..%2Fgatepass.db", "..%2F..%2Fdata%2Fgatepass.db", "%2E%2E", f"{session_id}%2F..%2F..",
                    "..%5Cgatepass.db"):
        response = page.request.get(f"{web_server.url}/review/sessions/{attempt}/recording", max_redirects=0)
        assert response.status in (400, 404), (attempt, response.status)
        assert b"SQLite format" not in response.body()
    # A database row pointing outside the recordings directory is refused too, not followed.
    with web_plant.engine.begin() as connection:
        connection.execute(text("UPDATE sessions SET recording_name = '../gatepass.db' WHERE id = :id"),
                           {"id": session_id})
    refused = page.request.get(f"{web_server.url}/review/sessions/{session_id}/recording")
    assert refused.status == 400
    assert "is not a recording name" in refused.text()
    if database.exists():
        assert b"SQLite format" not in refused.body()
    page.goto(f"{web_server.url}/review/sessions/{session_id}")
    expect(page.locator("#recording-status")).to_have_text("edited")


# Edge cases of the VT100 subset; the player (JavaScript) and the transcript (Python) must agree on each.
EDGE_CASES: dict[str, list[list[object]]] = {
    "wrap at the exact width, then CR": [[0.1, "o", "0123456789" * 3 + "\rX\r\nnext"]],
    "tabs near the right edge": [[0.1, "o", "abc\tdef\tghi\tjkl\tmno\tpq\r\n\tx"]],
    "cursor positions beyond the screen": [[0.1, "o", "top\x1b[99;99HZ\x1b[0;0HA\x1b[5G\x1b[2;3fB"]],
    "erase below, above and all": [[0.1, "o", "l1\r\nl2\r\nl3\r\nl4\x1b[2;2H\x1b[J"],
                                   [0.2, "o", "\x1b[4;1Hl4 again\x1b[3;1H\x1b[1J+"]],
    "erase to start of line and whole line": [[0.1, "o", "abcdef\x1b[3D\x1b[1Kq\r\nxyz\x1b[2K!"]],
    "backspace at column 0 and after a wrap": [[0.1, "o", "\b\bab\bc\r\n" + "w" * 30 + "\b\bZ"]],
    "UTF-8: accents, CJK, an emoji": [[0.1, "o", "café 漢字 🙂 ok\r\n€"]],
    "many lines scroll off": [[0.1, "o", "".join(f"line {n}\r\n" for n in range(40)) + "last"]],
    "a resize": [[0.1, "o", "before\r\n"], [0.2, "r", "12x3"], [0.3, "o", "after the resize wraps\r\nend"]],
    "escapes: OSC title, charset, keypad, private modes": [
        [0.1, "o", "\x1b]0;title\x07\x1b(B\x1b=\x1b[?1049h\x1b[?25lvisible\x1b7\x1b8 text\x1b[0m"]],
    "an escape split across two events": [[0.1, "o", "ab\x1b["], [0.2, "o", "2Dc"]],
    "binary output between text (base64)": [[0.1, "o", "tar:"], [0.2, "ob", "AAECAwQ="], [0.3, "ob", "/w=="],
                                            [0.4, "o", "done"]],
}


def test_player_and_transcript_agree_on_terminal_edge_cases(page: Any, web_plant: Plant, web_server: BrokerServer,
                                                            signed_in: SignIn) -> None:
    sessions = {name: recorded_session(web_plant, events=events) for name, events in EDGE_CASES.items()}
    signed_in(page, "sec1")
    for name, session_id in sessions.items():
        page.goto(f"{web_server.url}/review/sessions/{session_id}")
        page.get_by_role("button", name="Jump to end").click()
        expect(page.locator(".player")).to_have_attribute("data-state", "ended")
        rows = screen_lines(page)
        while rows and not rows[-1]:
            rows.pop()
        cast = asciicast.parse_cast(cast_bytes(EDGE_CASES[name]).decode().splitlines())
        assert rows == terminal.play(cast).text(scrollback=False).split("\n"), name


# --- control characters from the trail and from recordings are shown as escapes (DESIGN invariant 10) --------

ESC_FILE = "/tmp/fw\x1b[2J\nreal.bin\u2028fake.bin"
BEL_COMMAND = "echo ready\x07; cat /etc/plant.conf\x9b31m"
HOSTILE_REASON = "not allowed\r\nsecond line\u2029\x85\ud800\u202egnp.exe"
SHOWN = {ESC_FILE: "/tmp/fw\\x1b[2J\\nreal.bin\\u2028fake.bin",
         BEL_COMMAND: "echo ready\\x07; cat /etc/plant.conf\\x9b31m",
         HOSTILE_REASON: "not allowed\\r\\nsecond line\\u2029\\x85\\ud800\\u202egnp.exe"}
RAW = ("\x1b", "\x07", "\x9b", "\x85", "\u2028", "\u2029", "\u202e", "\r", "\ud800")


def hostile_session(plant: Plant) -> str:
    """An exec session whose command carries BEL and a C1 CSI, a file named with ESC, a newline and U+2028, a
    refusal reason with a lone surrogate (the gateway reports what the client sent), and output with U+2028."""
    grant_id = plant.request_and_approve("vendor-a", "sup-a1", asset="hmi-01")
    with plant.session() as session:
        gateway = gateways.authenticate_gateway(session, plant.gateway_token)
        session_id = gateways.start_session(session, now=plant.clock.now(), gateway=gateway, grant_id=grant_id,
                                            kind="exec", peer="192.0.2.10:50000", command=BEL_COMMAND, port=None).id
        gateways.record_session_event(session, now=plant.clock.now(), gateway=gateway, session_id=session_id,
                                      kind="file_transferred", detail={
                                          "protocol": "sftp", "path": ESC_FILE, "mode": "read", "bytes_read": 3,
                                          "bytes_written": 0, "size": 3, "status": "ok"})
        gateways.record_session_event(session, now=plant.clock.now(), gateway=gateway, session_id=session_id,
                                      kind="file_refused", detail={"protocol": "sftp", "operation": "open",
                                                                   "path": ESC_FILE, "reason": HOSTILE_REASON})
    data = cast_bytes([[0.1, "o", "ready\r\nline\u2028same line\r\n"]])
    directory = store.recordings_dir(plant.settings)
    directory.mkdir(exist_ok=True)
    (directory / f"{session_id}.cast").write_bytes(data)
    with plant.session() as session:
        gateway = gateways.authenticate_gateway(session, plant.gateway_token)
        gateways.end_session(session, now=plant.clock.now(), gateway=gateway, session_id=session_id,
                             reason="client_closed", bytes_in=1, bytes_out=len(data), detail=None,
                             recording={"name": f"{session_id}.cast", "sha256": hashlib.sha256(data).hexdigest(),
                                        "bytes": len(data)})
    return session_id


def test_control_characters_in_file_names_and_commands_show_as_escapes(
        page: Any, web_plant: Plant, web_server: BrokerServer, signed_in: SignIn) -> None:
    session_id = hostile_session(web_plant)
    signed_in(page, "sec1")

    page.goto(f"{web_server.url}/review/sessions/{session_id}")

    commands = page.locator("section[aria-labelledby=r-commands]")
    expect(commands.locator("code")).to_have_text(SHOWN[BEL_COMMAND])
    transfers = page.locator("section[aria-labelledby=r-transfers]")
    expect(transfers.locator("tr.outcome-ok code").nth(1)).to_have_text(SHOWN[ESC_FILE])
    expect(transfers.locator("tr.outcome-refused")).to_contain_text(SHOWN[ESC_FILE])
    expect(transfers.locator("tr.outcome-refused")).to_contain_text("reason=" + SHOWN[HOSTILE_REASON])
    expect(page.locator("section[aria-labelledby=r-events]")).to_contain_text(SHOWN[ESC_FILE])
    screenshot(page, "review-session-escapes")

    # Every page that shows the trail or a recording: not one raw control in what the browser was sent.
    for path in (f"/review/sessions/{session_id}", "/review", "/review/sessions",
                 f"/review/sessions?text={quote('cat /etc/plant')}", f"/review/sessions/{session_id}/transcript"):
        answer = page.request.get(web_server.url + path)
        assert answer.status == 200, (path, answer.status)
        html = answer.body().decode("utf-8")  # strict: a lone surrogate could not even have been sent
        assert [char for char in RAW if char in html] == [], path
    review = page.request.get(f"{web_server.url}/review").text()
    assert SHOWN[ESC_FILE] in review
    assert SHOWN[BEL_COMMAND] in review
    found = page.request.get(f"{web_server.url}/review/sessions").text()
    assert SHOWN[BEL_COMMAND] in found

    # The transcript keeps its lines and shows the separator; the player gets the recording as it was.
    page.goto(f"{web_server.url}/review/sessions/{session_id}/transcript")
    assert page.locator("pre.transcript").text_content().split("\n") == ["ready", "line\\u2028same line"]
    served = page.request.get(f"{web_server.url}/review/sessions/{session_id}/recording").text()
    assert asciicast.parse_cast(served.splitlines()).events[0][2] == "ready\r\nline\u2028same line\r\n"

"""The session review page in Chromium: a recording's retention (days, whose policy, the date it may be purged), its
evidence holds ("on hold as evidence (run X / by Y: reason)", a reason's control characters shown as escapes), and
a recording purged under retention (when, and no player)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from playwright.sync_api import expect

from broker.db import make_session_factory
from broker.inventory import sites
from broker.recordings import holds, purge, store
from tests.approvals.test_review_sessions import SignIn, recorded_session
from tests.fixtures.broker import BrokerServer, Plant


def test_the_session_page_shows_retention_holds_and_a_purge(page: Any, web_plant: Plant, web_server: BrokerServer,
                                                            signed_in: SignIn) -> None:
    held, plain, purged = recorded_session(web_plant), recorded_session(web_plant), recorded_session(web_plant)
    ended_at = web_plant.clock.now()
    with web_plant.session() as session:
        sites.update_site(session, now=ended_at, actor="test", name="plant-a", recording_retention_days=30)
        holds.hold_for_run(session, now=ended_at, actor="sec1", run_id="run-0a1b2c3d", session_ids=[held],
                           reason="playbook rogue-ai-agent: agent wrote to plc-07")
        holds.hold(session, now=ended_at, actor=holds.Actor("cli:root"), session_id=held,
                   reason="legal\x1b[2J hold")
    web_plant.clock.advance(dt.timedelta(days=31))
    report = purge.purge(make_session_factory(web_plant.engine), now=web_plant.clock.now(), default_days=0,
                         directory=store.recordings_dir(web_plant.settings))
    assert sorted(c.session_id for c in report.purged) == sorted([plain, purged])
    signed_in(page, "sec1")

    page.goto(f"{web_server.url}/review/sessions/{held}")
    evidence = page.locator("#recording-evidence")
    expect(evidence).to_contain_text("on hold as evidence (run run-0a1b2c3d / by sec1: playbook rogue-ai-agent: "
                                     "agent wrote to plc-07")
    expect(evidence).to_contain_text("(by cli:root: legal\\x1b[2J hold")
    until = (ended_at + dt.timedelta(days=30)).strftime("%Y-%m-%d %H:%M UTC")
    expect(page.locator("#recording-retention")).to_have_text(
        f"30 days (site policy): may be purged after {until}, but on hold")
    expect(page.locator("#recording-status")).to_have_text("intact")
    expect(page.locator(".player")).to_have_count(1)

    page.goto(f"{web_server.url}/review/sessions/{purged}")
    expect(page.locator("#recording-status")).to_have_text("purged")
    expect(page.get_by_text("Purged under retention on")).to_be_visible()
    expect(page.locator("#recording-evidence")).to_have_text("not on hold")
    expect(page.locator(".player")).to_have_count(0)
    gone = page.request.get(f"{web_server.url}/review/sessions/{purged}/recording")
    assert gone.status == 404
    assert "was purged under retention on" in gone.text()

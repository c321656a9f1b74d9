"""The sign-in page's use notice says that sessions may be watched without notice while any site allows silent
observers (issue 13: "that policy is shown at sign-in in the use notice"), without naming the site, and stops saying
so once no site does; the anonymous page asks the database at most once per cache interval."""

from __future__ import annotations

import httpx
from sqlalchemy import event

from approvals.use_notice import SILENT_OBSERVERS_LINE, SilentObserversNotice
from broker.db import make_session_factory
from broker.inventory import sites
from tests.fixtures.broker import BrokerServer, Plant


def _allow(plant: Plant, site: str, allowed: bool) -> None:
    with plant.session() as session:
        sites.update_site(session, now=plant.clock.now(), actor="test", name=site, silent_observers=allowed)


def test_the_sign_in_page_says_so_while_a_site_allows_silent_observers(web_plant: Plant,
                                                                        web_server: BrokerServer) -> None:
    def page() -> str:
        response = httpx.get(web_server.url + "/sign-in", timeout=30)
        assert response.status_code == 200
        return response.text

    assert "without your terminal announcing it" not in page()
    _allow(web_plant, "plant-b", True)
    notice = SilentObserversNotice(make_session_factory(web_plant.engine))
    assert notice.line() == SILENT_OBSERVERS_LINE
    # The running broker's page follows within its cache interval (10 s): a fresh notice object shows it now.
    web = web_server.app.state.approvals
    object.__setattr__(web, "silent_observers", SilentObserversNotice(web.state.sessions))
    shown = page()
    assert "without your terminal announcing it" in shown
    assert "plant-b" not in shown  # the anonymous page names no site
    _allow(web_plant, "plant-b", False)
    object.__setattr__(web, "silent_observers", SilentObserversNotice(web.state.sessions))
    assert "without your terminal announcing it" not in page()


def test_the_answer_is_cached_so_the_anonymous_page_costs_one_query_per_interval(web_plant: Plant) -> None:
    factory = make_session_factory(web_plant.engine)
    queries: list[str] = []
    event.listen(web_plant.engine, "before_cursor_execute",
                 lambda _conn, _cursor, statement, *_args: queries.append(statement))
    notice = SilentObserversNotice(factory, ttl=3600)
    for _ in range(50):
        assert notice.line() is None
    assert len([q for q in queries if "silent_observers" in q]) == 1
    _allow(web_plant, "plant-a", True)
    assert notice.line() is None  # within the interval: the cached answer
    assert SilentObserversNotice(factory, ttl=0).line() == SILENT_OBSERVERS_LINE

"""The posture report (issue 12): this period's figures beside the previous period's, over the API for security
and admins, as a page with charts and a JSON download, and the same counters on /metrics."""

from __future__ import annotations

import dataclasses
import datetime as dt

import httpx
from sqlalchemy import update

from broker.inventory import gateways
from broker.models import Site
from tests.approvals.conftest import open_session
from tests.broker.test_http_hardening import METRICS_TOKEN
from tests.fixtures.broker import Api, BrokerServer, Plant


def _activity(plant: Plant, api: Api) -> None:
    """Two grants at plant-a; one revoked with its live session cut 300 ms later, as a gateway reports it."""
    plant.ensure("vendor1", "sup-a1")
    with plant.session() as session:
        session.execute(update(Site).where(Site.name == "plant-a").values(maintenance_windows=["Sat 06:00-14:00"]))
    plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01")
    grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01", duration="2h")
    session_id = open_session(plant, grant_id)
    assert api.as_user("sup-a1").post(f"/grants/{grant_id}/revoke", json={"reason": "done"}).status_code == 200
    plant.clock.advance(dt.timedelta(milliseconds=300))
    with plant.session() as session:
        gateways.end_session(session, now=plant.clock.now(), gateway=gateways.authenticate_gateway(
            session, plant.gateway_token), session_id=session_id, reason="revoked", bytes_in=0, bytes_out=0,
            detail=None)


def test_the_report_gives_this_period_beside_the_previous_one(api: Api, plant: Plant) -> None:
    _activity(plant, api)
    plant.clock.advance(dt.timedelta(minutes=1))
    report = api.as_user("sec1").get("/posture?days=7").json()
    now, before = report["current"], report["previous"]
    assert now["grants_by_site"] == {"plant-a": 2}
    assert now["mean_grant_hours_by_site"] == {"plant-a": 1.5}
    assert before["grants_by_site"] == {}
    assert now["sessions"] == 1
    assert now["sessions_outside_windows"] == 1  # the plant said Saturdays; this one was not
    assert now["revoke_to_cut_ms"]["median"] == 300.0
    assert now["identities_by_kind"]["human"]["not needed"] >= 3
    assert now["people_with_second_factor"] <= now["people"]
    assert api.as_user("vendor1").get("/posture").status_code == 403
    assert api.as_user("sec1").get("/posture?days=0").status_code == 400


def test_the_page_draws_charts_and_offers_the_download(plant: Plant, api: Api) -> None:
    _activity(plant, api)
    with httpx.Client(base_url=api.base_url, follow_redirects=False, timeout=10) as client:
        client.cookies.set("gatepass_session", api.token("sec1"))
        page = client.get("/review/posture?days=30")
        download = client.get("/review/posture.json?days=30")
        wrong = client.get("/review/posture?days=9999")
    assert page.status_code == 200, page.text
    assert page.text.count("<svg") >= 4
    assert "Grants per site" in page.text
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.json()["current"]["grants_by_site"] == {"plant-a": 2}
    assert wrong.status_code == 400


def test_metrics_carry_the_posture_counters(plant: Plant) -> None:
    plant.ensure("vendor1")
    running = BrokerServer(dataclasses.replace(plant.settings, metrics_token=METRICS_TOKEN)).start()
    try:
        with httpx.Client(base_url=running.url, timeout=10) as client:
            text = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    finally:
        running.stop()
    assert 'gatepass_identities{kind="human",status="active"}' in text
    assert "gatepass_access_reviews_overdue 0" in text
    assert "# TYPE gatepass_playbook_runs_total counter" in text

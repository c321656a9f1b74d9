"""The gateway's reports outlive an outage (gateway/report_outbox.py), against this broker: kept on disk while the
broker cannot be reached, delivered in order once it can (after a restart too), with the session's real end time."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

from broker.models import AccessSession, GatewayReportReceipt
from gateway.broker_client import BrokerClient
from gateway.models import RecordingInfo
from gateway.report_outbox import Report, ReportOutbox
from tests.fixtures.broker import Api, BrokerServer, Plant
from tests.fixtures.ports import free_port
from tests.fixtures.relay import TcpRelay

PEER = "192.0.2.7:5000"


def started_session(api: Api) -> str:
    grant = api.grant("vendor1", "sup-a1")
    started = api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "shell", "peer": PEER})
    assert started.status_code == 201, started.text
    return str(started.json()["session_id"])


def kept(directory: Path) -> list[dict[str, object]]:
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def deliver_what_is_kept(directory: Path, broker: BrokerServer, plant: Plant) -> None:
    """A gateway's outbox started on ``directory`` against the broker, until it has delivered what it found."""

    async def scenario() -> None:
        client = BrokerClient(broker.url, plant.gateway_token)
        outbox = ReportOutbox(directory, client.deliver_report)
        outbox.start()
        await asyncio.wait_for(outbox.idle.wait(), 10)
        await outbox.stop()
        await client.aclose()

    asyncio.run(scenario())


def test_reports_wait_on_disk_through_an_outage_and_arrive_in_order_with_the_real_end_time(
        api: Api, plant: Plant, broker: BrokerServer, tmp_path: Path) -> None:
    session_id = started_session(api)
    plant.clock.advance(dt.timedelta(minutes=10))
    ended_at = plant.clock.now()  # when the session ended on the gateway; the broker hears of it an hour later
    port, broker_port = free_port(), int(broker.url.rsplit(":", 1)[1])
    delivered: list[Report] = []

    async def scenario() -> list[dict[str, object]]:
        client = BrokerClient(f"http://127.0.0.1:{port}", plant.gateway_token)  # nothing listens there yet
        outbox = ReportOutbox(tmp_path, client.deliver_report, delivered=delivered.append, first_retry=0.05,
                              last_retry=0.2)
        client.outbox = outbox
        outbox.start()
        try:
            await client.session_event(session_id, kind="file_transferred", detail={
                "protocol": "sftp", "path": "/var/log/hmi.log", "mode": "read", "bytes_read": 10, "bytes_written": 0,
                "size": 10, "status": "ok"})
            await client.session_end(session_id, reason="client_closed", bytes_in=5, bytes_out=10, ended_at=ended_at,
                                     recording=RecordingInfo(name=f"{session_id}.cast", sha256="ab" * 32, bytes=99),
                                     uploads=True)
            on_disk = kept(tmp_path)
            assert outbox.waiting_uploads() == {f"{session_id}.cast"}
            plant.clock.advance(dt.timedelta(hours=1))
            relay = await TcpRelay.start(port, broker_port)  # the link is back
            try:
                await asyncio.wait_for(outbox.idle.wait(), 10)
            finally:
                await outbox.stop()
                await client.aclose()
                await relay.close()
            return on_disk
        finally:
            await outbox.stop()

    on_disk = asyncio.run(scenario())

    assert [report["path"] for report in on_disk] == [f"/gateway/sessions/{session_id}/events",
                                                      f"/gateway/sessions/{session_id}/end"]
    with plant.session() as session:  # each went with the key it was kept with (a resend is recognised by it)
        assert {receipt.key for receipt in session.query(GatewayReportReceipt)} == {r["key"] for r in on_disk}
    assert kept(tmp_path) == []
    assert [report.upload for report in delivered] == [None, f"{session_id}.cast"]
    [transferred] = plant.audit("gateway:file:transferred")
    [ended] = plant.audit("gateway:session:ended")
    assert transferred["seq"] < ended["seq"]
    assert ended["details"]["ended_at"] == ended_at.isoformat()
    assert ended["details"]["reported_after_seconds"] == 3600
    assert ended["details"]["duration_seconds"] == 600.0
    with plant.session() as session:
        record = session.get(AccessSession, session_id)
        assert record is not None
        assert record.ended_at == ended_at


def test_reports_kept_by_a_gateway_that_stopped_go_after_its_restart(
        api: Api, plant: Plant, broker: BrokerServer, tmp_path: Path) -> None:
    session_id = started_session(api)
    port = free_port()

    async def before_restart() -> None:
        client = BrokerClient(f"http://127.0.0.1:{port}", plant.gateway_token)
        outbox = ReportOutbox(tmp_path, client.deliver_report, first_retry=0.05, last_retry=0.2)
        client.outbox = outbox
        outbox.start()
        await client.session_end(session_id, reason="gateway_lost", bytes_in=0, bytes_out=0,
                                 ended_at=plant.clock.now())
        await outbox.stop()
        await client.aclose()

    async def after_restart() -> ReportOutbox:
        client = BrokerClient(broker.url, plant.gateway_token)
        outbox = ReportOutbox(tmp_path, client.deliver_report)
        client.outbox = outbox
        outbox.start()
        assert outbox.waiting == 1
        await asyncio.wait_for(outbox.idle.wait(), 10)
        await outbox.stop()
        await client.aclose()
        return outbox

    asyncio.run(before_restart())
    assert len(kept(tmp_path)) == 1
    assert plant.audit("gateway:session:ended") == []
    asyncio.run(after_restart())

    assert kept(tmp_path) == []
    [ended] = plant.audit("gateway:session:ended")
    assert (ended["subject"], ended["details"]["reason"]) == (session_id, "gateway_lost")


def test_a_kept_end_the_broker_already_has_is_dropped_not_retried(
        api: Api, plant: Plant, broker: BrokerServer, tmp_path: Path) -> None:
    # The first delivery's answer was lost: the broker has the end, the gateway kept it. Sent again, 409: dropped.
    session_id = started_session(api)
    body = {"reason": "client_closed", "bytes_in": 0, "bytes_out": 0, "detail": None}
    assert api.gateway().post(f"/gateway/sessions/{session_id}/end", json=body).status_code == 204
    (tmp_path / "000000000001.json").write_text(json.dumps(
        {"path": f"/gateway/sessions/{session_id}/end", "body": body, "upload": None}))

    deliver_what_is_kept(tmp_path, broker, plant)

    assert kept(tmp_path) == []
    assert len(plant.audit("gateway:session:ended")) == 1


def test_an_end_time_from_a_gateway_clock_is_kept_within_the_session(api: Api, plant: Plant) -> None:
    early, future = started_session(api), started_session(api)
    now = plant.clock.now()
    body = {"reason": "client_closed", "bytes_in": 0, "bytes_out": 0, "detail": None}

    for session_id, claimed in ((early, now - dt.timedelta(days=2)), (future, now + dt.timedelta(days=2))):
        answer = api.gateway().post(f"/gateway/sessions/{session_id}/end",
                                    json={**body, "ended_at": claimed.isoformat()})
        assert answer.status_code == 204, answer.text

    ended = {event["subject"]: event["details"] for event in plant.audit("gateway:session:ended")}
    assert ended[early]["duration_seconds"] == 0.0  # not before its start
    assert ended[future]["duration_seconds"] == 0.0  # not after the broker's now (the session started now)
    assert "ended_at" not in ended[future]
    naive = api.gateway().post(f"/gateway/sessions/{started_session(api)}/end",
                               json={**body, "ended_at": "2026-11-27T08:00:00"})
    assert naive.status_code == 400, naive.text

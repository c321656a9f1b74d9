"""A gateway's report is recorded once however often it is sent (broker/inventory/report_receipts.py): the key the
gateway gives it (``Idempotency-Key``) is kept with the report's event, in its transaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

from broker.inventory import report_receipts
from broker.models import GatewayReportReceipt
from gateway.broker_client import BrokerClient
from tests.broker.test_report_outbox import deliver_what_is_kept, kept, started_session
from tests.fixtures.broker import Api, BrokerServer, Plant

KEY = "0123456789abcdef0123456789abcdef"


def refusal_body(api: Api, reason: str = "ssh -R is not allowed") -> dict[str, Any]:
    grant = api.grant("vendor1", "sup-a1")
    return {"grant_id": grant["id"], "kind": "remote_forward", "reason": reason, "host": "127.0.0.1", "port": 8080}


def test_the_same_report_sent_again_is_answered_as_before_and_recorded_once(api: Api, plant: Plant) -> None:
    body, gateway = refusal_body(api), api.gateway()
    first = gateway.post("/gateway/refusals", json=body, headers={"Idempotency-Key": KEY})
    again = gateway.post("/gateway/refusals", json=body, headers={"Idempotency-Key": KEY})
    assert (first.status_code, again.status_code) == (204, 204)
    assert report_receipts.REPLAYED_HEADER not in first.headers
    assert again.headers[report_receipts.REPLAYED_HEADER] == "true"
    assert len(plant.audit("gateway:connection:refused")) == 1
    # Another report (another key) is another event; a report without a key, from a gateway before keys, is
    # recorded each time as it always was.
    assert gateway.post("/gateway/refusals", json=body, headers={"Idempotency-Key": "k" * 16}).status_code == 204
    for _ in range(2):
        assert gateway.post("/gateway/refusals", json=body).status_code == 204
    assert len(plant.audit("gateway:connection:refused")) == 4


def test_a_key_no_gateway_would_send_is_refused_and_nothing_is_recorded(api: Api, plant: Plant) -> None:
    body = refusal_body(api)
    for key in ("short", "x" * 65, "has space in it!", "slashes/are/not/allowed"):
        answer = api.gateway().post("/gateway/refusals", json=body, headers={"Idempotency-Key": key})
        assert answer.status_code == 400, answer.text
        assert "Idempotency-Key" in answer.json()["message"]
    assert plant.audit("gateway:connection:refused") == []


def test_a_refused_report_keeps_no_receipt_and_is_judged_again(api: Api, plant: Plant) -> None:
    event = {"kind": "file_transferred", "detail": {"protocol": "sftp", "path": "/etc/motd", "mode": "read",
                                                   "bytes_read": 1, "bytes_written": 0, "size": 1, "status": "ok"}}
    for _ in range(2):  # a session the broker never started: refused both times, not "already recorded"
        answer = api.gateway().post("/gateway/sessions/ses-unknown000/events", json=event,
                                    headers={"Idempotency-Key": KEY})
        assert answer.status_code == 404, answer.text
    session_id = started_session(api)
    for _ in range(2):
        answer = api.gateway().post(f"/gateway/sessions/{session_id}/events", json=event,
                                    headers={"Idempotency-Key": KEY})
        assert answer.status_code == 204, answer.text
    assert len(plant.audit("gateway:file:transferred")) == 1


def test_a_session_end_sent_again_with_its_key_is_answered_as_the_first(api: Api, plant: Plant) -> None:
    session_id = started_session(api)
    body = {"reason": "client_closed", "bytes_in": 0, "bytes_out": 0, "detail": None}
    path = f"/gateway/sessions/{session_id}/end"
    assert api.gateway().post(path, json=body, headers={"Idempotency-Key": KEY}).status_code == 204
    again = api.gateway().post(path, json=body, headers={"Idempotency-Key": KEY})
    assert (again.status_code, again.headers.get(report_receipts.REPLAYED_HEADER)) == (204, "true")
    assert api.gateway().post(path, json=body).status_code == 409  # without its key: an end that already came
    assert len(plant.audit("gateway:session:ended")) == 1


def test_a_kept_report_whose_answer_was_lost_is_not_recorded_twice(
        api: Api, plant: Plant, broker: BrokerServer, tmp_path: Path) -> None:
    """The broker recorded the report, the answer never reached the gateway, which kept the report and sends it
    again: one event in the trail (the watcher counts refusals), and the outbox is done with it."""
    body = refusal_body(api)
    assert api.gateway().post("/gateway/refusals", json=body, headers={"Idempotency-Key": KEY}).status_code == 204
    (tmp_path / "000000000001.json").write_text(json.dumps(
        {"path": "/gateway/refusals", "body": body, "upload": None, "key": KEY}))

    deliver_what_is_kept(tmp_path, broker, plant)
    assert kept(tmp_path) == []
    assert len(plant.audit("gateway:connection:refused")) == 1


def test_every_report_the_gateway_sends_carries_a_key_of_its_own(
        api: Api, plant: Plant, broker: BrokerServer) -> None:
    body = refusal_body(api)

    async def scenario() -> None:
        client = BrokerClient(broker.url, plant.gateway_token)
        for _ in range(2):  # two refusals alike are two reports: two keys, two events
            await client.refusal(grant_id=body["grant_id"], kind="remote_forward", reason=body["reason"])
        await client.aclose()

    asyncio.run(scenario())
    assert len(plant.audit("gateway:connection:refused")) == 2
    with plant.session() as session:
        keys = [row.key for row in session.query(GatewayReportReceipt)]
    assert len(set(keys)) == len(keys) == 2
    assert all(len(key) == 32 for key in keys)


def test_receipts_are_forgotten_after_a_month(api: Api, plant: Plant) -> None:
    body = refusal_body(api)
    assert api.gateway().post("/gateway/refusals", json=body, headers={"Idempotency-Key": KEY}).status_code == 204
    with plant.session() as session, session.begin():
        assert report_receipts.forget_old(session, now=plant.clock.now() + dt.timedelta(days=29)) == 0
        assert report_receipts.forget_old(session, now=plant.clock.now() + dt.timedelta(days=31)) == 1
    assert api.gateway().post("/gateway/refusals", json=body, headers={"Idempotency-Key": KEY}).status_code == 204
    assert len(plant.audit("gateway:connection:refused")) == 2


def test_a_key_that_comes_again_with_another_report_does_not_keep_that_report_out(api: Api, plant: Plant) -> None:
    """A key is bound to the report it came with: another refusal under a used key (a gateway's bug, or one trying
    to keep a refusal out of the trail) is recorded all the same; the first report again is still a replay."""
    gateway, first = api.gateway(), refusal_body(api, "ssh -R is not allowed")
    other = {**first, "reason": "forward to 10.0.0.9:502 refused"}
    assert gateway.post("/gateway/refusals", json=first, headers={"Idempotency-Key": KEY}).status_code == 204
    answer = gateway.post("/gateway/refusals", json=other, headers={"Idempotency-Key": KEY})
    assert answer.status_code == 204
    assert report_receipts.REPLAYED_HEADER not in answer.headers
    again = gateway.post("/gateway/refusals", json=first, headers={"Idempotency-Key": KEY})
    assert again.headers.get(report_receipts.REPLAYED_HEADER) == "true"
    reasons = [event["details"]["reason"] for event in plant.audit("gateway:connection:refused")]
    assert reasons == ["ssh -R is not allowed", "forward to 10.0.0.9:502 refused"]

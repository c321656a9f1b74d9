"""Hostile tests of the recording upload (PUT /gateway/recordings/{name}), the session end's ``ended_at`` and the
report outbox against the real broker: each found a problem (and failed) before its fix, session 9."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from broker.recordings import intake, store, verification
from gateway.broker_client import BrokerClient
from gateway.recording_upload import RecordingUploader
from gateway.report_outbox import Report, ReportOutbox
from tests.broker.test_recording_upload import ended_on_gateway, stored_path
from tests.fixtures.broker import Api, BrokerServer, Plant, assert_refusal

PEER = "192.0.2.7:5000"


def test_hostile_a_received_recording_deleted_later_is_missing_whatever_the_row_flag_says(
        api: Api, plant: Plant) -> None:
    # The recording arrived (gateway:recording:received is in the trail). Someone with the database and the disk
    # deletes the file and sets the row's recording_on_gateway again (and moves the row's ended_at, which is not
    # hash-chained either): verify must not excuse the deletion as "still on the gateway".
    session_id, data = ended_on_gateway(api, plant)
    assert api.gateway().put(f"/gateway/recordings/{session_id}.cast", content=data).status_code == 200
    assert plant.audit("gateway:recording:received")
    stored_path(plant, session_id).unlink()
    plant.clock.advance(dt.timedelta(days=5))
    with plant.engine.begin() as connection:
        connection.execute(text("UPDATE sessions SET recording_on_gateway = :yes, ended_at = :late WHERE id = :id"),
                           {"yes": True, "late": plant.clock.now() - dt.timedelta(hours=1), "id": session_id})

    with plant.session() as session:
        checked = verification.verify_recordings(session, store.recordings_dir(plant.settings),
                                                 now=plant.clock.now())

    assert checked.on_gateways == 0
    assert [problem for problem in checked.problems if session_id in problem and "MISSING" in problem]


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_hostile_an_end_time_out_of_range_is_refused_not_a_500(api: Api, plant: Plant, stamp: str) -> None:
    # A 500 is "the broker is away" to the gateway: its outbox keeps the report and sends it again for ever, and
    # every later report of that gateway (session ends, refusals) waits behind it.
    grant = api.grant("vendor1", "sup-a1")
    started = api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "shell", "peer": PEER})
    session_id = started.json()["session_id"]

    answer = api.gateway().post(f"/gateway/sessions/{session_id}/end", json={
        "reason": "client_closed", "bytes_in": 0, "bytes_out": 0, "ended_at": stamp})

    assert_refusal(answer, 400, "invalid_input")


def test_hostile_a_directory_under_the_recording_name_is_refused_and_audited(api: Api, plant: Plant) -> None:
    session_id, data = ended_on_gateway(api, plant)
    path = stored_path(plant, session_id)
    path.parent.mkdir(exist_ok=True)
    path.mkdir()

    answer = api.gateway().put(f"/gateway/recordings/{session_id}.cast", content=data)

    assert_refusal(answer, 409, "conflict")
    assert len(plant.audit("gateway:recording:refused")) == 1


def test_hostile_an_end_sent_again_after_a_lost_answer_still_lets_its_recording_upload(
        api: Api, plant: Plant, broker: BrokerServer, tmp_path: Path) -> None:
    # The flaky link the outbox exists for: the broker committed the session's end but its answer was lost (a
    # timeout), so the gateway kept the report and sends it again; the broker answers 409 (already ended) and the
    # outbox drops it without saying it was delivered, so the recording's upload is never queued: the file stays
    # on the gateway until some restart, and verify reports it NOT RECEIVED after a day.
    session_id, data = ended_on_gateway(api, plant)  # the first delivery, whose answer the gateway never saw
    name = f"{session_id}.cast"
    recordings = tmp_path / "recordings"
    spool = recordings / ".reports"
    spool.mkdir(parents=True)
    (recordings / name).write_bytes(data)
    body = {"reason": "client_closed", "bytes_in": 3, "bytes_out": 4, "detail": None,
            "recording": {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                          "uploads": True}}
    (spool / "000000000001.json").write_text(json.dumps(
        Report(f"/gateway/sessions/{session_id}/end", body, upload=name).as_json()))

    async def scenario() -> None:
        client = BrokerClient(broker.url, plant.gateway_token)
        uploader = RecordingUploader(client, recordings, first_retry=0.05, last_retry=0.2)
        outbox = ReportOutbox(spool, client.deliver_report, first_retry=0.05, last_retry=0.2,
                              delivered=lambda report: uploader.queue(report.upload) if report.upload else None)
        outbox.start()  # as gateway/server.py does
        uploader.start(exclude=outbox.waiting_uploads())
        try:
            await asyncio.wait_for(outbox.idle.wait(), 10)
            await asyncio.sleep(0.2)
            await asyncio.wait_for(uploader.idle.wait(), 10)
        finally:
            await outbox.stop()
            await uploader.stop()
            await client.aclose()

    asyncio.run(scenario())

    assert len(plant.audit("gateway:session:ended")) == 1
    assert stored_path(plant, session_id).exists(), "the broker never got the recording"
    assert not (recordings / name).exists()


def test_a_gateway_uploads_one_recording_at_a_time_and_a_full_disk_says_try_later(
        api: Api, plant: Plant, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stolen gateway credential reports huge recordings and uploads them in parallel: the broker takes one at a
    # time per gateway and none that would leave its disk nearly full (503: the gateway tries again later).
    session_id, data = ended_on_gateway(api, plant)
    monkeypatch.setattr(intake, "FREE_SPACE_KEPT", shutil.disk_usage("/").free * 2)

    full = api.gateway().put(f"/gateway/recordings/{session_id}.cast", content=data)

    assert "is taken once there is room" in assert_refusal(full, 503, "try_later")["message"]
    assert not stored_path(plant, session_id).exists()
    assert plant.audit("gateway:recording:refused") == []  # not a refusal of the file: it comes again
    monkeypatch.undo()

    async def two_at_once() -> list[int]:
        started = asyncio.Event()
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            started.set()
            await release.wait()
            yield data

        async with httpx.AsyncClient(base_url=api.base_url + "/api/v1", timeout=30,
                                     headers={"Authorization": f"Bearer {plant.gateway_token}"}) as client:
            first = asyncio.ensure_future(client.put(f"/gateway/recordings/{session_id}.cast", content=slow_body()))
            await started.wait()
            for _ in range(200):  # until the broker holds the gateway's turn for the first one (in this process)
                if any(lock.locked() for lock in intake._uploading.values()):
                    break
                await asyncio.sleep(0.05)
            second = await client.put(f"/gateway/recordings/{session_id}.cast", content=data)
            release.set()
            return [second.status_code, (await first).status_code]

    assert asyncio.run(two_at_once()) == [503, 200]
    assert stored_path(plant, session_id).read_bytes() == data


def test_partial_uploads_a_dead_broker_left_are_removed_once_abandoned(tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".ses-1.cast.upload-aaaa", tmp_path / ".ses-2.cast.upload-bbbb"
    recording = tmp_path / "ses-3.cast"
    for path in (stale, fresh, recording):
        path.write_bytes(b"x")
    now = time.time()
    os.utime(stale, (now - 7200, now - 7200))
    os.utime(recording, (now - 7200, now - 7200))

    assert intake.remove_abandoned(tmp_path, now=now) == 1

    assert sorted(path.name for path in tmp_path.iterdir()) == [fresh.name, recording.name]

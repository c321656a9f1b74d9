"""A separate gateway uploads its recordings (PUT /gateway/recordings/{name}): the broker takes exactly the reported
file, and nothing else; verify, the review page and the retention purge know a recording still on its way."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import text

from broker.db import make_session_factory
from broker.inventory import gateways
from broker.recordings import purge, store, verification
from gateway.broker_client import BrokerClient
from gateway.recording_upload import RecordingUploader
from tests.broker.test_recordings_verify import cast_bytes, gatepass_verify
from tests.fixtures.broker import Api, BrokerServer, Plant, assert_refusal
from tests.fixtures.ports import free_port
from tests.fixtures.relay import TcpRelay

PEER = "192.0.2.7:5000"


def ended_on_gateway(api: Api, plant: Plant, output: str = "ok\r\n", *, uploads: bool = True) -> tuple[str, bytes]:
    """A session a separate gateway ended, its recording still on that gateway's disk: (session id, file bytes)."""
    grant = api.grant("vendor1", "sup-a1")
    gateway = api.gateway()
    started = gateway.post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "shell", "peer": PEER})
    assert started.status_code == 201, started.text
    session_id = str(started.json()["session_id"])
    data = cast_bytes([0.1, "o", output], [0.5, "m", "exit 0"])
    plant.clock.advance(dt.timedelta(seconds=30))
    recording = {"name": f"{session_id}.cast", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    if uploads:
        recording["uploads"] = True
    ended = gateway.post(f"/gateway/sessions/{session_id}/end", json={
        "reason": "client_closed", "bytes_in": 3, "bytes_out": len(output), "recording": recording})
    assert ended.status_code == 204, ended.text
    return session_id, data


def stored_path(plant: Plant, session_id: str) -> Path:
    return store.recordings_dir(plant.settings) / f"{session_id}.cast"


def leftovers(plant: Plant) -> list[str]:
    directory = store.recordings_dir(plant.settings)
    return sorted(path.name for path in directory.iterdir() if ".upload-" in path.name) if directory.is_dir() else []


def test_the_reported_recording_is_stored_whole_and_its_arrival_is_audited(api: Api, plant: Plant) -> None:
    session_id, data = ended_on_gateway(api, plant)
    [ended] = plant.audit("gateway:session:ended")
    assert ended["details"]["recording"]["uploads"] is True
    assert plant.row("SELECT recording_on_gateway FROM sessions WHERE id = :id", id=session_id)[0] in (True, 1)

    answer = api.gateway().put(f"/gateway/recordings/{session_id}.cast", content=data)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    path = stored_path(plant, session_id)
    assert path.read_bytes() == data
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert body == {"stored": True, "name": f"{session_id}.cast", "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data), "already_stored": False,
                    "file": {"device": os.stat(path).st_dev, "inode": os.stat(path).st_ino}}
    assert plant.row("SELECT recording_on_gateway FROM sessions WHERE id = :id", id=session_id)[0] in (False, 0)
    [received] = plant.audit("gateway:recording:received")
    assert (received["actor"], received["subject"], received["site"]) == ("gateway:embedded", session_id, "plant-a")
    assert received["details"]["recording"] == {"name": f"{session_id}.cast", "sha256": body["sha256"],
                                                "bytes": len(data)}
    assert leftovers(plant) == []


def test_an_upload_sent_again_is_answered_as_stored_and_changes_nothing(api: Api, plant: Plant) -> None:
    # The gateway's first answer was lost: it sends the file again and may then delete its copy.
    session_id, data = ended_on_gateway(api, plant)
    assert api.gateway().put(f"/gateway/recordings/{session_id}.cast", content=data).status_code == 200
    seq = plant.last_seq()

    again = api.gateway().put(f"/gateway/recordings/{session_id}.cast", content=data)

    assert again.status_code == 200, again.text
    assert again.json()["already_stored"] is True
    assert plant.audit(after_seq=seq) == []
    assert stored_path(plant, session_id).read_bytes() == data


@pytest.mark.parametrize(("change", "words"), [
    (lambda data: data[:-1] + b"X", "has SHA-256"),
    (lambda data: data[:-5], "ended after"),
    (lambda data: data + b"[9.0, \"o\", \"rm -rf /\"]\n", "longer than"),
])
def test_a_file_that_is_not_the_reported_one_is_refused_audited_and_not_stored(
        api: Api, plant: Plant, change: object, words: str) -> None:
    session_id, data = ended_on_gateway(api, plant)
    assert callable(change)

    answer = api.gateway().put(f"/gateway/recordings/{session_id}.cast", content=change(data))

    body = assert_refusal(answer, 400, "invalid_input")
    assert words in body["message"]
    assert not stored_path(plant, session_id).exists()
    assert leftovers(plant) == []
    assert plant.row("SELECT recording_on_gateway FROM sessions WHERE id = :id", id=session_id)[0] in (True, 1)
    [refused] = plant.audit("gateway:recording:refused")
    assert (refused["outcome"], refused["subject"], refused["actor"]) == ("refused", session_id, "gateway:embedded")
    assert refused["details"]["reported"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert words in refused["details"]["reason"]
    # The genuine file is still taken afterwards.
    assert api.gateway().put(f"/gateway/recordings/{session_id}.cast", content=data).status_code == 200


def test_a_different_file_already_stored_under_the_name_is_never_replaced(api: Api, plant: Plant) -> None:
    session_id, data = ended_on_gateway(api, plant)
    path = stored_path(plant, session_id)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"something else")

    answer = api.gateway().put(f"/gateway/recordings/{session_id}.cast", content=data)

    assert "a different file" in assert_refusal(answer, 409, "conflict")["message"]
    assert path.read_bytes() == b"something else"
    assert len(plant.audit("gateway:recording:refused")) == 1


def test_only_the_reported_recording_of_the_callers_own_session_is_taken(api: Api, plant: Plant) -> None:
    session_id, data = ended_on_gateway(api, plant)
    with plant.session() as session:
        other_token = gateways.create_gateway(session, now=plant.clock.now(), actor="test", name="gw-plant-b")
    other = api.client(other_token)

    cases = [
        (other.put(f"/gateway/recordings/{session_id}.cast", content=data), 404, "not_found"),
        (api.gateway().put(f"/gateway/recordings/{session_id}.1.cast", content=data), 409, "conflict"),
        (api.gateway().put("/gateway/recordings/ses-nope.cast", content=data), 404, "not_found"),
        (api.gateway().put("/gateway/recordings/master.key", content=data), 400, "invalid_input"),
    ]

    for answer, status, code in cases:
        assert_refusal(answer, status, code)
    assert not stored_path(plant, session_id).exists()
    assert len(plant.audit("gateway:recording:refused")) == len(cases)
    assert assert_refusal(api.as_user("vendor1").put(f"/gateway/recordings/{session_id}.cast", content=data),
                          401)["error"] == "not_authenticated"


def test_a_recording_on_its_way_is_neither_missing_nor_purged_and_verify_expects_it_for_a_day(
        api: Api, plant: Plant) -> None:
    session_id, data = ended_on_gateway(api, plant)
    kept_here, _ = ended_on_gateway(api, plant, uploads=False)  # an embedded gateway's file that is gone
    directory = store.recordings_dir(plant.settings)
    directory.mkdir(exist_ok=True)

    with plant.session() as session:
        checked = verification.verify_recordings(session, directory, now=plant.clock.now())
        record = session.get(verification.AccessSession, session_id)
        assert record is not None
        assert verification.status(record, directory) == "on_gateway"
    assert (checked.checked, checked.on_gateways) == (2, 1)
    [missing] = checked.problems
    assert kept_here in missing
    assert "MISSING" in missing

    # Retention does not purge (or call missing) what has not arrived.
    plant.clock.advance(dt.timedelta(days=3))
    report = purge.plan(make_session_factory(plant.engine), now=plant.clock.now(), default_days=1, directory=directory)
    assert session_id not in [item.session_id for item in report.purged + report.kept]
    with plant.session() as session:
        late = verification.verify_recordings(session, directory, now=plant.clock.now())
    assert late.on_gateways == 0
    assert any(session_id in problem and "NOT RECEIVED" in problem and "gateway embedded" in problem
               for problem in late.problems)

    assert api.gateway().put(f"/gateway/recordings/{session_id}.cast", content=data).status_code == 200
    with plant.session() as session:
        arrived = verification.verify_recordings(session, directory, now=plant.clock.now())
    assert not any(session_id in problem for problem in arrived.problems)
    report = purge.plan(make_session_factory(plant.engine), now=plant.clock.now(), default_days=1, directory=directory)
    assert session_id in [item.session_id for item in report.purged]


def test_the_row_alone_cannot_excuse_a_missing_file(api: Api, plant: Plant) -> None:
    # Setting the flag in the database does not hide a deleted file: the hash-chained end event must say so too.
    session_id, _ = ended_on_gateway(api, plant, uploads=False)
    with plant.engine.begin() as connection:
        connection.execute(text("UPDATE sessions SET recording_on_gateway = :yes WHERE id = :id"),
                           {"yes": True, "id": session_id})
    directory = store.recordings_dir(plant.settings)
    directory.mkdir(exist_ok=True)

    with plant.session() as session:
        checked = verification.verify_recordings(session, directory, now=plant.clock.now())

    assert checked.on_gateways == 0
    assert [problem for problem in checked.problems if session_id in problem and "MISSING" in problem]


def test_audit_verify_says_which_recordings_are_still_on_gateways_and_which_are_overdue(
        api: Api, plant: Plant) -> None:
    # `gatepass audit verify` runs on the real clock; the plant's is fixed. A session ended a day and an hour ago
    # is overdue, one ended a minute ago is on its way.
    plant.clock.set(dt.datetime.now(dt.UTC) - dt.timedelta(hours=25, seconds=30))
    overdue, _ = ended_on_gateway(api, plant)
    plant.clock.set(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    on_its_way, _ = ended_on_gateway(api, plant)
    store.recordings_dir(plant.settings).mkdir(exist_ok=True)

    result = gatepass_verify(plant)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 of them still on the separate gateways that recorded them (1 on embedded)" in result.stdout
    [problem] = [line for line in result.stderr.splitlines() if "RECORDING FAILED" in line]
    assert overdue in problem
    assert "NOT RECEIVED: gateway embedded reported it at the session's end 25 h ago" in problem
    assert on_its_way not in result.stderr


# --- the gateway's uploader (gateway/recording_upload.py) against this broker ---------------------------------


def test_the_uploader_tries_again_until_the_broker_is_back_then_deletes_its_copy(
        api: Api, plant: Plant, broker: BrokerServer, tmp_path: Path) -> None:
    session_id, data = ended_on_gateway(api, plant)
    (tmp_path / f"{session_id}.cast").write_bytes(data)
    broker_port = int(broker.url.rsplit(":", 1)[1])
    port = free_port()

    async def scenario() -> RecordingUploader:
        client = BrokerClient(f"http://127.0.0.1:{port}", plant.gateway_token)
        uploader = RecordingUploader(client, tmp_path, first_retry=0.05, last_retry=0.2)
        uploader.start()  # finds the file left in the directory
        await asyncio.sleep(0.5)  # nothing listens: it fails and backs off
        assert (tmp_path / f"{session_id}.cast").exists()
        assert uploader.uploaded == 0
        relay = await TcpRelay.start(port, broker_port)
        try:
            await asyncio.wait_for(uploader.idle.wait(), 10)
        finally:
            await uploader.stop()
            await client.aclose()  # closes its connection: the relay's connections end with it
            await relay.close()
        return uploader

    uploader = asyncio.run(scenario())

    assert uploader.uploaded == 1
    assert not (tmp_path / f"{session_id}.cast").exists()
    assert stored_path(plant, session_id).read_bytes() == data


def test_an_uploader_whose_directory_is_the_brokers_deletes_nothing(api: Api, plant: Plant) -> None:
    # `gatepass gateway` pointed at the broker's own directory (shared by mistake): the broker's answer names the
    # very file the gateway would delete, the only copy.
    session_id, data = ended_on_gateway(api, plant)
    directory = store.recordings_dir(plant.settings)
    directory.mkdir(exist_ok=True)
    stored_path(plant, session_id).write_bytes(data)

    async def scenario() -> RecordingUploader:
        client = BrokerClient(api.base_url, plant.gateway_token)
        uploader = RecordingUploader(client, directory)
        uploader.start()
        try:
            await asyncio.wait_for(uploader.idle.wait(), 10)
        finally:
            await uploader.stop()
            await client.aclose()
        return uploader

    uploader = asyncio.run(scenario())

    assert uploader.shared_with_broker is True
    assert uploader.uploaded == 0
    assert stored_path(plant, session_id).read_bytes() == data


def test_a_gateway_streaming_a_longer_file_hears_the_refusal_and_does_not_retry_for_ever(
        api: Api, plant: Plant, broker: BrokerServer, tmp_path: Path) -> None:
    # The broker refuses after the reported size, mid-stream; the gateway must still get the 400 (a broken
    # connection would look like an outage, to be tried again every minute).
    session_id, data = ended_on_gateway(api, plant)
    path = tmp_path / f"{session_id}.cast"
    path.write_bytes(data + os.urandom(8 * 1024 * 1024))

    async def scenario() -> RecordingUploader:
        client = BrokerClient(broker.url, plant.gateway_token)
        uploader = RecordingUploader(client, tmp_path, first_retry=0.05, last_retry=0.2)
        uploader.start()
        try:
            await asyncio.wait_for(uploader.idle.wait(), 20)
        finally:
            await uploader.stop()
            await client.aclose()
        return uploader

    uploader = asyncio.run(scenario())

    assert "longer than" in uploader.refused[f"{session_id}.cast"]
    assert path.exists()
    assert not stored_path(plant, session_id).exists()
    assert len(plant.audit("gateway:recording:refused")) == 1

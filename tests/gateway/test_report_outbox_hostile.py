"""Hostile tests of the gateway's report outbox (RECORDINGS/.reports) and recording uploader: what a file placed
in the spool, or a disk that turned read-only, makes the gateway do. Each failed before its fix (session 9)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
from pathlib import Path

import pytest

from gateway import Gateway, GatewaySettings
from gateway.broker_client import BrokerClient
from gateway.recording_upload import RecordingUploader
from gateway.report_outbox import SPOOL, ReportOutbox
from tests.gateway.fake_broker import TOKEN, FakeBroker

pytestmark = pytest.mark.anyio


class Catcher:
    """An HTTP server on 127.0.0.1 that records each request's head and answers 204."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = b""
            try:
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = await asyncio.wait_for(reader.read(65536), 5)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                await writer.drain()
            finally:
                writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


async def deliver_kept(directory: Path, broker_url: str) -> None:
    """Start an outbox on ``directory`` (it takes up what is kept there) and wait until it has delivered it all."""
    client = BrokerClient(broker_url, TOKEN)
    outbox = ReportOutbox(directory, client.deliver_report, first_retry=0.05, last_retry=0.1)
    outbox.start()
    try:
        await asyncio.wait_for(outbox.idle.wait(), 5)
    finally:
        await outbox.stop()
        await client.aclose()


def spool_report(directory: Path, number: int, report: dict[str, object]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{number:012d}.json").write_text(json.dumps(report))


async def test_hostile_a_kept_report_naming_another_host_does_not_get_the_gateway_token(
        fake_broker: FakeBroker, tmp_path: Path) -> None:
    # A report's path is taken from the spool file as is; an absolute URL replaces the broker's address, and the
    # client's Authorization header (the gateway credential) goes along.
    catcher = Catcher()
    port = await catcher.start()
    spool_report(tmp_path, 1, {"path": f"http://127.0.0.1:{port}/steal", "body": {}, "upload": None})
    try:
        await deliver_kept(tmp_path, fake_broker.url)
    finally:
        await catcher.stop()

    assert not [request for request in catcher.requests if TOKEN.encode() in request]


async def test_hostile_a_kept_reports_upload_name_cannot_reach_outside_the_recordings_directory(
        tmp_path: Path) -> None:
    # The spooled "upload" is queued as is once its report is delivered: "../x.cast" is read from outside the
    # recordings directory and streamed to the broker (and deleted if the answer says stored).
    catcher = Catcher()
    port = await catcher.start()
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    outside = tmp_path / "secret.cast"
    outside.write_text("not a recording: a secret next to the recordings directory")
    spool_report(recordings / SPOOL, 1, {"path": "/gateway/login-refusals", "body": {}, "upload": "../secret.cast"})
    client = BrokerClient(f"http://127.0.0.1:{port}", TOKEN)
    uploader = RecordingUploader(client, recordings, first_retry=0.05, last_retry=0.1)
    outbox = ReportOutbox(recordings / SPOOL, client.deliver_report, first_retry=0.05, last_retry=0.1,
                          delivered=lambda report: uploader.queue(report.upload) if report.upload else None)
    outbox.start()
    uploader.start(exclude=outbox.waiting_uploads())
    try:
        await asyncio.wait_for(outbox.idle.wait(), 5)
        await asyncio.sleep(0.5)
    finally:
        await outbox.stop()
        await uploader.stop()
        await client.aclose()
        await catcher.stop()

    assert not [request for request in catcher.requests if request.startswith(b"PUT ")]


async def test_hostile_kept_reports_still_go_when_the_disk_turned_read_only(
        fake_broker: FakeBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ext4 remounts read-only on errors: deleting a delivered report fails with EROFS; the delivery loop dies
    # (its task ends with the OSError, unlogged), and every report behind it waits until the gateway restarts.
    for number in (1, 2, 3):
        spool_report(tmp_path, number, {"path": "/gateway/login-refusals", "upload": None, "body": {
            "peer": "192.0.2.7:5000", "username": f"user{number}", "attempts": [], "more": 0}})
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".json":
            raise OSError(errno.EROFS, "Read-only file system")
        real_unlink(self, missing_ok=missing_ok)

    client = BrokerClient(fake_broker.url, TOKEN)
    outbox = ReportOutbox(tmp_path, client.deliver_report, first_retry=0.05, last_retry=0.1)
    monkeypatch.setattr(Path, "unlink", unlink)
    outbox.start()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(outbox.idle.wait(), 3)
        delivered = [refusal["username"] for refusal in fake_broker.login_refusals]
    finally:
        monkeypatch.undo()
        with contextlib.suppress(OSError):  # stop() re-raises what killed the loop
            await outbox.stop()
        await client.aclose()

    assert delivered == ["user1", "user2", "user3"]


async def test_hostile_a_deeply_nested_kept_report_does_not_stop_the_gateway_starting(
        fake_broker: FakeBroker, tmp_path: Path) -> None:
    # start() catches OSError and ValueError from a kept report; json.loads of "[[[[…" raises RecursionError,
    # which escapes Gateway.start(): the gateway does not start (a plant without remote access) until someone
    # finds and deletes the file.
    recordings = tmp_path / "recordings"
    (recordings / SPOOL).mkdir(parents=True)
    (recordings / SPOOL / "000000000001.json").write_text("[" * 200_000 + "]" * 200_000)
    gateway = Gateway(GatewaySettings(broker_url=fake_broker.url, token=TOKEN, host_key_path=tmp_path / "host_key",
                                      recordings_dir=recordings, listen_port=0))
    try:
        await gateway.start()
    finally:
        await gateway.stop()


async def test_a_report_half_written_when_the_gateway_died_is_cleared_at_start(
        fake_broker: FakeBroker, tmp_path: Path) -> None:
    (tmp_path / "000000000007.partial").write_text('{"path": "/gateway/refusals", "bo')
    spool_report(tmp_path, 3, {"path": "/gateway/login-refusals", "upload": None, "body": {
        "peer": "192.0.2.7:5000", "username": "kept", "attempts": [], "more": 0}})
    await deliver_kept(tmp_path, fake_broker.url)

    assert sorted(path.name for path in tmp_path.iterdir()) == []
    assert [refusal["username"] for refusal in fake_broker.login_refusals] == ["kept"]

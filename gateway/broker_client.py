"""Async client for the broker's gateway API (``/api/v1/gateway/*``), the gateway's only way to the broker."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.errors import BrokerCallFailed, BrokerProtocolError, BrokerRefused, BrokerUnavailable
from gateway.models import Authorization, BrokerEvent, GrantState, RecordingInfo, Registration
from gateway.report_outbox import Report, ReportOutbox
from gateway.start_batch import StartBatcher

logger = logging.getLogger("gatepass.gateway.broker")

# The broker sends ": keepalive" every 15 s (docs/API.md); three missed ones mean the stream is dead.
EVENT_READ_TIMEOUT = 45.0
# Calls in flight at once. A burst (1,000 tunnel connections opened or cut together) otherwise reaches the
# broker all at once; on SQLite its writers then queue on the database lock with growing back-off sleeps
# and calls time out, though one at a time each takes about 10 ms. Calls a client waits for (authorize,
# session start) get their own lane, so a backlog of end reports never delays a login.
CALLS_IN_FLIGHT = 4
REPORTS_IN_FLIGHT = 2
# Bytes read from a recording file per block of its upload.
UPLOAD_BLOCK = 256 * 1024
# Seconds to wait for the broker's answer to an upload once the file is sent (it hashes and fsyncs it first).
UPLOAD_ANSWER_TIMEOUT = 120.0


class BrokerClient:
    """One HTTP client per gateway, authenticated with the gateway token."""

    def __init__(
        self,
        broker_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        event_read_timeout: float = EVENT_READ_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._event_read_timeout = event_read_timeout
        self._calls = asyncio.Semaphore(CALLS_IN_FLIGHT)
        self._reports = asyncio.Semaphore(REPORTS_IN_FLIGHT)
        self._http = httpx.AsyncClient(
            base_url=broker_url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {token}", "User-Agent": "gatepass-gateway"},
            timeout=timeout,
            transport=transport,
        )
        # Starts that wait at the same time share one call (gateway/start_batch.py): 1,000 tunnel connections
        # opened at once are then a few dozen calls and commits on the broker, not 1,000.
        self.starts = StartBatcher(self._start_one, self._start_many, orphaned=self._end_orphan)
        self._orphan_reports: set[asyncio.Task[None]] = set()
        # Where reports wait while the broker cannot be reached (gateway/report_outbox.py); None: sent once.
        self.outbox: ReportOutbox | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def register(self, *, ssh_host: str, ssh_port: int, host_key: str,
                       kept_ends: list[str] | None = None) -> Registration:
        """Register at start. ``kept_ends``: the sessions whose end this gateway still has to report; with it the
        broker ends every other session it still has open on this gateway (an earlier run's, lost with it)."""
        body: dict[str, Any] = {"ssh_host": ssh_host, "ssh_port": ssh_port, "host_key": host_key}
        if kept_ends is not None:
            body["kept_ends"] = kept_ends
        return Registration.from_json(await self._post("/gateway/register", body))

    async def authorize(self, *, grant_id: str, serial: int, asset: str, peer: str) -> Authorization:
        """The grant behind a certificate, with the target credential; BrokerRefused if not usable now."""
        body = {"grant_id": grant_id, "serial": serial, "asset": asset, "peer": peer}
        return Authorization.from_json(await self._post("/gateway/authorize", body))

    async def grants_status(self, grant_ids: list[str]) -> dict[str, GrantState]:
        """Current state of the given grants; ids the broker does not know are absent."""
        data = await self._post("/gateway/grants/status", {"grant_ids": grant_ids})
        grants = data.get("grants") if isinstance(data, Mapping) else None
        if not isinstance(grants, Mapping):
            raise BrokerProtocolError("the broker's grant status answer has no 'grants' object")
        return {str(gid): GrantState.from_json(str(gid), state) for gid, state in grants.items()}

    async def session_start(
        self, *, grant_id: str, kind: str, peer: str, command: str | None = None, port: int | None = None
    ) -> str:
        """The id of the session the broker recorded; BrokerRefused if it may not start, BrokerCallFailed if it
        could not be recorded (the caller refuses the connection either way)."""
        return await self.starts.start({"grant_id": grant_id, "kind": kind, "peer": peer, "command": command,
                                        "port": port})

    async def _start_one(self, body: Mapping[str, Any]) -> str:
        data = await self._post("/gateway/sessions", body)
        session_id = data.get("session_id") if isinstance(data, Mapping) else None
        if not isinstance(session_id, str):
            raise BrokerProtocolError("the broker's session answer has no 'session_id'")
        return session_id

    def _end_orphan(self, session_id: str) -> None:
        """A start recorded after its caller went away (the client closed the channel while it was being
        recorded): report it ended at once, so the trail holds no session that never ends."""

        async def report() -> None:
            try:
                await self.session_end(session_id, reason="client_closed", bytes_in=0, bytes_out=0,
                                       detail="the client went away before the connection was set up")
            except (BrokerCallFailed, RuntimeError) as exc:  # RuntimeError: the client closed meanwhile
                logger.warning("reporting the end of session %s failed: %s", session_id, exc)

        task = asyncio.create_task(report())
        self._orphan_reports.add(task)
        task.add_done_callback(self._orphan_reports.discard)

    async def _start_many(self, bodies: list[Mapping[str, Any]]) -> list[str | BrokerRefused]:
        data = await self._post("/gateway/sessions/batch", {"starts": bodies})
        results = data.get("results") if isinstance(data, Mapping) else None
        if not isinstance(results, list):
            raise BrokerProtocolError("the broker's batch session answer has no 'results' list")
        answers: list[str | BrokerRefused] = []
        for item in results:
            session_id = item.get("session_id") if isinstance(item, Mapping) else None
            if isinstance(session_id, str):
                answers.append(session_id)
            elif isinstance(item, Mapping) and isinstance(item.get("status"), int) and item["status"] < 500:
                answers.append(BrokerRefused(item["status"], str(item.get("error") or "refused"),
                                             str(item.get("message") or "the broker refused this session")))
            else:
                raise BrokerProtocolError("a batch session answer has neither a 'session_id' nor a refusal")
        return answers

    async def session_end(
        self, session_id: str, *, reason: str, bytes_in: int, bytes_out: int, detail: str | None = None,
        recording: RecordingInfo | None = None, stop: Mapping[str, Any] | None = None, uploads: bool = False,
        ended_at: datetime | None = None,
    ) -> None:
        """Report a session's end. ``uploads``: the recording stays here until it is uploaded
        (gateway/recording_upload.py), which the outbox starts once the broker has this report."""
        body: dict[str, Any] = {"reason": reason, "bytes_in": bytes_in, "bytes_out": bytes_out, "detail": detail}
        if ended_at is not None:  # a report kept through an outage still says when the session ended
            body["ended_at"] = ended_at.isoformat()
        if recording is not None:
            body["recording"] = {**recording.as_json(), "uploads": True} if uploads else recording.as_json()
        if stop is not None:  # a cut command: signals sent and what the target answered (gateway/stopping.py)
            body["stop"] = dict(stop)
        await self._report(Report(f"/gateway/sessions/{session_id}/end", body,
                                  upload=recording.name if recording is not None and uploads else None))

    async def session_event(
        self, session_id: str, *, kind: str, detail: Mapping[str, int | str | bool | None]
    ) -> None:
        """Report a protocol event inside a live session (e.g. ``modbus_write_refused``); flat values only."""
        body = {"kind": kind, "detail": dict(detail)}
        await self._report(Report(f"/gateway/sessions/{session_id}/events", body))

    async def refusal(
        self, *, grant_id: str, kind: str, reason: str, host: str | None = None, port: int | None = None
    ) -> None:
        """Report a request the gateway refused itself (``forward``, ``remote_forward``), for the audit trail."""
        body = {"grant_id": grant_id, "kind": kind, "reason": reason, "host": host, "port": port}
        await self._report(Report("/gateway/refusals", body))

    async def login_refusal(self, *, peer: str, username: str, attempts: list[dict[str, str | None]],
                            more: int = 0) -> None:
        """Report a login the gateway refused (what the client offered and why each was refused), for the trail."""
        body = {"peer": peer, "username": username, "attempts": attempts, "more": more}
        await self._report(Report("/gateway/login-refusals", body))

    async def _report(self, report: Report) -> None:
        """A report for the audit trail: through the outbox when the gateway keeps one (kept on disk while the
        broker cannot be reached), else sent once."""
        if self.outbox is not None:
            await self.outbox.send(report)
        else:
            await self.deliver_report(report)

    async def deliver_report(self, report: Report) -> None:
        """One report call, in the reports' lane (what the outbox sends), with the report's key: a report sent again
        after its answer was lost is not recorded twice."""
        headers = {} if report.key is None else {"Idempotency-Key": report.key}
        await self._call(report.path, self._reports,
                         lambda: self._http.post(report.path, json=report.body, headers=headers))

    async def events(self) -> AsyncGenerator[BrokerEvent, None]:
        """Server-sent events from ``/gateway/events`` until the stream ends or breaks."""
        async for event in self._event_stream("/gateway/events", "the broker's event stream"):
            yield event

    async def _event_stream(self, path: str, what: str) -> AsyncGenerator[BrokerEvent, None]:
        """Server-sent events from ``path`` until the stream ends or breaks (BrokerUnavailable names ``what``).

        Parses the text/event-stream format (WHATWG HTML, "server-sent events"): ``event:`` names
        the type, ``data:`` lines are joined, a blank line dispatches, ``:`` lines are comments.
        """
        timeout = httpx.Timeout(self._http.timeout.connect, read=self._event_read_timeout)
        try:
            async with self._http.stream(
                "GET", path, timeout=timeout, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error_from(response)
                event_type, data_lines = "message", list[str]()
                async for line in response.aiter_lines():
                    if not line:
                        if data_lines:
                            yield _event(event_type, "\n".join(data_lines))
                        event_type, data_lines = "message", []
                        continue
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        event_type = value
                    elif name == "data":
                        data_lines.append(value)
        except httpx.TransportError as exc:
            raise BrokerUnavailable(f"{what} broke: {exc!r}") from exc

    async def _post(self, path: str, body: Mapping[str, Any], lane: asyncio.Semaphore | None = None) -> Any:
        return await self._call(path, lane or self._calls, lambda: self._http.post(path, json=body))

    async def _call(self, path: str, lane: asyncio.Semaphore | None,
                    send: Callable[[], Awaitable[httpx.Response]]) -> Any:
        """One call (``send``) in ``lane`` (None: in none): its JSON answer (``{}`` for none), or the gateway's
        exception for an unreachable broker, a refusal or an answer that is not JSON."""
        try:
            if lane is None:
                response = await send()
            else:
                async with lane:
                    response = await send()
        except httpx.TransportError as exc:
            raise BrokerUnavailable(f"the broker cannot be reached ({type(exc).__name__})") from exc
        if response.status_code >= 300:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise BrokerProtocolError(f"the broker's answer to {path} is not JSON") from None

    async def upload_recording(self, name: str, path: Path) -> Any:
        """PUT a finished recording to the broker, streamed from ``path`` (broker/recordings/intake.py); its answer,
        ``{"stored": true, "sha256", "bytes", "already_stored", "file": {"device", "inode"}}``. Not in a call
        lane: the uploader sends one at a time, and logins and reports must not wait behind a large file."""

        async def blocks() -> AsyncGenerator[bytes, None]:
            handle = await asyncio.to_thread(path.open, "rb")
            try:
                while block := await asyncio.to_thread(handle.read, UPLOAD_BLOCK):
                    yield block
            finally:
                handle.close()

        # The broker answers after hashing and fsyncing the file, which a large one may make slow.
        timeout = httpx.Timeout(self._http.timeout.connect, read=UPLOAD_ANSWER_TIMEOUT)
        path_in_api = f"/gateway/recordings/{name}"
        return await self._call(path_in_api, None, lambda: self._http.put(
            path_in_api, content=blocks(), timeout=timeout, headers={"Content-Type": "application/octet-stream"}))

    # -- live supervision (gateway/observers.py; broker/api/watch_routes.py) ---------------------------

    async def live_events(self) -> AsyncGenerator[BrokerEvent, None]:
        """Server-sent events from ``/gateway/live`` (watch, unwatch, notice, end) until the stream ends or breaks."""
        async for event in self._event_stream("/gateway/live", "the broker's live link"):
            yield event

    async def live_frames(self, session_id: str, *, feed: str, frames: list[list[Any]], dropped: int,
                          ended: bool) -> bool:
        """A watched session's frames; True while somebody still watches. Not in a call lane: one call at a time
        per watched session, and nothing a login or a report waits for."""
        try:
            response = await self._http.post(f"/gateway/live/{session_id}/frames",
                                              json={"frames": frames, "dropped": dropped, "ended": ended},
                                              headers={"X-Gatepass-Feed": feed})
        except httpx.TransportError as exc:
            raise BrokerUnavailable(f"the broker cannot be reached ({type(exc).__name__})") from exc
        if response.status_code >= 300:
            raise _error_from(response)
        try:
            return response.json().get("watching") is True
        except (ValueError, AttributeError):
            raise BrokerProtocolError("the broker's answer to live frames is not a JSON object") from None


def _event(event_type: str, data: str) -> BrokerEvent:
    try:
        obj = json.loads(data)
    except ValueError:
        raise BrokerProtocolError(f"the broker sent a {event_type!r} event that is not JSON") from None
    if not isinstance(obj, dict):
        raise BrokerProtocolError(f"the broker sent a {event_type!r} event that is not a JSON object")
    return BrokerEvent(type=event_type, data=obj)


def _error_from(response: httpx.Response) -> BrokerRefused | BrokerUnavailable:
    if response.status_code >= 500 or response.status_code < 400:
        return BrokerUnavailable(f"the broker answered {response.status_code}", status=response.status_code)
    code, message = "refused", f"the broker refused the request ({response.status_code})"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("error") or code)
        detail = body.get("message") or body.get("detail")
        if isinstance(detail, str) and detail:
            message = detail
    return BrokerRefused(response.status_code, code, message)

"""An in-memory broker speaking only the gateway API of docs/API.md, on a real HTTP port.

The gateway's unit tests need a broker that answers over real HTTP and SSE (so the gateway's
own httpx client, reconnects and resyncs are exercised) without a database. The real broker
is covered by the end-to-end tests; this double follows the same documented contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncssh
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.gateway.waiting import eventually

T = TypeVar("T")

TOKEN = "gpg_test-gateway-token"


@dataclass
class FakeGrant:
    grant_id: str
    serial: int
    asset: str
    identity: str
    ends_at: datetime
    target: dict[str, Any] | None
    interactive: bool = True
    ssh: bool = True
    ports: list[int] = field(default_factory=list)
    status: str = "active"
    site: str = "plant-a"
    asset_host: str = "127.0.0.1"
    read_only: bool = False
    record_input: bool = True
    transfers: str = "both"
    cut_grace_ms: int | None = None  # None: not sent, as an older broker would not
    exec_upload_limit: int | None = None  # None: not sent, as an older broker (the gateway then uses 64 KiB)
    passed_env: list[str] = field(default_factory=list)
    # An AI agent's delegated grant: its kind, and the argv lists it may exec (None: not sent, no limit).
    identity_kind: str | None = None
    allowed_commands: list[list[str]] | None = None
    # Issue 13: the session waits for a supervisor of the site to watch; the grace after the last one left.
    supervision_required: bool = False
    supervision_grace_ms: int | None = None  # None: not sent (the gateway's default, 60 s)


@dataclass
class FakeBroker:
    ca: asyncssh.SSHKey = field(default_factory=lambda: asyncssh.generate_private_key("ssh-ed25519"))
    grants: dict[str, FakeGrant] = field(default_factory=dict)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)
    session_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    login_refusals: list[dict[str, Any]] = field(default_factory=list)
    status_calls: list[list[str]] = field(default_factory=list)
    batch_starts: bool = True  # False: answer POST /gateway/sessions/batch as an older broker would (404)
    start_calls: int = 0  # HTTP calls that carried session starts (one carries many when they wait together)
    down: bool = False  # True: every call answers 503 and event streams close
    refused_while_down: int = 0  # calls answered 503 because of ``down``: a test sees the gateway retry
    token: str = TOKEN  # the gateway credential it accepts; another: every call is 401 not_authenticated
    retired: bool = False  # True: every call is 401 gateway_retired, as for a retired gateway
    port: int = 0
    _streams: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _next: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def user_ca(self) -> str:
        return self.ca.export_public_key("openssh").decode().strip()

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    # -- what a test does ----------------------------------------------------------------------

    def issue(
        self,
        client_key: asyncssh.SSHKey,
        *,
        asset: str,
        ends_at: datetime,
        target: dict[str, Any] | None,
        identity: str = "vendor1",
        interactive: bool = True,
        ssh: bool = True,
        ports: list[int] | None = None,
        principals: list[str] | None = None,
        valid_before: float | None = None,
        read_only: bool = False,
        asset_host: str = "127.0.0.1",
    ) -> tuple[FakeGrant, asyncssh.SSHCertificate]:
        self._next += 1
        grant = FakeGrant(
            grant_id=f"grt-{self._next:08x}",
            serial=1000 + self._next,
            asset=asset,
            identity=identity,
            ends_at=ends_at,
            target=target,
            interactive=interactive,
            ssh=ssh,
            ports=list(ports or []),
            read_only=read_only,
            asset_host=asset_host,
        )
        self.grants[grant.grant_id] = grant
        cert = self.ca.generate_user_certificate(
            client_key,
            key_id=f"gatepass grant={grant.grant_id} identity={identity}",
            serial=grant.serial,
            principals=[asset] if principals is None else principals,
            valid_after=time.time() - 30,
            valid_before=valid_before or math.ceil(ends_at.timestamp()),
            permit_pty=interactive,
            permit_port_forwarding=bool(ports),
            permit_x11_forwarding=False,
            permit_agent_forwarding=False,
            permit_user_rc=False,
        )
        return grant, cert

    async def until(self, condition: Callable[[], T], *, timeout: float = 5.0, what: str = "") -> T:
        """Wait until ``condition()`` holds and return its value: the gateway reports in the background, so a test
        waits on what it expects to see instead of sleeping a guessed time."""
        report = what or "what the test waits for"
        return await eventually(condition, timeout=timeout, what=f"the gateway to report {report}")

    def publish(self, event: dict[str, Any]) -> None:
        for queue in self._streams:
            queue.put_nowait(event)

    def revoke(self, grant_id: str, reason: str = "revoked") -> None:
        grant = self.grants[grant_id]
        grant.status = "revoked"
        self.publish(
            {
                "grant_id": grant_id,
                "status": "revoked",
                "ends_at": grant.ends_at.isoformat(),
                "reason": reason,
            }
        )

    def move_end(self, grant_id: str, ends_at: datetime, *, publish: bool = True) -> None:
        grant = self.grants[grant_id]
        grant.ends_at = ends_at
        if publish:
            self.publish({"grant_id": grant_id, "status": "active", "ends_at": ends_at.isoformat(), "reason": None})

    def drop_streams(self) -> None:
        for queue in self._streams:
            queue.put_nowait(None)

    # -- HTTP ----------------------------------------------------------------------------------

    def app(self) -> FastAPI:
        app = FastAPI()

        def refused(status: int, code: str, message: str) -> JSONResponse:
            return JSONResponse({"error": code, "message": message}, status_code=status)

        def guard(request: Request) -> JSONResponse | None:
            if self.down:
                self.refused_while_down += 1
                return JSONResponse({"error": "unavailable", "message": "down"}, status_code=503)
            if self.retired:
                return refused(401, "gateway_retired", "gateway gw-test was retired on 2026-12-05 03:00 UTC: its "
                               "credential is no longer accepted")
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return refused(401, "not_authenticated", "this gateway credential is not known to the broker")
            return None

        @app.post("/api/v1/gateway/register")
        async def register(request: Request) -> Response:
            if (error := guard(request)) is not None:
                return error
            self.registrations.append(await request.json())
            return JSONResponse({"user_ca": self.user_ca, "gateway": "gw-test"})

        @app.post("/api/v1/gateway/authorize")
        async def authorize(request: Request) -> Response:
            if (error := guard(request)) is not None:
                return error
            body = await request.json()
            self.authorizations.append(body)
            grant = self.grants.get(body["grant_id"])
            if grant is None or grant.serial != body["serial"]:
                return refused(403, "forbidden", "the certificate does not belong to any grant of this broker")
            if grant.asset != body["asset"]:
                return refused(403, "forbidden", f"the grant is for {grant.asset}, not {body['asset']}")
            if grant.status != "active":
                return refused(403, "forbidden", f"the grant for {grant.asset} was revoked")
            return JSONResponse(
                {
                    "grant_id": grant.grant_id,
                    "identity": grant.identity,
                    "identity_kind": grant.identity_kind or ("human" if grant.interactive else "service"),
                    "asset": grant.asset,
                    "site": grant.site,
                    "starts_at": datetime.now(UTC).isoformat(),
                    "ends_at": grant.ends_at.isoformat(),
                    "ssh": grant.ssh,
                    "interactive": grant.interactive,
                    "ports": grant.ports,
                    "target": grant.target,
                    "asset_host": grant.asset_host,
                    "read_only": grant.read_only,
                    "record_input": grant.record_input,
                    "transfers": grant.transfers,
                    **({} if grant.exec_upload_limit is None else {"exec_upload_limit": grant.exec_upload_limit}),
                    "passed_env": grant.passed_env,
                    **({} if grant.cut_grace_ms is None else {"cut_grace_ms": grant.cut_grace_ms}),
                    **({} if grant.allowed_commands is None else {"allowed_commands": grant.allowed_commands}),
                    "supervision_required": grant.supervision_required,
                    **({} if grant.supervision_grace_ms is None else
                       {"supervision_grace_ms": grant.supervision_grace_ms}),
                }
            )

        @app.post("/api/v1/gateway/grants/status")
        async def status(request: Request) -> Response:
            if (error := guard(request)) is not None:
                return error
            ids = (await request.json())["grant_ids"]
            self.status_calls.append(ids)
            return JSONResponse(
                {
                    "grants": {
                        gid: {
                            "status": self.grants[gid].status,
                            "ends_at": self.grants[gid].ends_at.isoformat(),
                        }
                        for gid in ids
                        if gid in self.grants
                    }
                }
            )

        @app.post("/api/v1/gateway/sessions")
        async def start_session(request: Request) -> Response:
            if (error := guard(request)) is not None:
                return error
            body = await request.json()
            self.start_calls += 1
            answer = start(body)
            if "session_id" not in answer:
                return refused(answer["status"], answer["error"], answer["message"])
            return JSONResponse(answer, status_code=201)

        def start(body: dict[str, Any]) -> dict[str, Any]:
            grant = self.grants.get(body["grant_id"])
            if grant is None or grant.status != "active":
                return {"status": 403, "error": "forbidden", "message": "the grant is not active"}
            session_id = f"ses-{len(self.sessions) + 1:08x}"
            self.sessions[session_id] = body
            return {"session_id": session_id}

        @app.post("/api/v1/gateway/sessions/batch")
        async def start_sessions(request: Request) -> Response:
            if (error := guard(request)) is not None:
                return error
            if not self.batch_starts:  # what a broker from before the batch endpoint answers
                return refused(404, "not_found", "there is no such page or API endpoint")
            self.start_calls += 1
            return JSONResponse({"results": [start(body) for body in (await request.json())["starts"]]})

        @app.post("/api/v1/gateway/sessions/{session_id}/end")
        async def end_session(session_id: str, request: Request) -> Response:
            if (error := guard(request)) is not None:
                return error
            if session_id not in self.sessions:
                return refused(404, "not_found", f"there is no session {session_id} on this gateway")
            if session_id in self.ended:
                why = self.ended[session_id]["reason"]
                return refused(409, "conflict", f"session {session_id} already ended ({why})")
            self.ended[session_id] = await request.json()
            return Response(status_code=204)

        @app.post("/api/v1/gateway/sessions/{session_id}/events")
        async def session_event(session_id: str, request: Request) -> Response:
            if (error := guard(request)) is not None:
                return error
            if session_id not in self.sessions:
                return refused(404, "not_found", f"there is no session {session_id} on this gateway")
            self.session_events.append((session_id, await request.json()))
            return Response(status_code=204)

        @app.post("/api/v1/gateway/refusals")
        async def refusal(request: Request) -> Response:
            if (error := guard(request)) is not None:
                return error
            body = await request.json()
            if body["grant_id"] not in self.grants:
                return refused(404, "not_found", f"there is no grant {body['grant_id']}")
            self.refusals.append(body)
            return Response(status_code=204)

        @app.post("/api/v1/gateway/login-refusals")
        async def login_refusal(request: Request) -> Response:
            if (error := guard(request)) is not None:
                return error
            self.login_refusals.append(await request.json())
            return Response(status_code=204)

        @app.get("/api/v1/gateway/events")
        async def events(request: Request) -> Response:
            if (error := guard(request)) is not None:
                return error
            queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
            self._streams.add(queue)

            async def stream() -> AsyncIterator[bytes]:
                try:
                    hello = json.dumps({"server_time": datetime.now(UTC).isoformat()})
                    yield f"event: hello\ndata: {hello}\n\n".encode()
                    yield b": keepalive\n\n"
                    while (event := await queue.get()) is not None:
                        yield f"event: grant\ndata: {json.dumps(event)}\n\n".encode()
                finally:
                    self._streams.discard(queue)

            return StreamingResponse(stream(), media_type="text/event-stream")

        return app

    async def start(self) -> None:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        server = self._server = uvicorn.Server(config)
        task = self._task = asyncio.ensure_future(server.serve())
        await eventually(lambda: server.started or task.done(), timeout=10, what="the fake broker to listen")
        if not server.started:
            task.result()  # serve() ended before it listened: its exception, if any, says why
            raise AssertionError("the fake broker's server stopped before it listened")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self.drop_streams()
        self._server.should_exit = True
        self._server.force_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

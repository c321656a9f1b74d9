"""Run the long-lived processes: broker (uvicorn), SSH gateway, and the demo machine, in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from assembly.app import create_app
from assembly.database import migrate
from assembly.settings import AppSettings
from assembly.siem import start_forwarding
from broker import demo
from broker.settings import Settings
from demo.target import DemoTarget
from gateway.server import Gateway
from gateway.settings import GatewaySettings

log = logging.getLogger("gatepass")


def run_forever(main: Coroutine[Any, Any, int]) -> int:
    """Run a long-lived process on uvloop: its Protocol transports relay bytes markedly faster than the
    default loop's (FIELD-NOTES; bench/README.md)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _bound_port(server: uvicorn.Server, fallback: int) -> int:
    for listener in getattr(server, "servers", []):
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return fallback


async def serve(app_settings: AppSettings, *, demo: bool, with_gateway: bool = True,
                recording_reserve: int = 0) -> int:
    """`gatepass serve` / `gatepass broker`: the gateway talks to the broker over HTTP even in one process,
    so what is tested here is what is deployed split."""
    _configure_logging()
    settings = app_settings.broker
    migrate(settings)
    app = create_app(app_settings)
    # proxy_headers=False: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 (its default
    # forwarded_allow_ips), so anything on the host could pick the source the throttles and the audit trail see.
    # The broker applies GATEPASS_TRUSTED_PROXIES itself, in one place (broker.sources).
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=2, proxy_headers=False)
    server = uvicorn.Server(config)
    server_task = asyncio.create_task(server.serve())
    while not server.started:
        if server_task.done():
            print(f"gatepass: the web server could not start on {settings.http_host}:{settings.http_port}",
                  file=sys.stderr)
            return 1
        await asyncio.sleep(0.02)
    http_port = _bound_port(server, settings.http_port)
    base_url = f"http://{settings.http_host}:{http_port}"
    siem_stop = threading.Event()
    siem_task = None
    demo_target = None
    gateway = None
    try:
        siem_task = start_forwarding(app_settings, siem_stop)
        if demo:
            demo_target = await _start_demo(settings)
        if with_gateway:
            gateway = Gateway(GatewaySettings(
                broker_url=base_url,
                token=settings.gateway_token_path.read_text().strip(),
                host_key_path=settings.gateway_dir / "ssh_host_ed25519_key",
                recordings_dir=settings.recordings_dir,
                listen_host=settings.ssh_host, listen_port=settings.ssh_port,
                recording_reserve=recording_reserve,
            ))
            settings.gateway_dir.mkdir(mode=0o700, exist_ok=True)
            await gateway.start()
        print(f"Gatepass is running. Web and API: {base_url}", flush=True)
        if gateway is not None:
            print(f"SSH gateway: {settings.ssh_host}:{gateway.port}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        if gateway is not None or siem_task is not None:
            # uvicorn owns SIGINT/SIGTERM; as soon as it starts shutting down, stop the gateway too. That
            # closes its held event stream (which would otherwise keep uvicorn waiting for its graceful
            # timeout) and reports the cut sessions while the broker still answers.
            while not server_task.done() and not server.should_exit:
                await asyncio.sleep(0.05)
            if gateway is not None:
                await gateway.stop()
                gateway = None
            # uvicorn re-raises the signal once it has shut down, so the SIEM lease is released now or never.
            siem_stop.set()
            if siem_task is not None:
                await siem_task
                siem_task = None
        await server_task
    finally:
        siem_stop.set()
        if gateway is not None:
            await gateway.stop()
        if siem_task is not None:
            await siem_task
        if demo_target is not None:
            await demo_target.stop()
        if not server_task.done():
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await server_task
    return 0


async def _start_demo(settings: Settings) -> DemoTarget:
    key = demo.target_client_key(settings)
    target = DemoTarget(state_dir=demo.demo_dir(settings) / "target", username=demo.TARGET_USER,
                        authorized_key=key.export_public_key("openssh").decode())
    await target.start()
    users = await asyncio.to_thread(demo.seed, settings, target_host=target.host, target_port=target.port,
                                    target_host_key=target.host_key)
    vendor, supervisor = users["vendor"], users["supervisor"]
    print(f"Demo plant '{users['site']}' with machine '{users['asset']}' (a built-in demo SSH target on "
          f"{target.host}:{target.port}).")
    for role, creds in (("vendor", vendor), ("supervisor", supervisor)):
        print(f"  {role:<10} username {creds['username']:<16} password {creds['password']}  "
              f"TOTP secret {creds['totp_secret']}  enrolment code {creds.get('enrolment_code', '-')}")
    return target


async def run_gateway_only(*, broker_url: str, token: str, host: str, port: int, host_key_path: Path,
                           public_host: str | None, recordings_dir: Path, upload_recordings: bool = True,
                           recording_reserve: int = 0) -> int:
    _configure_logging()
    host_key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    gateway = Gateway(GatewaySettings(broker_url=broker_url, token=token, host_key_path=host_key_path,
                                      listen_host=host, listen_port=port, public_host=public_host,
                                      recordings_dir=recordings_dir, upload_recordings=upload_recordings,
                                      recording_reserve=recording_reserve))
    await gateway.start()
    print(f"Gatepass gateway on {host}:{gateway.port}, broker {broker_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
    return 0


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per gateway API call drowns what operators need to see; keep the gateway's own lines. asyncssh logs
    # five or six lines per forwarded connection (1,000 tunnel connections: 6,000 lines and a third of the event
    # loop's time while they open); the gateway logs each SSH connection, cut and refusal itself.
    for noisy in ("httpx", "httpcore", "alembic.runtime.migration", "asyncssh"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

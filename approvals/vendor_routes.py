"""Vendor pages: ask for access (asset, services, window, reason, SSH public key), follow the requests, and
copy the exact commands to connect once a grant is approved."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from approvals.web import Viewer, parse_ports, posted, redirect, render, signed_in, text, web_of
from broker.access import extensions, oversight, workflow
from broker.access.rules import grant_status
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound
from broker.identity.identities import has_role
from broker.inventory import gateways
from broker.models import AccessRequest, Identity

router = APIRouter(include_in_schema=False)

KEY_PATH = "~/.ssh/id_ed25519"
DONE_MESSAGES = {
    "sent": "Request sent: the plant's approvers see it now.",
    "cancelled": "Request cancelled.",
    "extension": "Extension asked: the plant's approvers see it now; your session keeps running.",
}


@dataclass(frozen=True)
class Connection:
    """How to reach one usable grant, as commands the vendor copies."""

    request: AccessRequest
    status: str
    commands: list[str]
    certificate: str


def _require_vendor(identity: Identity) -> None:
    if not has_role(identity, "vendor"):
        raise Forbidden("this page is for vendor accounts; your account has no vendor role")


def _connections(session: Session, requests: list[AccessRequest], now: dt.datetime) -> list[Connection]:
    result = []
    directory = gateways.GatewayDirectory(session)
    for request in requests:
        grant = request.grant
        if grant is None or grant_status(grant, now) not in ("scheduled", "active"):
            continue
        gateway = directory.for_site(request.asset.site)  # the gateway of the asset's site
        host = gateway.ssh_host if gateway and gateway.ssh_host else "GATEWAY"
        port = gateway.ssh_port if gateway and gateway.ssh_port else 2222
        asset = request.asset.name
        commands = []
        if grant.ssh:
            commands.append(f"gatepass ssh {asset}")
            commands.append(f"ssh -p {port} -i {KEY_PATH} -o CertificateFile={KEY_PATH}-cert.pub {asset}@{host}")
        for tcp_port in grant.ports:
            commands.append(f"gatepass tunnel {asset} --port {tcp_port}")
            commands.append(f"ssh -N -p {port} -i {KEY_PATH} -o CertificateFile={KEY_PATH}-cert.pub "
                            f"-L {tcp_port}:{asset}:{tcp_port} {asset}@{host}")
        result.append(Connection(request=request, status=grant_status(grant, now), commands=commands,
                                 certificate=grant.certificate))
    return result


def _page(request: Request, session: Session, identity: Identity, viewer: Viewer, now: dt.datetime, *,
          status: int = 200, message: str | None = None, form: dict[str, str] | None = None,
          done: str | None = None, extension_message: str | None = None) -> Response:
    requests = oversight.own_requests(session, now=now, identity=identity)
    form = form or {}
    return render(web_of(request), "vendor.html", status=status, title="Request access", viewer=viewer,
                  assets=oversight.requestable_assets(session, vendor=identity), requests=requests,
                  connections=_connections(session, requests, now), message=message, done=done, form=form,
                  public_key=form.get("public_key") or oversight.last_public_key(session, identity=identity) or "",
                  key_path=KEY_PATH, now=now,
                  extensions=extensions.latest_by_grant(session, requester=identity),
                  extension_message=extension_message)


@router.get("/vendor")
async def vendor_page(request: Request) -> Response:
    done = DONE_MESSAGES.get(request.query_params.get("done", ""))

    def work(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime) -> Response:
        _require_vendor(identity)
        return _page(request, session, identity, viewer, now, done=done)

    return await signed_in(request, work)


@router.post("/vendor/requests")
async def create_request(request: Request) -> Response:
    def work(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime, form: dict[str, str]) -> Response:
        _require_vendor(identity)
        try:
            asset = text(form, "asset", label="The asset", limit=64)
            duration = text(form, "duration", label="The duration (e.g. 2h)", limit=16)
            reason = text(form, "reason", label="The reason")
            public_key = text(form, "public_key", label="Your SSH public key (.pub)", limit=16_000)
            workflow.create_request(
                session, now=now, decide_within=web_of(request).state.settings.decide_within, requester=identity,
                asset_name=asset, duration=duration, reason=reason, ssh=form.get("ssh") == "on",
                ports=parse_ports(form.get("ports", "")), read_only=form.get("read_only") == "on", start=None,
                public_key=public_key)
        except (InvalidInput, NotFound) as error:
            # Show the form again with what was typed and the reason, so nothing has to be retyped.
            return _page(request, session, identity, viewer, now, status=400, message=error.message, form=form)
        return redirect("/vendor?done=sent")

    return await posted(request, work)


@router.post("/vendor/requests/{request_id}/cancel")
async def cancel_request(request: Request, request_id: str) -> Response:
    def work(session: Session, identity: Identity, _viewer: Viewer, now: dt.datetime,
             _form: dict[str, str]) -> Response:
        workflow.cancel(session, now=now, requester=identity, request_id=request_id[:32])
        return redirect("/vendor?done=cancelled")

    return await posted(request, work)


@router.post("/vendor/grants/{grant_id}/extend")
async def extend_grant(request: Request, grant_id: str) -> Response:
    def work(session: Session, identity: Identity, viewer: Viewer, now: dt.datetime, form: dict[str, str]) -> Response:
        _require_vendor(identity)
        try:
            extensions.request_extension(
                session, now=now, requester=identity, grant_id=grant_id[:32],
                duration=text(form, "duration", label="How much longer (e.g. 30m)", limit=16),
                reason=text(form, "reason", label="The reason"))
        except (InvalidInput, Conflict) as error:
            return _page(request, session, identity, viewer, now, status=400, extension_message=error.message)
        return redirect("/vendor?done=extension")

    return await posted(request, work)

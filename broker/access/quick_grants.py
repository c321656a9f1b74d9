""""Grant access now": a site's approver gives a named vendor a bounded grant in one step — the quick local
enablement plants need — through the same request and approval rules (a high-criticality asset still needs a
second, distinct approver: the request then waits with the first approval recorded)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.access import oversight, workflow
from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound, audited
from broker.identity.assurance import require_mfa
from broker.identity.identities import has_role, may_act_for_site
from broker.inventory.sites import get_asset
from broker.keys.vault import Vault
from broker.models import AccessRequest, Identity


def grant_now(
    session: Session, *, vault: Vault, now: dt.datetime, decide_within: dt.timedelta, approver: Identity,
    vendor_name: str, asset_name: str, duration: str, reason: str, ssh: bool, ports: list[int],
    read_only: bool = False,
) -> AccessRequest:
    """Make the request on the vendor's behalf (with the SSH key of their latest request) and approve it."""
    asset = get_asset(session, asset_name)
    if not may_act_for_site(approver, "supervisor", asset.site_id):
        why = f"only approvers of site {asset.site.name} can grant access to {asset.name}"
        trail.record(session, now=now, action=Action.DECISION_REFUSED, outcome="refused", actor=approver.username,
                     subject=asset.name, site=asset.site.name, details={"reason": why, "vendor": vendor_name})
        raise audited(Forbidden(why))
    require_mfa(session, now=now, actor=approver, what="grant access", action=Action.DECISION_REFUSED,
                subject=asset.name, site=asset.site.name)
    vendor = session.scalar(select(Identity).where(Identity.username == vendor_name))
    if vendor is None:
        raise NotFound(f"there is no user named '{vendor_name}'")
    if not has_role(vendor, "vendor"):
        raise InvalidInput(f"'{vendor_name}' is not a vendor account: access is granted to vendors only")
    public_key = oversight.last_public_key(session, identity=vendor)
    if public_key is None:
        raise Conflict(f"{vendor_name} has no SSH public key on file yet: ask them to send one request from the "
                       "vendor page or with `gatepass request` first")
    request = workflow.create_request(
        session, now=now, decide_within=decide_within, requester=vendor, asset_name=asset.name, duration=duration,
        reason=reason, ssh=ssh, ports=ports, start=None, public_key=public_key, read_only=read_only)
    # The request event names the vendor as requester; this one says who actually made it.
    trail.record(session, now=now, action=Action.REQUEST_MADE_BY_APPROVER, actor=approver.username,
                 subject=request.id, site=asset.site.name, details={"vendor": vendor.username, "asset": asset.name})
    session.flush()  # the approval below locks the request row by its id
    return workflow.approve(session, vault=vault, now=now, approver=approver, request_id=request.id,
                          comment=f"granted directly by {approver.username}")

"""The asset inventory as operators read it (``gatepass admin asset list|show``): each asset's place, services and
the supervision policy in force, with where that policy comes from. Never a credential."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.errors import NotFound
from broker.inventory.supervision_policy import effective_supervision
from broker.models import Asset, Site


def asset_record(asset: Asset) -> dict[str, Any]:
    """One asset as plain values (what `--json` prints)."""
    return {
        "name": asset.name, "site": asset.site.name, "host": asset.host, "criticality": asset.criticality,
        "ssh_port": asset.ssh_port, "tcp_ports": list(asset.tcp_ports or []),
        "passed_env": list(asset.passed_env or []), "supervision": effective_supervision(asset).as_dict(),
    }


def list_assets(session: Session, *, site: str | None = None) -> list[dict[str, Any]]:
    """Every asset (of one site), by site and name; an unknown site is refused, not shown as empty."""
    query = select(Asset).join(Site).order_by(Site.name, Asset.name)
    if site is not None:
        if session.scalar(select(Site.id).where(Site.name == site)) is None:
            raise NotFound(f"there is no site named '{site}'")
        query = query.where(Site.name == site)
    return [asset_record(asset) for asset in session.scalars(query)]


def show_asset(session: Session, *, name: str) -> dict[str, Any]:
    asset = session.scalar(select(Asset).where(Asset.name == name))
    if asset is None:
        raise NotFound(f"there is no asset named '{name}'")
    return asset_record(asset)

"""Whether a session to an asset must be watched by a supervisor of its site (issue 13), and why: one rule, here.

The asset's own setting wins (``required`` or ``optional``, changed with ``gatepass admin asset set --supervision``);
an asset that follows its site (``site``, the default) is supervised when the site requires supervision, or when it
is of high criticality and the site supervises its high-criticality assets (on for sites made since migration 0018,
off for the ones that existed before it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, true

from broker.errors import InvalidInput
from broker.models import Asset, Site
from broker.vocabulary import Criticality

# What `--supervision` takes for an asset, and the value each one stores (None: follow the site).
ASSET_SETTINGS: dict[str, bool | None] = {"required": True, "optional": False, "site": None}


@dataclass(frozen=True)
class SupervisionPolicy:
    """What is in force for an asset: ``required``, and ``source`` — ``asset`` (its own setting), ``site`` (the
    site's policy) or ``high_criticality`` (the site supervises its high-criticality assets)."""

    required: bool
    source: str
    asset_setting: str  # required | optional | site
    site: str

    def describe(self) -> str:
        """One line for people: what is in force and where it comes from."""
        state = "required" if self.required else "optional"
        if self.source == "asset":
            return f"{state} (set on the asset)"
        if self.source == "high_criticality":
            return f"required (high criticality, and {self.site} supervises its high-criticality assets)"
        return f"{state} ({self.site} {'requires' if self.required else 'does not require'} supervision)"

    def as_dict(self) -> dict[str, Any]:
        return {"required": self.required, "source": self.source, "asset_setting": self.asset_setting,
                "text": self.describe()}


def parse_asset_setting(text: str) -> bool | None:
    """``required``, ``optional`` or ``site`` as the value an asset stores; refuses anything else with a reason."""
    if text not in ASSET_SETTINGS:
        raise InvalidInput(f"supervision '{(text or '')[:20]}' is not a policy: choose required (a supervisor of "
                           "the site watches every session), optional, or site (follow the site's policy)")
    return ASSET_SETTINGS[text]


def asset_setting_word(value: bool | None) -> str:
    return "site" if value is None else "required" if value else "optional"


def effective_supervision(asset: Asset) -> SupervisionPolicy:
    """The supervision policy in force for sessions to ``asset`` (what the gateway is told at each login)."""
    site = asset.site
    setting = asset_setting_word(asset.supervision_required)
    if asset.supervision_required is not None:
        return SupervisionPolicy(asset.supervision_required, "asset", setting, site.name)
    if site.supervision_required:
        return SupervisionPolicy(True, "site", setting, site.name)
    if asset.criticality == Criticality.HIGH and site.supervise_high_criticality:
        return SupervisionPolicy(True, "high_criticality", setting, site.name)
    return SupervisionPolicy(False, "site", setting, site.name)


def supervision_required_clause() -> ColumnElement[bool]:
    """effective_supervision(asset).required as a SQL condition on Asset joined with its Site (for queries that must
    not load every asset to decide, e.g. which held tunnels to announce)."""
    follows_site = Asset.supervision_required.is_(None)
    return or_(Asset.supervision_required.is_(True),
               and_(follows_site, or_(Site.supervision_required.is_(True),
                                      and_(Asset.criticality == Criticality.HIGH,
                                           Site.supervise_high_criticality == true()))))

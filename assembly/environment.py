"""The broker's settings from the environment: the light half of assembly.settings, for the `gatepass admin …`
commands, which must not pay for importing the web pages."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from broker.identity.oidc_config import DEFAULT_MFA_METHODS, OidcSettings, parse_groups, parse_methods
from broker.settings import DEFAULT_HTTP, DEFAULT_SSH, Settings, split_address
from broker.sources import parse_trusted_proxies


def broker_settings(environ: Mapping[str, str], *, data_dir: str | None = None, **overrides: object) -> Settings:
    http_host, http_port = split_address(environ.get("GATEPASS_HTTP", DEFAULT_HTTP), what="HTTP")
    ssh_host, ssh_port = split_address(environ.get("GATEPASS_SSH", DEFAULT_SSH), what="SSH")
    values: dict[str, object] = {
        "data_dir": Path(data_dir or environ.get("GATEPASS_DATA", "gatepass-data")).absolute(),
        "database_url": environ.get("GATEPASS_DATABASE_URL") or None,
        "http_host": http_host,
        "http_port": http_port,
        "ssh_host": ssh_host,
        "ssh_port": ssh_port,
        "trusted_proxies": parse_trusted_proxies(environ.get("GATEPASS_TRUSTED_PROXIES", "")),
        "metrics_token": environ.get("GATEPASS_METRICS_TOKEN") or None,
        "oidc": oidc_settings(environ),
        "recording_retention_days": _retention_days(environ.get("GATEPASS_RECORDING_RETENTION_DAYS", "")),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]


def _retention_days(text: str) -> int:
    """GATEPASS_RECORDING_RETENTION_DAYS: a number of days, or 0 / "forever" / unset (keep forever)."""
    value = text.strip().lower()
    if value in ("", "0", "forever"):
        return 0
    if not value.isdigit():
        raise ValueError(f"GATEPASS_RECORDING_RETENTION_DAYS '{text[:20]}' is not a number of days (or 'forever')")
    return int(value)


def oidc_settings(environ: Mapping[str, str]) -> OidcSettings | None:
    """Staff sign-in through the plant's identity provider, when GATEPASS_OIDC_ISSUER names one (checked here:
    a group mapped to vendor, or a supervisor without a site, stops the broker from starting)."""
    issuer = environ.get("GATEPASS_OIDC_ISSUER", "").strip()
    if not issuer:
        return None
    return OidcSettings(
        issuer=issuer, client_id=environ.get("GATEPASS_OIDC_CLIENT_ID", "").strip(),
        client_secret=environ.get("GATEPASS_OIDC_CLIENT_SECRET") or None,
        groups=parse_groups(environ.get("GATEPASS_OIDC_GROUPS", "")),
        mfa_methods=parse_methods(environ.get("GATEPASS_OIDC_MFA", ",".join(DEFAULT_MFA_METHODS))),
        public_url=environ.get("GATEPASS_PUBLIC_URL", "").strip().rstrip("/") or None)

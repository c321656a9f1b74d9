"""The broker's settings from the environment: the light half of assembly.settings, for the `gatepass admin …`
commands, which must not pay for importing the web pages."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

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
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]

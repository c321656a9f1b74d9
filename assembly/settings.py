"""Everything a Gatepass process is configured with, in one object, read from the environment in one place.

Flags win over environment variables, which win over the contract's defaults (DESIGN.md, "Public contract").
No other package reads the environment: the broker, the pages and the notifier receive their part of this.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from approvals.notifier import NotifierSettings
from approvals.web import DEFAULT_USE_NOTICE, WebSettings
from assembly.environment import broker_settings
from broker.access.notifications import Targets
from broker.settings import Settings, split_address


@dataclass(frozen=True)
class SiemSettings:
    """Continuous forwarding of the audit trail (GATEPASS_SYSLOG=tcp://HOST:PORT or tls://…, GATEPASS_SYSLOG_CA)."""

    url: str
    ca_file: Path | None = None


@dataclass(frozen=True)
class AppSettings:
    broker: Settings
    web: WebSettings = field(default_factory=WebSettings)
    notifier: NotifierSettings | None = None  # None: no targets, links to the broker's own address
    siem: SiemSettings | None = None

    @property
    def public_url(self) -> str:
        return f"http://{self.broker.http_host}:{self.broker.http_port}"

    @property
    def effective_notifier(self) -> NotifierSettings:
        return self.notifier or NotifierSettings(public_url=self.public_url)


def load(environ: Mapping[str, str] | None = None, *, data_dir: str | None = None,
         **overrides: object) -> AppSettings:
    """The settings of this process: ``overrides`` (flags, None = not given) over ``environ`` over defaults."""
    env = os.environ if environ is None else environ
    app = AppSettings(broker=broker_settings(env, data_dir=data_dir, **overrides), web=_web(env), siem=_siem(env))
    # The notifier's links default to the broker's own address, as the flags and environment set it above.
    return dataclasses.replace(app, notifier=_notifier(env, default_public_url=app.public_url))


def _web(environ: Mapping[str, str]) -> WebSettings:
    # IEC 62443-3-3 SR 1.12 "system use notification", worded per deployment.
    notice = environ.get("GATEPASS_USE_NOTICE", "").strip()
    return WebSettings(use_notice=notice or DEFAULT_USE_NOTICE)


def _notifier(environ: Mapping[str, str], *, default_public_url: str) -> NotifierSettings:
    emails: dict[str, list[str]] = {}
    for pair in environ.get("GATEPASS_NOTIFY_EMAIL", "").split(","):
        site, sep, address = pair.strip().partition(":")
        if sep and site and "@" in address:
            emails.setdefault(site, []).append(address.strip())
    host, port = split_address(environ.get("GATEPASS_SMTP", "127.0.0.1:25"), what="SMTP")
    # Approvers' own addresses are used once the deployment names a mail relay: without one, a broker on a
    # laptop would keep failing to reach port 25 for every supervisor who has an address on file.
    relay_configured = bool(environ.get("GATEPASS_SMTP") or emails)
    return NotifierSettings(
        targets=Targets(webhook_url=environ.get("GATEPASS_NOTIFY_WEBHOOK") or None, emails_by_site=emails,
                        approver_emails=relay_configured),
        smtp_host=host, smtp_port=port, smtp_starttls=environ.get("GATEPASS_SMTP_STARTTLS") == "1",
        smtp_from=environ.get("GATEPASS_SMTP_FROM", "gatepass@localhost"),
        public_url=environ.get("GATEPASS_PUBLIC_URL") or default_public_url)


def _siem(environ: Mapping[str, str]) -> SiemSettings | None:
    url = environ.get("GATEPASS_SYSLOG")
    if not url:
        return None
    ca_file = environ.get("GATEPASS_SYSLOG_CA")
    return SiemSettings(url=url, ca_file=Path(ca_file) if ca_file else None)

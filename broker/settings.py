"""Broker settings: built once (from flags and environment by assembly.settings), then passed explicitly (never a
global)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from broker.clock import Clock, SystemClock
from broker.identity.oidc_config import OidcSettings
from broker.sources import Network

DEFAULT_HTTP = "127.0.0.1:8080"
DEFAULT_SSH = "127.0.0.1:2222"
MIN_METRICS_TOKEN = 16
# A retention longer than this (about 100 years) is "forever" written as a number: refused, say 0 or forever.
MAX_RETENTION_DAYS = 36500


def split_address(text: str, *, what: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:8080`` for IPv6) with a clear error for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what} address '{text}' is not HOST:PORT (for example 127.0.0.1:8080)")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class ThrottlePolicy:
    """Sign-in throttle thresholds (IEC 62443-3-3 SR 1.11 "unsuccessful login attempts"; NIST SP 800-63B §5.2.2).

    Per source address, whatever names it tries (unknown ones too): a password spray from one place. Per (account,
    source): failures, then blocks doubling up to the maximum; only that one source is held back, never the real
    user elsewhere (DESIGN invariant 4). Failures are forgiven after ``window`` without one. Distributed guessing:
    ``account_max_sources`` distinct sources failing on one account within the window hold back each of those
    sources for at most ``account_block`` after its own last failure; a source that has not failed (the real user)
    is still checked, and a right password and code pass."""

    source_max_failures: int = 10
    source_block: dt.timedelta = dt.timedelta(minutes=1)
    source_block_max: dt.timedelta = dt.timedelta(minutes=15)
    account_source_max_failures: int = 5
    account_source_block: dt.timedelta = dt.timedelta(seconds=30)
    account_source_block_max: dt.timedelta = dt.timedelta(minutes=15)
    window: dt.timedelta = dt.timedelta(minutes=5)
    account_max_sources: int = 5
    account_block: dt.timedelta = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    ssh_host: str = "127.0.0.1"
    ssh_port: int = 2222
    clock: Clock = field(default_factory=SystemClock)
    # API tokens are short-lived bearer credentials; a sign-in lasts a working hour by default.
    token_ttl: dt.timedelta = dt.timedelta(hours=1)
    # Failed sign-ins are throttled in the database (broker.sign_in_throttles), so every replica agrees.
    sign_in: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    # The one-time code a new (or reset) person gives with the password to see and bind their second factor.
    enrolment_code_ttl: dt.timedelta = dt.timedelta(hours=72)
    # A request nobody decides on within this time expires rather than waiting forever.
    decide_within: dt.timedelta = dt.timedelta(hours=24)
    # Reverse proxies whose X-Forwarded-For is believed (GATEPASS_TRUSTED_PROXIES); none by default.
    trusted_proxies: tuple[Network, ...] = ()
    # A `/metrics` scrape needs this bearer token (GATEPASS_METRICS_TOKEN); without one, /metrics answers 404.
    metrics_token: str | None = field(default=None, repr=False)
    # Staff sign-in through the plant's identity provider (GATEPASS_OIDC_*); None: local accounts only.
    oidc: OidcSettings | None = None
    # Recordings (issue 12): days after a session's end before its recording may be purged, for sites that set
    # none themselves (GATEPASS_RECORDING_RETENTION_DAYS); 0 keeps them forever, the safe default: deleting
    # evidence is a decision the plant takes, never one made for it. How often the purge job looks.
    recording_retention_days: int = 0
    retention_sweep_interval: dt.timedelta = dt.timedelta(minutes=10)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'gatepass.db'}"

    @property
    def master_key_path(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def gateway_token_path(self) -> Path:
        return self.data_dir / "gateway.token"

    @property
    def gateway_dir(self) -> Path:
        return self.data_dir / "gateway"

    @property
    def recordings_dir(self) -> Path:
        """Where the embedded gateway (`gatepass serve`) writes session recordings."""
        return self.data_dir / "recordings"

    def __post_init__(self) -> None:
        if not 0 <= self.recording_retention_days <= MAX_RETENTION_DAYS:
            raise ValueError(f"GATEPASS_RECORDING_RETENTION_DAYS must be from 0 (keep forever) to {MAX_RETENTION_DAYS} "
                             f"days, not {self.recording_retention_days}")
        if self.metrics_token is not None and len(self.metrics_token) < MIN_METRICS_TOKEN:
            raise ValueError(f"GATEPASS_METRICS_TOKEN is too short to be a secret: use at least {MIN_METRICS_TOKEN} "
                             "random characters (for example `openssl rand -hex 24`)")

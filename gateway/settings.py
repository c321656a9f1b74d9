"""Configuration of one gateway process (``GatewaySettings``) and its default clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

Clock = Callable[[], datetime]
# What `gatepass serve` and `gatepass gateway` keep free on the recordings disk unless told otherwise
# ($GATEPASS_RECORDING_RESERVE, --recording-reserve): room for every running session to close its recording whole.
DEFAULT_RECORDING_RESERVE = 256 << 20


def utc_now() -> datetime:
    """The real clock: an aware UTC datetime (the only place the gateway reads wall time)."""
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """What a gateway needs to run; tests build one instead of patching globals."""

    broker_url: str
    # repr=False: the gateway token is a credential and must never reach a log line.
    token: str = field(repr=False)
    host_key_path: Path
    # Where session recordings are written (<session id>.cast). Required: a gateway always records.
    recordings_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 2222  # 0 picks a free port; Gateway.port tells which one
    public_host: str | None = None  # what clients are told to connect to; default listen_host
    clock: Clock = utc_now
    warn_before: tuple[timedelta, ...] = (timedelta(minutes=5), timedelta(minutes=1))
    broker_timeout: float = 10.0  # seconds for one gateway API call
    target_connect_timeout: float = 10.0  # seconds to connect and log in to a target
    # If no session is opened this long after a refusal, the client is disconnected anyway.
    refusal_grace: float = 0.5
    # After a recording failed, the store is tried again at most this often (seconds), by the next session.
    recording_probe_interval: float = 5.0
    # Bytes the recordings disk keeps free (0: no reserve). Below it, new recorded sessions are refused; below half
    # of it, the recorded session that wrote the most since the last look is ended (its recording kept whole), so
    # one session filling the disk cannot end every other one, as a full disk would (fail closed).
    recording_reserve: int = 0
    # Seconds between looks at the recordings disk's free space while a reserve is set.
    recording_space_interval: float = 1.0
    # Upload each finished recording to the broker and delete it here once the broker holds it whole
    # (gateway/recording_upload.py): on for `gatepass gateway`, off for `gatepass serve`, whose gateway writes into
    # the broker's own directory, and for `gatepass gateway --keep-recordings`.
    upload_recordings: bool = False

    @property
    def advertised_host(self) -> str:
        return self.public_host or self.listen_host

"""Sites (plants) and their assets: what exists, where it is, and the credentials the gateway injects."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import asyncssh
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.durations import format_duration, parse_duration
from broker.errors import Conflict, InvalidInput, NotFound
from broker.identity.identities import check_name
from broker.inventory.supervision_policy import asset_setting_word, effective_supervision, parse_asset_setting
from broker.keys.vault import Vault
from broker.models import Asset, Site
from broker.settings import MAX_RETENTION_DAYS
from broker.vocabulary import Criticality, FlagSeverity, OverdueAttestation, Transfers

CRITICALITIES = tuple(Criticality)
# An asset of high criticality always needs two distinct approvers (DESIGN invariant 3).
HIGH_CRITICALITY_APPROVALS = 2


TRANSFERS = tuple(Transfers)
# Download-only sites: what a command without a PTY may take from the client (bytes). More than 1 GiB is no
# longer a limit on uploads at all; 0 is allowed (no input at all for such commands).
DEFAULT_EXEC_UPLOAD_LIMIT = 65536
# Site.cut_grace_ms: what a cut command gets between TERM and KILL (gateway/stopping.py); written 2s or 500ms.
MAX_CUT_GRACE_MS = 30_000
_MILLISECONDS = re.compile(r"^(?P<number>[0-9]{1,6})\s*ms$")
MAX_EXEC_UPLOAD_LIMIT = 1024**3
_SIZE = re.compile(r"^(?P<number>[0-9]{1,12})\s*(?P<unit>|b|k|kb|kib|m|mb|mib|g|gb|gib)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# Client environment variables an asset may accept: a plain name, and none of those that change what the
# target's shell or loader runs (a variable is a program's input; these are its code).
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_DANGEROUS_ENV = {
    "PATH": "it decides which programs the target runs",
    "IFS": "it changes how the target's shell splits every command",
    "BASH_ENV": "bash runs the file it names before every command",
    "ENV": "sh runs the file it names at start",
    "SHELLOPTS": "it switches on shell options before any command runs",
    "BASHOPTS": "it switches on shell options before any command runs",
    "PS4": "bash expands it, running commands, when tracing",
    "PROMPT_COMMAND": "bash runs it before every prompt",
    "HOME": "it decides which start-up files the target's shell reads",
    "SHELL": "it decides which shell the target starts",
    "PYTHONPATH": "it loads Python code into the target's programs",
    "PYTHONSTARTUP": "it loads Python code into the target's programs",
    "PERL5LIB": "it loads Perl code into the target's programs",
    "PERL5OPT": "it loads Perl code into the target's programs",
    "RUBYOPT": "it loads Ruby code into the target's programs",
    "NODE_OPTIONS": "it loads code into the target's Node.js programs",
    "GCONV_PATH": "it loads shared libraries into the target's programs",
    "TMPDIR": "it moves where the target's programs write temporary files",
    # The gateway finds a cut session's processes on the target by this variable (gateway/stopping.py).
    "SSH_CONNECTION": "the gateway finds a cut session's processes on the target by it",
}
_DANGEROUS_ENV_PREFIXES = {
    "LD_": "the dynamic loader runs the libraries it names in every program",
    "DYLD_": "the dynamic loader runs the libraries it names in every program",
    "BASH_FUNC_": "bash imports it as a function",
    "MALLOC_": "it changes how every program's memory allocator behaves",
    "GLIBC_": "it changes how every program's C library behaves",
}
MAX_MAINTENANCE_WINDOWS = 20
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW_SPEC = re.compile(r"^(?P<days>\S+)\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})$")
_EXAMPLES = 'e.g. "Sat 06:00-14:00", "Mon-Fri 22:00-02:00" or "daily 12:00-13:00" (UTC)'


def credential_purpose(asset_name: str) -> str:
    return f"asset-credential:{asset_name}"


# --- maintenance windows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaintenanceWindow:
    """Weekly recurring time in UTC when a plant expects maintenance. ``end <= start`` runs overnight into the
    next day (it belongs to the day it starts on)."""

    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: dt.timedelta  # since midnight
    end: dt.timedelta

    def occurrences(self, first: dt.date, last: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        found = []
        day = first
        while day <= last:
            if day.weekday() in self.days:
                midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
                end = midnight + self.end + (dt.timedelta(days=1) if self.end <= self.start else dt.timedelta())
                found.append((midnight + self.start, end))
            day += dt.timedelta(days=1)
        return found


def parse_maintenance_window(spec: str) -> MaintenanceWindow:
    """``DAYS HH:MM-HH:MM`` where DAYS is ``daily``, a day (``Sat``), a range (``Mon-Fri``, ``Fri-Mon``) or a
    list (``Mon,Wed``); refuses anything else with a reason and an example."""
    text = " ".join((spec or "").split())
    match = _WINDOW_SPEC.match(text)
    if not match:
        raise InvalidInput(f"maintenance window '{spec[:60]}' is not in the form DAYS HH:MM-HH:MM: {_EXAMPLES}")
    days = _parse_days(match["days"], spec=spec)
    start, end = _parse_clock(match["start"], spec=spec), _parse_clock(match["end"], spec=spec, end=True)
    if start == end:
        raise InvalidInput(f"maintenance window '{spec[:60]}' is empty: start and end are the same time "
                           "(a whole day is 00:00-24:00)")
    return MaintenanceWindow(days=days, start=start, end=end)


def _parse_days(text: str, *, spec: str) -> frozenset[int]:
    if text.lower() == "daily":
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.lower().split(","):
        first, dash, last = part.partition("-")
        if first not in DAY_NAMES or (dash and last not in DAY_NAMES):
            raise InvalidInput(f"maintenance window '{spec[:60]}': '{part[:20]}' is not a day; use Mon, Tue, Wed, "
                               f"Thu, Fri, Sat, Sun, a range such as Mon-Fri, or daily ({_EXAMPLES})")
        index = DAY_NAMES.index(first)
        days.add(index)
        if dash:
            while index != DAY_NAMES.index(last):  # a range may wrap over the weekend: Fri-Mon
                index = (index + 1) % 7
                days.add(index)
    return frozenset(days)


def _parse_clock(text: str, *, spec: str, end: bool = False) -> dt.timedelta:
    hours, minutes = int(text[:2]), int(text[3:])
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        raise InvalidInput(f"maintenance window '{spec[:60]}': {text} is not a time of day (00:00 to 23:59; "
                           "24:00 only as an end)")
    return dt.timedelta(hours=hours, minutes=minutes)


def check_maintenance_windows(specs: list[str]) -> list[str]:
    """The windows normalised (single spaces), each one checked; refuses too many or a bad one."""
    if len(specs) > MAX_MAINTENANCE_WINDOWS:
        raise InvalidInput(f"{len(specs)} maintenance windows are too many: at most {MAX_MAINTENANCE_WINDOWS}")
    normalised = []
    for spec in specs:
        parse_maintenance_window(spec)
        normalised.append(" ".join(spec.split()))
    return normalised


def within_maintenance_windows(specs: list[str], *, start: dt.datetime, end: dt.datetime) -> bool:
    """True when [start, end] lies inside the site's windows (back-to-back windows count as one stretch), or
    when the site has no windows at all (nothing to be outside of)."""
    windows = []
    for spec in specs:
        try:
            windows.append(parse_maintenance_window(spec))
        except InvalidInput:
            continue  # stored windows were checked when set; an unreadable one never widens the allowed time
    if not specs:
        return True
    start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    first, last = start.date() - dt.timedelta(days=1), end.date()
    stretches = sorted(o for w in windows for o in w.occurrences(first, last))
    merged: list[list[dt.datetime]] = []
    for begins, ends in stretches:
        if merged and begins <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], ends)
        else:
            merged.append([begins, ends])
    return any(begins <= start and end <= ends for begins, ends in merged)


# --- sites ----------------------------------------------------------------------------------------------


def _check_site_policy(*, approvals_required: int | None = None, transfers: str | None = None,
                       exec_upload_limit: int | None = None) -> None:
    if approvals_required is not None and not 1 <= approvals_required <= 5:
        raise InvalidInput(f"approvals required must be between 1 and 5, not {approvals_required}")
    if transfers is not None and transfers not in TRANSFERS:
        raise InvalidInput(f"transfers '{transfers}' does not exist: choose both or download-only")
    if exec_upload_limit is not None and not 0 <= exec_upload_limit <= MAX_EXEC_UPLOAD_LIMIT:
        raise InvalidInput(f"an exec upload limit of {exec_upload_limit} bytes is out of range: "
                           f"0 to {MAX_EXEC_UPLOAD_LIMIT} (1 GiB)")


def parse_size(text: str) -> int:
    """``65536``, ``64k``, ``64KiB``, ``1M``, ``1GiB`` (binary units) as bytes; refuses anything else with a reason."""
    match = _SIZE.match((text or "").strip())
    if not match:
        raise InvalidInput(f"'{(text or '')[:40]}' is not a size: write bytes, or a number with k, M or G "
                           "(binary: 64k = 65536 bytes), e.g. 65536 or 64k")
    return int(match["number"]) * _SIZE_UNITS[match["unit"][:1].lower()]


def check_passed_env(names: list[str]) -> list[str]:
    """Environment variable names an asset accepts from clients: exact, plain names, none that changes what the
    target runs (LD_*, PATH, IFS, BASH_ENV, …); duplicates removed, order kept."""
    checked: list[str] = []
    for name in names:
        if not ENV_NAME.match(name or ""):
            raise InvalidInput(f"'{(name or '')[:40]}' is not an environment variable name: use capital letters, "
                               "digits and _ (not first a digit), e.g. LC_ALL")
        why = _DANGEROUS_ENV.get(name) or next(
            (reason for prefix, reason in _DANGEROUS_ENV_PREFIXES.items() if name.startswith(prefix)), None)
        if why is not None:
            raise InvalidInput(f"{name} cannot be passed from a vendor's client to a machine: {why}")
        if name not in checked:
            checked.append(name)
    if len(checked) > 32:
        raise InvalidInput(f"{len(checked)} environment variables are too many for one asset: at most 32")
    return checked


def parse_cut_grace(text: str) -> int:
    """``2s``, ``500ms`` or ``0``: how long a cut command has on the target between TERM and KILL, in
    milliseconds (0 to 30 s; the gateway closes the vendor's channels at once whatever the grace)."""
    raw = (text or "").strip()
    refusal = InvalidInput(f"'{raw[:40]}' is not a cut grace: write it like 2s, 500ms or 0 (at most 30s)")
    if match := _MILLISECONDS.match(raw):
        grace = int(match["number"])
    elif raw in ("0", "0s"):
        grace = 0
    else:
        try:
            grace = int(parse_duration(raw).total_seconds() * 1000)
        except InvalidInput:
            raise refusal from None
    if grace > MAX_CUT_GRACE_MS:
        raise InvalidInput(f"a cut grace of {raw} is too long: at most 30s, so that what a vendor started ends "
                           "soon after their access does")
    return grace


def format_cut_grace(milliseconds: int) -> str:
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def _max_window(max_window: str) -> dt.timedelta:
    window = parse_duration(max_window)
    if window > dt.timedelta(days=30):
        raise InvalidInput(f"a maximum window of {max_window} is too long: at most 30d")
    return window


def create_site(
    session: Session, *, now: dt.datetime, actor: str, name: str, approvals_required: int = 1,
    max_window: str = "8h", maintenance_windows: list[str] | None = None, record_input: bool = True,
    transfers: str = "both", exec_upload_limit: int = DEFAULT_EXEC_UPLOAD_LIMIT, cut_grace: str = "2s",
    supervise_high_criticality: bool = True,
) -> Site:
    """A new site; its high-criticality assets are supervised unless ``supervise_high_criticality`` is False
    (issue 13: the default for new plants, while sites older than migration 0018 keep it off)."""
    check_name(name, what="site")
    grace_ms = parse_cut_grace(cut_grace)
    _check_site_policy(approvals_required=approvals_required, transfers=transfers,
                       exec_upload_limit=exec_upload_limit)
    window = _max_window(max_window)
    windows = check_maintenance_windows(maintenance_windows or [])
    if session.scalar(select(Site).where(Site.name == name)) is not None:
        raise Conflict(f"a site named '{name}' already exists")
    site = Site(name=name, approvals_required=approvals_required,
                max_window_seconds=int(window.total_seconds()), locked_down=False, created_at=now,
                maintenance_windows=windows, record_input=record_input, transfers=transfers,
                exec_upload_limit=exec_upload_limit, cut_grace_ms=grace_ms,
                supervise_high_criticality=supervise_high_criticality)
    session.add(site)
    trail.record(session, now=now, action=Action.SITE_CREATED, actor=actor, subject=name, site=name,
                 details={"approvals_required": approvals_required, "max_window": format_duration(window),
                          "maintenance_windows": windows, "record_input": record_input, "transfers": transfers,
                          "exec_upload_limit": exec_upload_limit, "cut_grace": format_cut_grace(grace_ms),
                          "supervise_high_criticality": supervise_high_criticality})
    return site


def update_site(
    session: Session, *, now: dt.datetime, actor: str, name: str, approvals_required: int | None = None,
    max_window: str | None = None, maintenance_windows: list[str] | None = None, record_input: bool | None = None,
    transfers: str | None = None, exec_upload_limit: int | None = None, cut_grace: str | None = None,
    agent_writes: bool | None = None, attestation_days: int | None = None, attestation_overdue: str | None = None,
    owner_grace_days: int | None = None, credential_max_age_days: int | None = None,
    workload_credential: str | None = None, drill_site: bool | None = None, learning_days: int | None = None,
    auto_response: str | None = None, auto_response_severity: str | None = None, read_only_mode: bool | None = None,
    recording_retention_days: int | object | None = None, supervision_required: bool | None = None,
    supervision_grace: str | None = None, silent_observers: bool | None = None,
    supervise_high_criticality: bool | None = None,
) -> dict[str, dict[str, Any]]:
    """Change a site's policy; fields left as None stay. Audited with each changed field's old and new value
    (returned too); a call that changes nothing writes no event."""
    site = session.scalar(select(Site).where(Site.name == name))
    if site is None:
        raise NotFound(f"there is no site named '{name}'")
    _check_site_policy(approvals_required=approvals_required, transfers=transfers,
                       exec_upload_limit=exec_upload_limit)
    window = _max_window(max_window) if max_window is not None else None
    grace_ms = parse_cut_grace(cut_grace) if cut_grace is not None else None
    governance = check_governance(attestation_days=attestation_days, attestation_overdue=attestation_overdue,
                                  owner_grace_days=owner_grace_days, credential_max_age_days=credential_max_age_days,
                                  workload_credential=workload_credential)
    wanted: dict[str, Any] = {
        "approvals_required": approvals_required,
        "max_window_seconds": int(window.total_seconds()) if window is not None else None,
        "maintenance_windows": check_maintenance_windows(maintenance_windows)
        if maintenance_windows is not None else None,
        "record_input": record_input,
        "transfers": transfers,
        "exec_upload_limit": exec_upload_limit,
        "cut_grace_ms": grace_ms,
        # Whether an AI agent's grant may ever write (Modbus writes, uploads): off unless the plant says so.
        "agent_writes": agent_writes,
        **governance,
        # Kept for rehearsals: `gatepass playbook drill --execute-on-drill-site` really runs there.
        "drill_site": drill_site,
        # Only read-only protocol access while on (a playbook step turns it on; switching it off is a decision).
        "read_only_mode": read_only_mode,
        **check_watch_policy(session, learning_days=learning_days, auto_response=auto_response,
                             auto_response_severity=auto_response_severity),
        # Days a session's recording is kept after its end (0: forever; CLEAR: the broker's default).
        "recording_retention_days": _retention(recording_retention_days),
        # Sessions wait for a supervisor of the site to watch; cut this long after the last one left (issue 13).
        "supervision_required": supervision_required,
        "supervision_grace_seconds": _supervision_grace(supervision_grace),
        # Observers are not announced on the vendor's terminal; each session there says so at its start instead.
        "silent_observers": silent_observers,
        # High-criticality assets that follow the site are supervised (issue 13; on for new sites).
        "supervise_high_criticality": supervise_high_criticality,
    }
    changes: dict[str, dict[str, Any]] = {}
    supervised_before = supervised_assets(site)
    for field_name, wanted_value in wanted.items():
        old = getattr(site, field_name)
        if wanted_value is None:
            continue
        new: Any = None if wanted_value is CLEAR else wanted_value
        if new == old:
            continue
        setattr(site, field_name, new)
        if field_name == "max_window_seconds":
            changes["max_window"] = {"old": format_duration(dt.timedelta(seconds=old)),
                                     "new": format_duration(dt.timedelta(seconds=new))}
        elif field_name == "cut_grace_ms":
            changes["cut_grace"] = {"old": format_cut_grace(old), "new": format_cut_grace(new)}
        elif field_name == "workload_credential_seconds":
            changes["workload_credential"] = {"old": format_duration(dt.timedelta(seconds=old)),
                                              "new": format_duration(dt.timedelta(seconds=new))}
        elif field_name == "recording_retention_days":
            changes["recording_retention"] = {"old": format_retention(old), "new": format_retention(new)}
        else:
            changes[field_name] = {"old": list(old) if isinstance(old, list) else old, "new": new}
    if changes and (supervised_after := supervised_assets(site)) != supervised_before:
        # Which of the site's assets now hold their sessions for a supervisor (from each one's next login).
        changes["supervised_assets"] = {"old": supervised_before, "new": supervised_after}
    if changes:
        trail.record(session, now=now, action=Action.SITE_UPDATED, actor=actor, subject=name, site=name,
                     details=changes)
    return changes


def supervised_assets(site: Site) -> list[str]:
    """The names of the site's assets whose sessions wait for a supervisor (broker.inventory.supervision_policy)."""
    return sorted(asset.name for asset in site.assets if effective_supervision(asset).required)


def _supervision_grace(value: str | None) -> int | None:
    if value is None:
        return None
    grace = parse_duration(value)
    if not dt.timedelta(seconds=5) <= grace <= dt.timedelta(minutes=30):
        raise InvalidInput("a supervision grace is from 5s to 30m: time for a supervisor to come back, not an "
                           "unwatched session")
    return int(grace.total_seconds())


def format_retention(days: int | None) -> str:
    """A site's recording retention as the trail and the command line say it."""
    return "default" if days is None else "forever" if days == 0 else f"{days} days"


def _retention(value: int | object | None) -> int | object | None:
    if isinstance(value, int) and not 0 <= value <= MAX_RETENTION_DAYS:
        raise InvalidInput(f"a recording retention is from 1 to {MAX_RETENTION_DAYS} days, or 0 (keep forever), "
                           f"not {value}")
    return value


def _within(value: int | None, low: int, high: int, what: str) -> int | None:
    if value is not None and not low <= value <= high:
        raise InvalidInput(f"{what} must be from {low} to {high}, not {value}")
    return value


def check_governance(*, attestation_days: int | None, attestation_overdue: str | None,
                     owner_grace_days: int | None, credential_max_age_days: int | None,
                     workload_credential: str | None) -> dict[str, Any]:
    """The identity-governance fields of a site's policy, checked (None: unchanged)."""
    if attestation_overdue is not None and attestation_overdue not in tuple(OverdueAttestation):
        raise InvalidInput(f"'{attestation_overdue[:20]}' is not what an overdue review does: suspend or flag")
    seconds = None
    if workload_credential is not None:
        lifetime = parse_duration(workload_credential)
        if not dt.timedelta(minutes=5) <= lifetime <= dt.timedelta(hours=24):
            raise InvalidInput("a workload credential lives from 5m to 24h: long enough to work, short enough that a "
                               "copy soon stops working")
        seconds = int(lifetime.total_seconds())
    return {
        "attestation_days": _within(attestation_days, 7, 365, "the review period in days"),
        "attestation_overdue": attestation_overdue,
        "owner_grace_days": _within(owner_grace_days, 0, 90, "the owner grace in days"),
        "credential_max_age_days": _within(credential_max_age_days, 1, 3650, "the credential age limit in days"),
        "workload_credential_seconds": seconds,
    }


# "Set this field to nothing", where None already means "leave it as it is".
CLEAR = object()


def check_watch_policy(session: Session, *, learning_days: int | None, auto_response: str | None,
                       auto_response_severity: str | None) -> dict[str, Any]:
    """The watch fields of a site's policy, checked (None: unchanged; an auto-response of "off" clears it)."""
    from broker.respond.playbooks import list_names

    if auto_response is not None and auto_response != "off" and auto_response not in list_names(session):
        raise InvalidInput(f"there is no playbook '{auto_response[:64]}': choose one of "
                           f"{', '.join(list_names(session))}, or off")
    if auto_response_severity is not None and auto_response_severity not in tuple(FlagSeverity):
        raise InvalidInput(f"'{auto_response_severity[:20]}' is not a flag severity: low, medium or high")
    wanted: dict[str, Any] = {
        "learning_days": _within(learning_days, 0, 90, "the learning period in days"),
        "auto_response_severity": auto_response_severity,
    }
    if auto_response is not None:
        wanted["auto_response"] = CLEAR if auto_response == "off" else auto_response
    return wanted


def create_asset(
    session: Session, *, vault: Vault, now: dt.datetime, actor: str, name: str, site: str, host: str,
    criticality: str = "low", ssh_port: int | None = None, ssh_user: str | None = None,
    ssh_password: str | None = None, ssh_private_key: str | None = None, host_key: str | None = None,
    tcp_ports: list[int] | None = None, passed_env: list[str] | None = None, supervision: str = "site",
) -> Asset:
    """A new asset; ``supervision`` is its own policy (required, optional) or ``site`` (follow the site's)."""
    check_name(name, what="asset")
    supervision_required = parse_asset_setting(supervision)
    env_names = check_passed_env(passed_env or [])
    site_row = session.scalar(select(Site).where(Site.name == site))
    if site_row is None:
        raise NotFound(f"there is no site named '{site}': add it first with `gatepass admin site add {site}`")
    if session.scalar(select(Asset).where(Asset.name == name)) is not None:
        raise Conflict(f"an asset named '{name}' already exists")
    if criticality not in CRITICALITIES:
        raise InvalidInput(f"criticality '{criticality}' does not exist: choose low or high")
    if not host or len(host) > 255 or any(c.isspace() for c in host):
        raise InvalidInput(f"host '{host}' is not a host name or address")
    ports = sorted(set(tcp_ports or []))
    for port in [*ports, *([ssh_port] if ssh_port is not None else [])]:
        if not 1 <= port <= 65535:
            raise InvalidInput(f"port {port} is out of range: ports are 1-65535")

    asset = Asset(name=name, site_id=site_row.id, host=host, criticality=criticality, tcp_ports=ports,
                  passed_env=env_names, supervision_required=supervision_required, created_at=now)
    if ssh_port is not None:
        if not ssh_user:
            raise InvalidInput("an SSH service needs --ssh-user: the account the gateway logs in as")
        if (ssh_password is None) == (ssh_private_key is None):
            raise InvalidInput("an SSH service needs exactly one credential: --ssh-password-file or --ssh-key-file")
        if ssh_private_key is not None:
            try:
                asyncssh.import_private_key(ssh_private_key)
            except (asyncssh.KeyImportError, ValueError) as error:
                raise InvalidInput(f"the SSH key file does not hold a usable private key ({error})") from None
        if not host_key:
            raise InvalidInput(
                "an SSH service needs the target's pinned host key (--host-key \"ssh-ed25519 AAAA…\"): "
                "the gateway never connects to a target it cannot authenticate"
            )
        asset.ssh_port, asset.ssh_user = ssh_port, ssh_user
        asset.host_key = normalise_public_key(host_key, what="host key")
        secret = ssh_private_key if ssh_private_key is not None else (ssh_password or "")
        asset.credential_kind = "private_key" if ssh_private_key is not None else "password"
        asset.credential_ciphertext = vault.seal(secret.encode(), purpose=credential_purpose(name))
    elif ssh_user or ssh_password or ssh_private_key or host_key:
        raise InvalidInput("SSH options need --ssh-port")

    session.add(asset)
    trail.record(
        session, now=now, action=Action.ASSET_CREATED, actor=actor, subject=name, site=site,
        # Never the credential: only which kind is vaulted.
        details={"host": host, "criticality": criticality, "ssh_port": ssh_port, "tcp_ports": ports,
                 "credential": asset.credential_kind, "passed_env": env_names, "supervision": supervision},
    )
    return asset


def update_asset(session: Session, *, now: dt.datetime, actor: str, name: str,
                 passed_env: list[str] | None = None, supervision: str | None = None) -> dict[str, dict[str, Any]]:
    """Change an asset's policy; fields left as None stay. Audited with each changed field's old and new value
    (returned too); a call that changes nothing writes no event. ``supervision``: required, optional or site."""
    asset = get_asset(session, name)
    wanted_supervision = parse_asset_setting(supervision) if supervision is not None else None
    names = check_passed_env(passed_env) if passed_env is not None else None
    changes: dict[str, dict[str, Any]] = {}
    if supervision is not None and wanted_supervision != asset.supervision_required:
        in_force = effective_supervision(asset)
        changes["supervision"] = {"old": asset_setting_word(asset.supervision_required), "new": supervision}
        asset.supervision_required = wanted_supervision
        now_in_force = effective_supervision(asset)
        if now_in_force != in_force:  # what the gateway enforces from the next login on
            changes["supervision_in_force"] = {"old": in_force.describe(), "new": now_in_force.describe()}
    if names is not None and names != list(asset.passed_env or []):
        changes["passed_env"] = {"old": list(asset.passed_env or []), "new": names}
        asset.passed_env = names
    if changes:
        trail.record(session, now=now, action=Action.ASSET_UPDATED, actor=actor, subject=name,
                     site=asset.site.name, details=changes)
    return changes


def normalise_public_key(text: str, *, what: str) -> str:
    """Return ``type base64`` of an OpenSSH public key, or refuse with a clear reason."""
    try:
        key = asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise InvalidInput(f"the {what} is not an OpenSSH public key (expected \"ssh-ed25519 AAAA…\")") from None
    return key.export_public_key("openssh").decode().strip()


def approvals_needed(asset: Asset) -> int:
    required = asset.site.approvals_required
    if asset.criticality == "high":
        required = max(required, HIGH_CRITICALITY_APPROVALS)
    return required


def get_asset(session: Session, name: str) -> Asset:
    asset = session.scalar(select(Asset).where(Asset.name == name))
    if asset is None:
        raise NotFound(f"there is no asset named '{name}'")
    return asset


def move_asset(session: Session, *, now: dt.datetime, actor: str, name: str, host: str, ssh_port: int,
               host_key: str) -> Asset:
    """Point an asset's SSH service at a new address and host key (the demo target changes port each run)."""
    asset = get_asset(session, name)
    asset.host, asset.ssh_port = host, ssh_port
    asset.host_key = normalise_public_key(host_key, what="host key")
    trail.record(session, now=now, action=Action.ASSET_UPDATED, actor=actor, subject=name, site=asset.site.name,
                 details={"host": host, "ssh_port": ssh_port})
    return asset

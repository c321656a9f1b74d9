"""A behaviour profile as plain data, updated one observation at a time (never by re-reading the trail), and
the comparison of a new observation with it. Pure: no database, no clock; the watcher stores the JSON.

Running means and variances use Welford's online algorithm (Knuth, TAOCP vol. 2, 4.2.2), so a profile holds
a handful of numbers per measure however long its history.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

# Before this many sessions there is no "usual": novelty signals stay quiet (always-high ones do not).
MIN_HISTORY = 5
# Hours are judged on a kind of day (weekday, weekend) only after this many sessions on it, with this margin.
TIME_HISTORY = 10
TIME_MARGIN = 2
AROUND_THE_CLOCK_HOURS = 18
# An amount this many times the usual mean (and above the floor) is a spike.
SPIKE_FACTOR = 10.0
SPIKE_FLOOR_BYTES = 1024 * 1024
LONG_FACTOR = 5.0
LONG_FLOOR_SECONDS = 3600.0
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# The measures kept as running statistics.
MEASURES = ("upload_bytes", "download_bytes", "duration_seconds", "bytes_in", "bytes_out", "concurrent_sessions")
# Failed sign-ins within an hour that make a burst (a guessed password), unless the identity has had more before.
FAILED_BURST = 5
# More sessions at once than ever before counts only from this many (two at once is ordinary).
CONCURRENT_FLOOR = 3
# Registers this close to a usual range are not "new" (a tool reading one block further along).
REGISTER_MARGIN = 16
# Register ranges kept per asset and function code; past this the closest two are joined (coarser, never lost).
MAX_RANGES = 32
# Names of the Modbus function codes (Modbus Application Protocol Specification V1.1b3, §6).
MODBUS_FUNCTIONS = {1: "Read Coils", 2: "Read Discrete Inputs", 3: "Read Holding Registers",
                    4: "Read Input Registers", 5: "Write Single Coil", 6: "Write Single Register",
                    7: "Read Exception Status", 8: "Diagnostics", 11: "Get Comm Event Counter",
                    12: "Get Comm Event Log", 15: "Write Multiple Coils", 16: "Write Multiple Registers",
                    17: "Report Server ID", 20: "Read File Record", 21: "Write File Record", 22: "Mask Write Register",
                    23: "Read/Write Multiple Registers", 24: "Read FIFO Queue", 43: "Encapsulated Interface Transport"}


@dataclass
class Observation:
    """What one event says about an identity's behaviour at a site."""

    at: dt.datetime
    kind: str  # "session" (a start), "session_end", "transfer", "signin_failed"
    asset: str | None = None
    port: int | None = None
    protocol: str | None = None  # shell, exec, sftp, tcp
    command: str | None = None  # an exec's program (argv[0]), when the gateway reports it
    source: str | None = None  # the client's address, without its port
    amounts: dict[str, float] = field(default_factory=dict)
    # A Modbus connection ("modbus"): requests per function code, and the register ranges per function code.
    modbus_functions: dict[int, int] = field(default_factory=dict)
    modbus_ranges: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    # A recorded shell session's typed programs ("typed"), where the site records input.
    programs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"at": self.at.isoformat(), "kind": self.kind, "asset": self.asset, "port": self.port,
                                "protocol": self.protocol, "command": self.command, "source": self.source,
                                "amounts": dict(self.amounts)}
        if self.programs:
            data["programs"] = list(self.programs)
        if self.modbus_functions:
            data["modbus_functions"] = {str(code): n for code, n in self.modbus_functions.items()}
            data["modbus_ranges"] = {str(code): [list(span) for span in spans]
                                     for code, spans in self.modbus_ranges.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Observation:
        return cls(at=dt.datetime.fromisoformat(data["at"]), kind=data["kind"], asset=data.get("asset"),
                   port=data.get("port"), protocol=data.get("protocol"), command=data.get("command"),
                   source=data.get("source"), amounts=dict(data.get("amounts") or {}),
                   modbus_functions={int(code): int(n) for code, n in (data.get("modbus_functions") or {}).items()},
                   modbus_ranges={int(code): [(int(low), int(high)) for low, high in spans]
                                  for code, spans in (data.get("modbus_ranges") or {}).items()},
                   programs=[str(program) for program in data.get("programs") or []])


@dataclass(frozen=True)
class Signal:
    """One reason a flag fired, in words: what was seen, and what it was compared with."""

    name: str
    observed: str
    usual: str

    def text(self) -> str:
        return f"{self.observed}, {self.usual}" if self.usual else self.observed

    def as_dict(self) -> dict[str, str]:
        return {"signal": self.name, "observed": self.observed, "usual": self.usual}


def empty() -> dict[str, Any]:
    return {"sessions": 0, "hours": {}, "assets": {}, "ports": {}, "protocols": {}, "commands": {}, "sources": {},
            "measures": {}, "failed_signins": 0, "modbus": _empty_modbus()}


def _empty_modbus() -> dict[str, Any]:
    # Keyed by "asset/function code": register maps differ from one PLC to the next.
    return {"connections": 0, "functions": {}, "ranges": {}}


def _modbus(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile's Modbus part (profiles stored before it existed get an empty one)."""
    modbus: dict[str, Any] = profile.setdefault("modbus", _empty_modbus())
    return modbus


def function_name(code: int) -> str:
    return f"{MODBUS_FUNCTIONS.get(code, 'function')} ({code})"


def merge_ranges(ranges: list[list[int]], low: int, high: int) -> list[list[int]]:
    """Sorted, disjoint ranges with [low, high] added: touching or overlapping ranges become one, and past
    ``MAX_RANGES`` the two with the smallest gap between them are joined."""
    spans = sorted([*ranges, [low, high]])
    joined: list[list[int]] = [list(spans[0])]
    for start, end in spans[1:]:
        if start <= joined[-1][1] + 1:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    while len(joined) > MAX_RANGES:
        at = min(range(len(joined) - 1), key=lambda i: joined[i + 1][0] - joined[i][1])
        joined[at : at + 2] = [[joined[at][0], joined[at + 1][1]]]
    return joined


def ranges_text(ranges: list[list[int]] | list[tuple[int, int]]) -> str:
    return ", ".join(f"{low}-{high}" if low != high else str(low) for low, high in ranges[:6]) + \
        (", …" if len(ranges) > 6 else "")


def _bump(table: dict[str, int], key: object) -> None:
    if key is not None:
        table[str(key)] = table.get(str(key), 0) + 1


def hour_key(at: dt.datetime) -> str:
    moment = at.astimezone(dt.UTC)
    return f"{moment.weekday()}-{moment.hour}"


def _welford(stats: dict[str, float], value: float) -> None:
    n = stats.get("n", 0.0) + 1
    mean = stats.get("mean", 0.0)
    delta = value - mean
    mean += delta / n
    stats.update(n=n, mean=mean, m2=stats.get("m2", 0.0) + delta * (value - mean), max=max(stats.get("max", 0.0),
                                                                                             value))


def learn(profile: dict[str, Any], observation: Observation) -> None:
    """Fold one observation into the profile (in place)."""
    if observation.kind == "session":
        profile["sessions"] += 1
        _bump(profile["hours"], hour_key(observation.at))
        _bump(profile["assets"], observation.asset)
        _bump(profile["ports"], observation.port)
        _bump(profile["protocols"], observation.protocol)
        _bump(profile["commands"], observation.command)
        _bump(profile["sources"], observation.source)
    elif observation.kind == "signin_failed":
        profile["failed_signins"] += 1
        # Its worst hour below a burst: the tail of a burst (past the one flagged failure) never raises the bar.
        recent = min(observation.amounts.get("failed_last_hour", 0.0), FAILED_BURST - 1.0)
        profile["failed_hour_max"] = max(profile.get("failed_hour_max", 0.0), recent)
        return  # the hourly count is judged against a fixed line, not kept as a running mean
    elif observation.kind == "typed":
        profile["typed_sessions"] = profile.get("typed_sessions", 0) + 1
        for program in observation.programs:
            _bump(profile["commands"], program)
    elif observation.kind == "modbus":
        modbus = _modbus(profile)
        modbus["connections"] += 1
        for code, count in observation.modbus_functions.items():
            key = f"{observation.asset}/{code}"
            modbus["functions"][key] = modbus["functions"].get(key, 0) + count
        for code, spans in observation.modbus_ranges.items():
            key = f"{observation.asset}/{code}"
            for low, high in spans:
                modbus["ranges"][key] = merge_ranges(modbus["ranges"].get(key, []), low, high)
    for measure, value in observation.amounts.items():
        _welford(profile["measures"].setdefault(measure, {}), float(value))


def usual_hours(profile: dict[str, Any]) -> str:
    """The usual working time in words, from the hour-of-week histogram: "Mon-Fri 06:00-18:00"."""
    hours = profile["hours"]
    if not hours:
        return "no usual hours yet"
    if _around_the_clock(profile):
        return "round the clock"
    days = sorted({int(key.split("-")[0]) for key in hours})
    clock = sorted({int(key.split("-")[1]) for key in hours})
    if days == list(range(days[0], days[-1] + 1)) and len(days) > 1:
        day_text = f"{DAYS[days[0]]}-{DAYS[days[-1]]}"
    else:
        day_text = ", ".join(DAYS[d] for d in days)
    return f"{day_text} {clock[0]:02d}:00-{clock[-1] + 1:02d}:00"


def _usual_time(profile: dict[str, Any], at: dt.datetime) -> bool:
    """Within the identity's usual working time: a kind of day it works on (weekday or weekend) and, on that
    kind of day, between its earliest and latest hour so far, give or take an hour. Coarser than the hour of the
    week on purpose: a habit of "weekdays 09:00-14:00" is learnt in days, not months, and a 24-hour service
    never looks odd at night."""
    moment = at.astimezone(dt.UTC)
    weekend = moment.weekday() >= 5
    seen = {int(key.split("-")[1]): count for key, count in profile["hours"].items()
            if (int(key.split("-")[0]) >= 5) == weekend}
    if not seen:
        return False
    if sum(seen.values()) < TIME_HISTORY:
        return True  # too few sessions on this kind of day to know its hours: only a new kind of day counts
    if _around_the_clock(profile):
        return True
    return min(seen) - TIME_MARGIN <= moment.hour <= max(seen) + TIME_MARGIN


def _around_the_clock(profile: dict[str, Any]) -> bool:
    """An identity seen in most hours of the day (a service, a batch agent) has no off-hours to leave."""
    return len({int(key.split("-")[1]) for key in profile["hours"]}) >= AROUND_THE_CLOCK_HOURS


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _compare_modbus(profile: dict[str, Any], observation: Observation) -> list[Signal]:
    """A Modbus function this identity never used on the asset, or registers far from its usual ones."""
    modbus = _modbus(profile)
    if modbus["connections"] < MIN_HISTORY:
        return []
    asset = observation.asset or "the asset"
    usual_here = sorted(int(key.rsplit("/", 1)[1]) for key in modbus["functions"]
                        if key.rsplit("/", 1)[0] == observation.asset)
    signals: list[Signal] = []
    new = [code for code in sorted(observation.modbus_functions) if f"{observation.asset}/{code}" not in
           modbus["functions"]]
    if new:
        usual = ", ".join(function_name(code) for code in usual_here) or "nothing on it yet"
        signals.append(Signal("new_modbus_function",
                              f"first Modbus {', '.join(function_name(code) for code in new)} on {asset} by this "
                              "identity", f"usually {usual}"))
    for code, spans in sorted(observation.modbus_ranges.items()):
        known = modbus["ranges"].get(f"{observation.asset}/{code}")
        if not known:
            continue  # a new function: said above
        outside = [(low, high) for low, high in spans
                   if not any(start - REGISTER_MARGIN <= low and high <= end + REGISTER_MARGIN for start, end in known)]
        if outside:
            signals.append(Signal("new_registers",
                                  f"{function_name(code)} on registers {ranges_text(outside)} of {asset}",
                                  f"usually {ranges_text(known)}"))
    return signals


def _compare_failed_signins(profile: dict[str, Any], observation: Observation) -> list[Signal]:
    """A burst of failed sign-ins, flagged once, as it reaches ``FAILED_BURST`` within an hour (no history needed:
    guessing a password needs none), with the identity's worst hour so far for comparison."""
    recent = observation.amounts.get("failed_last_hour", 0.0)
    worst = profile.get("failed_hour_max", 0.0)
    if recent != FAILED_BURST:
        return []
    usual = f"never more than {worst:.0f} in an hour before" if worst else "no failed sign-in before"
    return [Signal("failed_signins", f"{recent:.0f} failed sign-ins within an hour", usual)]


def _compare_typed(profile: dict[str, Any], observation: Observation) -> list[Signal]:
    """Programs typed for the first time, once the identity has a history of typed sessions."""
    if profile.get("typed_sessions", 0) < MIN_HISTORY or not profile["commands"]:
        return []
    new = [program for program in observation.programs if program not in profile["commands"]]
    if not new:
        return []
    more = f" and {len(new) - 5} more" if len(new) > 5 else ""
    usual = sorted(profile["commands"], key=lambda name: (-profile["commands"][name], name))[:6]
    return [Signal("new_command", f"first run of {', '.join(new[:5])}{more} (typed)",
                   f"usually {', '.join(usual)}")]


def compare(profile: dict[str, Any], observation: Observation) -> list[Signal]:
    """The novelty signals of one observation against the profile (empty while there is no usual yet)."""
    if observation.kind == "modbus":
        return _compare_modbus(profile, observation)
    if observation.kind == "typed":
        return _compare_typed(profile, observation)
    if observation.kind == "signin_failed":
        return _compare_failed_signins(profile, observation)
    if profile["sessions"] < MIN_HISTORY:
        return []
    signals: list[Signal] = []
    if observation.kind == "session":
        if observation.asset and observation.asset not in profile["assets"]:
            known = ", ".join(sorted(profile["assets"])[:5])
            signals.append(Signal("first_asset", f"first access to {observation.asset} by this identity",
                                  f"usually {known}"))
        if not _usual_time(profile, observation.at):
            moment = observation.at.astimezone(dt.UTC)
            signals.append(Signal("unusual_time", f"{DAYS[moment.weekday()]} {moment:%H:%M} UTC",
                                  f"outside its usual {usual_hours(profile)}"))
        if observation.source and observation.source not in profile["sources"]:
            signals.append(Signal("new_source", f"connected from {observation.source}",
                                  f"usually from {', '.join(sorted(profile['sources'])[:3])}"))
        if observation.port is not None and str(observation.port) not in profile["ports"] and profile["ports"]:
            signals.append(Signal("new_port", f"first use of port {observation.port}",
                                  f"usually {', '.join(sorted(profile['ports']))}"))
        if observation.command and observation.command not in profile["commands"] and profile["commands"]:
            signals.append(Signal("new_command", f"first run of {observation.command}",
                                  f"usually {', '.join(sorted(profile['commands'])[:5])}"))
    for measure, value in observation.amounts.items():
        stats = profile["measures"].get(measure)
        if not stats or stats.get("n", 0) < MIN_HISTORY:
            continue
        mean = stats["mean"]
        if measure in ("upload_bytes", "bytes_in") and value > max(SPIKE_FACTOR * mean, SPIKE_FLOOR_BYTES):
            times = value / mean if mean else math.inf
            signals.append(Signal("upload_spike", f"{_size(value)} sent to the plant",
                                  f"{times:.0f}x its usual {_size(mean)}" if math.isfinite(times)
                                  else "it usually sends nothing"))
        elif measure == "duration_seconds" and value > max(LONG_FACTOR * mean, LONG_FLOOR_SECONDS):
            signals.append(Signal("long_session", f"a session of {value / 3600:.1f} h",
                                  f"{value / mean:.0f}x its usual {mean / 60:.0f} min"))
        elif measure == "concurrent_sessions" and value > max(stats.get("max", 0.0), CONCURRENT_FLOOR - 1):
            signals.append(Signal("many_sessions", f"{value:.0f} sessions open at once",
                                  f"never more than {stats.get('max', 0.0):.0f} before"))
    return signals

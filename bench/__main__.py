"""`python -m bench` (what `make bench` runs): every benchmark in bench/, then one summary table with each figure
beside its peer measured in the same run (OpenSSH, ProxyJump, the API call, `python -c pass`...) and the ratio,
and the machine's load average when each benchmark started.

  python -m bench                 full sizes (each benchmark about a minute or two on 2 cores)
  python -m bench --quick         smaller counts and sizes, for a smoke check
  python -m bench --only connect  one benchmark (see --help for the names; repeatable)
  python -m bench --list          the benchmarks, in the order they run
  python -m bench --json FILE     also write every figure as JSON

The audit benchmark also appends on PostgreSQL when BENCH_POSTGRES (or GATEPASS_TEST_POSTGRES) names a server
URL, e.g. postgresql+psycopg://postgres@127.0.0.1:5432 (a scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (
    bench_approval,
    bench_audit,
    bench_cli,
    bench_connect,
    bench_contain,
    bench_recording,
    bench_revoke,
    bench_suspend,
    bench_throughput,
    bench_tunnels,
    bench_upload,
    bench_watch,
    bench_watch_live,
)
from bench.harness import heading, table

# The order they run in: the vendor's paths first, then the audit trail, containment, the watcher and start-up.
BENCHMARKS: dict[str, Callable[[list[str]], Any]] = {
    "revoke": bench_revoke.main, "connect": bench_connect.main, "throughput": bench_throughput.main,
    "tunnels": bench_tunnels.main, "approval": bench_approval.main, "recording": bench_recording.main,
    "upload": bench_upload.main,
    "audit": bench_audit.main, "suspend": bench_suspend.main, "contain": bench_contain.main,
    "watch": bench_watch.main, "watch_live": bench_watch_live.main, "cli": bench_cli.main,
}


def _discovered() -> dict[str, Callable[[list[str]], Any]]:
    """Any bench/bench_*.py not listed above, so none runs outside `python -m bench` (after the listed ones)."""
    listed = {run.__module__ for run in BENCHMARKS.values()}
    found: dict[str, Callable[[list[str]], Any]] = {}
    for path in sorted(Path(__file__).resolve().parent.glob("bench_*.py")):
        if f"bench.{path.stem}" not in listed:
            found[path.stem.removeprefix("bench_")] = functools.partial(_run_module, f"bench.{path.stem}")
    return found


def _run_module(module: str, argv: list[str]) -> Any:
    return importlib.import_module(module).main(argv)


BENCHMARKS.update(_discovered())


def _arguments(name: str, quick: bool) -> list[str]:
    argv = ["--quick"] if quick else []
    # BENCH_POSTGRES set but empty (make bench BENCH_POSTGRES=) means SQLite only.
    postgres = os.environ["BENCH_POSTGRES"] if "BENCH_POSTGRES" in os.environ else \
        os.environ.get("GATEPASS_TEST_POSTGRES")
    if name == "audit" and postgres:
        argv += ["--postgres", postgres]
    return argv


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _met(ok: bool | None) -> str:
    return "" if ok is None else "MET" if ok else "NOT MET"


Row = list[str]


def _row(figure: str, measured: str, peer: str, ratio: float | None, target: str, ok: bool | None,
         load: float | None) -> Row:
    return [figure, measured, peer, _fmt(ratio, 2), target, _met(ok), _fmt(load, 2)]


def summary(results: dict[str, Any], loads: dict[str, float] | None = None) -> list[Row]:
    """One row per figure of issue 14 and the rest: what was measured, its peer in the same run, the ratio."""
    loads = loads or {}
    rows: list[Row] = []
    revoke = results.get("revoke")
    if revoke:
        api, cli = revoke.get("api"), revoke.get("cli")
        if api:
            rows.append(_row("revoke API call -> ssh exit", f"median {_fmt(api['median_ms'])} ms", "-", None,
                             "< 100 ms", api["met"], loads.get("revoke")))
        if cli:
            ratio = cli["median_ms"] / api["median_ms"] if api and api["median_ms"] and cli["median_ms"] else None
            rows.append(_row("`gatepass revoke` -> ssh exit", f"median {_fmt(cli['median_ms'])} ms",
                             f"API call: {_fmt(api and api['median_ms'])} ms", ratio, "<= 120 ms (median)",
                             cli["met"], loads.get("revoke")))
    connect = results.get("connect")
    if connect:
        medians = connect["medians_ms"]
        load = loads.get("connect")
        rows.append(_row("connect: gateway (stock ssh) / proxyjump", f"{_fmt(medians.get('gateway (stock ssh)'))} ms",
                         f"proxyjump {_fmt(medians.get('proxyjump'))} ms", connect["gateway_vs_proxyjump"], "<= 0.8",
                         connect["met"], load))
        rows.append(_row("connect, both curve25519: gateway / proxyjump",
                         f"{_fmt(medians.get('gateway, curve25519'))} ms",
                         f"proxyjump {_fmt(medians.get('proxyjump, curve25519'))} ms",
                         connect["gateway_vs_proxyjump_curve25519"], "<= 0.8",
                         connect["gateway_vs_proxyjump_curve25519"] <= 0.8, load))
        rows.append(_row("`gatepass ssh ASSET -- true` / proxyjump", f"{_fmt(medians.get('gatepass ssh (CLI)'))} ms",
                         f"proxyjump {_fmt(medians.get('proxyjump'))} ms", connect["cli_vs_proxyjump"], "<= 0.6",
                         connect["cli_vs_proxyjump"] <= 0.6, load))
    throughput = results.get("throughput")
    if throughput:
        for key, label, target in (("default", "default ciphers", 1.5), ("aes128-gcm", "client aes128-gcm", 1.2)):
            r = throughput.get(key)
            if r:
                res = r["result"]
                rows.append(_row(f"bulk cat, recorded gateway / ProxyJump ({label})",
                                 f"{res['gateway']['mbps_wall']:.0f} MB/s",
                                 f"proxyjump {res['proxyjump']['mbps_wall']:.0f} MB/s", r["gateway_vs_proxyjump"],
                                 f">= {target}", r["gateway_vs_proxyjump"] >= target, loads.get("throughput")))
    tunnels = results.get("tunnels")
    if tunnels:
        load = loads.get("tunnels")
        t = tunnels.get("throughput")
        if t:
            rows.append(_row("`ssh -L` through the gateway / OpenSSH `ssh -L`", f"{t['mbps']['gateway']:.0f} MB/s",
                             f"OpenSSH {t['mbps']['openssh']:.0f} MB/s", t["ratio"], ">= 0.95", t["ratio"] >= 0.95,
                             load))
        sc = tunnels.get("scale")
        if sc:
            n = tunnels["connections"]
            rows.append(_row(f"{n:,} tunnel connections opened at once", f"{sc['open_s']:.2f} s",
                             f"OpenSSH ssh -L {sc['openssh_open_s']:.2f} s", sc["open_ratio"], "<= 3 s",
                             sc["open_met"], load))
            rows.append(_row(f"memory per idle tunnel connection ({n:,} open)", f"{sc['kib_per_connection']:.1f} KiB",
                             "-", None, "<= 64 KiB", sc["kib_per_connection"] <= 64, load))
            rows.append(_row(f"revoke -> all {n:,} tunnel connections closed", f"{sc['cut_s'] * 1000:.0f} ms "
                             f"({sc['closed']} closed)", "-", None, "< 1000 ms",
                             sc["closed"] == n and sc["cut_s"] < 1, load))
    approval = results.get("approval")
    if approval:
        rows.append(_row("approval -> `request --wait` returns -> `gatepass ssh` connected",
                         f"median {approval['median_ms']:.0f} ms", f"ssh proxyjump {approval['peer_median_ms']:.0f} ms",
                         approval["vs_proxyjump"], "<= 1000 ms", approval["met"], loads.get("approval")))
    recording = results.get("recording")
    if recording:
        rows.append(_row("interactive `ssh -tt cat`, recorded / unrecorded",
                         f"{recording['recorded']['mbps']:.1f} MB/s",
                         f"unrecorded {recording['unrecorded']['mbps']:.1f} MB/s", recording["ratio"], ">= 0.95",
                         recording["ratio"] >= 0.95, loads.get("recording")))
    audit = results.get("audit")
    if audit:
        load = loads.get("audit")
        for backend, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
            append = audit.get(f"append_{backend}")
            if append:
                rate = append["median"].get("1")
                # A single client's own commits, kept beside the target (which is the group commit's, below).
                rows.append(_row(f"audit append, 1 event per transaction, {label}", f"{_fmt(rate, 0)} events/s", "-",
                                 None, "-", None, load))
            concurrent = audit.get(f"concurrent_{backend}")
            if concurrent:
                rows.append(_row(f"audit append, {concurrent['clients']} clients, group commit, {label}",
                                 f"{concurrent['group']:,.0f} events/s",
                                 f"own transactions {concurrent['own']:,.0f}/s", concurrent["ratio"], ">= 5,000",
                                 concurrent["group"] >= 5000, load))
        verify = audit.get("verify")
        if verify:
            rows.append(_row("`gatepass audit verify`, 1M events", f"{verify['cli_s_per_million']:.2f} s", "-", None,
                             "< 10 s", verify["met"], load))
    suspend = results.get("suspend")
    if suspend:
        for mode, label in (("api", "suspend AI agent (API) -> its last session closed"),
                            ("cli-recorded", "`gatepass admin identity suspend` recorded -> last session closed")):
            r = suspend.get(mode)
            if r:
                rows.append(_row(label, f"median {_fmt(r['median_ms'])} ms", "-", None, "< 1000 ms", r["met"],
                                 loads.get("suspend")))
    contain = results.get("contain")
    if contain and contain.get("playbook"):
        r = contain["playbook"]
        rows.append(_row(f"ransomware-suspected, {contain['sessions']} live sessions -> last closed",
                         f"median {_fmt(r['median_ms'])} ms", "a single revoke", contain.get("playbook_vs_revoke"),
                         "< 1000 ms", r["met"], loads.get("contain")))
    watch = results.get("watch")
    if watch:
        rows.append(_row("watch: injected cases flagged", f"{watch['caught']} of {watch['cases']}", "-", None, "all",
                         watch["caught"] == watch["cases"], loads.get("watch")))
        rows.append(_row("watch: false flags per 1,000 benign sessions", f"{watch['false_per_1000']:.1f}", "-", None,
                         "<= 5", watch["false_per_1000"] <= 5, loads.get("watch")))
    live = results.get("watch_live")
    if live:
        load = loads.get("watch_live")
        for r in live["latency"]:
            rows.append(_row(f"live watch: target -> observer stream, {r['observers']} observer(s)",
                             f"p50 {_fmt(r['p50_ms'])} ms, p95 {_fmt(r['p95_ms'])} ms", "-", None, "p95 <= 200 ms",
                             r["p95_ms"] is not None and r["p95_ms"] <= 200, load))
        t = live["throughput"]
        rows.append(_row("live watch: throughput watched (worse of reading, stalled)",
                         f"{min(t['mbps']['reading'], t['mbps']['stalled']):.0f} MB/s",
                         f"unwatched {t['mbps']['none']:.0f} MB/s", t["ratio"], ">= 0.9", t["met"], load))
    upload = results.get("upload")
    if upload:
        rows.append(_row(f"recording upload, separate gateway -> broker ({upload['size_mib']} MiB)",
                         f"{upload['mbps']['upload']:.0f} MB/s", f"ssh cat > file {upload['mbps']['ssh']:.0f} MB/s",
                         upload["ratio"], "-", None, loads.get("upload")))
    cli = results.get("cli")
    if cli:
        medians = cli["medians_ms"]
        rows.append(_row("CLI start-up: `gatepass --version`", f"median {_fmt(medians['gatepass --version'])} ms",
                         "`python -c pass`", cli["version_vs_python"], "<= 60 ms", cli["met"], loads.get("cli")))
        rows.append(_row("CLI start-up: `gatepass ssh --help`", f"median {_fmt(medians['gatepass ssh --help'])} ms",
                         "`python -c pass`", cli["ssh_help_vs_python"], "-", None, loads.get("cli")))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts and sizes")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this benchmark")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write all figures as JSON")
    parser.add_argument("--list", action="store_true", help="print the benchmarks' names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    results: dict[str, Any] = {}
    loads: dict[str, float] = {}
    failed = []
    started = time.monotonic()
    for name, run in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        loads[name] = os.getloadavg()[0]
        try:
            results[name] = run(_arguments(name, args.quick))
        except Exception as error:  # one broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"\nbench {name} failed: {error}", file=sys.stderr)
    heading(f"summary ({time.monotonic() - started:.0f} s{', --quick' if args.quick else ''}; each figure beside its "
            "peer measured in the same run; load = 1-minute load average when its benchmark started, on "
            f"{os.cpu_count()} CPUs)")
    print(table(["figure", "measured", "peer (same run)", "ratio", "target", "", "load"], summary(results, loads)))
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    if args.json:
        args.json.write_text(json.dumps({**results, "loads": loads}, indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

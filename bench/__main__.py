"""`python -m bench` (what `make bench` runs): revocation, connection set-up, throughput, tunnels and the AI-agent
kill switch, then a summary.

  python -m bench                 full sizes (each benchmark about a minute or two on 2 cores)
  python -m bench --quick         smaller counts and sizes, for a smoke check
  python -m bench --only connect  one benchmark (revoke, connect, throughput, tunnels, suspend, contain, watch,
                                  cli; repeatable)
  python -m bench --json FILE     also write every figure as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (
    bench_cli,
    bench_connect,
    bench_contain,
    bench_revoke,
    bench_suspend,
    bench_throughput,
    bench_tunnels,
    bench_watch,
)
from bench.harness import heading, table

BENCHMARKS = {"revoke": bench_revoke.main, "connect": bench_connect.main, "throughput": bench_throughput.main,
              "tunnels": bench_tunnels.main, "suspend": bench_suspend.main, "contain": bench_contain.main,
              "watch": bench_watch.main, "cli": bench_cli.main}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    revoke = results.get("revoke")
    if revoke:
        for mode, label in (("api", "revoke API call -> ssh exit"), ("cli", "`gatepass revoke` -> ssh exit")):
            r = revoke.get(mode)
            if r:
                rows.append([label, f"median {_fmt(r['median_ms'])} ms, worst {_fmt(r['worst_ms'])} ms",
                             "< 100 ms", "MET" if r["met"] else "NOT MET"])
    connect = results.get("connect")
    if connect:
        medians = connect["medians_ms"]
        rows.append(["connect: gateway (stock ssh) / proxyjump",
                     f"{connect['gateway_vs_proxyjump']:.2f} ({_fmt(medians.get('gateway (stock ssh)'))} / "
                     f"{_fmt(medians.get('proxyjump'))} ms)", "<= 0.8",
                     "MET" if connect["met"] else "NOT MET"])
        medians_kex = (medians.get("gateway, curve25519"), medians.get("proxyjump, curve25519"))
        rows.append(["connect, both curve25519 kex: gateway / proxyjump",
                     f"{connect['gateway_vs_proxyjump_curve25519']:.2f} ({_fmt(medians_kex[0])} / "
                     f"{_fmt(medians_kex[1])} ms)", "<= 0.8",
                     "MET" if connect["gateway_vs_proxyjump_curve25519"] <= 0.8 else "NOT MET"])
        rows.append(["connect: `gatepass ssh` (CLI) / proxyjump",
                     f"{connect['cli_vs_proxyjump']:.2f} ({_fmt(medians.get('gatepass ssh (CLI)'))} ms)", "<= 0.8",
                     "MET" if connect["cli_vs_proxyjump"] <= 0.8 else "NOT MET"])
    throughput = results.get("throughput")
    if throughput:
        for key, label in (("default", "default ciphers"), ("aes128-gcm", "client aes128-gcm")):
            r = throughput.get(key)
            if r:
                res = r["result"]
                rows.append([f"throughput ({label}): gateway / proxyjump",
                             f"{r['gateway_vs_proxyjump']:.2f} ({res['gateway']['mbps_wall']:.0f} / "
                             f"{res['proxyjump']['mbps_wall']:.0f} MB/s; direct {res['direct']['mbps_wall']:.0f})",
                             ">= 1.5", "MET" if r["gateway_vs_proxyjump"] >= 1.5 else "NOT MET"])
    tunnels = results.get("tunnels")
    if tunnels:
        t = tunnels.get("throughput")
        if t:
            rows.append(["tunnel throughput: gateway ssh -L / OpenSSH ssh -L",
                         f"{t['ratio']:.2f} ({t['mbps']['gateway']:.0f} / {t['mbps']['openssh']:.0f} MB/s)", ">= 0.9",
                         "MET" if t["met"] else "NOT MET"])
        s = tunnels.get("scale")
        if s:
            rows.append([f"memory per idle tunnel connection ({tunnels['connections']} open)",
                         f"{s['kib_per_connection']:.1f} KiB", "<= 64 KiB",
                         "MET" if s["kib_per_connection"] <= 64 else "NOT MET"])
            rows.append([f"revoke -> all {tunnels['connections']} tunnel connections closed",
                         f"{s['cut_s'] * 1000:.0f} ms ({s['closed']} closed)", "< 1000 ms",
                         "MET" if s["closed"] == tunnels["connections"] and s["cut_s"] < 1 else "NOT MET"])
    suspend = results.get("suspend")
    if suspend:
        for mode, label in (("api", "suspend AI agent (API) -> its last session closed"),
                            ("cli-recorded", "`gatepass admin identity suspend` recorded -> last session closed")):
            r = suspend.get(mode)
            if r:
                rows.append([label, f"median {_fmt(r['median_ms'])} ms, worst {_fmt(r['worst_ms'])} ms", "< 1000 ms",
                             "MET" if r["met"] else "NOT MET"])
    contain = results.get("contain")
    if contain and contain.get("playbook"):
        r = contain["playbook"]
        rows.append([f"ransomware-suspected with {contain['sessions']} live sessions -> last closed",
                     f"median {_fmt(r['median_ms'])} ms, worst {_fmt(r['worst_ms'])} ms "
                     f"(x{_fmt(contain.get('playbook_vs_revoke'), 2)} a single revoke)", "< 1000 ms",
                     "MET" if r["met"] else "NOT MET"])
    watch = results.get("watch")
    if watch:
        rows.append(["watch: injected cases flagged", f"{watch['caught']} of {watch['cases']}", "all",
                     "MET" if watch["caught"] == watch["cases"] else "NOT MET"])
        rows.append(["watch: false flags per 1,000 benign sessions", f"{watch['false_per_1000']:.1f}", "<= 5",
                     "MET" if watch["false_per_1000"] <= 5 else "NOT MET"])
    cli = results.get("cli")
    if cli:
        medians = cli["medians_ms"]
        rows.append(["CLI start-up: `gatepass --version`",
                     f"median {_fmt(medians['gatepass --version'])} ms (x{cli['version_vs_python']:.2f} `python -c "
                     f"pass`, x{cli['version_vs_ssh']:.1f} `ssh -V`)", "<= 60 ms", "MET" if cli["met"] else "NOT MET"])
        rows.append(["CLI start-up: `gatepass ssh --help`",
                     f"median {_fmt(medians['gatepass ssh --help'])} ms (x{cli['ssh_help_vs_python']:.2f} `python -c "
                     "pass`)", "-", ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts and sizes")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this benchmark")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write all figures as JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    failed = []
    started = time.monotonic()
    for name, run in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        try:
            results[name] = run(["--quick"] if args.quick else [])
        except Exception as error:  # one broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"\nbench {name} failed: {error}", file=sys.stderr)
    heading(f"summary ({time.monotonic() - started:.0f} s{', --quick' if args.quick else ''})")
    print(table(["figure", "measured", "target", ""], summary(results)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

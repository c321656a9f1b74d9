"""Connection set-up: `ssh ... true` through the Gatepass gateway versus OpenSSH's own ProxyJump.

Paths, interleaved run by run (one warm-up round first, not counted):
  gatepass ssh (CLI)  `gatepass ssh hmi-01 -- true`: the CLI (Python start-up, one API call, files) + ssh
  gateway             stock `ssh` with the grant certificate through the gateway (no CLI start-up)
  proxyjump           stock `ssh -J`: client -> jump sshd -> target sshd, same client key, same target
  direct              stock `ssh` straight to the target sshd (reference)
  direct, rc files    stock `ssh` to an sshd whose sessions run root's bash rc files (the login-shell trap
                      of FIELD-NOTES; reference only: every other path skips them with SetEnv SHLVL=1)
  gatepass --version  the CLI's bare start-up (reference)
and gateway / proxyjump / direct once more with `KexAlgorithms curve25519-sha256` on every OpenSSH client
hop: OpenSSH 9.x picks the post-quantum hybrid sntrup761x25519 between OpenSSH peers, which is much
slower to compute; the gateway (asyncssh) does not offer it, so by default it gets the cheap key exchange
and ProxyJump/direct pay the expensive one (twice for ProxyJump). The second group compares like with like.

Target: gateway / proxyjump <= 0.8 (medians). All ssh runs use the OpenSSH client's default ciphers;
the negotiated key exchange and cipher of every hop are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    GATEPASS,
    Bench,
    heading,
    machine_line,
    median,
    ms,
    ssh_timeline,
    table,
    timed_run,
)

TARGET_RATIO = 0.8

# (label, pattern, which occurrence): the last occurrence is the final hop's (ProxyJump prints both hops).
MARKERS = (
    ("TCP connected", r"Connection established|Executing proxy command", "first"),
    ("server banner", r"Remote protocol version", "last"),
    ("keys exchanged", r"SSH2_MSG_NEWKEYS received", "last"),
    ("authenticated", r"Authenticated to", "last"),
    ("session open", r"Sending command", "last"),
    ("exit status", r"rtype exit-status", "last"),
)


EQUAL_KEX = "KexAlgorithms curve25519-sha256"


def _paths(bench: Bench) -> dict[str, tuple[list[str], dict[str, str] | None]]:
    cli_argv, cli_env = bench.gatepass_ssh("true")
    kex = bench.config_with(EQUAL_KEX)
    return {
        "gatepass ssh (CLI)": (cli_argv, cli_env),
        "gateway (stock ssh)": (bench.ssh("gateway", "true"), None),
        "proxyjump": (bench.ssh("proxyjump", "true"), None),
        "direct": (bench.ssh("direct", "true"), None),
        "direct, rc files run": (bench.ssh("direct-rc", "true"), None),
        "gatepass --version": ([GATEPASS, "--version"], None),
        "gateway, curve25519": (bench.ssh("gateway", "true", config=kex), None),
        "proxyjump, curve25519": (bench.ssh("proxyjump", "true", config=kex), None),
        "direct, curve25519": (bench.ssh("direct", "true", config=kex), None),
    }


def _breakdown(bench: Bench, runs: int) -> list[list[object]]:
    kex = bench.config_with(EQUAL_KEX)
    rows = []
    for label, host, config in (("gateway (stock ssh)", "gateway", None), ("proxyjump", "proxyjump", None),
                                ("direct", "direct", None), ("gateway, curve25519", "gateway", kex),
                                ("proxyjump, curve25519", "proxyjump", kex), ("direct, curve25519", "direct", kex)):
        stamps: dict[str, list[float]] = {name: [] for name, _, _ in MARKERS}
        totals = []
        for _ in range(runs):
            timeline = ssh_timeline(bench.ssh(host, "true", options=["-v"], config=config))
            totals.append(timeline.total)
            for name, pattern, which in MARKERS:
                hits = [t for t, line in timeline.lines if re.search(pattern, line)]
                if hits:
                    stamps[name].append(hits[0] if which == "first" else hits[-1])
        row: list[object] = [label]
        for name, _, _ in MARKERS:
            row.append(ms(median(stamps[name])) if stamps[name] else "-")
        row.append(ms(median(totals)))
        rows.append(row)
    return rows


def run(*, runs: int = 20, breakdown_runs: int = 5) -> dict[str, Any]:
    with Bench("connect") as bench:
        paths = _paths(bench)
        heading(f"connection set-up, {runs} runs per path, interleaved ({machine_line()}, "
                f"load average {os.getloadavg()[0]:.2f})")
        samples: dict[str, list[float]] = {name: [] for name in paths}
        failures: dict[str, list[str]] = {name: [] for name in paths}
        for index in range(-1, runs):  # run -1 is the warm-up (page cache, sshd re-exec), not counted
            order = list(paths.items())
            if index % 2:
                order.reverse()  # neither path always runs right after the other
            for name, (argv, env) in order:
                elapsed, code, stderr = timed_run(argv, env=env, check=False)
                if index < 0:
                    continue
                if code == 0:
                    samples[name].append(elapsed)
                else:
                    failures[name].append(f"exit {code}: {(stderr.strip().splitlines() or [''])[-1]}")
        for name in [n for n, v in samples.items() if not v]:
            print(f"{name}: every run failed, e.g. {failures[name][:1]}")
            del samples[name]
        if "proxyjump" not in samples or "gateway (stock ssh)" not in samples:
            raise RuntimeError(f"no figures: {failures}")
        pj = median(samples["proxyjump"])
        pj_kex = median(samples["proxyjump, curve25519"]) if samples.get("proxyjump, curve25519") else None
        rows = []
        for name, values in samples.items():
            base = pj_kex if name.endswith("curve25519") and pj_kex else pj
            rows.append([name, len(values), len(failures[name]), ms(median(values)), ms(min(values)),
                         ms(max(values)), f"{median(values) / base:.2f}"])
        print(table(["path", "runs", "failed", "median ms", "best ms", "worst ms", "vs proxyjump"], rows))
        print("(rows ending in curve25519 are compared with 'proxyjump, curve25519', the others with 'proxyjump')")
        for name, errors in failures.items():
            if errors and name in samples:
                print(f"  {name}: {len(errors)} failed run(s), e.g. {errors[0]}")
        gw_ratio = median(samples["gateway (stock ssh)"]) / pj
        cli = samples.get("gatepass ssh (CLI)")
        cli_ratio = median(cli) / pj if cli else float("nan")
        kex_gw = samples.get("gateway, curve25519")
        kex_ratio = median(kex_gw) / pj_kex if kex_gw and pj_kex else float("nan")
        rc_cost = median(samples["direct, rc files run"]) - median(samples["direct"])
        print(f"\ngateway / proxyjump (stock ssh, medians, default kex): {gw_ratio:.2f}  target <= {TARGET_RATIO}  "
              f"{'MET' if gw_ratio <= TARGET_RATIO else 'NOT MET'}")
        print(f"gateway / proxyjump, both curve25519-sha256:          {kex_ratio:.2f}  "
              f"{'MET' if kex_ratio <= TARGET_RATIO else 'NOT MET'} (like-for-like key exchange)")
        print(f"gatepass ssh (CLI) / proxyjump:                       {cli_ratio:.2f}  "
              f"{'MET' if cli_ratio <= TARGET_RATIO else 'NOT MET'} (includes the CLI's Python start-up)")
        print(f"login-shell rc files (not in the figures above; SetEnv SHLVL=1 on the target): "
              f"+{ms(rc_cost)} ms per command")

        heading("negotiated key exchange/cipher per hop (OpenSSH client defaults unless marked)")
        kex_config = bench.config_with(EQUAL_KEX)
        ciphers = {host: bench.negotiated(host) for host in ("gateway", "proxyjump", "direct")}
        ciphers |= {f"{host}, curve25519": bench.negotiated(host, config=kex_config)
                    for host in ("gateway", "proxyjump")}
        print(table(["path", "kex/cipher per hop"], [[h, c] for h, c in ciphers.items()]))

        heading(f"where the time goes: `ssh -v` timeline, medians of {breakdown_runs} runs, ms since start "
                "(final hop; -v itself adds a little)")
        print(table(["path", *(name for name, _, _ in MARKERS), "exited"], _breakdown(bench, breakdown_runs)))
        return {
            "runs": runs,
            "medians_ms": {name: median(v) * 1000 for name, v in samples.items()},
            "worst_ms": {name: max(v) * 1000 for name, v in samples.items()},
            "failed": {name: len(v) for name, v in failures.items()},
            "gateway_vs_proxyjump": gw_ratio,
            "gateway_vs_proxyjump_curve25519": kex_ratio,
            "cli_vs_proxyjump": cli_ratio,
            "rc_files_ms": rc_cost * 1000,
            "ciphers": ciphers,
            "target": f"gateway/proxyjump <= {TARGET_RATIO}",
            "met": gw_ratio <= TARGET_RATIO,
        }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs per path (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 runs per path, 2 for the breakdown")
    args = parser.parse_args(argv)
    runs = 5 if args.quick else max(1, min(args.runs, 200))
    return run(runs=runs, breakdown_runs=2 if args.quick else 5)


if __name__ == "__main__":
    main()

"""Bulk throughput: `ssh HOST 'cat FILE' > /dev/null` of a 500 MiB file through the Gatepass gateway versus
OpenSSH ProxyJump, with direct ssh to the target as a reference.

The file is made once in the bench's temp dir (8 MiB of random bytes repeated). Paths, interleaved:
  gateway    stock `ssh` with the grant certificate -> gateway (asyncssh: decrypt, re-encrypt) -> target sshd
  proxyjump  stock `ssh -J`: the bytes are encrypted twice (inner session inside the jump's stdio forward)
  direct     stock `ssh` to the target sshd (reference)
  gateway, unrecorded   the gateway path with the bench-only pass-through tap instead of the recorder
             (bench_recording.py's serve switch; only when BENCH_SERVE_COMMAND is not set): what recording costs

MB/s = bytes / 10^6 / seconds. "wall" is the whole `ssh` command (connection set-up included); "net"
subtracts that path's median set-up time (`ssh HOST true`, measured in the same run). Target: gateway /
proxyjump >= 1.5 (wall medians). With the OpenSSH client's default ciphers first; then again with
`Ciphers aes128-gcm@openssh.com` on the client for every hop it makes (the gateway's own hop to the
target keeps whatever the gateway negotiates) to show what the cipher choice is worth.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_recording import MARKER
from bench.harness import Bench, heading, machine_line, median, ms, table, timed_run

TARGET_RATIO = 1.5
MIB = 1024 * 1024
PATHS = ("gateway", "proxyjump", "direct")
UNRECORDED = "gateway, unrecorded"
# Each path's ssh host, and what its command carries after `cat FILE` (the unrecorded path: bench_recording's marker).
HOSTS = {UNRECORDED: "gateway"}
SUFFIX = {UNRECORDED: f" {MARKER}"}
ALT_CIPHERS = "aes128-gcm@openssh.com"
ALT_BUDGET = 160.0  # seconds: the second pass runs only if the first left time for it (about 4 min in all)


def make_file(path: Path, size: int) -> None:
    block = os.urandom(8 * MIB)
    with path.open("wb") as out:
        left = size
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= min(left, len(block))


def count_bytes(argv: list[str], timeout: float) -> int:
    """Run ``argv`` and count what it writes to stdout (the warm-up run: checks nothing is lost)."""
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    fd = process.stdout.fileno()
    total = 0
    try:
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
        _, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {err.decode(errors='replace')}")
    return total


def measure(bench: Bench, *, file: Path, size: int, runs: int, config: Path | None, paths: tuple[str, ...],
            warm_up: bool = True) -> dict[str, Any]:
    timeout = 300.0

    def ssh(path: str, command: str) -> list[str]:
        return bench.ssh(HOSTS.get(path, path), command + SUFFIX.get(path, ""), config=config)

    for host in paths if warm_up else ():  # warm-up (page cache, first connection); every byte must arrive
        got = count_bytes(ssh(host, f"cat {file}"), timeout)
        if got != size:
            raise RuntimeError(f"{host}: received {got} bytes of {size}")
    setup: dict[str, list[float]] = {host: [] for host in paths}
    wall: dict[str, list[float]] = {host: [] for host in paths}
    for index in range(runs):
        order = paths if index % 2 == 0 else tuple(reversed(paths))
        for host in order:
            setup[host].append(timed_run(ssh(host, "true"))[0])
            wall[host].append(timed_run(ssh(host, f"cat {file}"), timeout=timeout)[0])
    result: dict[str, Any] = {}
    for host in paths:
        net = median(wall[host]) - median(setup[host])
        result[host] = {
            "wall_s": wall[host], "setup_ms": median(setup[host]) * 1000,
            "mbps_wall": size / 1e6 / median(wall[host]), "mbps_worst": size / 1e6 / max(wall[host]),
            "mbps_net": size / 1e6 / net if net > 0 else float("nan"),
        }
    return result


def report(label: str, result: dict[str, Any], ciphers: dict[str, str]) -> None:
    pj = result["proxyjump"]
    rows = []
    for host in result:
        r = result[host]
        rows.append([host, len(r["wall_s"]), f"{r['mbps_wall']:.0f}", f"{r['mbps_worst']:.0f}", f"{r['mbps_net']:.0f}",
                     ms(r["setup_ms"] / 1000), f"{r['mbps_wall'] / pj['mbps_wall']:.2f}",
                     f"{r['mbps_net'] / pj['mbps_net']:.2f}", ciphers.get(host, "")])
    heading(label)
    print(table(["path", "runs", "MB/s wall (median)", "MB/s worst", "MB/s net", "set-up ms", "vs pj (wall)",
                 "vs pj (net)", "ciphers per hop"], rows))


def run(*, size_mib: int = 500, runs: int = 3, alt_ciphers: bool = True) -> dict[str, Any]:
    started = time.monotonic()
    # The unrecorded reference needs bench_recording's serve switch; a what-if serve command keeps its own.
    switch = not os.environ.get("BENCH_SERVE_COMMAND")
    paths = (*PATHS, UNRECORDED) if switch else PATHS
    if switch:
        os.environ["BENCH_SERVE_COMMAND"] = shlex.join([sys.executable, str(Path(__file__).resolve().parent /
                                                                             "bench_recording.py"), "--serve"])
    try:
        return _run(size_mib=size_mib, runs=runs, alt_ciphers=alt_ciphers, paths=paths, started=started)
    finally:
        if switch:
            os.environ.pop("BENCH_SERVE_COMMAND", None)


def _run(*, size_mib: int, runs: int, alt_ciphers: bool, paths: tuple[str, ...], started: float) -> dict[str, Any]:
    with Bench("throughput") as bench:
        size = size_mib * MIB
        file = bench.root / "bulk.bin"
        make_file(file, size)
        heading(f"bulk throughput, `cat` of {size_mib} MiB, {runs} runs per path, interleaved ({machine_line()}, "
                f"load average {os.getloadavg()[0]:.2f})")
        results: dict[str, Any] = {"size_mib": size_mib, "runs": runs}
        ciphers = {host: bench.negotiated(HOSTS.get(host, host)) for host in paths}
        default = measure(bench, file=file, size=size, runs=runs, config=None, paths=paths)
        report("OpenSSH client default ciphers", default, ciphers)
        ratio = default["gateway"]["mbps_wall"] / default["proxyjump"]["mbps_wall"]
        print(f"\ngateway / proxyjump (wall medians): {ratio:.2f}  target >= {TARGET_RATIO}  "
              f"{'MET' if ratio >= TARGET_RATIO else 'NOT MET'}")
        results["default"] = {"result": default, "ciphers": ciphers, "gateway_vs_proxyjump": ratio}
        if UNRECORDED in default:
            recorded = default["gateway"]["mbps_wall"] / default[UNRECORDED]["mbps_wall"]
            print(f"gateway recorded / unrecorded (wall medians): {recorded:.2f}")
            results["default"]["recorded_vs_unrecorded"] = recorded
        results["met"] = ratio >= TARGET_RATIO
        elapsed = time.monotonic() - started
        if alt_ciphers and elapsed > ALT_BUDGET:
            print(f"\n(skipping the {ALT_CIPHERS} pass: {elapsed:.0f} s used already, budget {ALT_BUDGET:.0f} s; "
                  "run with --no-alt-ciphers or on a quieter machine)")
        elif alt_ciphers:
            config = bench.config_with(f"Ciphers {ALT_CIPHERS}")
            alt_names = {host: bench.negotiated(HOSTS.get(host, host), config=config) for host in paths}
            alt = measure(bench, file=file, size=size, runs=runs, config=config, paths=paths, warm_up=False)
            report(f"client Ciphers {ALT_CIPHERS} (every OpenSSH hop)", alt, alt_names)
            alt_ratio = alt["gateway"]["mbps_wall"] / alt["proxyjump"]["mbps_wall"]
            print(f"\ngateway / proxyjump (wall medians): {alt_ratio:.2f}")
            results["aes128-gcm"] = {"result": alt, "ciphers": alt_names, "gateway_vs_proxyjump": alt_ratio}
        return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=500, help="file size in MiB (default 500)")
    parser.add_argument("--runs", type=int, default=3, help="runs per path (default 3)")
    parser.add_argument("--no-alt-ciphers", action="store_true", help=f"skip the {ALT_CIPHERS} pass")
    parser.add_argument("--quick", action="store_true", help="100 MiB, 2 runs, default ciphers only")
    args = parser.parse_args(argv)
    if args.quick:
        return run(size_mib=100, runs=2, alt_ciphers=False)
    return run(size_mib=max(1, min(args.size, 4096)), runs=max(1, min(args.runs, 20)),
               alt_ciphers=not args.no_alt_ciphers)


if __name__ == "__main__":
    main()

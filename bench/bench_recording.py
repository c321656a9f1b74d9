"""Recorded versus unrecorded interactive session: `ssh -tt` through the gateway running `cat` of a large text
file (base64, 200 MiB by default), output to /dev/null on the client, with the session recorder as shipped and
with a pass-through tap, side by side in one gateway process; MB/s of each and their ratio.

Recording is mandatory in the product: the unrecorded path exists only here. `gatepass serve` runs through
this script (`--serve`, via BENCH_SERVE_COMMAND), which replaces the gateway's `open_tap` in that process with
one that hands a session `gateway.taps.PassThrough()` when its command carries the marker
`#GATEPASS_BENCH_UNRECORDED` (a shell comment: the target runs the same `cat`), and the shipped tap otherwise.

Per path, interleaved: `ssh -tt HOST true` (set-up) and `ssh -tt HOST 'cat FILE'` (stdin held open, as at a
terminal). MB/s = file bytes / 10^6 / seconds (the PTY turns each "\\n" into "\\r\\n", so a little more
crosses the wire; both paths alike). "gateway CPU" is the `gatepass serve` process's user + system time during
the run, per MB, and "writer process CPU" that of its recording writer (gateway.recording_worker, a child of
serve, which renders, hashes and writes the recording): the two together against the unrecorded gateway are
the cost of recording, which does not move with the machine's load the way wall time does. The recorded runs
must leave a recording at least as large as the file; the unrecorded ones none.
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Bench, cpu_seconds, heading, machine_line, median, ms, table, writer_cpu_seconds

MIB = 1024 * 1024
MARKER = "#GATEPASS_BENCH_UNRECORDED"
PATHS = ("recorded", "unrecorded")


# ---------------------------------------------------------------------------------------------------
# the serve side (runs inside `gatepass serve`'s process)


def serve(argv: list[str]) -> int:
    """`gatepass serve` with a tap switch: sessions whose command carries MARKER get no recorder."""
    from gateway import sessions, taps

    shipped = taps.open_tap

    def open_tap(ctx: Any, info: taps.SessionInfo) -> taps.ChannelTap:
        if info.command is not None and MARKER in info.command:
            return taps.PassThrough()
        return shipped(ctx, info)

    # gateway.sessions imported the name, so both bindings are replaced (this process only).
    taps.open_tap = open_tap
    sessions.open_tap = open_tap  # type: ignore[attr-defined]
    from cli.main import main as gatepass_main

    return gatepass_main(["serve", *argv])


# ---------------------------------------------------------------------------------------------------
# the client side


def make_text_file(path: Path, size: int) -> None:
    """``size`` bytes of base64 text in 76-column lines (what `base64` prints), from 3 MiB of random bytes."""
    block = base64.encodebytes(os.urandom(3 * MIB))
    with path.open("wb") as out:
        left = size
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= min(left, len(block))


def tree_size(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) if directory.exists() else 0


def ssh_tt(bench: Bench, command: str, *, timeout: float, count: bool = False) -> tuple[float, int]:
    """Wall seconds of `ssh -tt gateway COMMAND` from fork to exit (stdin held open like a terminal's, output to
    /dev/null or counted), and the bytes received when ``count``."""
    argv = bench.ssh("gateway", command, options=["-tt"])
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE if count else subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    received = 0
    try:
        if count:
            assert process.stdout is not None
            while chunk := os.read(process.stdout.fileno(), 1 << 20):
                received += len(chunk)
        process.wait(timeout=timeout)
        elapsed = time.perf_counter() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdin is not None
        process.stdin.close()
    assert process.stderr is not None
    err = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {err}")
    return elapsed, received


def run(*, size_mib: int = 200, runs: int = 3) -> dict[str, Any]:
    previous = os.environ.get("BENCH_SERVE_COMMAND")
    if previous:
        print(f"(BENCH_SERVE_COMMAND={previous!r} is replaced by this benchmark's own serve command)")
    os.environ["BENCH_SERVE_COMMAND"] = shlex.join([sys.executable, str(Path(__file__).resolve()), "--serve"])
    try:
        with Bench("recording") as bench:
            return measure(bench, size_mib=size_mib, runs=runs)
    finally:
        if previous is None:
            os.environ.pop("BENCH_SERVE_COMMAND", None)
        else:
            os.environ["BENCH_SERVE_COMMAND"] = previous


def measure(bench: Bench, *, size_mib: int, runs: int) -> dict[str, Any]:
    assert bench.installation is not None
    assert bench.installation.process is not None
    serve_pid = bench.installation.process.pid
    recordings = bench.installation.root / "data" / "recordings"
    size = size_mib * MIB
    file = bench.root / "bulk.b64"
    make_text_file(file, size)
    commands = {"recorded": f"cat {file}", "unrecorded": f"cat {file} {MARKER}"}
    timeout = 600.0
    heading(f"interactive session throughput, `ssh -tt` `cat` of {size_mib} MiB of base64 text, {runs} runs per "
            f"path, interleaved ({machine_line()}, load average {os.getloadavg()[0]:.2f})")
    received: dict[str, int] = {}
    for path in PATHS:  # warm-up (page cache, first session); every byte must arrive, on both paths alike
        shutil.rmtree(recordings, ignore_errors=True)
        _, received[path] = ssh_tt(bench, commands[path], timeout=timeout, count=True)
        if received[path] < size:
            raise RuntimeError(f"{path}: received {received[path]} bytes of {size}")
    if received["recorded"] != received["unrecorded"]:
        raise RuntimeError(f"the two paths delivered different output: {received}")
    setup: dict[str, list[float]] = {p: [] for p in PATHS}
    wall: dict[str, list[float]] = {p: [] for p in PATHS}
    cpu: dict[str, list[float]] = {p: [] for p in PATHS}
    writer_cpu: dict[str, list[float]] = {p: [] for p in PATHS}
    stored: dict[str, list[int]] = {p: [] for p in PATHS}
    for index in range(runs):
        for path in PATHS if index % 2 == 0 else tuple(reversed(PATHS)):
            setup[path].append(ssh_tt(bench, "true" if path == "recorded" else f"true {MARKER}", timeout=60)[0])
            shutil.rmtree(recordings, ignore_errors=True)
            before, writer_before = cpu_seconds(serve_pid), writer_cpu_seconds(serve_pid)
            wall[path].append(ssh_tt(bench, commands[path], timeout=timeout)[0])
            time.sleep(0.3)  # the session's end (recording closed, reported) finishes in the gateway
            cpu[path].append(cpu_seconds(serve_pid) - before)
            writer_cpu[path].append(writer_cpu_seconds(serve_pid) - writer_before)
            stored[path].append(tree_size(recordings))
    shutil.rmtree(recordings, ignore_errors=True)
    if min(stored["recorded"]) < size:
        raise RuntimeError(f"recorded runs stored only {min(stored['recorded'])} bytes of recordings for {size}: "
                           "the recorder is not what was measured")
    if max(stored["unrecorded"]) > 0:
        raise RuntimeError("the pass-through runs left recordings: the tap switch did not take effect")
    result: dict[str, Any] = {"size_mib": size_mib, "runs": runs, "received_bytes": received["recorded"]}
    rows = []
    for path in PATHS:
        net = median(wall[path]) - median(setup[path])
        result[path] = {
            "wall_s": wall[path], "setup_ms": median(setup[path]) * 1000, "mbps": size / 1e6 / median(wall[path]),
            "mbps_worst": size / 1e6 / max(wall[path]), "mbps_net": size / 1e6 / net if net > 0 else float("nan"),
            "gateway_cpu_s": cpu[path], "gateway_cpu_ms_per_mb": median(cpu[path]) * 1000 / (size / 1e6),
            "writer_cpu_ms_per_mb": median(writer_cpu[path]) * 1000 / (size / 1e6),
            "recording_mb": median(stored[path]) / 1e6,
        }
    base = result["unrecorded"]
    for path in PATHS:
        r = result[path]
        rows.append([path, len(r["wall_s"]), f"{r['mbps']:.1f}", f"{r['mbps_worst']:.1f}", f"{r['mbps_net']:.1f}",
                     ms(r["setup_ms"] / 1000), f"{r['gateway_cpu_ms_per_mb']:.1f}",
                     f"{r['writer_cpu_ms_per_mb']:.1f}", f"{r['recording_mb']:.0f}", f"{r['mbps'] / base['mbps']:.2f}"])
    print(table(["path", "runs", "MB/s (median)", "MB/s worst", "MB/s net", "set-up ms", "gateway CPU ms/MB",
                 "writer process CPU ms/MB", "recording MB", "vs unrecorded"], rows))
    ratio = result["recorded"]["mbps"] / base["mbps"]
    cpu_ratio = result["recorded"]["gateway_cpu_ms_per_mb"] / base["gateway_cpu_ms_per_mb"]
    result["ratio"] = ratio
    result["gateway_cpu_ratio"] = cpu_ratio
    recorded = result["recorded"]
    total_ratio = (recorded["gateway_cpu_ms_per_mb"] + recorded["writer_cpu_ms_per_mb"]) / base["gateway_cpu_ms_per_mb"]
    result["total_cpu_ratio"] = total_ratio
    print(f"\nrecorded / unrecorded throughput (wall medians): {ratio:.2f}; gateway CPU per MB, recorded / "
          f"unrecorded: {cpu_ratio:.2f} (with the writer process's: {total_ratio:.2f})")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200, help="file size in MiB (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs per path (default 3)")
    parser.add_argument("--quick", action="store_true", help="50 MiB, 2 runs")
    args = parser.parse_args(argv)
    if args.quick:
        return run(size_mib=50, runs=2)
    return run(size_mib=max(1, min(args.size, 2048)), runs=max(1, min(args.runs, 20)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        sys.exit(serve(sys.argv[2:]))
    main()

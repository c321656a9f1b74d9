"""Live supervision (issue 13): how late a watched session's output reaches its observers, and what watching
costs the vendor's throughput.

One installation (`gatepass serve`: broker, web and gateway in one process), the stock ssh client through the
gateway to a real sshd, observers reading the broker's observer stream (``GET /api/v1/sessions/ID/watch``,
the server-sent events the watch page and `gatepass watch` read), all on this machine.

Latency: the target prints ``T <wall clock>`` lines every 20 ms (a Python one-liner on the target); each observer
stamps the moment the line's frame arrives, so latency = arrival - the target's print (one clock). It covers
target -> gateway -> broker -> observer stream; a browser's drawing (a redraw at most every 30 ms) comes on top.
With 1 and 10 observers (one asyncio client each, in this process). Target: p95 <= 200 ms.

Throughput: `head -c N /dev/zero | tr '\\0' x` (terminal text, so the feed really decodes and forwards it) through
the gateway, unwatched and watched by one observer that reads everything, and by one that never reads (a stopped
browser), interleaved, medians. Target: watched >= 0.9x unwatched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Bench, cpu_seconds, heading, machine_line, median, ms, percentile, table, writer_cpu_seconds

TARGET_P95 = 0.200
TARGET_RATIO = 0.9
TICK_SECONDS = 0.02
MB = 1_000_000


def ticker(count: int) -> str:
    """The target's command: ``ready``, then on a line from the client ``count`` stamped lines 20 ms apart."""
    code = (f"import time\nfor i in range({count}):\n    print('T %.6f' % time.time(), flush=True)\n"
            f"    time.sleep({TICK_SECONDS})\n")
    return f"echo ready; read go; python3 -c \"{code}\""


def newest_session(bench: Bench) -> str:
    """The id of the session that just started (its recording is named after it)."""
    assert bench.installation is not None
    recordings = bench.installation.root / "data" / "recordings"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        casts = sorted(recordings.glob("*.cast"), key=lambda path: path.stat().st_mtime)
        if casts:
            return casts[-1].name.split(".")[0]
        time.sleep(0.05)
    raise RuntimeError("no recording appeared for the session")


class Observers:
    """``count`` observer streams of one session in a thread of their own (an asyncio loop), stamping each
    ``T`` line's arrival; ``reading=False`` connects and then never reads (a stalled observer)."""

    def __init__(self, base_url: str, token: str, session_id: str, count: int, *, reading: bool = True) -> None:
        self.latencies: list[float] = []
        self.joined = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._args = (base_url, token, session_id, count, reading)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self.joined.wait(15):
            raise RuntimeError("the observers did not get their streams")

    async def _run(self) -> None:
        base_url, token, session_id, count, reading = self._args
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        started = [0]
        timeout = httpx.Timeout(15, read=None)
        async with httpx.AsyncClient(base_url=base_url + "/api/v1", timeout=timeout,
                                     limits=httpx.Limits(max_connections=count + 2),
                                     headers={"Authorization": f"Bearer {token}"}) as http:

            async def one() -> None:
                async with http.stream("GET", f"/sessions/{session_id}/watch") as response:
                    if response.status_code != 200:
                        raise RuntimeError(f"watch refused: {response.status_code} {(await response.aread())!r}")
                    started[0] += 1
                    if started[0] == count:
                        self.joined.set()
                    if not reading:
                        assert self._stop is not None
                        await self._stop.wait()
                        return
                    event = ""
                    async for line in response.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "frames":
                            arrived = time.time()
                            for _at, code, text in json.loads(line[5:]):
                                if code == "o":
                                    self.latencies += [arrived - float(part.split()[1]) for part in
                                                       text.splitlines() if part.startswith("T ")]
                        elif line.startswith("data:") and event == "ended":
                            return

            tasks = [asyncio.create_task(one()) for _ in range(count)]
            every: asyncio.Future[list[Any]] = asyncio.gather(*tasks, return_exceptions=True)
            stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait([stop, every], return_when=asyncio.FIRST_COMPLETED)  # all streams ended, or close()
            for task in tasks:
                task.cancel()
            await every
            stop.cancel()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile: every stream had ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


def latency(bench: Bench, *, observers: int, ticks: int) -> dict[str, Any]:
    inst = bench.installation
    assert inst is not None
    process = subprocess.Popen(bench.ssh("gateway", ticker(ticks)), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        if process.stdout.readline() != b"ready\n":
            raise RuntimeError("the ticker did not start")
        watching = Observers(inst.base_url, inst.token(inst.supervisor), newest_session(bench), observers)
        time.sleep(0.3)  # the gateway's feed starts on the broker's watch message; a fixed settle, not a measure
        process.stdin.write(b"go\n")
        process.stdin.flush()
        process.stdout.read()
        process.wait(timeout=60)
        time.sleep(0.3)
        watching.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    values = watching.latencies
    expected = ticks * observers
    return {"observers": observers, "samples": len(values), "expected": expected,
            "p50_ms": percentile(values, 0.5) * 1000 if values else None,
            "p95_ms": percentile(values, 0.95) * 1000 if values else None,
            "max_ms": max(values) * 1000 if values else None}


def serve_cpu(bench: Bench) -> float:
    """CPU seconds so far of `gatepass serve` (broker, web and gateway) and its recording writer process."""
    assert bench.installation is not None
    assert bench.installation.process is not None
    pid = bench.installation.process.pid
    return cpu_seconds(pid) + writer_cpu_seconds(pid)


def bulk(bench: Bench, size: int, *, watch: str) -> tuple[float, float]:
    """Seconds for ``size`` bytes of text to reach the client, and the CPU seconds `gatepass serve` spent
    meanwhile; ``watch`` is none, reading or stalled."""
    inst = bench.installation
    assert inst is not None
    command = f"echo ready; read go; head -c {size} /dev/zero | tr '\\0' x"
    process = subprocess.Popen(bench.ssh("gateway", command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    assert process.stdin is not None
    assert process.stdout is not None
    watching = None
    try:
        if process.stdout.readline() != b"ready\n":
            raise RuntimeError("the bulk command did not start")
        if watch != "none":
            watching = Observers(inst.base_url, inst.token(inst.supervisor), newest_session(bench), 1,
                                 reading=watch == "reading")
            time.sleep(0.3)  # as above: the feed is running before the clock starts
        started, cpu_before = time.perf_counter(), serve_cpu(bench)
        process.stdin.write(b"go\n")
        process.stdin.flush()
        received = 0
        fd = process.stdout.fileno()
        while chunk := os.read(fd, 1 << 20):
            received += len(chunk)
        elapsed, cpu = time.perf_counter() - started, serve_cpu(bench) - cpu_before
        process.wait(timeout=60)
        if received != size:
            raise RuntimeError(f"received {received} of {size} bytes")
        return elapsed, cpu
    finally:
        if watching is not None:
            watching.close()
        if process.poll() is None:
            process.kill()
            process.wait()


def run(*, ticks: int = 250, size_mb: int = 200, runs: int = 3) -> dict[str, Any]:
    with Bench("watch-live") as bench:
        heading(f"live watch latency, target print -> observer stream, {ticks} lines 20 ms apart ({machine_line()}, "
                f"load average {os.getloadavg()[0]:.2f})")
        results: dict[str, Any] = {"latency": [latency(bench, observers=n, ticks=ticks) for n in (1, 10)]}
        print(table(["observers", "samples", "p50 ms", "p95 ms", "max ms"],
                    [[r["observers"], f"{r['samples']} of {r['expected']}", ms((r["p50_ms"] or 0) / 1000),
                      ms((r["p95_ms"] or 0) / 1000), ms((r["max_ms"] or 0) / 1000)] for r in results["latency"]]))
        worst_p95 = max((r["p95_ms"] or float("inf")) for r in results["latency"]) / 1000
        results["latency_met"] = worst_p95 <= TARGET_P95
        print(f"\nworst p95 {worst_p95 * 1000:.1f} ms  target <= {TARGET_P95 * 1000:.0f} ms  "
              f"{'MET' if results['latency_met'] else 'NOT MET'}")

        size = size_mb * MB
        heading(f"throughput of {size_mb} MB of terminal text through the gateway, {runs} runs each, interleaved")
        modes = ("none", "reading", "stalled")
        seconds: dict[str, list[float]] = {mode: [] for mode in modes}
        cpu: dict[str, list[float]] = {mode: [] for mode in modes}
        bulk(bench, size // 4, watch="none")  # warm-up
        for index in range(runs):
            for mode in modes if index % 2 == 0 else tuple(reversed(modes)):
                elapsed, spent = bulk(bench, size, watch=mode)
                seconds[mode].append(elapsed)
                cpu[mode].append(spent)
        mbps = {mode: size / MB / median(values) for mode, values in seconds.items()}
        # CPU per MB of `gatepass serve` does not move with the machine's load the way wall time does.
        cpu_ms = {mode: median(values) * 1000 / (size / MB) for mode, values in cpu.items()}
        print(table(["watched by", "MB/s (median)", "vs unwatched", "serve CPU ms/MB", "runs (s)"],
                    [[mode, f"{mbps[mode]:.0f}", f"{mbps[mode] / mbps['none']:.2f}", f"{cpu_ms[mode]:.2f}",
                      " ".join(f"{s:.2f}" for s in seconds[mode])] for mode in modes]))
        ratio = min(mbps["reading"], mbps["stalled"]) / mbps["none"]
        results["throughput"] = {"size_mb": size_mb, "seconds": seconds, "mbps": mbps, "cpu_ms_per_mb": cpu_ms,
                                 "ratio": ratio,
                                 "met": ratio >= TARGET_RATIO}
        print(f"\nwatched / unwatched (worse of reading, stalled): {ratio:.2f}  target >= {TARGET_RATIO}  "
              f"{'MET' if ratio >= TARGET_RATIO else 'NOT MET'}")
        return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=250, help="stamped lines per latency run (default 250)")
    parser.add_argument("--size", type=int, default=200, help="MB per throughput run (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs per mode (default 3)")
    parser.add_argument("--quick", action="store_true", help="100 lines, 50 MB, 2 runs")
    args = parser.parse_args(argv)
    if args.quick:
        return run(ticks=100, size_mb=50, runs=2)
    return run(ticks=max(10, min(args.ticks, 5000)), size_mb=max(1, min(args.size, 2000)),
               runs=max(1, min(args.runs, 10)))


if __name__ == "__main__":
    main()

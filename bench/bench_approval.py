"""Approval to connected: from the supervisor's approval to the waiting vendor's `gatepass ssh` being connected.

Each run: the vendor runs `gatepass request hmi-01 --for 1h --reason ... --wait` (the real CLI, its own
process); once it prints "Waiting for approval of REQ", a random moment within one poll interval later
(so the approval lands anywhere in the CLI's polling cycle, as a person's would) the supervisor approves
over the API (kept-alive httpx client, the supervisor's session). The clock starts just before that call:

  request returns   `gatepass request --wait` exited (0, approved)
  connected         `gatepass ssh hmi-01 -- echo connected` started right then printed "connected"
                    (stock ssh through the gateway, the remote command run on the target)

Peer, interleaved in the same run: `ssh proxyjump echo connected` (OpenSSH through a jump host, the way a
vendor reaches a plant without Gatepass), so the row reads as approval->connected / a plain connection.
The previous grant is revoked before each run, so `gatepass ssh` can only use the new one. Target: median
approval -> connected <= 1 s (issue 14).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ASSET, GATEPASS, Bench, heading, machine_line, median, ms, percentile, table

TARGET_SECONDS = 1.0
WAITING = re.compile(r"Waiting for approval of (req-[0-9a-f]+)")


def _connect(argv: list[str], env: dict[str, str] | None, start: float, timeout: float = 30) -> float:
    """Seconds from ``start`` until ``argv`` printed "connected" (the remote echo)."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    if "connected" not in done.stdout:
        raise RuntimeError(f"{' '.join(argv[:3])}... did not connect ({done.returncode}): {done.stderr.strip()}")
    return time.perf_counter() - start


def one_run(bench: Bench, poll_interval: float, rng: random.Random) -> dict[str, float]:
    inst = bench.installation
    assert inst is not None
    inst.revoke_usable()
    waiting = subprocess.Popen([GATEPASS, "request", ASSET, "--for", "1h", "--reason", "bench: approval", "--wait"],
                               env=inst.env(inst.vendor), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert waiting.stdout is not None
        request_id = None
        deadline = time.monotonic() + 30
        while request_id is None and time.monotonic() < deadline:
            line = waiting.stdout.readline()
            if not line:
                said = waiting.stderr.read() if waiting.stderr else ""
                raise RuntimeError(f"`gatepass request --wait` ended early: {said}")
            if match := WAITING.search(line):
                request_id = match.group(1)
        if request_id is None:
            raise RuntimeError("`gatepass request --wait` never said it was waiting")
        time.sleep(rng.uniform(0, poll_interval))  # the approval lands anywhere in the polling cycle
        start = time.perf_counter()
        inst.call(inst.supervisor, "POST", f"/requests/{request_id}/approve", {"comment": "bench"})
        approved = time.perf_counter() - start
        code = waiting.wait(timeout=30)
        returned = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"`gatepass request --wait` exited {code}")
        argv, env = bench.gatepass_ssh("echo", "connected")
        connected = _connect(argv, env, start)
        return {"approved": approved, "returned": returned, "connected": connected}
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()


def poll_interval() -> float:
    from cli.client_access import POLL_SECONDS

    return float(POLL_SECONDS)


def run(*, runs: int = 10, seed: int = 14) -> dict[str, Any]:
    rng = random.Random(seed)  # noqa: S311 (when to approve, not a secret)
    interval = poll_interval()
    with Bench("approval") as bench:
        heading(f"approval -> `gatepass request --wait` returns -> `gatepass ssh` connected, {runs} runs, "
                f"interleaved with `ssh proxyjump` ({machine_line()}, load average {os.getloadavg()[0]:.2f}; "
                f"the CLI polls every {interval:g} s)")
        one_run(bench, interval, rng)  # warm-up, not counted
        samples: list[dict[str, float]] = []
        peer: list[float] = []
        for _ in range(runs):
            samples.append(one_run(bench, interval, rng))
            start = time.perf_counter()
            peer.append(_connect(bench.ssh("proxyjump", "echo", "connected"), None, start))
        rows = []
        for key, label in (("approved", "approve API call answered"),
                           ("returned", "`gatepass request --wait` returned"),
                           ("connected", "`gatepass ssh` connected (echo ran)")):
            values = [s[key] for s in samples]
            rows.append([label, ms(median(values)), ms(percentile(values, 0.9)), ms(max(values))])
        rows.append(["peer: `ssh proxyjump echo` connected", ms(median(peer)), ms(percentile(peer, 0.9)),
                     ms(max(peer))])
        print(table(["from the approval to", "median ms", "p90 ms", "worst ms"], rows))
        connected = [s["connected"] for s in samples]
        med = median(connected)
        ratio = med / median(peer)
        met = med <= TARGET_SECONDS
        print(f"\napproval -> connected: median {med * 1000:.0f} ms, target <= {TARGET_SECONDS * 1000:.0f} ms "
              f"{'MET' if met else 'NOT MET'}; x{ratio:.2f} a plain ProxyJump connection "
              f"({median(peer) * 1000:.0f} ms)")
        return {"runs": runs, "poll_seconds": interval, "load": os.getloadavg()[0],
                "median_ms": med * 1000, "worst_ms": max(connected) * 1000,
                "returned_median_ms": median([s["returned"] for s in samples]) * 1000,
                "peer_median_ms": median(peer) * 1000, "vs_proxyjump": ratio, "met": met}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed runs (default 10)")
    parser.add_argument("--quick", action="store_true", help="4 runs")
    args = parser.parse_args(argv)
    return run(runs=4 if args.quick else max(1, min(args.runs, 100)))


if __name__ == "__main__":
    main()

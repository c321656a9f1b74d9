"""Time to contain: the `ransomware-suspected` playbook against a site with N live sessions, from the API call
to the exit of the last of the N stock `ssh … 'echo ready; sleep 600'` clients through the gateway.

Each run: a grant for the vendor (API), N ssh sessions through the gateway started in batches and all shown
ready (target command running), then the site's supervisor runs the playbook (POST /api/v1/playbooks/…/run,
kept-alive client): the site is locked down, the vendor suspended pending review, the recordings kept, the
people told. The clock stops when the last ssh process has exited. Between runs the site is lifted and the
vendor resumed (`gatepass admin`) and signs in again (at the next one-time-code step: codes are single-use).

The peer figure, measured in the same run: revoking the one grant those N sessions use (POST …/revoke), the
cut every grant gets — the playbook adds a lockdown, a suspension and the audit of each step on top.
Target: the last session closed within 1 s (median and worst), with N = 100.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import SITE, Bench, heading, machine_line, median, ms, table

TARGET_SECONDS = 1.0
READY_TIMEOUT = 60.0
EXIT_TIMEOUT = 20.0
BATCH = 10


def _start_sessions(bench: Bench, count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` ssh sessions through the gateway, each with its target command running."""
    sessions: list[subprocess.Popen[bytes]] = []
    for first in range(0, count, BATCH):
        batch = [subprocess.Popen(bench.ssh("gateway", "echo ready; sleep 600"), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                 for _ in range(min(BATCH, count - first))]
        deadline = time.monotonic() + READY_TIMEOUT
        for process in batch:
            assert process.stdout is not None
            line = process.stdout.readline()
            if line.strip() != b"ready" or time.monotonic() > deadline:
                raise RuntimeError(f"a session did not start (got {line!r}); sshd or the gateway is overloaded")
        sessions += batch
    return sessions


def _wait_all(sessions: list[subprocess.Popen[bytes]], start: float) -> float | None:
    """Seconds from ``start`` to the exit of the last session (None: not all exited in time)."""
    deadline = time.monotonic() + EXIT_TIMEOUT
    last = None
    pending = list(sessions)
    while pending and time.monotonic() < deadline:
        for process in list(pending):
            if process.poll() is not None:
                pending.remove(process)
                last = time.perf_counter() - start
        time.sleep(0.002)
    for process in pending:
        process.kill()
    return None if pending else last


def _relogin(bench: Bench, last_step: list[int]) -> None:
    """The vendor signs in again after the suspension revoked its session, with a one-time code of a later
    time step than its last sign-in (RFC 6238 codes are accepted once)."""
    inst = bench.installation
    assert inst is not None
    while int(time.time() // 30) <= last_step[0]:
        time.sleep(0.5)
    last_step[0] = int(time.time() // 30)
    inst.login(inst.vendor)
    inst._clients.pop(inst.vendor, None)  # the kept-alive client holds the revoked token


def one_run(bench: Bench, sessions_wanted: int, mode: str, last_step: list[int]) -> dict[str, Any]:
    inst = bench.installation
    assert inst is not None
    grant = inst.next_grant()
    sessions = _start_sessions(bench, sessions_wanted)
    try:
        # The exits are watched from before the call (a thread), so a session that ends before the answer arrives
        # is timed when it ends, not when the answer has come.
        exits: list[float | None] = []
        start = time.perf_counter()
        watcher = threading.Thread(target=lambda: exits.append(_wait_all(sessions, start)))
        watcher.start()
        if mode == "playbook":
            report = inst.call(inst.supervisor, "POST", "/playbooks/ransomware-suspected/run",
                               {"site": SITE, "reason": "bench: time to contain"})
        else:
            inst.call(inst.supervisor, "POST", f"/grants/{grant['id']}/revoke", {"reason": "bench: peer figure"})
            report = None
        answered = time.perf_counter() - start
        watcher.join()
        last = exits[0]
    finally:
        for process in sessions:
            if process.poll() is None:
                process.kill()
    if mode == "playbook":
        inst.gatepass("admin", "site", "lift", SITE)
        inst.gatepass("admin", "identity", "resume", inst.vendor, "--reason", "bench: next run")
        _relogin(bench, last_step)
    return {"mode": mode, "last_exit": last, "answered": answered,
            "server_ms": report["elapsed_ms"] if report else None}


def run(*, runs: int = 10, sessions: int = 100) -> dict[str, Any]:
    with Bench("contain", target_log_level="INFO") as bench:
        heading(f"time to contain: ransomware-suspected with {sessions} live sessions at the site, {runs} runs, and "
                f"the single revoke of their grant as the peer ({machine_line()}, load average "
                f"{os.getloadavg()[0]:.2f})")
        last_step = [int(time.time() // 30)]  # the vendor signed in while the bench was set up
        samples = []
        for _ in range(runs):
            samples.append(one_run(bench, sessions, "revoke", last_step))
            samples.append(one_run(bench, sessions, "playbook", last_step))
        results: dict[str, Any] = {"sessions": sessions, "target_ms": TARGET_SECONDS * 1000}
        rows = []
        for mode, label in (("playbook", "playbook run -> last of N ssh exits"),
                            ("revoke", "revoke of their grant -> last of N ssh exits")):
            chosen = [s for s in samples if s["mode"] == mode]
            exits = [s["last_exit"] for s in chosen if s["last_exit"] is not None]
            missed = len(chosen) - len(exits)
            worst = max(exits) if exits and not missed else None
            med = median(exits) if exits else None
            ok = worst is not None and worst < TARGET_SECONDS
            server = [s["server_ms"] for s in chosen if s["server_ms"] is not None]
            rows.append([label, len(chosen), missed, ms(med), ms(worst) if worst is not None else "-",
                         ms(median([s["answered"] for s in chosen])), f"{median(server):.0f}" if server else "-",
                         "MET" if ok else "NOT MET"])
            results[mode] = {"runs": len(chosen), "no_exit": missed, "median_ms": med and med * 1000,
                             "worst_ms": worst and worst * 1000, "met": ok,
                             "server_median_ms": median(server) if server else None}
        print(table(["measured from", "runs", "no exit", "median ms", "worst ms", "answered ms", "steps ms (server)",
                     "< 1 s"], rows))
        if results["playbook"]["median_ms"] and results["revoke"]["median_ms"]:
            ratio = results["playbook"]["median_ms"] / results["revoke"]["median_ms"]
            results["playbook_vs_revoke"] = ratio
            print(f"\nplaybook / single revoke (median): {ratio:.2f}")
        return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="2 runs with 20 sessions")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.sessions = 2, 20
    results = run(runs=args.runs, sessions=args.sessions)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

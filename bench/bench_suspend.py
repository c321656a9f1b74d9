"""The AI-agent kill switch: from `suspend` to the exit of the agent's last live session (issue 11).

Set-up: the vendor's grant (approved by the plant supervisor) and an AI agent the vendor sponsors, with its own
key. Each run: the agent is resumed, the vendor delegates part of the grant to it over the API (one listed
command, 10 minutes), and the agent opens two sessions through the gateway with stock `ssh`, each running its
listed `sh -c 'echo ready; sleep 600'`; once both have printed `ready` the agent is suspended and the time until
the LAST of the two ssh processes exits is taken:

  api   the clock starts just before `POST /api/v1/identities/AGENT/suspend` is sent (the admin's kept-alive
        session): the broker + gateway figure
  cli   the clock starts just before `gatepass admin identity suspend AGENT` is forked (a separate process on the
        control-plane host: it commits, and the running broker relays the change from the outbox, every 250 ms);
        also shown from the moment that command exited (its transaction committed)
  recorded  for both: from the suspension's audit event (``identity:lifecycle:suspended``, stamped by the broker's
        clock when the suspending transaction began, so just before its commit) to the last ssh exit, both on the
        wall clock: how long the cut takes once the suspension exists, whoever made it

Target: median and worst under 1 s (the issue: "all its sessions are cut within 1 s").
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ASSET, GATEPASS, SITE, Bench, heading, keygen, machine_line, median, ms, percentile, table

TARGET_SECONDS = 1.0
READY_TIMEOUT = 20.0
EXIT_TIMEOUT = 10.0
AGENT = "bench-agent"
COMMAND = "sh -c 'echo ready; sleep 600'"
SESSIONS = 2


@dataclass
class Sample:
    mode: str
    last_exit: float | None  # seconds from the suspend call to the last ssh exit (None: not all exited in time)
    first_exit: float | None
    answered: float  # API answer (api) or `gatepass admin identity suspend` exit (cli)
    exit_codes: list[int | None]
    recorded: float | None  # seconds from the suspension's audit time to the last ssh exit (wall clock)


class _Session:
    """One stock ssh session of the agent, its exit time-stamped by a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.exited_at: float | None = None
        self.exited_wall: float | None = None
        self._exited = threading.Event()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        self.process.wait()
        self.exited_at, self.exited_wall = time.perf_counter(), time.time()
        self._exited.set()

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        buffer, fd = b"", self.process.stdout.fileno()
        while b"ready\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"the agent's session did not become ready: {err.strip()}")
            readable, _, _ = select.select([fd], [], [], min(left, 0.5))
            if readable and (chunk := os.read(fd, 4096)):
                buffer += chunk
        # Drain stderr in the background so a full pipe never holds ssh up at its exit.
        threading.Thread(target=lambda: self.process.stderr and self.process.stderr.read(), daemon=True).start()

    def wait_exit(self, timeout: float) -> bool:
        return self._exited.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self._exited.wait(5)


class Agent:
    """The AI agent: its identity (sponsored by the bench's vendor), its key, and its ssh argv per grant."""

    def __init__(self, bench: Bench) -> None:
        inst = bench.installation
        assert inst is not None
        self.bench, self.inst = bench, inst
        self.key = keygen(bench.root / "agent_ed25519")
        inst.gatepass("admin", "user", "add", AGENT, "--role", "vendor", "--site", SITE, "--kind", "ai_agent",
                      "--owner", inst.vendor, "--sponsor", inst.vendor, "--purpose", "bench: the kill switch")
        inst.login("admin")
        self.suspended = False

    def delegate(self) -> dict[str, Any]:
        body = {"agent": AGENT, "duration": "10m", "commands": [["sh", "-c", "echo ready; sleep 600"]],
                "public_key": Path(str(self.key) + ".pub").read_text().strip(), "reason": "bench"}
        grant: dict[str, Any] = self.inst.call(self.inst.vendor, "POST", f"/grants/{self.bench.grant['id']}/delegate",
                                               body)
        return grant

    def ssh(self, grant: dict[str, Any]) -> list[str]:
        certificate = self.bench.root / "agent_ed25519-cert.pub"
        certificate.write_text(grant["certificate"] + "\n")
        known_hosts = self.bench.root / "agent_known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{self.inst.ssh_port} {grant['gateway']['host_key']}\n")
        return ["ssh", "-F", "none", "-p", str(self.inst.ssh_port), "-i", str(self.key), "-o",
                f"CertificateFile={certificate}", "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                f"{ASSET}@127.0.0.1", COMMAND]

    def suspended_at(self, since: dt.datetime) -> float | None:
        """Wall-clock time of the agent's latest suspension in the audit trail (the admin reads the trail)."""
        events = self.inst.api("admin").get("/audit/events", params={"since": since.isoformat()}).json()
        times = [dt.datetime.fromisoformat(e["occurred_at"]).timestamp() for e in events
                 if e["action"] == "identity:lifecycle:suspended" and e["subject"] == AGENT]
        return max(times) if times else None

    def resume(self) -> None:
        if self.suspended:
            self.inst.call("admin", "POST", f"/identities/{AGENT}/resume", {"reason": "bench: next run"})
            self.suspended = False


def one_run(agent: Agent, mode: str) -> Sample:
    inst = agent.inst
    agent.resume()
    argv = agent.ssh(agent.delegate())  # writes the certificate and known_hosts once, before any ssh reads them
    sessions = [_Session(argv) for _ in range(SESSIONS)]
    try:
        for session in sessions:
            session.wait_ready()
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
        start = time.perf_counter()
        if mode == "api":
            inst.call("admin", "POST", f"/identities/{AGENT}/suspend", {"reason": "bench: kill switch"})
        else:
            subprocess.run([GATEPASS, "admin", "identity", "suspend", AGENT, "--reason", "bench: kill switch"],
                           env=inst.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30, check=True)
        answered = time.perf_counter() - start
        agent.suspended = True
        exited = all(session.wait_exit(EXIT_TIMEOUT) for session in sessions)
        times = [session.exited_at - start for session in sessions if session.exited_at is not None]
        walls = [session.exited_wall for session in sessions if session.exited_wall is not None]
        suspended = agent.suspended_at(since)
        return Sample(mode=mode, last_exit=max(times) if exited and times else None,
                      first_exit=min(times) if times else None, answered=answered,
                      exit_codes=[session.process.returncode for session in sessions],
                      recorded=max(walls) - suspended if exited and walls and suspended is not None else None)
    finally:
        for session in sessions:
            session.kill()


def run(*, runs: int = 20, cli_runs: int = 20) -> dict[str, Any]:
    with Bench("suspend", target_log_level="VERBOSE") as bench:
        heading(f"AI-agent kill switch, suspend to the last of {SESSIONS} sessions closed: {runs} runs via the API, "
                f"{cli_runs} via `gatepass admin identity suspend`, interleaved ({machine_line()}, load average "
                f"{os.getloadavg()[0]:.2f})")
        agent = Agent(bench)
        one_run(agent, "api")  # warm-up, not counted
        modes: list[str] = []
        for index in range(runs):  # the cli runs spread evenly among the api runs
            modes.append("api")
            modes += ["cli"] * ((index + 1) * cli_runs // runs - index * cli_runs // runs)
        modes += ["cli"] * (cli_runs - modes.count("cli"))
        samples = [one_run(agent, mode) for mode in modes]
        results: dict[str, Any] = {"target_ms": TARGET_SECONDS * 1000, "sessions_per_run": SESSIONS}
        rows = []
        for mode, label in (("api", "suspend API call -> last ssh exit"),
                            ("api-recorded", "  suspension recorded (audit time) -> last ssh exit"),
                            ("cli", "`gatepass admin identity suspend` forked -> last ssh exit"),
                            ("cli-commit", "  that command's exit (committed) -> last ssh exit"),
                            ("cli-recorded", "  suspension recorded (audit time) -> last ssh exit")):
            chosen = [s for s in samples if s.mode == mode.split("-")[0]]
            if not chosen:
                continue
            if mode.endswith("-recorded"):
                exits = [s.recorded for s in chosen if s.recorded is not None]
            else:
                offset = (lambda s: s.answered) if mode == "cli-commit" else (lambda _s: 0.0)
                exits = [s.last_exit - offset(s) for s in chosen if s.last_exit is not None]
            missed = len(chosen) - len(exits)
            worst = max(exits) if exits and not missed else None
            med = median(exits) if exits else None
            ok = med is not None and worst is not None and worst < TARGET_SECONDS
            # From the fork, the figure includes the command's own start-up (Python, SQLAlchemy, the master key):
            # shown, not held to the target, which is about the cut once the suspension is in effect.
            verdict = "-" if mode == "cli" else "MET" if ok else "NOT MET"
            rows.append([label, len(chosen), missed, ms(med), ms(percentile(exits, 0.9)) if exits else "-",
                         ms(worst) if worst is not None else f">{EXIT_TIMEOUT:g}s", verdict,
                         ms(median([s.answered for s in chosen]))])
            results[mode] = {"runs": len(chosen), "no_exit": missed, "median_ms": med and med * 1000,
                             "worst_ms": worst and worst * 1000,
                             "answered_median_ms": median([s.answered for s in chosen]) * 1000, "met": ok}
        print(table(["measured from", "runs", "no exit", "median ms", "p90 ms", "worst ms", "< 1 s", "answered ms"],
                    rows))
        print("\nanswered = API response received (api) or the suspend command exited (cli); each run times the last "
              f"of the agent's {SESSIONS} ssh sessions to exit. A negative figure from the command's exit: the "
              "sessions were cut before the command had finished exiting (it commits, then tears down).")
        codes = sorted({code for s in samples for code in s.exit_codes if code is not None})
        print(f"ssh exit codes seen: {codes}")
        results["met"] = bool(results.get("api", {}).get("met")) and bool(results.get("cli-recorded", {}).get(
            "met", True))
        return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs timed from the API call (default 20)")
    parser.add_argument("--cli-runs", type=int, default=20, help="runs timed from the admin command (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 API runs and 3 CLI runs")
    args = parser.parse_args(argv)
    if args.quick:
        return run(runs=5, cli_runs=3)
    return run(runs=max(1, min(args.runs, 200)), cli_runs=max(0, min(args.cli_runs, 200)))


if __name__ == "__main__":
    main()

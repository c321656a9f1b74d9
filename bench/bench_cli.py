"""CLI start-up: `gatepass --version` and `gatepass ssh --help` beside `python -c pass` and `ssh -V`.

Each round runs every command once, in turn (interleaved, so all see the same machine load), as a fresh process; the
clock runs from the fork to the exit. Figures: the median and 90th percentile wall time, the median CPU time (user +
system, steadier than wall time on a loaded machine), and each median as a ratio to `python -c pass` (the floor: the
venv's interpreter starting and stopping, site-packages included) and to `ssh -V` (the peer: the OpenSSH client that
`gatepass ssh` becomes). Target: `gatepass --version` median at most 60 ms.

With PYTHONDONTWRITEBYTECODE set (as in some sandboxes), the project's own modules are compiled from source at every
start; the gatepass commands are then also timed with their bytecode cached, as an installed gatepass has it (in a
temporary PYTHONPYCACHEPREFIX, so nothing is written beside the sources).

Also listed, once: the modules `python -X importtime` shows `gatepass --version` importing beyond `python -c pass`.
No broker, gateway or network is needed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import GATEPASS, heading, machine_line, median, ms, percentile, table

TARGET_SECONDS = 0.060
PYTHON = str(Path(GATEPASS).with_name("python")) if Path(GATEPASS).with_name("python").exists() else sys.executable
FLOOR, PEER, VERSION, SSH_HELP = "python -c pass", "ssh -V", "gatepass --version", "gatepass ssh --help"
CACHED = " (bytecode cached)"


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run (the bench runs one child at a time, so the children's rusage is its)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _imported(argv: list[str]) -> set[str]:
    done = subprocess.run([PYTHON, "-X", "importtime", *argv], capture_output=True, text=True, check=True)
    return {line.split("|")[-1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:") and "self [us]" not in line}


def _commands(pycache: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    env = dict(os.environ)
    commands = {FLOOR: ([PYTHON, "-c", "pass"], env), PEER: (["ssh", "-V"], env),
                VERSION: ([GATEPASS, "--version"], env), SSH_HELP: ([GATEPASS, "ssh", "--help"], env)}
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPYCACHEPREFIX": pycache}
        commands[VERSION + CACHED] = ([GATEPASS, "--version"], cached)
        commands[SSH_HELP + CACHED] = ([GATEPASS, "ssh", "--help"], cached)
    return commands


def run(*, rounds: int) -> dict[str, Any]:
    pycache = tempfile.mkdtemp(prefix="gatepass-bench-pycache-")
    try:
        return _run(rounds=rounds, commands=_commands(pycache))
    finally:
        shutil.rmtree(pycache, ignore_errors=True)


def _run(*, rounds: int, commands: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, Any]:
    heading(f"CLI start-up: {rounds} rounds of {len(commands)} commands, interleaved ({machine_line()}, "
            f"load average {os.getloadavg()[0]:.2f})")
    version = subprocess.run([GATEPASS, "--version"], capture_output=True, text=True, check=True)
    print((version.stdout + version.stderr).strip())
    for argv, env in commands.values():  # warm the page cache (and the bytecode cache); not counted
        _once(argv, env)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, (argv, env) in commands.items():
            wall, cpu = _once(argv, env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    floor, peer = median(walls[FLOOR]), median(walls[PEER])
    rows = []
    for name in commands:
        med = median(walls[name])
        rows.append([name, ms(med), ms(percentile(walls[name], 0.9)), ms(median(cpus[name])), f"{med / floor:.2f}",
                     f"{med / peer:.1f}"])
    print(table(["command", "median ms", "p90 ms", "CPU median ms", "x python -c pass", "x ssh -V"], rows))
    if VERSION + CACHED in commands:
        print("PYTHONDONTWRITEBYTECODE is set: the plain gatepass rows compile the project's modules at every start.")
    extra = sorted(_imported([GATEPASS, "--version"]) - _imported(["-c", "pass"]))
    ours = [m for m in extra if m.split(".")[0] == "cli"]
    print(f"\n`gatepass --version` imports {len(extra)} modules beyond `python -c pass`: {len(ours)} of cli "
          f"({', '.join(ours)}) and {', '.join(m for m in extra if m not in ours)}")
    version_median = median(walls[VERSION])
    met = version_median <= TARGET_SECONDS
    print(f"target: `gatepass --version` median <= {TARGET_SECONDS * 1000:.0f} ms: {ms(version_median)} ms, "
          f"{'MET' if met else 'NOT MET'}")
    return {"rounds": rounds, "target_ms": TARGET_SECONDS * 1000,
            "medians_ms": {name: median(values) * 1000 for name, values in walls.items()},
            "p90_ms": {name: percentile(values, 0.9) * 1000 for name, values in walls.items()},
            "cpu_medians_ms": {name: median(values) * 1000 for name, values in cpus.items()},
            "version_vs_python": version_median / floor, "version_vs_ssh": version_median / peer,
            "ssh_help_vs_python": median(walls[SSH_HELP]) / floor,
            "modules_beyond_python": extra, "met": met}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="rounds of the commands (default 30)")
    parser.add_argument("--quick", action="store_true", help="10 rounds")
    args = parser.parse_args(argv)
    return run(rounds=10 if args.quick else max(3, min(args.rounds, 500)))


if __name__ == "__main__":
    main()

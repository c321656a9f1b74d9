"""`python -m bench` (what `make bench` runs) runs every benchmark in bench/ and sums each figure up beside its peer
(issue 14: "two run outside its list"). The figures themselves are measured, not asserted: they need the machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.__main__ import summary

ROOT = Path(__file__).resolve().parents[1]


def test_every_benchmark_script_is_in_the_list() -> None:
    listed = subprocess.run([sys.executable, "-m", "bench", "--list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=True).stdout.split()
    scripts = sorted(path.stem.removeprefix("bench_") for path in (ROOT / "bench").glob("bench_*.py"))
    assert sorted(listed) == scripts
    assert listed[:4] == ["revoke", "connect", "throughput", "tunnels"]  # the vendor's paths first, as before


def test_make_bench_runs_only_the_list() -> None:
    recipe = (ROOT / "Makefile").read_text().split("\nbench: venv\n", 1)[1].split("\n\n", 1)[0]
    assert "python -m bench" in recipe
    assert "bench_" not in recipe  # no script run beside the list


def test_the_summary_puts_each_figure_beside_its_peer_and_the_load() -> None:
    results = {
        "tunnels": {"connections": 1000, "scale": {
            "open_s": 2.5, "openssh_open_s": 2.0, "open_ratio": 1.25, "open_met": True, "kib_per_connection": 6.1,
            "cut_s": 0.12, "closed": 1000}},
        "approval": {"median_ms": 800.0, "peer_median_ms": 400.0, "vs_proxyjump": 2.0, "met": True},
        "revoke": {"api": {"median_ms": 20.0, "worst_ms": 40.0, "met": True},
                   "cli": {"median_ms": 110.0, "worst_ms": 150.0, "met": True}},
    }

    rows = {row[0]: row for row in summary(results, {"tunnels": 1.5, "approval": 0.5, "revoke": 2.0})}

    opened = rows["1,000 tunnel connections opened at once"]
    assert opened == ["1,000 tunnel connections opened at once", "2.50 s", "OpenSSH ssh -L 2.00 s", "1.25", "<= 3 s",
                      "MET", "1.50"]
    assert rows["approval -> `request --wait` returns -> `gatepass ssh` connected"][2:4] == [
        "ssh proxyjump 400 ms", "2.00"]
    assert rows["`gatepass revoke` -> ssh exit"][2:] == ["API call: 20.0 ms", "5.50", "<= 120 ms (median)", "MET",
                                                         "2.00"]
    assert rows["revoke -> all 1,000 tunnel connections closed"][1] == "120 ms (1000 closed)"

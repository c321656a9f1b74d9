"""The packages depend on each other in one direction only (assembly/__init__.py draws the map):

    cli ──▶ assembly ──▶ approvals ──▶ broker ◀── migrations      gateway: none of them (HTTP only)

Every import is read from the source (also those inside functions), so a lazy import cannot hide a loop, and no
package but assembly reads the process environment for its settings.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assembly", "approvals", "broker", "cli", "demo", "gateway", "migrations")

# Which of our packages each package may import. Anything not listed is refused.
ALLOWED = {
    "broker": set(),
    "migrations": {"broker"},
    "approvals": {"broker"},
    "assembly": {"approvals", "broker", "migrations"},
    "demo": set(),
    "gateway": set(),
    "cli": {"assembly", "broker", "demo", "gateway"},
}


def _imports(package: str) -> dict[str, set[str]]:
    """{our package imported: {the files importing it}} for every module of ``package``."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_what_the_map_allows(package: str) -> None:
    refused = {target: files for target, files in _imports(package).items() if target not in ALLOWED[package]}
    assert not refused, f"{package} imports {refused}; allowed: {sorted(ALLOWED[package]) or 'none of ours'}"


def test_the_map_itself_has_no_loop() -> None:
    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in ALLOWED[start])

    assert [p for p in PACKAGES if reaches(p, p)] == []


# Reads of the environment that are not settings.
NOT_SETTINGS = {"demo/target.py": "the demo machine's shell inherits PATH and LANG, as a login on a real one would"}


@pytest.mark.parametrize("package", [p for p in PACKAGES if p not in ("assembly", "cli")])
def test_only_the_assembly_and_the_command_line_read_the_environment(package: str) -> None:
    readers = []
    for path in sorted((ROOT / package).rglob("*.py")):
        source = path.read_text()
        if ("os.environ" in source or "os.getenv" in source) and str(path.relative_to(ROOT)) not in NOT_SETTINGS:
            readers.append(str(path.relative_to(ROOT)))
    assert readers == [], f"{package} reads the environment itself: {readers}"


# The broker's top level is its shared kernel; every rule lives in a domain package (README, "Code").
BROKER_KERNEL = {"__init__", "admin", "app", "bootstrap", "clock", "db", "demo", "durations", "errors", "ids",
                 "metrics", "models", "settings", "sources", "vocabulary"}
BROKER_DOMAINS = {"access", "api", "audit", "containment", "identity", "inventory", "keys", "live", "recordings",
                  "respond", "watch"}


def test_the_broker_is_grouped_by_domain() -> None:
    top = ROOT / "broker"
    modules = {path.stem for path in top.glob("*.py")}
    packages = {path.parent.name for path in top.glob("*/__init__.py")}
    assert modules - BROKER_KERNEL == set(), "a new broker module belongs in a domain package"
    assert packages == BROKER_DOMAINS
    for package in packages:
        first = (top / package / "__init__.py").read_text().lstrip()
        assert first.startswith('"""'), f"broker/{package}/__init__.py says what the domain holds"

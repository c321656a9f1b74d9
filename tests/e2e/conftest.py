"""One Gatepass installation per test module (init, admin set-up, `gatepass serve`) in front of a real sshd."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.stack import Stack, new_installation
from tests.fixtures.browser import launch_chromium
from tests.fixtures.sshd import OpenSSHServer, start_sshd


@pytest.fixture(scope="module")
def plant_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSSHServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, plant_machine: OpenSSHServer) -> Iterator[Stack]:
    """Sites plant-a and plant-b; hmi-01 (the sshd) in plant-a, plc-01 (high criticality, also the sshd) in
    plant-a, hmi-b (the sshd) in plant-b; vendor1, vendor2, sup-a1, sup-a2 (plant-a), sup-b (plant-b),
    security1 — all but the admin signed in."""
    with new_installation(tmp_path_factory) as stack:
        stack.init()
        # plc-01 is of high criticality: not supervised here (a new site's default), as these tests connect to it
        # without anyone watching; tests/e2e/test_supervised_assets.py covers the default.
        key = str(plant_machine.client_private_key)
        stack.gatepass_many(
            ["admin", "site", "add", "plant-a", "--max-window", "8h", "--supervise-high-criticality", "no"],
            ["admin", "site", "add", "plant-b"],
            *(["admin", "asset", "add", name, "--site", site, "--host", plant_machine.host, "--criticality",
               criticality, "--ssh-port", str(plant_machine.port), "--ssh-user", plant_machine.username,
               "--ssh-key-file", key, "--host-key", plant_machine.host_key]
              for name, site, criticality in (("hmi-01", "plant-a", "low"), ("plc-01", "plant-a", "high"),
                                              ("hmi-b", "plant-b", "low"))))
        stack.add_users(("vendor1", "vendor"), ("vendor2", "vendor"), ("sup-a1", "supervisor", "plant-a"),
                        ("sup-a2", "supervisor", "plant-a"), ("sup-b", "supervisor", "plant-b"),
                        ("security1", "security"))
        stack.start()
        stack.login_all("vendor1", "vendor2", "sup-a1", "sup-a2", "sup-b", "security1")
        yield stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for the module's browser tests (module scope: Playwright's sync API marks an asyncio loop
    as running in this thread while it is open)."""
    with launch_chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page; confirmation dialogs ("End the session …?", "Lock down …?") are accepted."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())
    try:
        yield opened
    finally:
        context.close()

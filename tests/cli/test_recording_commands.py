"""`gatepass admin site set --recording-retention-days` and `gatepass admin recording hold|release|purge` on the data
directory, run in-process on the plant's clock (one clock per test): what they print, what they change, and what
the trail says."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest

from broker.recordings import store
from cli.context import Context
from cli.main import main
from cli.state import ClientState
from tests.broker.test_recordings_verify import record_session
from tests.fixtures.broker import Api, Plant


def gatepass(plant: Plant, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run one local command on the plant's data directory and database, on its fixed clock."""
    environ = {"GATEPASS_DATA": str(plant.settings.data_dir),
               "GATEPASS_DATABASE_URL": plant.settings.effective_database_url,
               "GATEPASS_HOME": str(plant.settings.data_dir / "home")}
    context = Context(environ=environ, state=ClientState(Path(environ["GATEPASS_HOME"])), out=io.StringIO(),
                      err=io.StringIO(), clock=plant.clock.now)
    code = main(list(args), context=context)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_site_retention_is_set_reset_and_refused_clearly(plant: Plant, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gatepass(plant, capsys, "admin", "site", "set", "plant-a", "--recording-retention-days", "90")
    assert code == 0
    assert out == "Site plant-a: recording retention default -> 90 days\n"
    code, out, _ = gatepass(plant, capsys, "admin", "site", "set", "plant-a", "--recording-retention-days", "forever")
    assert out == "Site plant-a: recording retention 90 days -> forever\n"
    code, out, _ = gatepass(plant, capsys, "admin", "site", "set", "plant-a", "--recording-retention-days", "default")
    assert out == "Site plant-a: recording retention forever -> default\n"
    events = plant.audit("admin:site:updated")[-3:]
    assert [e["details"]["recording_retention"]["new"] for e in events] == ["90 days", "forever", "default"]
    assert all(e["actor"].startswith("cli:") for e in events)

    code, _, err = gatepass(plant, capsys, "admin", "site", "set", "plant-a", "--recording-retention-days", "-5")
    assert code == 1
    assert "'-5' is not a recording retention" in err
    assert plant.row("SELECT recording_retention_days FROM sites WHERE name = 'plant-a'")[0] is None


def test_hold_release_and_a_dry_run_then_a_purge_by_hand(api: Api, plant: Plant,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    grant = api.grant("vendor1", "sup-a1")
    kept = record_session(api, plant, grant["id"], "kept output\r\n$ ")
    going = record_session(api, plant, grant["id"], "going output\r\n$ ")
    gatepass(plant, capsys, "admin", "site", "set", "plant-a", "--recording-retention-days", "7")
    code, out, err = gatepass(plant, capsys, "admin", "recording", "hold", kept, "--reason", "insurance claim")
    assert (code, err) == (0, "")
    assert f"Recording of session {kept} is on hold as evidence" in out
    plant.clock.advance(dt.timedelta(days=8))

    code, out, _ = gatepass(plant, capsys, "admin", "recording", "purge", "--dry-run")
    assert code == 0
    assert out.startswith("Would purge 1 recording(s)")
    assert going in out
    assert kept not in out
    assert "retention 7 days (site policy)" in out
    assert (store.recordings_dir(plant.settings) / f"{going}.cast").is_file()
    assert plant.audit("retention:recording:purged") == []

    code, out, _ = gatepass(plant, capsys, "admin", "recording", "purge", "--json")
    report = json.loads(out)
    assert code == 0
    assert [item["session"] for item in report["purged"]] == [going]
    assert not (store.recordings_dir(plant.settings) / f"{going}.cast").exists()
    assert plant.audit("retention:recording:purged")[0]["actor"].startswith("cli:")

    code, _, err = gatepass(plant, capsys, "admin", "recording", "hold", going, "--reason", "too late")
    assert code == 1
    assert "was purged under retention" in err
    code, _, err = gatepass(plant, capsys, "admin", "recording", "release", "ses-nosuch", "--reason", "x")
    assert (code, err.strip()) == (1, "gatepass: there is no session ses-nosuch: give a session id as the review "
                                      "page or `gatepass reviews` shows it (ses-…)")
    code, out, _ = gatepass(plant, capsys, "admin", "recording", "release", kept, "--reason", "claim settled")
    assert code == 0
    assert "Released 1 hold(s)" in out
    code, out, _ = gatepass(plant, capsys, "admin", "recording", "purge")
    assert out.startswith("Purged 1 recording(s)")
    assert kept in out

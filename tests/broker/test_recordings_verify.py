"""Session recordings against the hashes their gateway reported: `gatepass audit verify` passes on intact files
and names the session of every recording that was edited, cut short, deleted, or swapped together with its
database row; the asciicast reader is strict about the header and tolerant of a cut-off last line."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

import broker
from broker.errors import InvalidInput
from broker.recordings import asciicast, store, terminal, verification
from tests.fixtures.broker import Api, Plant

HEADER = {"version": 2, "width": 40, "height": 6, "timestamp": 1795000000, "env": {"TERM": "xterm-256color"},
          "title": "hmi-01", "gatepass": {"kind": "shell", "input_recorded": False}}


def cast_bytes(*events: list[object], header: dict[str, object] | None = None) -> bytes:
    lines = [json.dumps(header or HEADER)] + [json.dumps(event) for event in events]
    return ("\n".join(lines) + "\n").encode()


def record_session(api: Api, plant: Plant, grant_id: str, output: str, *, kind: str = "shell",
                   command: str | None = None) -> str:
    """A session as a gateway reports it: start, the .cast file written, end with the file's hash."""
    gateway = api.gateway()
    started = gateway.post("/gateway/sessions", json={"grant_id": grant_id, "kind": kind, "peer": "192.0.2.7:5000",
                                                      "command": command})
    assert started.status_code == 201, started.text
    session_id = str(started.json()["session_id"])
    data = cast_bytes([0.1, "o", output], [0.5, "m", "exit 0"])
    directory = store.recordings_dir(plant.settings)
    directory.mkdir(exist_ok=True)
    (directory / f"{session_id}.cast").write_bytes(data)
    plant.clock.advance(dt.timedelta(seconds=30))
    ended = gateway.post(f"/gateway/sessions/{session_id}/end", json={
        "reason": "client_closed", "bytes_in": 10, "bytes_out": len(output), "detail": None,
        "recording": {"name": f"{session_id}.cast", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}})
    assert ended.status_code == 204, ended.text
    return session_id


def gatepass_local(plant: Plant, *args: str) -> subprocess.CompletedProcess[str]:
    """``gatepass ARGS --data DATA`` (a local command: `audit`, `admin`) on the plant's database, as a process."""
    gatepass = Path(sys.executable).with_name("gatepass")
    source_root = str(Path(broker.__file__).resolve().parent.parent)
    env = {**os.environ, "GATEPASS_DATABASE_URL": plant.settings.effective_database_url,
           "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
    env.pop("GATEPASS_DATA", None)
    return subprocess.run([str(gatepass), *args, "--data", str(plant.settings.data_dir)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def gatepass_verify(plant: Plant, *args: str) -> subprocess.CompletedProcess[str]:
    return gatepass_local(plant, "audit", "verify", *args)


def test_audit_verify_checks_each_recording_and_names_every_session_whose_file_changed(
        api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    sessions = {name: record_session(api, plant, grant["id"], f"{name} output\r\n$ ")
                for name in ("untouched", "edited", "truncated", "deleted", "swapped")}
    directory = store.recordings_dir(plant.settings)

    intact = gatepass_verify(plant)

    assert (intact.returncode, intact.stderr) == (0, ""), intact.stderr
    assert "Audit trail intact" in intact.stdout
    assert "5 recordings checked" in intact.stdout

    edited = directory / f"{sessions['edited']}.cast"
    data = bytearray(edited.read_bytes())
    data[data.index(b"edited output")] ^= 0x20  # one byte: "edited" becomes "Edited"
    edited.write_bytes(bytes(data))
    truncated = directory / f"{sessions['truncated']}.cast"
    truncated.write_bytes(truncated.read_bytes()[:-12])
    (directory / f"{sessions['deleted']}.cast").unlink()
    # Someone with database rights swaps the file and the row's hash together: the audit event still knows.
    swapped = directory / f"{sessions['swapped']}.cast"
    forged = cast_bytes([0.1, "o", "nothing to see\r\n"])
    swapped.write_bytes(forged)
    with plant.engine.begin() as connection:
        connection.execute(text("UPDATE sessions SET recording_sha256 = :h, recording_bytes = :b WHERE id = :id"),
                           {"h": hashlib.sha256(forged).hexdigest(), "b": len(forged), "id": sessions["swapped"]})

    broken = gatepass_verify(plant)

    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "Traceback" not in broken.stderr
    assert "Audit trail intact" in broken.stdout  # the chain itself is fine: only the recordings are not
    lines = broken.stderr.splitlines()
    expected = {"edited": ("EDITED", "SHA-256"), "truncated": ("EDITED", "bytes"), "deleted": ("MISSING",),
                "swapped": ("EDITED", "differs from the one in the audit trail")}
    for name, words in expected.items():
        mine = [line for line in lines if sessions[name] in line]
        assert mine, f"{name}: no line names {sessions[name]} in {broken.stderr!r}"
        for word in words:
            assert any(word in line for line in mine), f"{name}: {word!r} not in {mine}"
        assert all("vendor1 on hmi-01 at plant-a" in line for line in mine), mine
    assert sessions["untouched"] not in broken.stderr
    assert "5 recordings checked, 5 problem(s) found" in broken.stderr  # swapped: row and file, two lines


def test_recordings_of_a_separate_gateway_are_verified_where_it_keeps_them(api: Api, plant: Plant,
                                                                         tmp_path: Path) -> None:
    grant = api.grant("vendor1", "sup-a1")
    session_id = record_session(api, plant, grant["id"], "hello\r\n")
    elsewhere = tmp_path / "gateway-recordings"
    store.recordings_dir(plant.settings).rename(elsewhere)

    assert gatepass_verify(plant, "--recordings", str(elsewhere)).returncode == 0
    missing = gatepass_verify(plant)
    assert missing.returncode == 1
    assert f"session {session_id} (vendor1 on hmi-01 at plant-a" in missing.stderr
    assert "is MISSING" in missing.stderr


def test_a_row_whose_recording_was_cleared_or_deleted_is_still_checked_from_the_audit_trail(
        api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    cleared, deleted = (record_session(api, plant, grant["id"], f"{n}\r\n") for n in ("cleared", "deleted"))
    directory = store.recordings_dir(plant.settings)
    (directory / f"{cleared}.cast").write_bytes(b"replaced")
    (directory / f"{deleted}.cast").unlink()
    with plant.engine.begin() as connection:
        connection.execute(text("UPDATE sessions SET recording_name = NULL, recording_sha256 = NULL, "
                                "recording_bytes = NULL WHERE id = :id"), {"id": cleared})
        connection.execute(text("DELETE FROM sessions WHERE id = :id"), {"id": deleted})

    with plant.session() as session:
        checked = verification.verify_recordings(session, directory, now=plant.clock.now())

    assert checked.checked == 2
    [row_changed, edited, gone] = checked.problems
    assert cleared in row_changed
    assert "differs from the one in the audit trail" in row_changed
    assert cleared in edited
    assert "EDITED" in edited
    assert deleted in gone
    assert "gone from the database" in gone


def test_a_session_without_recordings_verifies_with_zero_checked(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1", asset="plc-01", ssh=False, ports=[502])
    started = api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "tcp", "port": 502})
    assert started.status_code == 201, started.text

    with plant.session() as session:
        checked = verification.verify_recordings(session, store.recordings_dir(plant.settings), now=plant.clock.now())

    assert (checked.checked, checked.problems) == (0, [])


# --- the reader ---------------------------------------------------------------------------------------------


def test_a_cut_off_last_line_is_tolerated_and_reported() -> None:
    data = cast_bytes([0.1, "o", "one\r\n"], [0.2, "o", "two\r\n"]).decode() + '[0.3, "o", "thr'

    cast = asciicast.parse_cast(data.splitlines(keepends=True))

    assert cast.truncated
    assert [event[2] for event in cast.events] == ["one\r\n", "two\r\n"]
    assert terminal.transcript(cast) == "one\ntwo"


@pytest.mark.parametrize(("content", "says"), [
    ("", "empty"),
    ("not json\n", "not a JSON header"),
    ('{"version": 1, "width": 80, "height": 24}\n', "version 2"),
    ('{"version": 2, "width": 0, "height": 24}\n', "width"),
    ('[0.1, "o", "no header"]\n', "version 2"),
    (json.dumps(HEADER) + '\n[0.1, "o", "a"]\nbroken\n[0.2, "o", "b"]\n', "line 3"),
    (json.dumps(HEADER) + '\n[0.1, "x", "unknown code"]\n[0.2, "o", "b"]\n', "line 2"),
], ids=["empty", "not json", "version 1", "no width", "no header", "broken middle line", "unknown event code"])
def test_a_file_that_is_not_asciicast_v2_is_refused(content: str, says: str) -> None:
    with pytest.raises(asciicast.RecordingFormatError, match=says):
        asciicast.parse_cast(content.splitlines(keepends=True))


def test_transcript_applies_cursor_movement_overwrite_and_erase_and_search_text_keeps_what_was_overwritten() -> None:
    cast = asciicast.parse_cast(cast_bytes(
        [0.1, "o", "\x1b[?2004h$ printf hello\r\nhello\r\n"],
        [0.2, "o", "XXXXXXXX\rab\x1b[1;32mc\x1b[0m\x1b[K\r\n"],
        [0.3, "o", "tab\there\r\n\x1b]0;title\x07abc\b\bZ\r\n"],
        [0.4, "o", "line\x1b[1A\x1b[2D!\x1b[1B\r"],
    ).decode().splitlines())

    assert terminal.transcript(cast).splitlines() == ["$ printf hello", "hello", "abc", "tab     here", "aZ!",
                                                        "line"]
    assert "XXXXXXXX" in asciicast.search_text(cast)
    assert "title" not in asciicast.search_text(cast)


@pytest.mark.parametrize("name", ["../gatepass.db", "..", "ses-1/../../x.cast", "/etc/passwd", "a.cast/",
                                  "ses-1.cast\x00", "ses 1.cast", "ses-1.txt", "x" * 49 + ".cast"])
def test_recording_names_cannot_leave_the_recordings_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput):
        store.resolve(tmp_path, name)


def test_a_symlink_in_the_recordings_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("secret")
    directory = tmp_path / "recordings"
    directory.mkdir()
    (directory / "ses-1.cast").symlink_to(tmp_path / "secret")

    with pytest.raises(InvalidInput):
        store.resolve(directory, "ses-1.cast")
    assert store.resolve(directory, "ses-2.1.cast") == directory / "ses-2.1.cast"


def test_text_search_streams_the_output_and_finds_text_split_across_events(tmp_path: Path) -> None:
    path = tmp_path / "ses-1.cast"
    path.write_bytes(cast_bytes([0.1, "o", "pump P-1"], [0.2, "i", "ignored input"], [0.3, "o", "\x1b[1m01 STALE\r\n"],
                                [0.4, "m", "exit 0"]))

    assert asciicast.contains_text(path, "p-101 stale")
    assert not asciicast.contains_text(path, "ignored input")  # input is not what the terminal showed
    assert not asciicast.contains_text(path, "exit 0")
    assert not asciicast.contains_text(path, "pump P-102")


def test_an_escape_sequence_split_across_two_output_events_still_moves_the_cursor() -> None:
    cast = asciicast.parse_cast(cast_bytes([0.1, "o", "abcd\x1b["], [0.2, "o", "3"], [0.3, "o", "DX\x1b"],
                                            [0.4, "o", "]0;a title\x07!"]).decode().splitlines())

    assert terminal.play(cast).text() == "aX!d"

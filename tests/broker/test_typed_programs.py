"""Programs typed in a recorded shell session, read back from its asciicast input events: only lines the terminal
echoed (a password typed blind never becomes a "program"), edited lines skipped, prefixes like sudo seen through."""

from __future__ import annotations

import json
from pathlib import Path

from broker.watch.typed import MAX_PROGRAMS, program_of, typed_programs

HEADER = {"version": 2, "width": 80, "height": 24}


def _cast(tmp_path: Path, *events: tuple[str, str]) -> Path:
    path = tmp_path / "session.cast"
    lines = [json.dumps(HEADER)] + [json.dumps([0.1 * n, code, text]) for n, (code, text) in enumerate(events)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _typed_and_echoed(command: str) -> list[tuple[str, str]]:
    """Keystroke by keystroke, each echoed, then Enter and the shell's newline."""
    events: list[tuple[str, str]] = []
    for char in command:
        events += [("i", char), ("o", char)]
    return [*events, ("i", "\r"), ("o", "\r\n")]


def test_echoed_lines_give_their_programs_in_order_once(tmp_path: Path) -> None:
    path = _cast(tmp_path, ("o", "$ "), *_typed_and_echoed("ls -la /opt"), ("o", "total 0\r\n$ "),
                 *_typed_and_echoed("sudo systemctl restart hmi"), ("o", "$ "), *_typed_and_echoed("ls"))
    assert typed_programs(path) == ["ls", "systemctl"]


def test_a_line_pasted_in_one_event_counts_once_the_terminal_echoed_it(tmp_path: Path) -> None:
    path = _cast(tmp_path, ("i", "/usr/bin/tcpdump -i eth0\r"), ("o", "/usr/bin/tcpdump -i eth0\r\nlistening\r\n"))
    assert typed_programs(path) == ["tcpdump"]


def test_a_password_typed_blind_is_never_taken_for_a_program(tmp_path: Path) -> None:
    path = _cast(tmp_path, *_typed_and_echoed("sudo -i"), ("o", "[sudo] password for vendor: "),
                 ("i", "hunter2\r"), ("o", "\r\nroot# "))
    assert typed_programs(path) == []  # "sudo -i" has no program after the prefix; hunter2 was never echoed


def test_edited_or_completed_lines_are_skipped_and_backspace_applies(tmp_path: Path) -> None:
    path = _cast(tmp_path, ("i", "\x1b[A"), ("o", "rm -rf /data"), ("i", "\r"), ("o", "\r\n"),  # history recall
                 ("i", "sys\t"), ("o", "systemctl "), ("i", "\r"), ("o", "\r\n"),  # completion
                 ("i", "ca"), ("o", "ca"), ("i", "y"), ("o", "y"), ("i", "\x7ft"), ("o", "\b \bt"),
                 ("i", " /etc/hosts\r"), ("o", " /etc/hosts\r\n"), ("i", "halt\x03"), ("o", "halt^C\r\n"))
    assert typed_programs(path) == ["cat"]


def test_program_names_are_plausible_names_only() -> None:
    assert program_of("FOO=1 nice ./build.sh --fast") == "build.sh"
    assert program_of("   ") is None
    assert program_of("$(curl evil) now") is None
    assert program_of("env LANG=C vi") == "vi"
    assert program_of("hostname; rm -rf /") == "hostname"
    assert program_of("ps aux|grep hmi") == "ps"


def test_a_session_is_bounded_and_an_unreadable_recording_gives_nothing(tmp_path: Path) -> None:
    many = [event for n in range(MAX_PROGRAMS + 10) for event in _typed_and_echoed(f"tool{n}")]
    assert len(typed_programs(_cast(tmp_path, *many))) == MAX_PROGRAMS
    assert typed_programs(tmp_path / "missing.cast") == []

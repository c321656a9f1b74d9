"""The programs a person typed in a recorded shell session, for the baselines ("typed commands only where input
is recorded"): read from the recording's input events ("i", asciicast v2), replayed through a minimal line
editor, kept only where the terminal echoed them.

Best effort and careful, on purpose:
- a line edited with cursor keys or completed with Tab is skipped (what ran is not what was typed);
- a line the terminal did not echo (a password at a sudo prompt) is skipped, so a secret never becomes a
  "program" in a flag or the audit trail;
- only a plausible program name is kept (letters, digits, ``._+-``; the path's last part), at most
  ``MAX_PROGRAMS`` per session, and only the first ``READ_LIMIT`` bytes of a recording are read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

READ_LIMIT = 4 * 1024 * 1024
MAX_PROGRAMS = 64
MAX_LINE = 4096
_PROGRAM = re.compile(r"[A-Za-z0-9._+-]{1,64}")
# Words before the program that are not the program.
_PREFIXES = frozenset({"sudo", "env", "nohup", "time", "exec", "command", "nice"})
_COMMAND_END = re.compile(r"[;&|]")  # the line's first command is the one judged
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -/]*[0-~]?")


class _LineEditor:
    """Typed characters in, programs out. A finished line is judged when the next keystrokes arrive (or at the
    end): by then the terminal has echoed it, whether each key was echoed as typed or a pasted line after it."""

    def __init__(self) -> None:
        self.line: list[str] = []
        self.unsure = False
        self.echo = ""  # the output since the last line ended (its last MAX_LINE characters)
        self.after = ""  # the output since the last line ended (its first MAX_LINE characters)
        self.pending: list[tuple[str, str]] = []  # (program, echo while its line was typed), not yet judged

    def output(self, text: str) -> None:
        self.echo = (self.echo + text)[-MAX_LINE:]
        if len(self.after) < MAX_LINE:
            self.after += text[: MAX_LINE - len(self.after)]

    def judge(self) -> list[str]:
        """The pending programs the terminal echoed (a password is typed blind: never echoed, never kept)."""
        after = _shown(self.after)
        echoed = [program for program, echo in self.pending if program in _shown(echo) or program in after]
        self.pending = []
        return echoed

    def typed(self, text: str) -> list[str]:
        echoed = self.judge()
        for char in text:
            if char in "\r\n":
                program = None if self.unsure else program_of("".join(self.line))
                if program:
                    self.pending.append((program, self.echo))
                self.line, self.unsure, self.echo, self.after = [], False, "", ""
            elif char in "\x7f\b":
                if self.line:
                    self.line.pop()
            elif char in "\x03\x15":  # ^C abandons the line, ^U erases it
                self.line, self.unsure = [], False
            elif char in "\x1b\t":  # cursor keys, history, completion: what runs is not what was typed
                self.unsure = True
            elif char.isprintable() and len(self.line) < MAX_LINE:
                self.line.append(char)
        return echoed


def _shown(text: str) -> str:
    """Output as the eye reads it: escape sequences dropped, a backspace taking back the character before it (a
    terminal echoes a deleted character as BS, space, BS)."""
    kept: list[str] = []
    for char in _ESCAPES.sub("", text):
        if char == "\b":
            if kept:
                kept.pop()
        elif char.isprintable() or char in "\r\n":
            kept.append(char)
    return "".join(kept)


def program_of(line: str) -> str | None:
    """The program a command line runs first: ``sudo FOO=1 /usr/bin/systemctl restart x; ls`` -> ``systemctl``."""
    for word in _COMMAND_END.split(line, maxsplit=1)[0].split():
        if word in _PREFIXES or _ASSIGNMENT.match(word) or word.startswith("-"):
            continue
        name = word.rsplit("/", 1)[-1]
        return name if _PROGRAM.fullmatch(name) else None
    return None


def typed_programs(path: Path, *, limit: int = READ_LIMIT) -> list[str]:
    """The distinct programs typed in the recording at ``path``, in the order first run ([] if unreadable)."""
    editor = _LineEditor()
    found: list[str] = []
    try:
        with path.open("rb") as handle:
            handle.readline(64 * 1024)  # the header
            read = 0
            for raw in handle:
                read += len(raw)
                if read > limit:
                    break
                # Only output and input text matter; everything else (resizes, markers, binary) is passed over
                # without parsing, so a bulk download costs a substring test per line.
                if b'"o"' not in raw[:40] and b'"i"' not in raw[:40]:
                    continue
                try:
                    _at, code, text = json.loads(raw)
                except (ValueError, TypeError):
                    continue
                if code == "o" and isinstance(text, str):
                    editor.output(text)
                elif code == "i" and isinstance(text, str):
                    _add(found, editor.typed(text))
                if len(found) >= MAX_PROGRAMS:
                    return found[:MAX_PROGRAMS]
            _add(found, editor.judge())
    except OSError:
        return found
    return found[:MAX_PROGRAMS]


def _add(found: list[str], programs: list[str]) -> None:
    found.extend(program for program in dict.fromkeys(programs) if program not in found)

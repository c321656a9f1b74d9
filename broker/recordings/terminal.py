"""Replay a recording through a minimal terminal: what the vendor's screen showed, as a transcript."""

from __future__ import annotations

import re

from broker.recordings.asciicast import ESCAPE_SEQUENCE, Cast

_CSI = re.compile(r"\x1b\[([0-?]*)([ -/]*)([@-~])")
# The start of an escape sequence cut off at the end of an output event: kept for the next one, as a terminal's
# parser keeps its state between writes (the gateway records output in the chunks it arrives in).
_INCOMPLETE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[ -/]*)")
MAX_PENDING = 512


class Screen:
    """A minimal VT100 subset with scrollback, the same one approvals/static/player.js implements: printable
    text with wrap, CR, LF, BS, tab, CSI A/B/C/D/H/f (cursor), K/J (erase); every other sequence is ignored."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.lines: list[list[str]] = [[]]
        self.row = 0
        self.col = 0
        self._pending = ""

    @property
    def top(self) -> int:
        return max(0, len(self.lines) - self.height)

    def _line(self, row: int) -> list[str]:
        while len(self.lines) <= row:
            self.lines.append([])
        return self.lines[row]

    def _put(self, char: str) -> None:
        if self.col >= self.width:
            self.col = 0
            self.row += 1
        line = self._line(self.row)
        while len(line) < self.col:
            line.append(" ")
        if self.col < len(line):
            line[self.col] = char
        else:
            line.append(char)
        self.col += 1

    def _erase(self, row: int, start: int, end: int | None) -> None:
        line = self._line(row)
        stop = len(line) if end is None else min(end, len(line))
        for index in range(start, stop):
            line[index] = " "

    def _csi(self, params: str, final: str) -> None:
        if params.startswith(("?", ">", "<", "=")):
            return  # private modes (bracketed paste, cursor keys): nothing on the screen changes
        numbers = [int(p) if p.isdigit() else 0 for p in params.split(";")] if params else []
        first = numbers[0] if numbers else 0
        count = max(1, first)
        top = self.top
        if final == "A":
            self.row = max(top, self.row - count)
        elif final == "B":
            self.row = min(top + self.height - 1, self.row + count)
        elif final == "C":
            self.col = min(self.width - 1, self.col + count)
        elif final == "D":
            self.col = max(0, min(self.col, self.width) - count)
        elif final in "Hf":
            line = max(1, first) if numbers else 1
            column = max(1, numbers[1]) if len(numbers) > 1 else 1
            self.row = top + min(line, self.height) - 1
            self.col = min(column, self.width) - 1
        elif final == "K":
            start, end = {0: (self.col, None), 1: (0, self.col + 1), 2: (0, None)}.get(first, (0, 0))
            self._erase(self.row, start, end)
        elif final == "J":
            bottom = top + self.height
            if first == 0:
                self._erase(self.row, self.col, None)
                rows = range(self.row + 1, bottom)
            elif first == 1:
                self._erase(self.row, 0, self.col + 1)
                rows = range(top, self.row)
            else:
                rows = range(top, bottom)
            for row in rows:
                if row < len(self.lines):
                    self.lines[row] = []
        self._line(self.row)

    def feed(self, text: str) -> None:
        text, self._pending = self._pending + text, ""
        position = 0
        while position < len(text):
            char = text[position]
            if char == "\x1b":
                match = _CSI.match(text, position)
                if match:
                    self._csi(match.group(1), match.group(3))
                    position = match.end()
                    continue
                if len(text) - position <= MAX_PENDING and _INCOMPLETE.fullmatch(text, position):
                    self._pending = text[position:]
                    return
                other = ESCAPE_SEQUENCE.match(text, position)
                position = other.end() if other else position + 1
                continue
            position += 1
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self.row += 1
                self._line(self.row)
            elif char == "\b":
                self.col = max(0, min(self.col, self.width) - 1)
            elif char == "\t":
                self.col = min(self.width - 1, (self.col // 8 + 1) * 8)
            elif char >= " " and not "\x7f" <= char <= "\x9f":
                self._put(char)

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = max(1, width), max(1, height)

    def text(self, *, scrollback: bool = True) -> str:
        """The lines (all of them, or only the visible screen), right-trimmed, without trailing blank lines."""
        rows = self.lines if scrollback else self.lines[self.top:]
        return "\n".join("".join(line).rstrip() for line in rows).rstrip("\n")


def binary_marker(encoded: str) -> str:
    """What the player shows for output that was not text (player.js writes the same)."""
    size = len(encoded) // 4 * 3 - encoded[-2:].count("=")
    return f"\r\n[binary output: {size} bytes]\r\n"


def play(cast: Cast) -> Screen:
    """Run the recording's output (and resizes) through ``Screen``."""
    screen = Screen(cast.width, cast.height)
    for _t, code, text in cast.events:
        if code == "o":
            screen.feed(text)
        elif code == "ob":
            screen.feed(binary_marker(text))
        elif code == "r":
            width, _, height = text.partition("x")
            if width.isdigit() and height.isdigit():
                screen.resize(int(width), int(height))
    return screen


def transcript(cast: Cast) -> str:
    """The session as a plain-text transcript (what the terminal showed, scrollback included)."""
    return play(cast).text()

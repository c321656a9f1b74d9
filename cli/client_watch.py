"""``gatepass watch SESSION``: follow a live session in this terminal, read-only (the vendor is told who watches);
a TCP tunnel's connection, bytes and Modbus requests are printed as lines."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

from cli.context import Context
from cli.errors import ServerUnreachable

# The broker sends a keepalive every 15 s: three missed ones mean the stream is dead.
READ_TIMEOUT_SECONDS = 45.0
# The start of a terminal string sequence (ECMA-48 8.3.89/105/128/143/94: OSC, DCS, SOS, PM, APC), 7- and 8-bit forms,
# and what ends one: BEL (xterm's OSC end), ST, CAN or SUB (which abort it), or any other ESC (which starts the next).
_STRING_START = re.compile("\x1b[\\]PX^_]|[\x90\x98\x9d\x9e\x9f]")
_STRING_END = re.compile("[\x07\x9c\x18\x1a\x1b]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def run_watch(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    import httpx

    from cli.api import API_PREFIX, TIMEOUT_SECONDS, ApiClient

    session = ctx.session()
    api = ApiClient(session.server, token=session.token, username=session.username, transport=ctx.transport)
    timeout = httpx.Timeout(TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS)
    headers = {"Authorization": f"Bearer {session.token}", "Accept": "text/event-stream",
               "User-Agent": "gatepass-cli"}
    try:
        with httpx.Client(base_url=session.server + API_PREFIX, headers=headers, timeout=timeout,
                          transport=ctx.transport) as http, \
                http.stream("GET", f"/sessions/{args.session_id}/watch") as response:
            if response.status_code != 200:
                response.read()
                raise api._refusal(response)  # the API client's one reading of a refusal (cli.api)
            screen = StringSequenceFilter()
            for event, data in _events(response.iter_lines()):
                if _show(ctx, event, data, screen):
                    return 0
    except httpx.HTTPError as exc:
        raise ServerUnreachable(f"the watch of session {args.session_id} broke: {exc}") from exc
    except KeyboardInterrupt:
        ctx.note("\nStopped watching.")
        return 130
    finally:
        api.close()
    ctx.note("The broker closed the stream.")
    return 1


def _events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """Server-sent events (WHATWG HTML): ``event:`` names the type, ``data:`` carries JSON, a blank line ends one."""
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", list[str]()
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            if name == "event":
                event = value.strip()
            elif name == "data":
                data.append(value.removeprefix(" "))


class StringSequenceFilter:
    """Drops the terminal string sequences (OSC, DCS, SOS, PM, APC) from the vendor's output before it reaches the
    observer's terminal: they write the clipboard (OSC 52, pasted later into the observer's shell), make links (OSC 8),
    make the terminal answer into the observer's input (DECRQSS) or pass through tmux to the terminal outside; a
    watch is read-only. What the screen shows (text, colours and cursor moves) passes. A sequence split across
    frames is followed across calls."""

    def __init__(self) -> None:
        self._in_string = False
        self._carry = ""  # a trailing ESC: what it starts is in the next frame

    def feed(self, text: str) -> str:
        text, self._carry = self._carry + text, ""
        shown: list[str] = []
        position = 0
        while position < len(text):
            if self._in_string:
                end = _STRING_END.search(text, position)
                if end is None:
                    return "".join(shown)
                if end.group() != "\x1b":
                    self._in_string, position = False, end.end()
                elif end.end() == len(text):
                    self._carry = "\x1b"
                    return "".join(shown)
                else:  # ESC \ is ST; any other ESC ends the string and starts a sequence of its own
                    self._in_string = False
                    position = end.end() + 1 if text[end.end()] == "\\" else end.start()
                continue
            start = _STRING_START.search(text, position)
            if start is None:
                rest = text[position:]
                if rest.endswith("\x1b"):
                    rest, self._carry = rest[:-1], "\x1b"
                shown.append(rest)
                break
            shown.append(text[position:start.start()])
            self._in_string, position = True, start.end()
        return "".join(shown)


def _show(ctx: Context, event: str, data: Any, screen: StringSequenceFilter) -> bool:
    """Print one event: the session's output on stdout as the vendor sees it, the rest on stderr. True at the end."""
    if event == "hello":
        others = ", ".join(data.get("also_watching") or []) or "nobody else"
        told = (f"{data['vendor']} sees that {data['observer']} is watching" if data.get("announced", True) else
                f"{data['site']} allows silent observers: {data['vendor']} is not told you watch")
        if data.get("terminal", True) is False:
            told = f"a tunnel has no terminal: {data['vendor']} is not told you watch (the trail has it)"
            data = {**data, "asset": f"{data['asset']} port {data.get('port')}"}
        ctx.note(f"Watching session {data['session_id']}: {data['vendor']} on {data['asset']} ({data['site']}), "
                 f"read-only; {told}. Also watching: {others}. Ctrl-C stops.")
        if not data.get("gateway_connected", True):
            ctx.note("The gateway carrying this session is not connected to the broker's live link yet.")
    elif event == "frames":
        for _seconds, code, text in data:
            if (line := tunnel_line(code, text)) is not None:
                ctx.out.write(plain(line) + "\n")
            elif code == "o":
                ctx.out.write(screen.feed(text))
            elif code == "ob":
                ctx.out.write(f"\r\n[binary output: {_binary_size(text)} bytes]\r\n")
            elif code == "m":
                ctx.out.write(f"\r\n[{plain(text)}]\r\n")
        ctx.out.flush()
    elif event == "dropped":
        ctx.note(f"\r\n[{data['frames']} frames dropped: this terminal fell behind; the screen may be incomplete "
                 "until it is redrawn]")
    elif event == "ended":
        ctx.note(f"\r\nThe watch ended: {plain(str(data['why']))}.")
        return True
    return False


def plain(text: str) -> str:
    """A notice's or a tunnel frame's text as one printable line: its control characters (a target's error message
    may carry some) shown as escapes, never acted on by the observer's terminal."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


def tunnel_line(code: str, text: str) -> str | None:
    """A tunnel's frame as one line (codes in docs/API.md), or None for a terminal's frame."""
    parts = text.split(" ")
    if code == "co" and len(parts) >= 2:
        return f"connection from {parts[0]} to port {parts[1]} open"
    if code in ("cb", "cc") and len(parts) >= 2:
        state = "closed" + (f": {' '.join(parts[2:])}" if len(parts) > 2 else "") if code == "cc" else "open"
        return f"bytes: {parts[0]} to the asset, {parts[1]} from it ({state})"
    if code in ("q", "qx") and len(parts) >= 4:
        where = "" if parts[2] == "-" else f" addresses {parts[2]}"
        words = " ".join(parts[3:])
        return (f"REFUSED modbus unit {parts[0]} function {parts[1]}{where}: {words}" if code == "qx" else
                f"modbus unit {parts[0]} function {parts[1]}{where}: {words}")
    return None


def _binary_size(text: str) -> int:
    try:
        return len(base64.b64decode(text))
    except (binascii.Error, ValueError):
        return 0

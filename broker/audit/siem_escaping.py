"""Make text from the audit trail safe to show: one record per event, no raw control character (DESIGN invariant 10).

The trail stores what happened as it was typed (the hash chain covers exactly that), so escaping happens on
the way out, here, for every export format, the syslog forwarder and the review pages alike:

- what counts as a control (``CONTROL``): every C0 control, DEL, every C1 control (U+0080-U+009F, NEL
  U+0085 among them), the line and paragraph separators U+2028/U+2029 (line breaks to JavaScript, many
  editors and some log shippers), lone surrogates (not text at all: no UTF-8 for them, so an encoder either
  fails or writes garbage), and the bidirectional formatting controls that reorder what a reader sees
  ("Trojan Source", CVE-2021-42574);
- ``visible``: each control as a visible escape a reader recognises from Python, C and JSON: ``\\n``, ``\\r``,
  ``\\t``, ``\\x1b`` below U+0100, ``\\u2028`` above. The escape is not undone by any reader: it is for eyes;
- ArcSight CEF (Micro Focus "Implementing ArcSight Common Event Format", rev. 25, "Character encoding"):
  in the header, ``\\`` and ``|`` are escaped with a backslash and a line break has no escape (it becomes a
  space); in extension values, ``\\`` and ``=`` are escaped with a backslash and line breaks are written
  ``\\n`` / ``\\r``, a ``|`` is left alone. The format names no other control, so those get ``visible``'s
  escape, and its backslash is escaped like any other (ESC is ``\\\\x1b`` on the wire, ``\\x1b`` to a reader);
- RFC 5424 §6.3.3: inside a PARAM-VALUE, ``"``, ``\\`` and ``]`` MUST be escaped with a backslash. The RFC
  names no escape for controls, so they get ``visible``'s, whose backslash is then escaped like any other.
  In both formats a reader sees the escape as text; the exact value rides along in the JSON payload (CEF
  ``msg`` holds the details, syslog MSG the whole event), where JSON's own escapes are exact;
- JSON (JSON lines, OCSF, CEF's and syslog's JSON payloads): the JSON encoder's escapes, and on top of them
  ``\\uXXXX`` for every control it leaves raw without ``ensure_ascii`` (DEL, C1, U+2028/U+2029, lone
  surrogates); the parsed value is unchanged, so a SIEM reads back exactly what the trail holds.

Standard library only: the CLI imports it through ``broker.siem_formats`` without FastAPI or SQLAlchemy.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0, DEL, C1 (NEL U+0085 included), ALM U+061C, LRM/RLM U+200E/U+200F, U+2028 LINE SEPARATOR, U+2029
# PARAGRAPH SEPARATOR, the embeddings and overrides U+202A-U+202E, the isolates U+2066-U+2069, surrogates.
_CONTROLS = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
CONTROL = re.compile(f"[{_CONTROLS}]")
CONTROL_BUT_NEWLINE = re.compile(f"(?!\n)[{_CONTROLS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    named = _NAMED.get(char)
    if named is not None:
        return named
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def visible(value: object, *, lines: bool = False) -> str:
    """``value`` as text with every control written as a visible escape (``None`` is empty). With ``lines``,
    a newline stays a newline: for text that is made of lines, such as a recording's transcript."""
    text = "" if value is None else value if isinstance(value, str) else str(value)
    return (CONTROL_BUT_NEWLINE if lines else CONTROL).sub(_escape, text)


def cef_header_escape(value: str) -> str:
    """CEF header field: a line break becomes a space, other controls visible, then ``\\`` and ``|`` escaped."""
    return visible(re.sub(r"\r\n|\r|\n", " ", value)).replace("\\", "\\\\").replace("|", "\\|")


_CEF_EXTENSION = re.compile("\r\n|[\\\\=\r\n]|" + CONTROL.pattern)
_CEF_NAMED = {"\\": "\\\\", "=": "\\=", "\r\n": "\\n", "\n": "\\n", "\r": "\\r"}


def _cef_extension(match: re.Match[str]) -> str:
    named = _CEF_NAMED.get(match[0])
    return named if named is not None else "\\" + _escape(match)


def cef_extension_escape(value: str) -> str:
    """CEF extension value: ``\\`` and ``=`` escaped, line breaks as ``\\n`` / ``\\r`` (a CRLF is one ``\\n``),
    a pipe left alone; any other control as its visible escape, whose backslash is escaped like any other."""
    return _CEF_EXTENSION.sub(_cef_extension, value)


def sd_param_escape(value: str) -> str:
    """RFC 5424 §6.3.3 PARAM-VALUE: controls visible, then ``"``, ``\\`` and ``]`` escaped with a backslash (the
    visible escape's own backslash too: a sender MUST escape every backslash)."""
    return visible(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


def json_text(value: Any, *, ascii_only: bool, sort_keys: bool = False) -> str:
    """Compact JSON on one line with no raw control: what ``json.dumps`` writes, plus ``\\uXXXX`` for the
    controls it leaves as they are. They can only stand inside JSON strings, where the escape means the same
    character, so ``json.loads`` gives back the same value."""
    text = json.dumps(value, ensure_ascii=ascii_only, sort_keys=sort_keys, separators=(",", ":"))
    return CONTROL.sub(_json_escape, text)

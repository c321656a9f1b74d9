"""Every value a review page prints from the trail or from a recording goes through the ``visible`` filter
(DESIGN invariant 10): a template edit that prints a new field raw fails here, before a reviewer's page does.
What may stay unfiltered is what the broker itself makes (ids, numbers, hashes, its own status words) and what
the reviewer typed into the filter form (query strings with control characters are refused at the door)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from approvals.web import make_templates

TEMPLATES = Path(__file__).resolve().parents[2] / "approvals" / "templates"
EXPRESSION = re.compile(r"{{(.*?)}}", re.DOTALL)
FILTERED = re.compile(r"\|\s*(visible|when|length)\b")
# Made by the broker: generated ids and sequence numbers, counts and sizes, hashes, fixed words, loop constants.
BROKER_MADE = re.compile(
    r"^(?:\w+\.)*(?:id|seq|session_id|bytes_in|bytes_out|port|limit|scan_limit|scanned|events_checked|width|height|"
    r"recording_bytes|recording_sha256|recording_status|speed|kind)$")
TYPED_BY_THE_REVIEWER = re.compile(r"^filters\.get\('\w+', ''\)$")
CONSTANT = {"'true' if speed == 1 else 'false'"}


def test_the_filter_is_registered() -> None:
    assert make_templates().filters["visible"]("a\x1b\u2028") == "a\\x1b\\u2028"


@pytest.mark.parametrize("template", sorted(path.name for path in TEMPLATES.glob("review*.html")))
def test_every_value_from_the_trail_is_shown_through_visible(template: str) -> None:
    raw = []
    for match in EXPRESSION.finditer((TEMPLATES / template).read_text()):
        expression = match[1].strip()
        if FILTERED.search(expression) or BROKER_MADE.match(expression) or expression in CONSTANT:
            continue
        if TYPED_BY_THE_REVIEWER.match(expression):
            continue
        raw.append(expression)
    assert raw == [], f"{template} prints these without |visible: {raw}"

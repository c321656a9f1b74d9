"""``gatepass audit export --format cef|syslog|ocsf`` against the real broker: every event once, in order, in a
form a SIEM parses (the renderings themselves are checked in ``tests/broker/test_siem_formats.py``)."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from broker.audit import siem_escaping
from cli import client_audit
from cli.context import Context
from cli.main import main
from cli.state import Session
from tests.broker.test_siem_formats import SYSLOG_MESSAGE as RFC_5424
from tests.fixtures.broker import Api, BrokerServer, Plant
from tests.fixtures.hostile import (
    COLUMN_PIECES,
    DETAIL_TEXT,
    LAST_ACTOR,
    assert_one_clean_record_per_line,
    write_hostile_trail,
)

SYSLOG = re.compile(r'^<(\d{1,3})>1 \S+ (?P<host>\S+) gatepass - \S+ \[gatepass@32473 seq="(?P<seq>\d+)" ')


def out(ctx: Context) -> str:
    assert isinstance(ctx.out, io.StringIO)
    return ctx.out.getvalue()


def export(ctx: Context, fmt: str) -> list[str]:
    assert isinstance(ctx.out, io.StringIO)
    ctx.out.seek(0)
    ctx.out.truncate()
    assert main(["audit", "export", "--format", fmt, "--since", "2026-11-27T08:01:00"], context=ctx) == 0
    return out(ctx).splitlines()


@pytest.fixture
def recent(ctx: Context, api: Api, plant: Plant, signed_in: Callable[[str], Session],
           monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Five events after 08:01 (two requests, an approval with its grant and certificate, one with a '|', '='
    and a line break in its reason), paged two at a time; sec1 signed in to export them."""
    monkeypatch.setattr(client_audit, "PAGE_SIZE", 2)
    plant.clock.advance(dt.timedelta(minutes=1))
    first = plant.last_seq() + 1
    api.create_request("vendor1", reason="swap | the = HMI\nfirmware")
    api.grant("vendor1", "sup-a1")
    signed_in("sec1")
    events = plant.audit(after_seq=first - 1)
    assert len(events) >= 5
    return events


def test_cef_export_is_one_line_per_event_in_sequence(ctx: Context, recent: list[dict[str, object]]) -> None:
    lines = export(ctx, "cef")

    assert len(lines) == len(recent)
    for line, event in zip(lines, recent, strict=True):
        assert line.startswith(f"CEF:0|Gatepass|Gatepass|0.1.0|{event['action']}|")
        assert f" externalId={event['seq']} " in line
    assert "swap | the \\= HMI\\\\nfirmware" in lines[0]  # the reason, inside msg's JSON: '=' escaped, '|' not


def test_syslog_export_names_the_broker_and_carries_seq(ctx: Context, broker: BrokerServer,
                                                        recent: list[dict[str, object]]) -> None:
    lines = export(ctx, "syslog")

    matches = [SYSLOG.match(line) for line in lines]
    assert all(matches), lines
    assert [int(m["seq"]) for m in matches if m] == [e["seq"] for e in recent]
    assert {m["host"] for m in matches if m} == {urlsplit(broker.url).hostname}


def test_ocsf_export_is_json_lines_with_the_original_event(ctx: Context, recent: list[dict[str, object]]) -> None:
    lines = export(ctx, "ocsf")

    objects = [json.loads(line) for line in lines]
    assert [o["unmapped"] for o in objects] == recent
    assert [o["metadata"]["uid"] for o in objects] == [str(e["seq"]) for e in recent]
    assert {o["class_uid"] for o in objects} >= {3005}


def test_jsonl_export_is_unchanged(ctx: Context, recent: list[dict[str, object]]) -> None:
    assert [json.loads(line) for line in export(ctx, "jsonl")] == recent


@pytest.fixture
def hostile(ctx: Context, api: Api, plant: Plant, signed_in: Callable[[str], Session],
            monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Every control character in actor, subject, site and details (``tests/fixtures/hostile.py``), paged three
    at a time; sec1 signed in to export them."""
    monkeypatch.setattr(client_audit, "PAGE_SIZE", 3)
    plant.clock.advance(dt.timedelta(minutes=1))
    first = plant.last_seq() + 1
    write_hostile_trail(plant, api)
    signed_in("sec1")
    events = plant.audit(after_seq=first - 1)
    assert len(events) >= 8
    return events


@pytest.mark.parametrize("fmt", ["jsonl", "cef", "syslog", "ocsf"])
def test_hostile_text_gives_one_clean_record_per_event(ctx: Context, hostile: list[dict[str, object]],
                                                       fmt: str) -> None:
    """Issue 9: a user name with a newline forged a second syslog record; CEF carried raw ESC, BEL, C1 and
    U+2028. Now every format writes one line per event, with no raw control character at all."""
    lines = assert_one_clean_record_per_line(("\n".join(export(ctx, fmt)) + "\n").encode(), len(hostile))
    assert assert_one_clean_record_per_line(out(ctx).encode(), len(hostile)) == lines

    domain = hostile[-1]  # the event with forged records in actor and subject
    if fmt in ("jsonl", "ocsf"):
        parsed = [json.loads(line) for line in lines]
        assert [p if fmt == "jsonl" else p["unmapped"] for p in parsed] == hostile  # JSON escapes are exact
    elif fmt == "syslog":
        assert [int(m["seq"]) for m in map(SYSLOG.match, lines) if m] == [e["seq"] for e in hostile]
        assert 'actor="vendor1\\\\n<110>1 2026-11-27T08:00:00Z broker gatepass' in lines[-1]  # inert
        messages = [RFC_5424.fullmatch(line) for line in lines]
        assert all(messages)
        assert [json.loads(m["msg"]) for m in messages if m] == hostile  # MSG: the exact event, in JSON
    else:
        assert [line.split(" externalId=", 1)[1].split(" ", 1)[0] for line in lines] == [
            str(e["seq"]) for e in hostile]
        assert f"suser={siem_escaping.cef_extension_escape(str(domain['actor']))} " in lines[-1]
        assert all(escape in lines[-1] for escape in ("\\\\x1b", "\\\\u2028", "\\\\ud800"))
    # The trail itself is unchanged (the hash chain covers what is stored): escaping happens on the way out.
    assert (domain["actor"], domain["details"]["reason"]) == (LAST_ACTOR, DETAIL_TEXT)  # type: ignore[index]
    assert [e["actor"] for e in hostile[-1 - len(COLUMN_PIECES):-1]] == COLUMN_PIECES

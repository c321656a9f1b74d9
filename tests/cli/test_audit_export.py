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

from cli import client_audit
from cli.context import Context
from cli.main import main
from cli.state import Session
from tests.fixtures.broker import Api, BrokerServer, Plant

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

"""SIEM renderings of audit events: CEF and RFC 5424 escaping, the RFC 5424 grammar, and OCSF classes carrying
their required attributes — checked on events the real broker wrote while being driven over its API."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from broker.audit import siem_escaping, siem_formats
from broker.audit.trail import Action
from tests.fixtures import database as test_databases
from tests.fixtures.broker import Api, BrokerServer, Plant, PlantTemplate

PEER = "198.51.100.7:50123"

# --- RFC 5424 §6 grammar, written out --------------------------------------------------------------------
_PRINT = r"[\x21-\x7e]"
_SD_NAME = r"[\x21\x23-\x3c\x3e-\x5c\x5e-\x7e]{1,32}"  # PRINTUSASCII except '=', ']', '"' (and SP)
_PARAM_VALUE = r'(?:[^"\\\]]|\\["\\\]])*'  # '"', '\' and ']' only escaped
_SD_ELEMENT = rf'\[{_SD_NAME}(?: {_SD_NAME}="{_PARAM_VALUE}")*\]'
SYSLOG_MESSAGE = re.compile(
    rf"<(?P<pri>\d{{1,3}})>1 "
    rf"(?P<timestamp>\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{{1,6}})?(?:Z|[+-]\d\d:\d\d)) "
    rf"(?P<hostname>-|{_PRINT}{{1,255}}) (?P<app>-|{_PRINT}{{1,48}}) (?P<procid>-|{_PRINT}{{1,128}}) "
    rf"(?P<msgid>-|{_PRINT}{{1,32}}) (?P<sd>-|(?:{_SD_ELEMENT})+)(?: (?P<msg>.*))?",
    re.DOTALL,
)
_SD_PARAM = re.compile(rf' ({_SD_NAME})="({_PARAM_VALUE})"')

# --- OCSF 1.1.0 required attributes, read from github.com/ocsf/ocsf-schema at tag v1.1.0 -----------------
# base_event.json + includes/classification.json + includes/occurrence.json:
BASE_REQUIRED = ("activity_id", "category_uid", "class_uid", "metadata", "severity_id", "time", "type_uid")
METADATA_REQUIRED = ("product", "version")  # objects/metadata.json
PRODUCT_REQUIRED = ("vendor_name",)  # objects/product.json
# "at_least_one" constraints of objects/user.json and objects/network_endpoint.json:
USER_ONE_OF = ("account", "name", "uid")
ENDPOINT_ONE_OF = ("ip", "uid", "name", "hostname", "svc_name", "instance_uid", "interface_uid", "interface_name")
CLASS_REQUIRED: dict[int, tuple[str, ...]] = {
    3002: ("user",),  # Authentication
    3005: ("privileges", "user"),  # User Access Management
    4001: ("dst_endpoint", "src_endpoint"),  # Network Activity (both required by events/network/network.json)
    4007: ("dst_endpoint", "src_endpoint"),  # SSH Activity (events/network/ssh.json extends network)
    0: (),  # Base Event, for bookkeeping the four classes do not describe
}
CATEGORY = {3002: 3, 3005: 3, 4001: 4, 4007: 4, 0: 0}
ACTIVITIES = {3002: {0, 1, 2, 3, 4, 5, 99}, 3005: {0, 1, 2, 99}, 4001: {0, 1, 2, 3, 4, 5, 6, 99},
              4007: {0, 1, 2, 3, 4, 5, 6, 99}, 0: {0, 99}}


def unescape_sd(value: str) -> str:
    return re.sub(r'\\(["\\\]])', r"\1", value)


def sd_params(message: str) -> dict[str, str]:
    match = SYSLOG_MESSAGE.fullmatch(message)
    assert match, message
    return {name: unescape_sd(value) for name, value in _SD_PARAM.findall(match["sd"])}


def split_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """A CEF reader written from the spec: header split on unescaped pipes, extension on unescaped '='."""
    assert line.startswith("CEF:0|")
    header: list[str] = []
    field, index = "", 0
    while len(header) < 7:
        char = line[index]
        if char == "\\":
            field += line[index + 1]
            index += 2
            continue
        if char == "|":
            header.append(field)
            field = ""
        else:
            field += char
        index += 1
    extension = line[index:]
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9_]+)=", extension))
    # a key starts after a space and ends at an '=' not preceded by a backslash
    keys = [m for m in keys if not (m.start(1) > 0 and extension[m.start(1) - 1] == "\\")]
    values: dict[str, str] = {}
    for current, following in zip(keys, [*keys[1:], None], strict=True):
        raw = extension[current.end(): following.start() if following else len(extension)]
        values[current.group(1)] = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), raw)
    return header, values


def synthetic(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "seq": 41, "occurred_at": "2026-11-27T08:00:00.250000+00:00", "action": "access:grant:revoked",
        "outcome": "success", "actor": "sup-a1", "subject": "gr-1", "site": "plant-a", "details": {},
        "prev_hash": "a" * 64, "hash": "b" * 64,
    }
    event.update(fields)
    return event


# --- escaping ---------------------------------------------------------------------------------------------

NASTY = 'a|b=c\\d"e]f\ng\rh é 工場 '


def test_cef_escapes_header_and_extension_differently() -> None:
    line = siem_formats.to_cef(synthetic(action="x|y\\z", actor=NASTY, site="=|\\", subject=""))

    assert "\n" not in line
    assert "\r" not in line
    assert line.startswith("CEF:0|Gatepass|Gatepass|0.1.0|x\\|y\\\\z|x\\|y\\\\z|3|")  # '|' and '\' in the header
    assert "suser=a|b\\=c\\\\d\"e]f\\ng\\rh é 工場 " in line  # '=', '\', line breaks escaped; '|' left alone
    header, values = split_cef(line)
    assert header[4] == "x|y\\z"
    assert values["suser"] == NASTY
    assert values["cs1"] == "=|\\"
    assert values["cs1Label"] == "site"
    assert "cs2" not in values  # an empty subject is left out, not sent as "cs2="
    assert values["rt"] == str(int(dt.datetime(2026, 11, 27, 8, 0, 0, 250000, tzinfo=dt.UTC).timestamp() * 1000))
    assert values["externalId"] == "41"


def test_cef_header_line_breaks_become_spaces() -> None:
    assert siem_formats.cef_header_escape("a\r\nb\nc|d") == "a b c\\|d"
    assert siem_formats.cef_extension_escape("a\r\nb\rc=d|e\\") == "a\\nb\\rc\\=d|e\\\\"


def test_syslog_escapes_sd_values_and_keeps_the_header_clean() -> None:
    message = siem_formats.to_syslog(synthetic(actor=NASTY, subject="]", site=None),
                                     hostname="broker 01.plant\u00e9", app_name="", procid="")

    match = SYSLOG_MESSAGE.fullmatch(message)
    assert match, message
    assert (match["hostname"], match["app"], match["procid"]) == ("broker01.plant", "-", "-")
    params = sd_params(message)
    assert params["actor"] == "a|b=c\\d\"e]f\\ng\\rh é 工場 "  # line breaks shown as \n, \r: one line
    assert params["subject"] == "]"
    assert "site" not in params  # no value: left out rather than sent as site=""
    assert 'actor="a|b=c\\\\d\\"e\\]f\\\\ng\\\\rh é 工場 "' in message
    assert int(match["pri"]) == 13 * 8 + 5  # log audit, notice (a revocation)
    assert match["timestamp"] == "2026-11-27T08:00:00.250000Z"
    # MSG is the whole event as ASCII JSON (MSG-ANY without a BOM); non-ASCII survives as \\u escapes.
    assert match["msg"].isascii()
    assert not match["msg"].startswith("\ufeff")
    assert json.loads(match["msg"])["actor"] == NASTY


def test_syslog_empty_and_missing_fields_are_nilvalues() -> None:
    message = siem_formats.to_syslog(synthetic(actor=None, subject=None, site=None, details={}), hostname=None)
    match = SYSLOG_MESSAGE.fullmatch(message)
    assert match
    assert match["hostname"] == "-"
    assert match["procid"] == "-"
    assert set(sd_params(message)) == {"seq", "action", "outcome", "hash"}


# --- hostile input: one record per event, no raw control character (DESIGN invariant 10) -------------------

C0 = "".join(map(chr, range(0x20)))
C1 = "".join(map(chr, range(0x80, 0xA0)))  # NEL U+0085 among them
FORMAT_BREAKERS = '|=\\"]'
FORGED_SYSLOG = '\n<110>1 2026-11-27T08:00:00Z broker gatepass - auth:login:succeeded [gatepass@32473 seq="9"] {}'
FORGED_CEF = "\nCEF:0|Gatepass|Gatepass|0.1.0|auth:login:succeeded|forged|3|suser=admin"
# Everything a terminal, a line-based parser or an encoder trips over, including a lone surrogate (which JSON
# details can hold: the gateway API accepts it in a session event's detail).
HOSTILE = (C0 + "\x7f" + C1 + "\u2028\u2029\u202e\ud800" + FORMAT_BREAKERS + " é 工場" + FORGED_SYSLOG
           + FORGED_CEF)
LONG = "L" * 70_000


def raw_controls(text: str) -> list[str]:
    return sorted({char for char in text if siem_escaping.CONTROL.match(char)})


def assert_one_clean_record(text: str) -> None:
    assert len(text.splitlines()) == 1, text[:300]
    data = text.encode("utf-8")  # strict: a lone surrogate would not even encode
    assert len(data.split(b"\n")) == 1
    assert raw_controls(text) == []


def hostile_event(**fields: Any) -> dict[str, Any]:
    return synthetic(action="gateway:file:refused", outcome="refused", actor=HOSTILE, subject=HOSTILE,
                     site=HOSTILE, details={"reason": HOSTILE, "path": HOSTILE, "command": HOSTILE, "long": LONG,
                                            "peer": HOSTILE, "asset": HOSTILE, "port": 22}, **fields)


def test_visible_names_every_control_and_leaves_text_alone() -> None:
    assert siem_escaping.visible("\x1b[2J\x07\n\r\t\x00\x7f\x85\x9f\u2028\u2029\u202e\ud800") == (
        "\\x1b[2J\\x07\\n\\r\\t\\x00\\x7f\\x85\\x9f\\u2028\\u2029\\u202e\\ud800")
    assert siem_escaping.visible("a|b=c\\d\"e]f é 工場 🙂") == "a|b=c\\d\"e]f é 工場 🙂"
    assert siem_escaping.visible("line 1\nline\x1b 2", lines=True) == "line 1\nline\\x1b 2"
    assert siem_escaping.visible(None) == ""
    assert siem_escaping.visible(42) == "42"
    assert raw_controls(siem_escaping.visible(HOSTILE)) == []


def test_cef_escapes_controls_in_the_header_and_the_extension() -> None:
    assert siem_formats.cef_extension_escape("a\x1bb\x85c\u2028d\\x1b") == "a\\\\x1bb\\\\x85c\\\\u2028d\\\\x1b"
    assert siem_formats.cef_header_escape("x\x07|y") == "x\\\\x07\\|y"


def test_syslog_param_values_escape_the_backslash_of_a_visible_escape() -> None:
    assert siem_formats.sd_param_escape('a\x1b]"\\') == 'a\\\\x1b\\]\\"\\\\'


@pytest.mark.parametrize("fmt", ["jsonl", "cef", "syslog", "ocsf"])
def test_hostile_values_stay_one_clean_record_in_every_format(fmt: str) -> None:
    event = hostile_event()
    line = {"jsonl": siem_formats.to_jsonl, "cef": siem_formats.to_cef, "ocsf": siem_formats.to_ocsf_line,
            "syslog": lambda e: siem_formats.to_syslog(e, hostname=HOSTILE, procid=HOSTILE)}[fmt](event)

    assert_one_clean_record(line)
    shown = siem_escaping.visible(HOSTILE)
    if fmt == "jsonl":
        assert json.loads(line) == event  # JSON escapes are exact: nothing lost
        assert line.isascii()
    elif fmt == "ocsf":
        ocsf = json.loads(line)
        assert ocsf["unmapped"] == siem_formats.as_json(event)
        assert ocsf["status_detail"] == HOSTILE
        assert "é 工場" in line  # UTF-8 stays readable; only controls are escaped
    elif fmt == "cef":
        header, values = split_cef(line)
        assert len(header) == 7
        assert header[4] == "gateway:file:refused"
        # a reader gets the visible escapes back for controls, and real line breaks where CEF has an escape
        expected = siem_escaping.visible(HOSTILE.replace("\r\n", "\n")).replace("\\n", "\n").replace("\\r", "\r")
        assert values["suser"] == expected
        assert values["cs1"] == values["cs2"] == values["reason"] == values["dhost"] == expected
        assert json.loads(values["msg"]) == event["details"]  # the exact details
        assert len(re.findall(r"(?:^|\|)CEF:0\|", line)) == 1
        assert not re.search(r"(?<!\\)\|CEF:0", line)
    else:
        match = SYSLOG_MESSAGE.fullmatch(line)
        assert match, line[:300]
        printable = "".join(char for char in HOSTILE if "!" <= char <= "~")
        assert (match["hostname"], match["procid"]) == (printable[:255], printable[:128])  # PRINTUSASCII only
        params = sd_params(line)
        assert params["actor"] == params["subject"] == params["site"] == shown
        assert json.loads(match["msg"]) == siem_formats.as_json(event)
        assert '\\\\n<110>1 2026-11-27T08:00:00Z broker gatepass' in match["sd"]  # the forgery is inert text


def test_a_message_too_long_for_a_collector_is_cut_not_split() -> None:
    """rsyslog (8 KiB by default) reads the rest of a longer frame as a new message: the forwarder cuts first."""
    event = hostile_event()
    whole = siem_formats.to_syslog(event, hostname="broker-1", max_octets=None)
    assert len(whole.encode()) > 70_000
    assert siem_formats.to_syslog(event, hostname="broker-1", max_octets=len(whole.encode())) == whole

    cut = siem_formats.to_syslog(event, hostname="broker-1", max_octets=siem_formats.FORWARD_MAX_OCTETS)

    assert len(cut.encode()) <= siem_formats.FORWARD_MAX_OCTETS
    assert_one_clean_record(cut)
    match = SYSLOG_MESSAGE.fullmatch(cut)
    assert match, cut[:300]
    msg = json.loads(match["msg"])
    assert msg["truncated"] is True
    assert (msg["seq"], msg["hash"], msg["action"]) == (event["seq"], event["hash"], event["action"])
    assert msg["details"]["long"].endswith(" [cut]")
    assert sd_params(cut)["seq"] == "41"
    small = siem_formats.to_syslog(synthetic(), hostname="h", max_octets=siem_formats.FORWARD_MAX_OCTETS)
    assert "truncated" not in json.loads(SYSLOG_MESSAGE.fullmatch(small)["msg"])  # type: ignore[index]


def test_the_forwarder_s_frame_holds_one_clean_message() -> None:
    frame = siem_formats.octet_frame(siem_formats.to_syslog(hostile_event(), hostname="broker-1", procid="1"))
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message)
    assert b"\n" not in frame
    assert_one_clean_record(message.decode("utf-8"))


@pytest.mark.parametrize("action", list(Action))
def test_every_audit_code_fits_the_msgid(action: Action) -> None:
    message = siem_formats.to_syslog(synthetic(action=str(action)), hostname="h")
    match = SYSLOG_MESSAGE.fullmatch(message)
    assert match, message
    assert str(action).endswith(match["msgid"])
    assert len(match["msgid"]) <= 32
    assert sd_params(message)["action"] == str(action)


def test_octet_framing_counts_octets_not_characters() -> None:
    assert siem_formats.octet_frame("工場") == b"6 " + "工場".encode()
    assert siem_formats.octet_frame("a\ud800") == b"2 a?"  # never an exception that stalls forwarding


@pytest.mark.parametrize(("outcome", "action", "severity"), [
    ("success", "auth:login:succeeded", 6), ("failure", "auth:login:failed", 4),
    ("refused", "gateway:connection:refused", 4),
    ("error", "gateway:recording:failed", 3), ("success", "containment:site:locked_down", 5),
])
def test_severity_follows_outcome_and_action(outcome: str, action: str, severity: int) -> None:
    event = synthetic(outcome=outcome, action=action)
    assert siem_formats.syslog_severity(event) == severity
    assert int(SYSLOG_MESSAGE.fullmatch(siem_formats.to_syslog(event, hostname="h"))["pri"]) == 104 + severity  # type: ignore[index]


# --- on a trail the real broker wrote -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trail(plant_template: PlantTemplate, postgres_server: str | None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """Drive the broker over its API through sign-ins, a grant, SSH and TCP sessions, a refused Modbus write,
    a revocation and a site lockdown; return every audit event it wrote, as the API shows them."""
    plant, database_name = plant_template.copy(tmp_path_factory.mktemp("siem-plant"))
    running = BrokerServer(plant.settings).start()
    api = Api(running, plant)
    try:
        yield drive(api, plant)
    finally:
        api.close()
        running.stop()
        plant.close()
        if database_name is not None:
            assert postgres_server is not None
            test_databases.drop_postgres_database(postgres_server, database_name)


def drive(api: Api, plant: Plant) -> list[dict[str, Any]]:
    api.login("vendor1")
    token = api.login("sup-a2")  # signed out below; nobody else in this trail uses sup-a2
    assert api.login_response("vendor1", code=api.wrong_code("vendor1")).status_code == 401
    assert api.login_response("vendor2", password="not-the-password").status_code == 401
    assert api.client(token).post("/auth/logout").status_code == 204
    grant = api.grant("vendor1", "sup-a1", ports=[502])
    gateway = api.gateway()
    serial = int(plant.row("SELECT serial FROM grants WHERE id = :id", id=grant["id"])[0])
    authorized = gateway.post("/gateway/authorize", json={"grant_id": grant["id"], "serial": serial,
                                                           "asset": "hmi-01", "peer": PEER})
    assert authorized.status_code == 200, authorized.text
    refused = gateway.post("/gateway/authorize", json={"grant_id": grant["id"], "serial": serial,
                                                        "asset": "plc-01", "peer": PEER})
    assert refused.status_code == 403, refused.text
    ssh = gateway.post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "exec", "peer": PEER,
                                                  "command": "uptime"})
    assert ssh.status_code == 201, ssh.text
    tcp = gateway.post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "tcp", "peer": PEER, "port": 502})
    assert tcp.status_code == 201, tcp.text
    modbus = gateway.post(f"/gateway/sessions/{tcp.json()['session_id']}/events",
                          json={"kind": "modbus_write_refused", "detail": {"function_code": 6, "unit_id": 1}})
    assert modbus.status_code == 204, modbus.text
    plant.clock.advance(dt.timedelta(seconds=30))
    for session in (ssh, tcp):
        ended = gateway.post(f"/gateway/sessions/{session.json()['session_id']}/end",
                             json={"reason": "client_closed", "bytes_in": 10, "bytes_out": 20, "detail": None})
        assert ended.status_code == 204, ended.text
    revoked = api.as_user("sup-a1").post(f"/grants/{grant['id']}/revoke", json={"reason": "work finished"})
    assert revoked.status_code == 200, revoked.text
    locked = api.as_user("sup-b").post("/sites/plant-b/lockdown", json={"reason": "ransomware drill"})
    assert locked.status_code == 200, locked.text
    assert api.as_user("sup-b").post("/sites/plant-b/lift").status_code == 200
    return plant.audit()


def test_every_event_the_broker_wrote_is_valid_rfc_5424_and_cef(trail: list[dict[str, Any]]) -> None:
    for event in trail:
        message = siem_formats.to_syslog(event, hostname="broker-1", procid="4242")
        params = sd_params(message)
        assert (params["seq"], params["action"], params["hash"]) == (str(event["seq"]), event["action"],
                                                                     event["hash"])
        assert params.get("actor") == event["actor"]
        assert params.get("site") == event["site"]
        assert json.loads(message.split("] ", 1)[1]) == event
        header, values = split_cef(siem_formats.to_cef(event))
        assert header[4] == event["action"]
        assert values["externalId"] == str(event["seq"])
        assert values.get("suser") == (event["actor"] or None)
        assert json.loads(values["msg"]) == event["details"]


def test_ocsf_events_carry_the_required_attributes_of_their_class(trail: list[dict[str, Any]]) -> None:
    seen: dict[int, set[str]] = {}
    for event in trail:
        ocsf = siem_formats.to_ocsf(event)
        class_uid = ocsf["class_uid"]
        seen.setdefault(class_uid, set()).add(event["action"])
        for name in BASE_REQUIRED + CLASS_REQUIRED[class_uid]:
            assert ocsf.get(name) not in (None, "", [], {}), (event["action"], name)
        assert ocsf["category_uid"] == CATEGORY[class_uid]
        assert ocsf["activity_id"] in ACTIVITIES[class_uid]
        assert ocsf["type_uid"] == class_uid * 100 + ocsf["activity_id"]
        assert ocsf["severity_id"] in {0, 1, 2, 3, 4, 5, 6, 99}
        assert ocsf["status_id"] in {0, 1, 2, 99}
        assert ocsf["time"] == int(dt.datetime.fromisoformat(event["occurred_at"]).timestamp() * 1000)
        assert ocsf["metadata"]["version"] == "1.1.0"
        assert all(ocsf["metadata"].get(name) for name in METADATA_REQUIRED)
        assert all(ocsf["metadata"]["product"].get(name) for name in PRODUCT_REQUIRED)
        for name in ("user", "src_endpoint", "dst_endpoint"):
            if name in ocsf:
                one_of = USER_ONE_OF if name == "user" else ENDPOINT_ONE_OF
                assert any(ocsf[name].get(key) not in (None, "") for key in one_of), (event["action"], name)
        if "actor" in ocsf:
            assert any(ocsf["actor"]["user"].get(key) for key in USER_ONE_OF)
        assert ocsf["unmapped"] == event  # nothing of the original is lost
        json.dumps(ocsf)  # serialisable as it stands
        if class_uid == 3005:
            assert all(isinstance(p, str) and p for p in ocsf["privileges"])
        if class_uid in (4001, 4007):
            assert ocsf["dst_endpoint"]["name"]
    assert seen.keys() >= {3002, 3005, 4001, 4007}, seen
    assert {"auth:login:succeeded", "auth:mfa:failed", "auth:login:failed", "auth:token:revoked"} <= seen[3002]
    assert {"access:grant:created", "access:grant:revoked", "access:request:approved",
            "containment:site:locked_down", "containment:site:lockdown_lifted"} <= seen[3005]
    assert {"gateway:modbus:write_refused"} <= seen[4001]
    assert {"gateway:connection:authorized", "gateway:connection:refused"} <= seen[4007]


def test_ocsf_session_classes_follow_the_session_kind(trail: list[dict[str, Any]]) -> None:
    sessions = [(e["details"]["kind"], siem_formats.to_ocsf(e))
                for e in trail if e["action"].startswith("gateway:session:")]
    assert sorted((kind, o["class_uid"], o["activity_id"]) for kind, o in sessions) == [
        ("exec", 4007, 1), ("exec", 4007, 2), ("tcp", 4001, 1), ("tcp", 4001, 2)]
    started = next(o for kind, o in sessions if kind == "tcp" and o["activity_id"] == 1)
    assert started["src_endpoint"] == {"ip": "198.51.100.7", "port": 50123}
    assert started["dst_endpoint"] == {"hostname": "hmi-01", "name": "hmi-01", "port": 502}
    ended = next(o for kind, o in sessions if kind == "exec" and o["activity_id"] == 2)
    assert ended["traffic"] == {"bytes_in": 10, "bytes_out": 20, "bytes": 30}


def test_ocsf_authentication_names_the_user_and_the_outcome(trail: list[dict[str, Any]]) -> None:
    failed = [siem_formats.to_ocsf(e) for e in trail if e["action"] == "auth:login:failed"]
    assert failed
    assert all(o["status_id"] == 2 and o["user"]["name"] for o in failed)
    assert {o["user"]["name"] for o in failed} >= {"vendor2"}
    [grant] = [siem_formats.to_ocsf(e) for e in trail if e["action"] == "access:grant:created"]
    assert grant["privileges"] == ["ssh:hmi-01", "tcp:hmi-01:502"]
    assert grant["user"] == {"name": "vendor1"}

"""Junk at every /api/v1 endpoint (DESIGN invariant 8): a clear 4xx with ``{"error","message"}``, never a 500,
never a partial change."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fixtures.broker import Api, Plant, assert_error_body, new_public_key

HUGE = "x" * 100_000
NUL = "a\u0000b"
ARABIC_DIGITS = "\u0661\u0662\u0663\u0664\u0665\u0666"  # str.isdigit() is True for these
BUSINESS_TABLES = ("identities", "role_assignments", "sites", "assets", "access_requests", "decisions", "grants",
                   "sessions", "gateways", "authorities", "grant_changes")


@dataclass
class Targets:
    """Live objects the junk is aimed at; recreated when a case changed one (that case fails anyway)."""

    api: Api
    ids: dict[str, str] = field(default_factory=dict)

    def get(self) -> dict[str, str]:
        if not self.ids:
            request = self.api.create_request("vendor1", asset="hmi-01")
            grant = self.api.grant("vendor1", "sup-a1", asset="hmi-01", ports=[502])
            session = self.api.gateway().post("/gateway/sessions", json={"grant_id": grant["id"], "kind": "shell"})
            assert session.status_code == 201, session.text
            self.ids = {"request": request["id"], "grant": grant["id"], "session": session.json()["session_id"]}
        return self.ids

    def state(self, plant: Plant) -> tuple[Any, ...]:
        """Row counts of every business table and the targets' mutable columns, in one query."""
        ids = self.get()
        counts = ", ".join(f"(SELECT count(*) FROM {table})" for table in BUSINESS_TABLES)  # noqa: S608
        return tuple(plant.row(
            f"SELECT {counts}, "  # noqa: S608 (constant table names)
            "(SELECT status FROM access_requests WHERE id = :request), "
            "(SELECT count(*) FROM decisions WHERE request_id = :request), "
            "(SELECT revoked_at FROM grants WHERE id = :grant), "
            "(SELECT ends_at FROM grants WHERE id = :grant), "
            "(SELECT ended_at FROM sessions WHERE id = :session), "
            "(SELECT bytes_in FROM sessions WHERE id = :session), "
            "(SELECT ssh_port FROM gateways WHERE name = 'embedded'), "
            "(SELECT count(*) FROM sites WHERE locked_down), "
            "(SELECT host_key FROM gateways WHERE name = 'embedded')", **ids))


@pytest.fixture(scope="module")
def targets(shared_api: Api) -> Targets:
    return Targets(shared_api)


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    auth: str  # none | vendor | supervisor | admin | gateway | junk-token
    body: Any = None  # JSON body, or raw bytes
    content_type: str | None = None
    params: dict[str, str] | None = None
    # "4xx": refused with a clear error. "no5xx": the input is odd but not necessarily wrong — any answer but a
    # server error (a success may then change things).
    expect: str = "4xx"

    def __str__(self) -> str:
        return self.name


MISSING = object()


def body_cases(prefix: str, method: str, path: str, auth: str, valid: dict[str, Any], junk: dict[str, Any],
               *, body_optional: bool = False) -> list[Case]:
    """The generic junk for a JSON endpoint, plus per-field junk (``junk``: field -> bad value)."""
    cases = [] if body_optional else [Case(f"{prefix}: no body", method, path, auth, None)]
    cases += [
        Case(f"{prefix}: malformed JSON", method, path, auth, b'{"a": ', "application/json"),
        Case(f"{prefix}: JSON array", method, path, auth, [valid], None),
        Case(f"{prefix}: JSON string", method, path, auth, "hello", None),
        Case(f"{prefix}: form-encoded", method, path, auth, b"a=1&b=2", "application/x-www-form-urlencoded"),
        Case(f"{prefix}: text/plain", method, path, auth, json.dumps(valid).encode(), "text/plain"),
        Case(f"{prefix}: not UTF-8", method, path, auth, b'{"a": "\xff\xfe"}', "application/json"),
        Case(f"{prefix}: deeply nested", method, path, auth, b"[" * 50_000 + b"]" * 50_000, "application/json"),
        Case(f"{prefix}: unknown field", method, path, auth, {**valid, "zz_unknown": True}),
    ]
    for name, value in junk.items():
        field_name = name.split(" ")[0]
        body = dict(valid)
        if value is MISSING:
            body.pop(field_name)
        else:
            body[field_name] = value
        cases.append(Case(f"{prefix}: {name}", method, path, auth, body))
    return cases


KEY = new_public_key()
REQUEST = {"asset": "hmi-01", "duration": "1h", "reason": "junk test", "ssh": True, "ports": [], "public_key": KEY}

CASES: list[Case] = [
    # --- sign-in --------------------------------------------------------------------------------------------
    *body_cases("login", "POST", "/auth/login", "none", {"username": "vendor2", "password": "x", "totp": "123456"}, {
        "username missing": MISSING, "username int": 42, "username empty": "", "username huge": HUGE,
        "password null": None, "password huge": HUGE * 10, "totp int": 123456, "totp list": ["123456"],
        "totp huge": HUGE,
    }),
    Case("login: NUL in username", "POST", "/auth/login", "none",
         {"username": NUL, "password": "x", "totp": "123456"}),
    Case("login: non-ASCII digits as the code", "POST", "/auth/login", "none",
         {"username": "vendor2", "password": "x", "totp": ARABIC_DIGITS}),
    Case("login: NUL in password", "POST", "/auth/login", "none",
         {"username": "vendor2", "password": NUL, "totp": "123456"}),
    Case("logout: no token", "POST", "/auth/logout", "none"),
    Case("me: no token", "GET", "/me", "none"),
    Case("me: junk token", "GET", "/me", "junk-token"),
    Case("me: wrong method", "DELETE", "/me", "vendor"),
    Case("unknown endpoint", "GET", "/no/such/thing", "vendor"),
    # --- requests -------------------------------------------------------------------------------------------
    *body_cases("request", "POST", "/requests", "vendor", REQUEST, {
        "asset int": 5, "asset huge": HUGE, "asset missing": MISSING, "duration int": 3600,
        "duration negative": "-1h", "duration huge": "9" * 20 + "d", "reason list": ["a"], "reason huge": HUGE,
        "ssh string": "maybe", "ssh list": [True], "ports negative": [-502], "ports zero": [0],
        "ports huge": [2**70], "ports strings": ["http"], "ports object": {"502": True},
        "ports many": list(range(5000)),
        "start int": 12, "start junk": "next tuesday", "start far past": "0001-01-01T00:00:00+14:00",
        "start far future": "9999-12-31T23:59:59-14:00", "public_key int": 7, "public_key huge": HUGE,
        "public_key missing": MISSING,
    }),
    Case("request: NUL in the asset name", "POST", "/requests", "vendor", {**REQUEST, "asset": NUL}),
    Case("request: NUL in the public key", "POST", "/requests", "vendor", {**REQUEST, "public_key": KEY + NUL}),
    Case("request: NUL in the reason", "POST", "/requests", "vendor", {**REQUEST, "reason": NUL}, expect="no5xx"),
    Case("requests: pending not a bool", "GET", "/requests", "vendor", params={"pending": "maybe"}),
    Case("requests: wrong method", "PUT", "/requests", "vendor", {}),
    Case("request: id huge", "GET", "/requests/" + "r" * 5000, "vendor"),
    Case("request: id with NUL", "GET", "/requests/req-%00", "vendor"),
    Case("request: id with non-ASCII", "GET", "/requests/r%C3%A9q", "vendor"),
    *body_cases("approve", "POST", "/requests/{request}/approve", "supervisor", {"comment": "ok"}, {
        "comment int": 5, "comment huge": HUGE, "comment list": ["ok"], "shorten_to int": 30,
        "shorten_to junk": "a while", "shorten_to zero": "0s", "shorten_to negative": "-5m",
    }, body_optional=True),
    Case("approve: unknown request", "POST", "/requests/req-00000000/approve", "supervisor", {}),
    Case("approve: NUL in the request id", "POST", "/requests/req-%00/approve", "supervisor", {}),
    Case("approve: NUL in the comment", "POST", "/requests/{request}/approve", "supervisor", {"comment": NUL},
         expect="no5xx"),
    *body_cases("deny", "POST", "/requests/{request}/deny", "supervisor", {"comment": "no"}, {
        "comment missing": MISSING, "comment null": None, "comment int": 0, "comment empty": "",
        "comment huge": HUGE,
    }),
    Case("deny: NUL in the comment", "POST", "/requests/{request}/deny", "supervisor", {"comment": NUL},
         expect="no5xx"),
    Case("cancel: unknown request", "POST", "/requests/req-00000000/cancel", "vendor"),
    Case("cancel: NUL in the request id", "POST", "/requests/req-%00/cancel", "vendor"),
    Case("cancel: wrong method", "GET", "/requests/{request}/cancel", "vendor"),
    # --- grants ---------------------------------------------------------------------------------------------
    Case("grants: usable not a bool", "GET", "/grants", "vendor", params={"usable": "2"}),
    Case("grants: NUL in the asset filter", "GET", "/grants", "vendor", params={"asset": NUL}, expect="no5xx"),
    Case("grant: id huge", "GET", "/grants/" + "g" * 5000, "vendor"),
    Case("grant: id with NUL", "GET", "/grants/grt-%00", "vendor"),
    *body_cases("revoke", "POST", "/grants/{grant}/revoke", "vendor", {"reason": "done"}, {
        "reason int": 1, "reason huge": HUGE, "reason object": {"why": "x"},
    }, body_optional=True),
    Case("revoke: unknown grant", "POST", "/grants/grt-00000000/revoke", "vendor", {}),
    Case("revoke: NUL in the reason", "POST", "/grants/{grant}/revoke", "vendor", {"reason": NUL},
         expect="no5xx"),
    # --- audit ----------------------------------------------------------------------------------------------
    Case("audit: since junk", "GET", "/audit/events", "admin", params={"since": "yesterday"}),
    Case("audit: since at the edge of time", "GET", "/audit/events", "admin",
         params={"since": "0001-01-01T00:00:00+14:00"}, expect="no5xx"),
    Case("audit: after_seq negative", "GET", "/audit/events", "admin", params={"after_seq": "-1"}),
    Case("audit: after_seq past 64 bits", "GET", "/audit/events", "admin", params={"after_seq": str(2**64)},
         expect="no5xx"),
    Case("audit: after_seq not a number", "GET", "/audit/events", "admin", params={"after_seq": "x"}),
    Case("audit: limit zero", "GET", "/audit/events", "admin", params={"limit": "0"}),
    Case("audit: limit negative", "GET", "/audit/events", "admin", params={"limit": "-5"}),
    Case("audit: limit huge", "GET", "/audit/events", "admin", params={"limit": str(10**12)}),
    Case("audit: limit float", "GET", "/audit/events", "admin", params={"limit": "1.5"}),
    # --- containment ----------------------------------------------------------------------------------------
    *body_cases("lockdown", "POST", "/sites/plant-a/lockdown", "supervisor", {"reason": "junk test"}, {
        "reason missing": MISSING, "reason null": None, "reason int": 1, "reason empty": "", "reason huge": HUGE,
    }),
    Case("lockdown: unknown site", "POST", "/sites/plant-z/lockdown", "supervisor", {"reason": "x"}),
    Case("lockdown: NUL in the site name", "POST", "/sites/plant%00/lockdown", "supervisor", {"reason": "x"}),
    Case("lockdown: site name huge", "POST", "/sites/" + "s" * 5000 + "/lockdown", "supervisor", {"reason": "x"}),
    Case("lift: unknown site", "POST", "/sites/plant-z/lift", "supervisor"),
    Case("lift: not locked down", "POST", "/sites/plant-a/lift", "supervisor"),
    Case("lift: wrong method", "GET", "/sites/plant-a/lift", "supervisor"),
    # --- gateway API ----------------------------------------------------------------------------------------
    *body_cases("register", "POST", "/gateway/register", "gateway",
                {"ssh_host": "127.0.0.1", "ssh_port": 2222, "host_key": "HOSTKEY"}, {
                    "ssh_port negative": -1, "ssh_port zero": 0, "ssh_port huge": 2**70, "ssh_port string": "ssh",
                    "host_key junk": "not a key", "host_key huge": HUGE, "ssh_host huge": HUGE,
                    "ssh_host missing": MISSING,
                }),
    *body_cases("authorize", "POST", "/gateway/authorize", "gateway",
                {"grant_id": "{grant}", "serial": 1, "asset": "hmi-01", "peer": "10.0.0.1:1"}, {
                    "serial negative": -1, "serial past 64 bits": 2**64, "serial string": "one",
                    "serial float": 1.5, "grant_id huge": HUGE, "grant_id int": 7, "asset list": ["hmi-01"],
                    "peer huge": HUGE,
                }),
    Case("authorize: NUL in the grant id", "POST", "/gateway/authorize", "gateway",
         {"grant_id": NUL, "serial": 1, "asset": "hmi-01"}),
    Case("authorize: NUL in the asset", "POST", "/gateway/authorize", "gateway",
         {"grant_id": "{grant}", "serial": 1, "asset": NUL}),
    *body_cases("grants status", "POST", "/gateway/grants/status", "gateway", {"grant_ids": ["{grant}"]}, {
        "grant_ids string": "grt-1", "grant_ids ints": [1, 2], "grant_ids too many": ["g"] * 10_001,
        "grant_ids null": None,
    }),
    Case("grants status: NUL in an id", "POST", "/gateway/grants/status", "gateway", {"grant_ids": [NUL]},
         expect="no5xx"),
    *body_cases("session start", "POST", "/gateway/sessions", "gateway", {"grant_id": "{grant}", "kind": "tcp",
                                                                          "port": 502}, {
        "kind int": 1, "kind huge": HUGE, "port zero": 0, "port negative": -22, "port huge": 70000,
        "port string": "ssh", "command huge": HUGE, "peer huge": HUGE, "grant_id missing": MISSING,
    }),
    *body_cases("refusal", "POST", "/gateway/refusals", "gateway",
                {"grant_id": "{grant}", "kind": "forward", "reason": "not granted", "port": 22}, {
                    "kind unknown": "teleport", "kind int": 1, "reason huge": HUGE, "reason empty": "",
                    "host huge": HUGE, "port negative": -1, "port huge": 70000, "grant_id missing": MISSING,
                }),
    Case("refusal: NUL in the grant id", "POST", "/gateway/refusals", "gateway",
         {"grant_id": NUL, "kind": "forward", "reason": "x"}),
    Case("session start: unknown grant", "POST", "/gateway/sessions", "gateway",
         {"grant_id": "grt-00000000", "kind": "shell"}),
    Case("session start: NUL in the grant id", "POST", "/gateway/sessions", "gateway",
         {"grant_id": NUL, "kind": "shell"}),
    *body_cases("session end", "POST", "/gateway/sessions/{session}/end", "gateway",
                {"reason": "client_closed", "bytes_in": 1, "bytes_out": 2}, {
                    "bytes_in negative": -1, "bytes_out negative": -2, "bytes_in past 64 bits": 2**64,
                    "bytes_out past 63 bits": 2**63, "bytes_in string": "lots", "bytes_in float": 1.5,
                    "reason unknown": "bored", "reason int": 3, "detail huge": HUGE,
                }),
    Case("session end: NUL in the session id", "POST", "/gateway/sessions/ses-%00/end", "gateway",
         {"reason": "client_closed", "bytes_in": 1, "bytes_out": 2}),
    Case("events: no token", "GET", "/gateway/events", "none"),
    Case("events: junk token", "GET", "/gateway/events", "junk-token"),
    Case("events: wrong method", "POST", "/gateway/events", "gateway", {}),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        if value == "HOSTKEY":
            return KEY
        return value.format(**ids) if "{" in value and "}" in value and value.count("{") == 1 else value
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize("case", CASES, ids=str)
def test_junk_gets_a_clear_4xx_and_changes_nothing(shared_api: Api, targets: Targets, case: Case) -> None:
    plant = shared_api.plant
    ids = targets.get()
    headers: dict[str, str] = {}
    if case.auth == "gateway":
        headers["Authorization"] = f"Bearer {plant.gateway_token}"
    elif case.auth == "junk-token":
        headers["Authorization"] = "Bearer " + "j" * 5000
    elif case.auth != "none":
        user = {"vendor": "vendor1", "supervisor": "sup-a1", "admin": "admin"}[case.auth]
        headers["Authorization"] = f"Bearer {shared_api.token(user)}"
    request: dict[str, Any] = {"headers": headers, "params": case.params}
    if isinstance(case.body, bytes):
        request["content"] = case.body
        headers["Content-Type"] = case.content_type or "application/octet-stream"
    elif case.body is not None:
        request["content"] = json.dumps(_fill(case.body, ids)).encode()
        headers["Content-Type"] = case.content_type or "application/json"
    before = targets.state(plant)

    # A new connection per case (after a server error uvicorn drops the connection it came on).
    headers["Connection"] = "close"
    response = shared_api.anonymous.request(case.method, _fill(case.path, ids), **request)

    assert response.status_code < 500, f"{case}: server error {response.status_code}: {response.text[:300]}"
    changed = targets.state(plant) != before
    if case.expect == "no5xx" and response.status_code < 400:
        if changed:
            targets.ids.clear()
        return
    assert 400 <= response.status_code < 500, f"{case}: {response.status_code} {response.text[:300]}"
    assert_error_body(response)
    if changed:
        targets.ids.clear()
    assert not changed, f"{case}: a refused call changed the database"

"""Render one audit event for a SIEM: ArcSight CEF, RFC 5424 syslog, OCSF 1.1 JSON. Pure functions, no I/O.

Every function takes the event as the API shows it (``AuditEvent.as_dict()``: seq, occurred_at as ISO 8601,
action, outcome, actor, subject, site, details as a dict, prev_hash, hash), so the CLI renders what it paged
from ``GET /api/v1/audit/events`` with the same code the broker's forwarder uses on database rows. The module
imports only the standard library: the CLI may import it without paying for FastAPI or SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Mapping
from typing import Any

# The escaping rules live in one module (exports, forwarder and review pages share them); re-exported here.
from broker.audit.siem_escaping import cef_extension_escape, cef_header_escape, json_text, sd_param_escape

PRODUCT = "Gatepass"
VENDOR = "Gatepass"
VERSION = "0.1.0"  # the package's version (pyproject.toml); shown in CEF and OCSF metadata
OCSF_VERSION = "1.1.0"

# RFC 5424 §6.2.1 facility 13, "log audit": these are audit records, most of them not about logging in
# (grants, sessions, containment). authpriv (10) would file them next to sshd/PAM chatter and, on a
# default rsyslog, in a root-only auth.log that SIEM shippers often do not read.
FACILITY = 13
# The example Private Enterprise Number of RFC 5612 §2, as RFC 5424's own examples use; an installation
# that owns a PEN can swap it here. SD-IDs with "@" are the enterprise-defined form (RFC 5424 §6.3.2).
SD_ID = "gatepass@32473"
NILVALUE = "-"

_FAILED = frozenset({"failure", "failed", "refused", "denied"})
_ERRORED = frozenset({"error"})
# Successful actions a security team wants to see above the informational noise (RFC 5424 severity 5).
_NOTABLE = frozenset({
    "containment:site:locked_down", "containment:site:lockdown_lifted", "admin:identity:disabled",
    "admin:identity:enabled", "access:grant:revoked", "gateway:recording:failed", "admin:gateway:retired",
})


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _details(event: Mapping[str, Any]) -> dict[str, Any]:
    details = event.get("details")
    if isinstance(details, str):  # a database row's canonical JSON
        try:
            details = json.loads(details)
        except ValueError:
            return {"text": details}
    return dict(details) if isinstance(details, Mapping) else {}


def occurred_at(event: Mapping[str, Any]) -> dt.datetime:
    value = event["occurred_at"]
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return (moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment).astimezone(dt.UTC)


def epoch_ms(event: Mapping[str, Any]) -> int:
    moment = occurred_at(event)
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def syslog_severity(event: Mapping[str, Any]) -> int:
    """RFC 5424 §6.2.1 severity: 3 error, 4 warning (refused/failed), 5 notice (notable), 6 informational."""
    outcome = _text(event.get("outcome")).lower()
    if outcome in _ERRORED or event.get("action") == "gateway:recording:failed":
        return 3
    if outcome in _FAILED or event.get("action") == "auth:account:locked":
        return 4
    if event.get("action") in _NOTABLE:
        return 5
    return 6


def as_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as the API shows it, whatever form it came in (an API dict or a database row's dict)."""
    return {
        "seq": event.get("seq"), "occurred_at": occurred_at(event).isoformat(), "action": event.get("action"),
        "outcome": event.get("outcome"), "actor": event.get("actor"), "subject": event.get("subject"),
        "site": event.get("site"), "details": _details(event), "prev_hash": event.get("prev_hash"),
        "hash": event.get("hash"),
    }


def to_jsonl(event: Mapping[str, Any]) -> str:
    """One JSON line: the event exactly as the API gave it, in ASCII (controls and the rest as JSON escapes)."""
    return json_text(dict(event), ascii_only=True)


def to_ocsf_line(event: Mapping[str, Any]) -> str:
    """One OCSF JSON line: UTF-8 kept readable, every control character a JSON escape."""
    return json_text(to_ocsf(event), ascii_only=False)


# --- CEF (ArcSight Common Event Format, revision 25) ---------------------------------------------------

_CEF_SEVERITY = {3: 8, 4: 6, 5: 5, 6: 3}


def to_cef(event: Mapping[str, Any]) -> str:
    """One CEF line: ``CEF:0|Gatepass|Gatepass|VERSION|action|name|severity|key=value ...``."""
    action = _text(event.get("action"))
    details = _details(event)
    name = action.replace(":", " ").replace("_", " ")
    header = "|".join(cef_header_escape(part) for part in (
        "CEF:0", VENDOR, PRODUCT, VERSION, action, name, str(_CEF_SEVERITY[syslog_severity(event)])))
    extensions: list[tuple[str, str]] = [
        ("rt", str(epoch_ms(event))),
        ("externalId", _text(event.get("seq"))),
        ("act", action),
        ("outcome", _text(event.get("outcome"))),
        ("suser", _text(event.get("actor"))),
    ]
    if action.startswith("admin:identity:"):
        extensions.append(("duser", _text(event.get("subject"))))
    source = _endpoint(details.get("peer") or details.get("source"))
    if "ip" in source:
        extensions.append(("src", source["ip"]))
        if "port" in source:
            extensions.append(("spt", str(source["port"])))
    if details.get("asset"):
        extensions.append(("dhost", _text(details["asset"])))
    if isinstance(details.get("port"), int):
        extensions.append(("dpt", str(details["port"])))
    if details.get("reason"):
        extensions.append(("reason", _text(details["reason"])))
    if details.get("sponsor"):
        # An AI agent's action (suser) names the person it acted for: a SIEM rule keys on both.
        extensions += [("cs5Label", "sponsor"), ("cs5", _text(details["sponsor"]))]
    extensions += [
        ("cs1Label", "site"), ("cs1", _text(event.get("site"))),
        ("cs2Label", "subject"), ("cs2", _text(event.get("subject"))),
        ("cs3Label", "hash"), ("cs3", _text(event.get("hash"))),
        ("cs4Label", "prevHash"), ("cs4", _text(event.get("prev_hash"))),
        ("msg", json_text(details, ascii_only=False, sort_keys=True)),
    ]
    body = " ".join(f"{key}={cef_extension_escape(value)}" for key, value in extensions if value != "")
    return f"{header}|{body}"


# --- RFC 5424 syslog -----------------------------------------------------------------------------------


def _header_field(value: str | None, limit: int) -> str:
    """HOSTNAME/APP-NAME/PROCID/MSGID are PRINTUSASCII (33-126), limited in length; empty is NILVALUE."""
    cleaned = "".join(c for c in (value or "") if 33 <= ord(c) <= 126)[:limit]
    return cleaned or NILVALUE


def _msgid(action: str) -> str:
    # MSGID is at most 32 characters (§6.2.7); drop leading segments of a longer code rather than cut a word.
    parts = action.split(":")
    while len(":".join(parts)) > 32 and len(parts) > 1:
        parts = parts[1:]
    return ":".join(parts)


def syslog_timestamp(event: Mapping[str, Any]) -> str:
    """RFC 5424 §6.2.3 TIMESTAMP in UTC with ``Z`` and at most six fractional digits."""
    return occurred_at(event).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# RFC 5425 §4.3.1: syslog receivers SHOULD take messages of up to 8192 octets, and rsyslog's default
# maxMessageSize is 8 KiB. rsyslog reads the rest of a longer octet-counted frame as a NEW message, so text a
# vendor chose (a long file name) would arrive as a record of its own: the forwarder stays within this.
FORWARD_MAX_OCTETS = 8192
_SHORTENED = " [cut]"


def to_syslog(event: Mapping[str, Any], *, hostname: str | None, app_name: str = "gatepass",
              procid: str | None = None, max_octets: int | None = None) -> str:
    """One RFC 5424 message (no framing): ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID [gatepass@32473 ...] MSG``.

    The SD element carries what a SIEM keys on (seq and hash let it drop a repeat); MSG is the whole event
    as JSON. That JSON is written with ``ensure_ascii``, so MSG is plain ASCII and is sent as MSG-ANY
    without a BOM (§6.4: a BOM is required only for MSG that is UTF-8 beyond ASCII; many collectors keep
    the BOM in the text they store). PARAM-VALUEs are UTF-8 (§6.3.3), so names with accents stay readable.

    With ``max_octets``, a longer message has its text values cut (each ending in " [cut]") until it fits,
    and MSG says ``"truncated": true``; seq and hash stay whole, so the full event can be looked up.
    """
    message = _syslog(event, hostname=hostname, app_name=app_name, procid=procid, truncated=False)
    limit = 1024
    while max_octets is not None and len(message.encode("utf-8", errors="replace")) > max_octets and limit:
        limit //= 2
        shortened = {**event, "actor": _cut(event.get("actor"), limit), "subject": _cut(event.get("subject"), limit),
                     "site": _cut(event.get("site"), limit), "details": _cut(_details(event), limit)}
        message = _syslog(shortened, hostname=hostname, app_name=app_name, procid=procid, truncated=True)
    return message


def _cut(value: Any, limit: int) -> Any:
    """Every string in ``value`` (keys of details included) at most ``limit`` characters, marked where cut."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + _SHORTENED
    if isinstance(value, Mapping):
        return {_cut(str(key), limit): _cut(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [_cut(item, limit) for item in value[:limit]]
    return value


def _syslog(event: Mapping[str, Any], *, hostname: str | None, app_name: str, procid: str | None,
            truncated: bool) -> str:
    action = _text(event.get("action"))
    pri = FACILITY * 8 + syslog_severity(event)
    params = [("seq", event.get("seq")), ("action", action), ("outcome", event.get("outcome")),
              ("actor", event.get("actor")), ("subject", event.get("subject")), ("site", event.get("site")),
              ("hash", event.get("hash"))]
    # PARAM-NAMEs are fixed ASCII words (no '=', ' ', ']' or '"'); a missing value is left out, not sent empty.
    sd = "[" + SD_ID + "".join(f' {name}="{sd_param_escape(_text(value))}"'
                               for name, value in params if value is not None) + "]"
    payload = as_json(event)
    if truncated:
        payload["truncated"] = True
    msg = json_text(payload, ascii_only=True, sort_keys=True)
    return (f"<{pri}>1 {syslog_timestamp(event)} {_header_field(hostname, 255)} {_header_field(app_name, 48)} "
            f"{_header_field(procid, 128)} {_header_field(_msgid(action), 32)} {sd} {msg}")


def octet_frame(message: str) -> bytes:
    """RFC 6587 §3.4.1 octet counting: ``MSG-LEN SP SYSLOG-MSG``, the length in octets of the UTF-8 message.
    A lone surrogate (not encodable) becomes "?" rather than an exception that would stall forwarding on
    that event for ever."""
    data = message.encode("utf-8", errors="replace")
    return str(len(data)).encode("ascii") + b" " + data


# --- OCSF 1.1 -----------------------------------------------------------------------------------------

AUTHENTICATION, USER_ACCESS, NETWORK_ACTIVITY, SSH_ACTIVITY, BASE_EVENT = 3002, 3005, 4001, 4007, 0
_CLASSES = {
    AUTHENTICATION: ("Authentication", 3, "Identity & Access Management"),
    USER_ACCESS: ("User Access Management", 3, "Identity & Access Management"),
    NETWORK_ACTIVITY: ("Network Activity", 4, "Network Activity"),
    SSH_ACTIVITY: ("SSH Activity", 4, "Network Activity"),
    BASE_EVENT: ("Base Event", 0, "Other"),
}
_SEVERITY_ID = {3: 4, 4: 3, 5: 2, 6: 1}  # syslog severity -> OCSF High, Medium, Low, Informational
OTHER = 99

# Authentication (3002) activities: 1 Logon, 2 Logoff, 99 Other.
_AUTH_ACTIVITY = {"auth:login:succeeded": (1, "Logon"), "auth:login:failed": (1, "Logon"),
                  "auth:mfa:failed": (1, "Logon"), "auth:token:revoked": (2, "Logoff"),
                  "auth:account:locked": (OTHER, "Account Locked")}
# User Access Management (3005) activities: 1 Assign Privileges, 2 Revoke Privileges, 99 Other.
_ACCESS_ACTIVITY = {
    "access:grant:created": (1, "Assign Privileges"), "access:grant:extended": (1, "Assign Privileges"),
    "access:request:approved": (1, "Assign Privileges"), "access:extension:approved": (1, "Assign Privileges"),
    "admin:identity:enabled": (1, "Assign Privileges"),
    "access:grant:revoked": (2, "Revoke Privileges"), "admin:identity:disabled": (2, "Revoke Privileges"),
    "containment:site:locked_down": (2, "Revoke Privileges"),
}
# Network and SSH Activity (4001, 4007) activities: 1 Open, 2 Close, 5 Refuse, 6 Traffic, 99 Other (1.1.0's
# includes/network/network_activities.json).
_NETWORK_ACTIVITY = {"gateway:session:started": (1, "Open"), "gateway:session:ended": (2, "Close"),
                     "gateway:connection:refused": (5, "Refuse"), "gateway:modbus:write_refused": (5, "Refuse"),
                     "gateway:modbus:activity": (6, "Traffic"),
                     "gateway:connection:authorized": (OTHER, "Authorize"),
                     "gateway:file:transferred": (6, "Traffic"), "gateway:file:changed": (6, "Traffic"),
                     "gateway:file:refused": (5, "Refuse")}


def ocsf_class(action: str, details: Mapping[str, Any]) -> int:
    """The OCSF class an audit code belongs to (``BASE_EVENT`` for administrative bookkeeping)."""
    if action in _AUTH_ACTIVITY:
        return AUTHENTICATION
    if action in _ACCESS_ACTIVITY or action.startswith(("access:", "containment:")):
        return USER_ACCESS
    if action.startswith("gateway:modbus:"):
        return NETWORK_ACTIVITY
    if action.startswith("gateway:session:"):
        return NETWORK_ACTIVITY if details.get("kind") == "tcp" else SSH_ACTIVITY
    if action.startswith(("gateway:connection:", "gateway:file:")):
        return SSH_ACTIVITY
    return BASE_EVENT


def _endpoint(peer: object) -> dict[str, Any]:
    """``host:port`` or ``[v6]:port`` as an OCSF network endpoint; {} when it is not an address."""
    text = _text(peer)
    host, _, port = text.rpartition(":")
    host = host.strip("[]") if host else text
    try:
        endpoint: dict[str, Any] = {"ip": str(ipaddress.ip_address(host))}
    except ValueError:
        return {}
    if port.isdigit() and host != text:
        endpoint["port"] = int(port)
    return endpoint


def _user(name: object) -> dict[str, Any]:
    return {"name": _text(name) or "unknown"}


def to_ocsf(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as one OCSF 1.1 object of the class its action maps to, with that class's required
    attributes; the original event rides along in ``unmapped`` so nothing is lost in the mapping."""
    action = _text(event.get("action"))
    details = _details(event)
    class_uid = ocsf_class(action, details)
    class_name, category_uid, category_name = _CLASSES[class_uid]
    outcome = _text(event.get("outcome")).lower()
    status_id = 2 if outcome in _FAILED | _ERRORED else 1 if outcome in ("success", "ok") else 99
    severity_id = _SEVERITY_ID[syslog_severity(event)]
    activity_id, activity_name = {
        AUTHENTICATION: _AUTH_ACTIVITY, USER_ACCESS: _ACCESS_ACTIVITY, NETWORK_ACTIVITY: _NETWORK_ACTIVITY,
        SSH_ACTIVITY: _NETWORK_ACTIVITY,
    }.get(class_uid, {}).get(action, (OTHER, "Other"))
    ocsf: dict[str, Any] = {
        "category_uid": category_uid, "category_name": category_name,
        "class_uid": class_uid, "class_name": class_name,
        "activity_id": activity_id, "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id, "type_name": f"{class_name}: {activity_name}",
        "severity_id": severity_id, "severity": {1: "Informational", 2: "Low", 3: "Medium", 4: "High"}[severity_id],
        "time": epoch_ms(event),
        "status_id": status_id, "status": {1: "Success", 2: "Failure"}.get(status_id, "Other"),
        "message": action,
        "metadata": {
            "version": OCSF_VERSION, "uid": _text(event.get("seq")), "original_time": occurred_at(event).isoformat(),
            "log_name": "audit", "event_code": action,
            "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": VERSION},
        },
        "unmapped": as_json(event),
    }
    if event.get("actor"):
        ocsf["actor"] = {"user": _user(event.get("actor"))}
    if details.get("reason"):
        ocsf["status_detail"] = _text(details["reason"])
    if class_uid == AUTHENTICATION:
        ocsf["user"] = _user(event.get("actor"))
        # Gatepass staff sign in with password + TOTP; OCSF has no enum value for it, so 99 Other, named.
        ocsf["auth_protocol_id"], ocsf["auth_protocol"] = OTHER, "Password+TOTP"
        ocsf["is_mfa"] = True
        ocsf["is_remote"] = True
        ocsf["logon_type_id"], ocsf["logon_type"] = 3, "Network"
        ocsf["service"] = {"name": PRODUCT}
        ocsf["dst_endpoint"] = {"svc_name": PRODUCT}
        source = _endpoint(details.get("source"))
        if source:
            ocsf["src_endpoint"] = source
    elif class_uid == USER_ACCESS:
        # The identity whose rights changed: the subject of identity events, else who the event names.
        target = event.get("subject") if action.startswith("admin:identity:") else event.get("actor")
        ocsf["user"] = _user(target)
        if action.startswith("containment:"):
            # A lockdown takes remote access from everyone at the site, not from the supervisor who pulled it.
            site = _text(event.get("site") or event.get("subject"))
            ocsf["user"] = {"uid": f"site:{site}", "name": f"remote users of {site}", "type_id": OTHER,
                            "type": "Other"}
        ocsf["privileges"] = _privileges(action, details, event)
        ocsf["resource"] = {"name": _text(details.get("asset") or event.get("site") or event.get("subject")),
                            "type": "asset" if details.get("asset") else "site"}
    elif class_uid in (NETWORK_ACTIVITY, SSH_ACTIVITY):
        ocsf["src_endpoint"] = _endpoint(details.get("peer")) or {"name": "unknown"}
        destination: dict[str, Any] = {"hostname": _text(details.get("asset") or event.get("subject")),
                                       "name": _text(details.get("asset") or event.get("subject"))}
        if isinstance(details.get("port"), int):
            destination["port"] = details["port"]
        ocsf["dst_endpoint"] = destination
        # Inbound: a vendor from outside reaching into the plant network (the side this trail watches over).
        ocsf["connection_info"] = {"protocol_name": "tcp", "protocol_num": 6, "direction_id": 1,
                                   "direction": "Inbound"}
        if class_uid == SSH_ACTIVITY:
            # Grant certificates (OpenSSH user certificates issued by the broker's CA) are the only way in.
            ocsf["auth_type_id"], ocsf["auth_type"] = 1, "Certificate Based"
            ocsf["protocol_ver"] = "2"
        if isinstance(details.get("bytes_in"), int) and isinstance(details.get("bytes_out"), int):
            ocsf["traffic"] = {"bytes_in": details["bytes_in"], "bytes_out": details["bytes_out"],
                               "bytes": details["bytes_in"] + details["bytes_out"]}
        if event.get("subject"):
            ocsf["session"] = {"uid": _text(event.get("subject"))}
    return ocsf


def _privileges(action: str, details: Mapping[str, Any], event: Mapping[str, Any]) -> list[str]:
    asset = _text(details.get("asset"))
    rights = []
    if asset and details.get("ssh"):
        rights.append(f"ssh:{asset}")
    if asset:
        rights += [f"tcp:{asset}:{port}" for port in details.get("ports") or [] if isinstance(port, int)]
    if rights:
        return rights
    if action.startswith("containment:"):
        return [f"remote-access:site:{_text(event.get('site'))}"]
    if action.startswith("admin:identity:"):
        return ["sign-in", "remote-access"]
    return [f"grant:{_text(event.get('subject'))}" if "grant" in action else action]

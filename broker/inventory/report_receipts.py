"""A gateway's report is recorded once, however often the gateway has to send it.

A gateway keeps every report the broker did not answer and sends it again (gateway/report_outbox.py). When the
broker did record a report but its answer was lost (the link dropped, the broker restarted after its commit), the
report arrives twice: the trail would hold the same refusal, transfer or Modbus event twice, and the watcher would
count it twice. So the gateway gives each report a key of its own (the ``Idempotency-Key`` header, the same on
every sending) and the broker keeps, in the transaction that records the report, a receipt for that key. A report
whose key has a receipt is answered as the first sending was and recorded no more.

A receipt holds the report's digest too: a key that comes again with another report (a gateway's bug, or a
gateway trying to keep a refusal out of the trail by sending it under a key already used) does not suppress it:
that report is recorded, as if it had no key.

A receipt is kept ``KEEP`` (a gateway whose broker is away retries for as long as it takes, but a month covers
any outage a plant would sit through without someone looking), then forgotten by the purge job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.errors import InvalidInput
from broker.models import GatewayReportReceipt

# What a gateway sends: 16-64 characters of URL-safe base64 or hex (gateway/report_outbox.py sends 32 hex digits).
KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")
KEEP = dt.timedelta(days=30)
# The header a replayed report's answer carries, so a gateway (and a test) can tell it was not recorded again.
REPLAYED_HEADER = "Gatepass-Report-Replayed"

logger = logging.getLogger("gatepass.broker.reports")


def report_digest(report: str, body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of which report (``report``: its path) and its body as JSON with sorted keys."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(f"{report}\n{canonical}".encode()).hexdigest()


def checked_key(key: str | None) -> str | None:
    """The report's key as sent, or InvalidInput if it is not one a gateway would send."""
    if key is None or KEY.fullmatch(key):
        return key
    raise InvalidInput("the report's Idempotency-Key must be 16 to 64 letters, digits, '-' or '_'")


def first_delivery(session: Session, *, gateway_id: int, key: str | None, report: str, body: Mapping[str, Any],
                   now: dt.datetime) -> bool:
    """Whether this report is to be recorded now: True for a report without a key (a gateway from before keys,
    recorded as it always was), for the first sending of a key, whose receipt joins this transaction (so a report
    that is refused, rolling the transaction back, leaves no receipt and is judged again when resent), and for a
    key already used for another report (logged; it keeps its first receipt). False only for the same report again."""
    if key is None:
        return True
    digest = report_digest(report, body)
    seen = select(GatewayReportReceipt.digest).where(GatewayReportReceipt.gateway_id == gateway_id,
                                                     GatewayReportReceipt.key == key)
    earlier = session.scalar(seen)
    if earlier is None:
        try:
            # A savepoint: the same key sent twice at once (a resend racing its first sending) loses here, and the
            # request's transaction stays usable to answer it.
            with session.begin_nested():
                session.add(GatewayReportReceipt(gateway_id=gateway_id, key=key, digest=digest, received_at=now))
            return True
        except IntegrityError:
            earlier = session.scalar(seen)
    if earlier == digest:
        return False
    logger.warning("gateway %d sent report %s under key %s, which an earlier, different report had: it is recorded",
                   gateway_id, report, key)
    return True


def forget_old(session: Session, *, now: dt.datetime) -> int:
    """Delete receipts older than ``KEEP``; how many went."""
    result = session.execute(delete(GatewayReportReceipt).where(GatewayReportReceipt.received_at < now - KEEP))
    return int(getattr(result, "rowcount", 0) or 0)

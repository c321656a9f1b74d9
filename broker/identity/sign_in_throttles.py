"""Sign-in throttles: failed sign-ins counted per source address, per (account, source) and per account across
sources in the ``sign_in_throttles`` table (so every broker replica agrees), with blocks that double while the
failures go on. A block is answered with 429 and Retry-After; none of them keeps the real user out from another
source, and none depends on whether the account tried exists (DESIGN invariant 4)."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.models import SignInThrottle
from broker.settings import ThrottlePolicy

SOURCE, ACCOUNT_SOURCE, ACCOUNT = "source", "account_source", "account"
# A request whose peer the server could not name (only in-process transports do that) counts as one source.
UNKNOWN_SOURCE = "unknown"
# Rows nobody failed on for this long are dropped: the table stays small even under a spray of made-up names.
_FORGET_AFTER = dt.timedelta(days=1)
_MAX_DOUBLINGS = 16


@dataclass(frozen=True)
class Block:
    """Sign-ins from this source (for this name) are refused until ``until``."""

    scope: str
    until: dt.datetime

    def retry_after(self, now: dt.datetime) -> int:
        """Whole seconds to wait, for the Retry-After header (RFC 9110 §10.2.3)."""
        return max(1, math.ceil((self.until - now).total_seconds()))


def account_source_key(username: str, source: str | None) -> str:
    """``["name","address"]``: a JSON string is closed by an unescaped quote, so no name's key is a prefix of
    another name's (a plain separator could also occur inside a made-up name)."""
    return json.dumps([username, source or UNKNOWN_SOURCE], ensure_ascii=False, separators=(",", ":"))


def _account_prefix(username: str) -> str:
    return json.dumps([username], ensure_ascii=False, separators=(",", ":"))[:-1] + ","


def current_block(session: Session, *, policy: ThrottlePolicy, now: dt.datetime, username: str,
                  source: str | None) -> Block | None:
    """The longest block that applies to a sign-in as ``username`` from ``source``, or None.

    An account-wide block (distributed guessing) holds back only sources that themselves failed on this account
    within ``account_block``: the real user, at another address, is still checked and gets in with the right
    password and code."""
    source_key, pair_key = source or UNKNOWN_SOURCE, account_source_key(username, source)
    rows = session.scalars(select(SignInThrottle).where(or_(
        and_(SignInThrottle.scope == SOURCE, SignInThrottle.key == source_key),
        and_(SignInThrottle.scope == ACCOUNT_SOURCE, SignInThrottle.key == pair_key),
        and_(SignInThrottle.scope == ACCOUNT, SignInThrottle.key == username),
    ))).all()
    by_scope = {row.scope: row for row in rows}
    blocks = [Block(row.scope, row.blocked_until) for row in rows
              if row.scope != ACCOUNT and row.blocked_until is not None and row.blocked_until > now]
    account, pair = by_scope.get(ACCOUNT), by_scope.get(ACCOUNT_SOURCE)
    if (account is not None and account.blocked_until is not None and account.blocked_until > now
            and pair is not None and pair.failures > 0 and pair.updated_at + policy.account_block > now):
        blocks.append(Block(ACCOUNT, min(account.blocked_until, pair.updated_at + policy.account_block)))
    return max(blocks, key=lambda block: block.until, default=None)


def record_failure(session: Session, *, policy: ThrottlePolicy, now: dt.datetime, username: str,
                   source: str | None) -> list[Block]:
    """Count one failed sign-in (for any name, known or not); returns the blocks it started, each audited."""
    session.execute(delete(SignInThrottle).where(
        SignInThrottle.updated_at < now - _FORGET_AFTER,
        or_(SignInThrottle.blocked_until.is_(None), SignInThrottle.blocked_until < now - _FORGET_AFTER)))
    started = []
    where = {"source": source or UNKNOWN_SOURCE}
    for scope, key, limit, base, longest in (
        (SOURCE, source or UNKNOWN_SOURCE, policy.source_max_failures, policy.source_block, policy.source_block_max),
        (ACCOUNT_SOURCE, account_source_key(username, source), policy.account_source_max_failures,
         policy.account_source_block, policy.account_source_block_max),
    ):
        row = _locked_row(session, scope=scope, key=key, now=now)
        _forgive(row, now=now, window=policy.window)
        row.failures += 1
        row.updated_at = now
        if row.failures >= limit:
            # Progressive: each failure past the limit doubles the block, up to the longest one.
            row.blocked_until = now + min(base * 2 ** min(row.failures - limit, _MAX_DOUBLINGS), longest)
            started.append(Block(scope, row.blocked_until))
            trail.record(session, now=now, action=Action.LOGIN_THROTTLED, outcome="failure", actor=username,
                         details={"scope": scope, "until": row.blocked_until.isoformat(), "failures": row.failures,
                                  **where})

    session.flush()  # the pair row above must be counted among the failing sources
    sources = session.scalar(select(func.count()).select_from(SignInThrottle).where(
        SignInThrottle.scope == ACCOUNT_SOURCE,
        SignInThrottle.key.startswith(_account_prefix(username), autoescape=True),
        SignInThrottle.failures > 0, SignInThrottle.updated_at > now - policy.window)) or 0
    if sources >= policy.account_max_sources:
        account = _locked_row(session, scope=ACCOUNT, key=username, now=now)
        already = account.blocked_until is not None and account.blocked_until > now
        account.failures, account.updated_at = sources, now
        account.blocked_until = now + policy.account_block
        if not already:
            started.append(Block(ACCOUNT, account.blocked_until))
            trail.record(session, now=now, action=Action.ACCOUNT_LOCKED, outcome="failure", actor=username,
                         details={"scope": ACCOUNT, "until": account.blocked_until.isoformat(),
                                  "failing_sources": sources, **where})
    return started


def record_success(session: Session, *, username: str, source: str | None) -> None:
    """The right password and code from this source: its count for this account starts again. The source's own
    count stays (an attacker signing in to their own account between guesses must not reset it)."""
    session.execute(delete(SignInThrottle).where(SignInThrottle.scope == ACCOUNT_SOURCE,
                                                 SignInThrottle.key == account_source_key(username, source)))


def _forgive(row: SignInThrottle, *, now: dt.datetime, window: dt.timedelta) -> None:
    """A whole window without a failure (and without a block running) wipes the slate."""
    quiet_since = max(row.updated_at, row.blocked_until or row.updated_at)
    if quiet_since + window <= now:
        row.failures, row.window_started_at, row.blocked_until = 0, now, None


def _locked_row(session: Session, *, scope: str, key: str, now: dt.datetime) -> SignInThrottle:
    """The row for (scope, key), created if missing and locked for this transaction: two replicas counting the
    same failure at once must both be counted (INSERT … ON CONFLICT DO NOTHING, then SELECT … FOR UPDATE)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(SignInThrottle).values(scope=scope, key=key, failures=0, window_started_at=now,
                                                  updated_at=now).on_conflict_do_nothing(
        index_elements=["scope", "key"]))
    return session.scalars(select(SignInThrottle).where(SignInThrottle.scope == scope, SignInThrottle.key == key)
                           .with_for_update().execution_options(populate_existing=True)).one()

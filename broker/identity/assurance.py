"""How strongly the caller of this unit of work signed in. A session opened without a second factor (a company
sign-in whose provider reported none) may look at everything its roles show, but approving, denying, granting
and lockdown need one (IEC 62443-3-3 SR 1.1 RE 2; NIST SP 800-63B AAL2 for whoever opens a plant to outsiders).

The fact belongs to the session (the API token), not to the person: the same supervisor may be signed in with a
second factor in one place and without in another. authentication.authenticate_token notes it in the database
session's ``info`` (one unit of work is one request), so the domain rules can ask without every caller passing the
token down."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Forbidden, audited
from broker.models import ApiToken, Identity

_WITHOUT_MFA = "gatepass.identities_signed_in_without_mfa"


def note_session(session: Session, token: ApiToken) -> None:
    """Remember, for this unit of work only, that ``token``'s holder signed in without a second factor."""
    if token.without_mfa:
        session.info.setdefault(_WITHOUT_MFA, set()).add(token.identity_id)


def signed_in_without_mfa(session: Session, identity: Identity) -> bool:
    return identity.id in session.info.get(_WITHOUT_MFA, ())


def require_mfa(session: Session, *, now: dt.datetime, actor: Identity, what: str, action: Action,
                subject: str | None, site: str | None) -> None:
    """Refuse (audited as ``action``) unless ``actor``'s session carries a second factor. ``what`` completes "you
    cannot … without a second factor" (e.g. "approve requests")."""
    if not signed_in_without_mfa(session, actor):
        return
    why = (f"you cannot {what} without a second factor: your company sign-in did not report multi-factor "
           "authentication. Sign out, then sign in again with your company account and its second factor "
           "(authenticator app, security key)")
    trail.record(session, now=now, action=action, outcome="refused", actor=actor.username, subject=subject,
                 site=site, details={"reason": why, "mfa": False})
    raise audited(Forbidden(why))

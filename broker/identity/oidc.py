"""Staff who sign in with their company account (OpenID Connect): the Gatepass identity of the person, linked by
the provider's issuer and subject and made at their first sign-in; their roles and sites re-derived from their
directory groups at every sign-in; and whether they presented a second factor, which deciding needs
(broker.identity.assurance).

Vendors never come this way (oidc_config refuses a group that would make one): an account the plant created by
hand is never taken over by a company sign-in with the same name — that is refused, not merged."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import InvalidInput
from broker.identity.authentication import IssuedToken, LoginPolicy, escape_controls, token_digest
from broker.identity.identities import NAME_PATTERN, check_email, why_unusable
from broker.identity.oidc_config import GroupRule, OidcSettings
from broker.identity.oidc_provider import RelyingParty, SignInRefused, VerifiedSignIn
from broker.identity.usage import touch
from broker.keys.vault import Vault
from broker.models import ApiToken, Identity, RoleAssignment, Site
from broker.vocabulary import IdentityKind, IdentityStatus

# Who the trail names as having made or changed an identity from a company sign-in.
ACTOR = "oidc"

RoleScope = tuple[str, str | None]  # (role, site name or None for every site)


@dataclass(frozen=True)
class CompanySignIn:
    issued: IssuedToken
    mfa: bool


def roles_for(rules: tuple[GroupRule, ...], groups: tuple[str, ...]) -> set[RoleScope]:
    """The roles (and their sites) a person's groups give: the union of every rule whose group they are in."""
    member_of = set(groups)
    return {(rule.role, rule.site) for rule in rules if rule.group in member_of}


def presented_mfa(settings: OidcSettings, person: VerifiedSignIn) -> bool:
    """A second factor, as the provider reports it: an ``amr`` value (RFC 8176) or the ``acr`` among the
    accepted ones (GATEPASS_OIDC_MFA)."""
    return bool(set(person.amr) & settings.mfa_methods) or (person.acr is not None
                                                            and person.acr in settings.mfa_methods)


def username_for(person: VerifiedSignIn) -> str | None:
    """The Gatepass name a new person gets: their ``preferred_username`` if it is a valid name (in lower case),
    else the part of their e-mail address before the @; None when neither is."""
    candidates = [person.preferred_username, person.email.partition("@")[0] if person.email else None]
    for candidate in candidates:
        name = (candidate or "").strip().lower()
        if NAME_PATTERN.match(name):
            return name
    return None


def sign_in(session: Session, *, relying_party: RelyingParty, vault: Vault, now: dt.datetime, policy: LoginPolicy,
            sealed: str, purpose: str, code: str, state: str, source: str | None) -> CompanySignIn:
    """Finish a company sign-in: the provider's answer checked (before this unit of work touches the database,
    so no lock is held while the provider is asked), the person's identity found or made, their roles set from
    their groups, and a session token issued. Every refusal is audited with its reason and says it plainly."""
    try:
        person = relying_party.finish(vault=vault, now=now, sealed=sealed, purpose=purpose, code=code, state=state)
    except SignInRefused as refused:
        _refuse(session, now=now, reason=refused.message, source=source, person=None)
    return complete(session, settings=relying_party.settings, now=now, policy=policy, person=person, source=source)


def refuse_answer(session: Session, *, now: dt.datetime, error: str, source: str | None) -> NoReturn:
    """The provider sent the person back with an error instead of a code (they cancelled, or it refused them)."""
    _refuse(session, now=now, source=source, person=None,
            reason=f"sign-in refused: the company sign-in did not complete ({escape_controls(error[:80])})")


def complete(session: Session, *, settings: OidcSettings, now: dt.datetime, policy: LoginPolicy,
             person: VerifiedSignIn, source: str | None) -> CompanySignIn:
    """Sign in the person a checked ID token names (see ``sign_in``)."""
    wanted = roles_for(settings.groups, person.groups)
    identity = session.scalar(select(Identity).where(Identity.oidc_issuer == person.issuer,
                                                     Identity.oidc_subject == person.subject)
                              .with_for_update())
    if identity is None:
        identity = _provision(session, now=now, person=person, wanted=wanted, source=source)
    else:
        unusable = why_unusable(identity, now)
        if unusable:
            _refuse(session, now=now, source=source, person=person, actor=identity.username,
                    reason=f"sign-in refused: {unusable}; ask a Gatepass admin")
    _set_roles(session, now=now, identity=identity, wanted=wanted, person=person)
    if not identity.roles:
        _refuse(session, now=now, source=source, person=person, actor=identity.username,
                reason="sign-in refused: your company account is in none of the groups that give a Gatepass role "
                       "(any role you had here was taken away); ask your administrator for the right group")
    _update_email(session, now=now, identity=identity, person=person)
    mfa = presented_mfa(settings, person)
    return CompanySignIn(issued=_issue(session, now=now, policy=policy, identity=identity, person=person, mfa=mfa,
                                       source=source), mfa=mfa)


def _provision(session: Session, *, now: dt.datetime, person: VerifiedSignIn, wanted: set[RoleScope],
               source: str | None) -> Identity:
    if not wanted:
        _refuse(session, now=now, source=source, person=person, actor=person.preferred_username,
                reason="sign-in refused: your company account is in none of the groups that give a Gatepass role; "
                       "ask your administrator for the right group")
    username = username_for(person)
    if username is None:
        _refuse(session, now=now, source=source, person=person, actor=person.preferred_username,
                reason="sign-in refused: your company account has no user name Gatepass can use (its "
                       "preferred_username and e-mail give no name of lower-case letters, digits, '.', '_' or '-')")
    if session.scalar(select(Identity.id).where(Identity.username == username)) is not None:
        # Never merged: the local account may be a vendor's or someone else's that happens to share the name.
        _refuse(session, now=now, source=source, person=person, actor=username,
                reason=f"sign-in refused: the name '{username}' belongs to an existing Gatepass account that is not "
                       "linked to your company account; ask a Gatepass admin (accounts are never merged)")
    identity = Identity(
        username=username, kind=IdentityKind.HUMAN, created_at=now, totp_last_step=0, failed_logins=0,
        status=IdentityStatus.ACTIVE, oidc_issuer=person.issuer, oidc_subject=person.subject,
        # The plant's own staff: no end date and no access review (broker.identity.policy); their employer's
        # directory governs them, and its groups are read again at every sign-in.
        expires_at=None, email=_valid_email(person.email))
    session.add(identity)
    session.flush()  # the identity's id, for its role rows
    trail.record(session, now=now, action=Action.IDENTITY_CREATED, actor=ACTOR, subject=username,
                 details={"kind": IdentityKind.HUMAN, "issuer": person.issuer, "subject": person.subject,
                          "via": "company sign-in (OpenID Connect)"})
    return identity


def _set_roles(session: Session, *, now: dt.datetime, identity: Identity, wanted: set[RoleScope],
               person: VerifiedSignIn) -> None:
    """The identity's roles become exactly what the groups give now; a change is audited (who lost what)."""
    names = {site for _, site in wanted if site is not None}
    sites = {site.name: site for site in session.scalars(select(Site).where(Site.name.in_(names)))} if names else {}
    # A rule naming a site this broker does not have gives nothing (and says so in the trail), rather than
    # refusing everyone the rule's other sites.
    unknown = sorted(names - set(sites))
    target = {(role, sites[site].id if site else None) for role, site in wanted if site is None or site in sites}
    current = {(a.role, a.site_id): a for a in identity.roles}
    if set(current) == target:
        return
    shown: dict[int | None, str] = {site.id: site.name for site in sites.values()}
    shown.update({a.site_id: a.site.name for a in identity.roles if a.site is not None})

    def label(scope: tuple[str, int | None]) -> str:
        return scope[0] if scope[1] is None else f"{scope[0]}:{shown.get(scope[1], scope[1])}"

    removed, added = sorted(map(label, set(current) - target)), sorted(map(label, target - set(current)))
    for scope in set(current) - target:
        identity.roles.remove(current[scope])
    if removed:
        session.flush()  # the old rows go before new ones take their place (unique per identity, role and site)
    identity.roles.extend(RoleAssignment(role=role, site_id=site_id) for role, site_id in target - set(current))
    trail.record(session, now=now, action=Action.OIDC_ROLES_CHANGED, actor=ACTOR, subject=identity.username,
                 details={"added": added, "removed": removed, "groups": list(person.groups)[:50],
                          **({"unknown_sites": unknown} if unknown else {})})


def _update_email(session: Session, *, now: dt.datetime, identity: Identity, person: VerifiedSignIn) -> None:
    """Notifications for approvers go to the address their directory has now."""
    email = _valid_email(person.email)
    if email is None or email == identity.email:
        return
    trail.record(session, now=now, action=Action.IDENTITY_UPDATED, actor=ACTOR, subject=identity.username,
                 details={"email": {"old": identity.email, "new": email}})
    identity.email = email


def _valid_email(address: str | None) -> str | None:
    if not address:
        return None
    try:
        return check_email(address)
    except InvalidInput:
        return None


def _issue(session: Session, *, now: dt.datetime, policy: LoginPolicy, identity: Identity, person: VerifiedSignIn,
           mfa: bool, source: str | None) -> IssuedToken:
    token = "gpt_" + secrets.token_urlsafe(32)
    expires_at = now + policy.token_ttl
    session.add(ApiToken(token_hash=token_digest(token), identity_id=identity.id, created_at=now,
                         expires_at=expires_at, without_mfa=not mfa))
    touch(identity, now)
    trail.record(session, now=now, action=Action.LOGIN_SUCCEEDED, actor=identity.username,
                 details={"method": "oidc", "issuer": person.issuer, "mfa": mfa, "amr": list(person.amr)[:10],
                          **({"acr": person.acr[:100]} if person.acr else {}),
                          **({"source": source} if source else {})})
    return IssuedToken(token, expires_at, identity)


def _refuse(session: Session, *, now: dt.datetime, reason: str, source: str | None, person: VerifiedSignIn | None,
            actor: str | None = None) -> NoReturn:
    """Audit the refusal with its reason and raise it. What was changed before (a person's roles taken away
    because their groups no longer give them) is kept: SignInRefused keeps the unit of work's changes."""
    details: dict[str, object] = {"method": "oidc", "reason": reason}
    if person is not None:
        details.update(issuer=person.issuer, subject=person.subject[:255])
    if source:
        details["source"] = source
    trail.record(session, now=now, action=Action.LOGIN_FAILED, outcome="failure",
                 actor=escape_controls(actor)[:64] if actor else None, details=details)
    raise SignInRefused(reason)

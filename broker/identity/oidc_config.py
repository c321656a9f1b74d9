"""The plant's identity provider as this broker is configured for it (GATEPASS_OIDC_*, read by assembly): the
issuer, this broker's client, which directory groups give which staff role at which site, and which
authentication methods count as a second factor. Checked when the settings are built, not at the first sign-in."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from broker.vocabulary import Role

# OpenID Connect is for the plant's own staff. Vendors keep their local accounts (password and one-time code):
# who may ask for access to the plant stays in the plant's hands, not in a company directory's.
STAFF_ROLES = (Role.SUPERVISOR, Role.SECURITY, Role.ADMIN)
# RFC 8176 authentication method references that mean a second factor was presented: "mfa" itself, a one-time
# password, proof of a hardware or software key. "pwd" alone is one factor.
DEFAULT_MFA_METHODS = ("mfa", "otp", "hwk", "swk")
# The issuer must be https (OpenID Connect Discovery §4.3 compares it byte for byte, and its keys come from it);
# plain http only on this machine, for a provider started beside the broker (tests, a lab).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# How far the provider's clock may be from ours when the ID token's times are checked (OpenID Connect Core
# §3.1.3.7 leaves "acceptable" to the relying party): a minute, not more.
DEFAULT_CLOCK_SKEW = dt.timedelta(seconds=60)
_SITE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class GroupRule:
    """Members of ``group`` get ``role``, at ``site`` (None: every site, for security and admins only)."""

    group: str
    role: str
    site: str | None = None


def parse_groups(text: str) -> tuple[GroupRule, ...]:
    """``GATEPASS_OIDC_GROUPS``: ``group=role[:site[,site…]]`` rules separated by ``;``, e.g.
    ``ot-sup-plant-a=supervisor:plant-a;ot-security=security``."""
    rules: list[GroupRule] = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        group, sep, target = part.rpartition("=")
        group, target = group.strip(), target.strip()
        if not sep or not group or not target:
            raise ValueError(f"GATEPASS_OIDC_GROUPS: '{part}' is not GROUP=ROLE or GROUP=ROLE:SITE (for example "
                             "ot-sup-plant-a=supervisor:plant-a)")
        role, _, sites = target.partition(":")
        names = [name.strip() for name in sites.split(",") if name.strip()] if sites else [None]
        rules.extend(GroupRule(group=group, role=role.strip(), site=name) for name in names)
    return tuple(rules)


def parse_methods(text: str) -> frozenset[str]:
    """``GATEPASS_OIDC_MFA``: the ``amr`` values (or ``acr`` values) that count as a second factor, comma-separated."""
    return frozenset(value.strip() for value in text.split(",") if value.strip())


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    # None: a public client, which proves itself by PKCE alone (RFC 7636); never printed.
    client_secret: str | None = field(default=None, repr=False)
    groups: tuple[GroupRule, ...] = ()
    mfa_methods: frozenset[str] = frozenset(DEFAULT_MFA_METHODS)
    # The ID token claim that lists the person's directory groups.
    groups_claim: str = "groups"
    clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW
    # Where people reach the broker's pages (GATEPASS_PUBLIC_URL), the redirect URI's base; None: the address
    # the browser used. Behind a TLS proxy it must be set, or the provider sees an http redirect URI.
    public_url: str | None = None
    scopes: tuple[str, ...] = ("openid", "profile", "email")

    def __post_init__(self) -> None:
        issuer = urlsplit(self.issuer)
        if issuer.scheme not in ("https", "http") or not issuer.hostname or issuer.query or issuer.fragment:
            raise ValueError(f"GATEPASS_OIDC_ISSUER '{self.issuer}' is not an issuer URL: give the provider's "
                             "https address, as its /.well-known/openid-configuration names it")
        if issuer.scheme == "http" and issuer.hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"GATEPASS_OIDC_ISSUER '{self.issuer}' is plain http: the provider's keys and answers "
                             "must come over https (http is accepted only for a provider on this machine)")
        if not self.client_id.strip():
            raise ValueError("GATEPASS_OIDC_CLIENT_ID is empty: give the client id the provider registered for "
                             "this broker")
        if not self.groups:
            raise ValueError("GATEPASS_OIDC_GROUPS maps no group to a role, so nobody could sign in with a company "
                             "account: give rules like ot-sup-plant-a=supervisor:plant-a;ot-security=security")
        for rule in self.groups:
            _check_rule(rule)
        if not self.mfa_methods:
            raise ValueError("GATEPASS_OIDC_MFA lists no method: approvers could never present a second factor "
                             f"(the default is {','.join(DEFAULT_MFA_METHODS)})")

    @property
    def issuer_id(self) -> str:
        """The issuer as identities are linked to it: without a trailing slash, so one provider is one name."""
        return self.issuer.rstrip("/")


def _check_rule(rule: GroupRule) -> None:
    if rule.role == Role.VENDOR:
        raise ValueError(f"GATEPASS_OIDC_GROUPS maps group '{rule.group}' to vendor: vendors keep their local "
                         "Gatepass accounts; company sign-in is for the plant's staff (supervisor, security, admin)")
    if rule.role not in STAFF_ROLES:
        raise ValueError(f"GATEPASS_OIDC_GROUPS maps group '{rule.group}' to '{rule.role}', which is not a role: "
                         f"choose one of {', '.join(STAFF_ROLES)}")
    if rule.site is None and rule.role == Role.SUPERVISOR:
        raise ValueError(f"GATEPASS_OIDC_GROUPS maps group '{rule.group}' to supervisor without a site: a "
                         f"supervisor approves for named sites (write {rule.group}=supervisor:SITE)")
    if rule.site is not None and not _SITE.match(rule.site):
        raise ValueError(f"GATEPASS_OIDC_GROUPS names the site '{rule.site}' for group '{rule.group}': site names "
                         "are lower-case letters, digits, '.', '_' and '-'")

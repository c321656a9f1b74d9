"""This broker as a relying party of the plant's OpenID provider: discovery, the authorization request (code flow
with PKCE, state and nonce), the code exchange, and every check of the ID token before anyone is signed in.

    BrokerError
    ├── ProviderUnavailable   502  the provider could not be reached, or answered something that is not OpenID
    └── LoginFailed           401
        └── SignInRefused     401  the answer does not prove who signed in (forged, for another client, expired,
                                   for another sign-in); the caller audits it

The pending sign-in (state, nonce, PKCE verifier, redirect URI, deadline) travels sealed by the broker's vault —
in a cookie for the web, in the CLI's hands for `gatepass login --oidc` — so any broker replica can finish it and
nobody can read the verifier or change the redirect URI on the way.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from broker.errors import BrokerError, LoginFailed
from broker.identity.oidc_config import OidcSettings
from broker.keys.vault import Vault, VaultError

# Asymmetric signatures only: "none" proves nothing, and HS256 keyed with the client secret would let anyone who
# holds that secret (every replica, a leaked config) mint tokens.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# A sign-in left half-way (the person closed the tab) is dead after this.
PENDING_TTL = dt.timedelta(minutes=10)
METADATA_TTL = 3600.0
# A token naming a key we do not know makes us fetch the keys again (the provider rotated them), at most this often:
# a stream of forged tokens with made-up key ids must not turn us into a load generator against the provider.
KEY_REFRESH_INTERVAL = 30.0
HTTP_TIMEOUT = 10.0


class ProviderUnavailable(BrokerError):
    status_code = 502
    code = "provider_unavailable"


class SignInRefused(LoginFailed):
    code = "sign_in_refused"


@dataclass(frozen=True)
class PendingSignIn:
    authorization_url: str
    state: str
    sealed: str


@dataclass(frozen=True)
class VerifiedSignIn:
    """What a checked ID token says about the person (OpenID Connect Core §2, §5.1; RFC 8176 for ``amr``)."""

    issuer: str
    subject: str
    preferred_username: str | None
    email: str | None
    groups: tuple[str, ...]
    amr: tuple[str, ...]
    acr: str | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class RelyingParty:
    """One per broker process (BrokerState.oidc): the provider's metadata and keys are cached here, thread-safely,
    since sign-ins run on the worker threads."""

    def __init__(self, settings: OidcSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self._transport = transport
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    # --- the authorization request ---------------------------------------------------------------------

    def begin(self, *, vault: Vault, now: dt.datetime, redirect_uri: str, purpose: str) -> PendingSignIn:
        """The provider's authorization URL for a new sign-in, and the sealed state to finish it with. ``purpose``
        ("web", "cli") is bound into the seal: one door's pending sign-in never opens the other."""
        metadata = self.metadata()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # RFC 7636 §4.1: 43 to 128 characters of high entropy
        url = prepare_grant_uri(
            metadata["authorization_endpoint"], self.settings.client_id, "code", redirect_uri=redirect_uri,
            scope=" ".join(self.settings.scopes), state=state, nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier), code_challenge_method="S256")
        pending = {"state": state, "nonce": nonce, "verifier": verifier, "redirect_uri": redirect_uri,
                   "deadline": int((now + PENDING_TTL).timestamp())}
        sealed = vault.seal(json.dumps(pending).encode(), purpose=_seal_purpose(purpose))
        return PendingSignIn(authorization_url=url, state=state, sealed=_b64(sealed))

    def finish(self, *, vault: Vault, now: dt.datetime, sealed: str, purpose: str, code: str,
               state: str) -> VerifiedSignIn:
        """Exchange the code the provider sent back (with the PKCE verifier) and check the ID token it answers."""
        pending = self._open(vault=vault, now=now, sealed=sealed, purpose=purpose)
        # RFC 6749 §10.12: the state ties this answer to the browser that asked; without it a stranger's code could
        # sign this browser into the stranger's account (login CSRF).
        if not hmac.compare_digest(str(pending["state"]).encode(), state.encode()):
            raise SignInRefused("sign-in refused: the provider's answer belongs to another sign-in (state does not "
                                "match); start again")
        tokens = self._exchange(code=code, redirect_uri=str(pending["redirect_uri"]),
                                verifier=str(pending["verifier"]))
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise SignInRefused("sign-in refused: the provider answered without an ID token (is the 'openid' scope "
                                "allowed for this client?)")
        return self.verify_id_token(id_token, now=now, nonce=str(pending["nonce"]))

    def _open(self, *, vault: Vault, now: dt.datetime, sealed: str, purpose: str) -> dict[str, Any]:
        try:
            pending = json.loads(vault.open(_unb64(sealed), purpose=_seal_purpose(purpose)))
        except (VaultError, ValueError):
            raise SignInRefused("sign-in refused: this sign-in was not started here or was changed on the way; "
                                "start again") from None
        if not isinstance(pending, dict) or int(pending.get("deadline", 0)) <= now.timestamp():
            raise SignInRefused("sign-in refused: the company sign-in took longer than "
                                f"{int(PENDING_TTL.total_seconds() // 60)} minutes; start again")
        return pending

    def _exchange(self, *, code: str, redirect_uri: str, verifier: str) -> dict[str, Any]:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier}
        auth: httpx.Auth | None = None
        if self.settings.client_secret:
            # RFC 6749 §2.3.1: client_secret_basic, each part form-encoded first.
            auth = httpx.BasicAuth(quote_plus(self.settings.client_id), quote_plus(self.settings.client_secret))
        else:
            form["client_id"] = self.settings.client_id  # a public client: PKCE is its proof (RFC 7636)
        answer = self._call("POST", self.metadata()["token_endpoint"], data=form, auth=auth)
        if answer.status_code != 200:
            error = _json_or_empty(answer).get("error", f"HTTP {answer.status_code}")
            raise SignInRefused(f"sign-in refused: the provider did not accept the sign-in's code ({str(error)[:80]}); "
                                "start again")
        body = _json_or_empty(answer)
        if not body:
            raise ProviderUnavailable("the identity provider's token endpoint answered something that is not JSON")
        return body

    # --- the ID token -------------------------------------------------------------------------------

    def verify_id_token(self, id_token: str, *, now: dt.datetime, nonce: str) -> VerifiedSignIn:
        """OpenID Connect Core §3.1.3.7, in order: signature by one of the provider's keys, issuer, audience (and
        authorized party), expiry and issue time within the allowed clock skew, and the nonce of this sign-in."""
        claims = self._signed_claims(id_token)
        settings = self.settings
        issuer = self.metadata()["issuer"]
        if claims.get("iss") != issuer:
            raise SignInRefused(f"sign-in refused: the ID token was issued by '{str(claims.get('iss'))[:100]}', not "
                                f"by {issuer}")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or settings.client_id not in audiences:
            raise SignInRefused("sign-in refused: the ID token is meant for another application (its audience is "
                                f"not {settings.client_id})")
        if len(audiences) > 1 and claims.get("azp") != settings.client_id:
            raise SignInRefused("sign-in refused: the ID token names several audiences but not this broker as the "
                                "party it was issued to (azp)")
        skew = settings.clock_skew.total_seconds()
        at = now.timestamp()
        expires, issued = claims.get("exp"), claims.get("iat")
        if not isinstance(expires, int | float) or not isinstance(issued, int | float):
            raise SignInRefused("sign-in refused: the ID token does not say when it was issued and when it expires")
        if expires + skew <= at:
            raise SignInRefused("sign-in refused: the ID token has expired (check the clocks of the provider and "
                                "this broker)")
        not_before = claims.get("nbf")
        if issued - skew > at or (isinstance(not_before, int | float) and not_before - skew > at):
            raise SignInRefused("sign-in refused: the ID token is dated in the future (check the clocks of the "
                                "provider and this broker)")
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise SignInRefused("sign-in refused: the ID token answers another sign-in (its nonce does not match); "
                                "start again")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise SignInRefused("sign-in refused: the ID token does not name the person (no usable 'sub')")
        return VerifiedSignIn(
            issuer=settings.issuer_id, subject=subject,
            preferred_username=_text(claims.get("preferred_username")), email=_text(claims.get("email")),
            groups=_texts(claims.get(settings.groups_claim)), amr=_texts(claims.get("amr")),
            acr=_text(claims.get("acr")))

    def _signed_claims(self, id_token: str) -> dict[str, Any]:
        for attempt in range(2):
            keys = self._signing_keys(refresh=attempt == 1)
            if keys is None:
                break
            try:
                token = jwt.decode(id_token, keys, algorithms=list(self._algorithms()))
            except InvalidKeyIdError:
                continue  # the provider may have rotated its keys: fetch them once more, then give up
            except BadSignatureError:
                raise SignInRefused("sign-in refused: the ID token's signature does not match the provider's "
                                    "keys") from None
            except (JoseError, ValueError) as error:
                raise SignInRefused("sign-in refused: the ID token is not a token signed by the provider "
                                    f"({error.__class__.__name__})") from None
            return dict(token.claims)
        raise SignInRefused("sign-in refused: the ID token is signed with a key the provider does not publish")

    def _algorithms(self) -> tuple[str, ...]:
        offered = self.metadata().get("id_token_signing_alg_values_supported") or ["RS256"]
        return tuple(alg for alg in SIGNING_ALGORITHMS if alg in offered) or ("RS256",)

    # --- the provider's metadata and keys, cached ------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is not None and time.monotonic() - self._metadata_at < METADATA_TTL:
                return self._metadata
        url = self.settings.issuer_id + "/.well-known/openid-configuration"
        answer = self._call("GET", url)
        metadata = _json_or_empty(answer) if answer.status_code == 200 else {}
        missing = [name for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
                   if not isinstance(metadata.get(name), str)]
        if missing:
            raise ProviderUnavailable(f"the identity provider at {self.settings.issuer} did not describe itself "
                                      f"(no {', '.join(missing)} at {url})")
        # OpenID Connect Discovery §4.3: the issuer it states must be the one we asked, or its tokens are not ours.
        if metadata["issuer"].rstrip("/") != self.settings.issuer_id:
            raise ProviderUnavailable(f"the identity provider at {url} calls itself '{metadata['issuer'][:100]}', "
                                      f"not {self.settings.issuer}: check GATEPASS_OIDC_ISSUER")
        with self._lock:
            self._metadata, self._metadata_at = metadata, time.monotonic()
        return metadata

    def _signing_keys(self, *, refresh: bool) -> KeySet | None:
        """The provider's published keys; ``refresh`` fetches them again unless that was done moments ago (then
        None: there is nothing new to try)."""
        with self._lock:
            fresh = time.monotonic() - self._keys_at < KEY_REFRESH_INTERVAL
            if self._keys is not None and (not refresh or fresh):
                return None if refresh else self._keys
        answer = self._call("GET", self.metadata()["jwks_uri"])
        try:
            keys = KeySet.import_key_set(answer.json()) if answer.status_code == 200 else None
        except (JoseError, ValueError, KeyError, TypeError):
            keys = None
        if keys is None:
            raise ProviderUnavailable("the identity provider's signing keys (jwks_uri) could not be read")
        with self._lock:
            self._keys, self._keys_at = keys, time.monotonic()
        return keys

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            with httpx.Client(transport=self._transport, timeout=HTTP_TIMEOUT) as client:
                return client.request(method, url, headers={"Accept": "application/json"}, **kwargs)
        except httpx.HTTPError as error:
            raise ProviderUnavailable(f"the identity provider at {self.settings.issuer} could not be reached "
                                      f"({error.__class__.__name__}); try again later") from None


def _seal_purpose(purpose: str) -> str:
    return f"oidc-pending-sign-in:{purpose}"


def _json_or_empty(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _texts(value: Any) -> tuple[str, ...]:
    """A claim that is a list of strings (or, from some providers, one string)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()

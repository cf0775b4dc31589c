"""Who is calling: bearer tokens checked at every RPC, and the identity oms processes carry.

Callers outside oms (storefront gateways, agents' tools, warehouses, back-office jobs) present a
signed JWT in the `authorization` metadata: ES256/RS256 verified against a JWKS (a file or an
https URL, as identity providers publish them), or HS256 with a shared secret for development.
The token names the principal (`sub`), its `roles`, and for warehouses the `locations` it may
act for (storefronts may name their `channels`).

oms processes authenticate to each other with service tokens of their own issuer
(`oms-internal`, HS256 with a secret only oms processes hold): the worker as the `workflow` role,
a service calling another as `service`. Those two roles are honoured only from that issuer, so no
external token, however it is signed, can drive an order's lifecycle.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import json
import os
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from oms_platform.errors import PermissionDenied
from oms_platform.files import create_once

STOREFRONT = "storefront"
AGENT = "agent"
WAREHOUSE = "warehouse"
MERCHANDISER = "merchandiser"
ADMIN = "admin"
WORKFLOW = "workflow"
SERVICE = "service"

EXTERNAL_ROLES = frozenset({STOREFRONT, AGENT, WAREHOUSE, MERCHANDISER, ADMIN})
INTERNAL_ROLES = frozenset({WORKFLOW, SERVICE})
ROLES = EXTERNAL_ROLES | INTERNAL_ROLES

INTERNAL_ISSUER = "oms-internal"
ASYMMETRIC_ALGORITHMS = ("ES256", "RS256")
METADATA_KEY = "authorization"
# Service tokens are short-lived and renewed this long before they expire.
SERVICE_TOKEN_TTL_SECONDS = 3600
SERVICE_TOKEN_RENEW_BEFORE_SECONDS = 300


class Unauthenticated(Exception):
    """The caller could not be identified; `reason` says why, for the caller to fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: who, in which roles, and for warehouses where."""

    subject: str
    roles: frozenset[str]
    locations: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    issuer: str = ""
    expires_at: float = 0.0

    @property
    def internal(self) -> bool:
        """An oms process (the worker or a service), not a caller from outside."""
        return self.issuer == INTERNAL_ISSUER

    def has_any(self, roles: Iterable[str]) -> bool:
        return not self.roles.isdisjoint(roles)

    def acts_for_every_location(self) -> bool:
        """Only a warehouse is confined to its own locations; agents, merchandisers, admins and
        oms processes see and act on every location's records (as the access table allows)."""
        return self.has_any({AGENT, MERCHANDISER, ADMIN, WORKFLOW, SERVICE})

    def may_act_for_location(self, location_id: str) -> bool:
        """Whether this caller may act on a record of location `location_id`."""
        return self.acts_for_every_location() or location_id in self.locations

    def sees_payment_tokens(self) -> bool:
        """Payment tokens in clear only for oms processes: the worker authorizes and captures
        with them, services pass them on. Every other caller reads them masked."""
        return self.has_any(INTERNAL_ROLES)

    def sees_every_channel(self) -> bool:
        """Storefronts are confined to their channels; every other role sees all of them."""
        return not self.roles <= {STOREFRONT}

    def may_see_channel(self, channel: str) -> bool:
        """Whether this caller may read or act on an order of `channel`."""
        return self.sees_every_channel() or channel in self.channels


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "oms_principal", default=None
)


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served (set by the server interceptor)."""
    principal = _current.get()
    if principal is None:
        raise RuntimeError("no authenticated principal: called outside an authenticated RPC")
    return principal


def bind_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    """Make `principal` the current caller in this context (the server interceptor does this)."""
    return _current.set(principal)


def require_channel(channel: str, what: str) -> None:
    """PERMISSION_DENIED unless the current caller may act on `what`, a record of `channel`
    (storefronts are confined to their channels)."""
    principal = current_principal()
    if not principal.may_see_channel(channel):
        mine = ", ".join(sorted(principal.channels)) or "no channel"
        raise PermissionDenied(
            f"{principal.subject} acts for channel {mine}; {what} is on channel {channel}"
        )


def require_location(location_id: str, what: str) -> None:
    """PERMISSION_DENIED unless the current caller may act on `what`, a record of location
    `location_id` (warehouses are confined to their locations)."""
    principal = current_principal()
    if not principal.may_act_for_location(location_id):
        mine = ", ".join(sorted(principal.locations)) or "no location"
        raise PermissionDenied(
            f"{principal.subject} acts for {mine}; {what} belongs to location {location_id}"
        )


def actor() -> str:
    """The recorded actor of a change: the authenticated principal's subject."""
    return current_principal().subject


# ---- verification ---------------------------------------------------------------------------


class _KeySource:
    """Public keys by key id, from a JWKS file (re-read when it changes) or an https URL."""

    def __init__(self, location: str) -> None:
        self._location = location
        self._client: jwt.PyJWKClient | None = None
        self._keys: dict[str, Any] = {}
        self._mtime = -1.0
        if location.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(location, cache_keys=True, lifespan=300)

    def key_for(self, token: str) -> Any:
        if self._client is not None:
            try:
                return self._client.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientError as error:
                raise Unauthenticated(f"no key to verify the token: {error}") from error
        kid = jwt.get_unverified_header(token).get("kid")
        keys = self._file_keys()
        if kid in keys:
            return keys[kid]
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        raise Unauthenticated(f"token signed with unknown key id {kid!r}")

    def _file_keys(self) -> dict[str, Any]:
        path = Path(self._location)
        try:
            mtime = path.stat().st_mtime
        except OSError as error:
            raise Unauthenticated("token verification keys are unavailable") from error
        if mtime != self._mtime:
            jwks = jwt.PyJWKSet.from_json(path.read_text())
            self._keys = {k.key_id or "": k.key for k in jwks.keys}
            self._mtime = mtime
        return self._keys


@dataclass
class Authenticator:
    """Verifies bearer tokens; remembers verified ones until they expire (verification of an
    ES256 signature costs more than many RPCs)."""

    issuer: str
    audience: str
    internal_secret: bytes
    jwks: str = ""
    hs256_secret: bytes = b""
    leeway_seconds: float = 30.0
    cache_size: int = 10_000
    _keys: _KeySource | None = field(default=None, init=False)
    _cache: OrderedDict[str, Principal] = field(default_factory=OrderedDict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        if not self.internal_secret:
            raise ValueError("the internal service-token secret is empty")
        if not self.jwks and not self.hs256_secret:
            raise ValueError(
                "no key to verify callers' tokens: set OMS_AUTH_JWKS (a JWKS file or URL) "
                "or, for development, OMS_AUTH_HS256_SECRET_FILE"
            )
        if self.jwks:
            self._keys = _KeySource(self.jwks)

    @classmethod
    def from_settings(cls, settings: Any) -> Authenticator:
        """The verifier configured by `OMS_AUTH_*` settings (the dev stack's keys by default)."""
        hs256 = settings.auth_hs256_secret_file
        return cls(
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            internal_secret=read_secret(settings.internal_secret_path),
            jwks=settings.auth_jwks_source,
            hs256_secret=read_secret(hs256) if hs256 else b"",
            leeway_seconds=settings.auth_leeway_seconds,
        )

    def authenticate_header(self, value: str | None) -> Principal:
        """The principal of an `authorization: Bearer <jwt>` metadata value."""
        if not value:
            raise Unauthenticated("no bearer token: send 'authorization: Bearer <token>'")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        return self.authenticate(token.strip())

    def authenticate(self, token: str) -> Principal:
        """Verify `token` (signature, expiry, issuer, audience) and return its principal."""
        now = time.time()
        with self._lock:
            cached = self._cache.get(token)
            if cached is not None:
                if cached.expires_at > now - self.leeway_seconds:
                    self._cache.move_to_end(token)
                    return cached
                del self._cache[token]
        principal = self._verify(token)
        with self._lock:
            self._cache[token] = principal
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            raise Unauthenticated(f"malformed token: {error}") from error
        issuer = unverified.get("iss")
        algorithm = header.get("alg")
        if issuer == INTERNAL_ISSUER:
            key: Any = self.internal_secret
            algorithms = ["HS256"]
            expected_issuer = INTERNAL_ISSUER
        elif issuer == self.issuer:
            expected_issuer = self.issuer
            if algorithm == "HS256":
                if not self.hs256_secret:
                    raise Unauthenticated("HS256 tokens are not accepted by this deployment")
                key, algorithms = self.hs256_secret, ["HS256"]
            elif algorithm in ASYMMETRIC_ALGORITHMS and self._keys is not None:
                key, algorithms = self._keys.key_for(token), [algorithm]
            else:
                raise Unauthenticated(f"token algorithm {algorithm!r} is not accepted")
        else:
            raise Unauthenticated(f"token issuer {issuer!r} is not trusted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=expected_issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthenticated("token expired") from error
        except jwt.InvalidAudienceError as error:
            raise Unauthenticated(f"token audience is not {self.audience!r}") from error
        except jwt.InvalidSignatureError as error:
            raise Unauthenticated("token signature is invalid") from error
        except jwt.PyJWTError as error:
            raise Unauthenticated(f"token rejected: {error}") from error
        return _principal_from_claims(claims, internal=expected_issuer == INTERNAL_ISSUER)


def _principal_from_claims(claims: dict[str, Any], internal: bool) -> Principal:
    roles = _string_set(claims.get("roles"), "roles")
    unknown = roles - ROLES
    if unknown:
        raise Unauthenticated(f"token carries unknown roles: {', '.join(sorted(unknown))}")
    if not roles:
        raise Unauthenticated("token carries no roles")
    if internal and not roles <= INTERNAL_ROLES:
        raise Unauthenticated("service tokens carry only the internal roles")
    if not internal and not roles.isdisjoint(INTERNAL_ROLES):
        raise Unauthenticated(
            f"roles {', '.join(sorted(roles & INTERNAL_ROLES))} are held only by oms processes"
        )
    return Principal(
        subject=str(claims["sub"]),
        roles=roles,
        locations=_string_set(claims.get("locations"), "locations"),
        channels=_string_set(claims.get("channels"), "channels"),
        issuer=str(claims["iss"]),
        expires_at=float(claims["exp"]),
    )


def _string_set(value: Any, claim: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise Unauthenticated(f"token claim {claim!r} must be a list of strings")


# ---- minting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenIssuer:
    """Signs tokens: the dev stack's issuer (`oms token issue`) or oms's internal one."""

    issuer: str
    audience: str
    key: Any
    algorithm: str
    key_id: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> TokenIssuer:
        """The development issuer whose public key the dev stack's JWKS holds."""
        path = Path(settings.auth_signing_key_path)
        if not path.exists():
            raise FileNotFoundError(
                f"no signing key at {path}: start the dev stack (`oms dev`) once, or set "
                "OMS_AUTH_SIGNING_KEY_FILE; production tokens come from your identity provider"
            )
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        return cls(
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            key=key,
            algorithm="ES256",
            key_id=_key_id(key.public_key()),
        )

    @classmethod
    def internal(cls, settings: Any) -> TokenIssuer:
        """oms's own issuer of service tokens (shared secret of the oms processes)."""
        return cls(
            issuer=INTERNAL_ISSUER,
            audience=settings.auth_audience,
            key=read_secret(settings.internal_secret_path),
            algorithm="HS256",
        )

    def issue(
        self,
        subject: str,
        roles: Iterable[str],
        *,
        locations: Iterable[str] = (),
        channels: Iterable[str] = (),
        ttl_seconds: float = 3600,
        now: float | None = None,
    ) -> str:
        """A signed token for `subject` in `roles`, valid for `ttl_seconds`."""
        issued = time.time() if now is None else now
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "roles": sorted(set(roles)),
            "iat": int(issued),
            "exp": int(issued + ttl_seconds),
            "jti": uuid.uuid4().hex,
        }
        if locations:
            claims["locations"] = sorted(set(locations))
        if channels:
            claims["channels"] = sorted(set(channels))
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers=headers)


class ServiceIdentity:
    """The token an oms process presents to the others, renewed before it expires."""

    def __init__(self, issuer: TokenIssuer, subject: str, role: str) -> None:
        if role not in INTERNAL_ROLES:
            raise ValueError(f"{role!r} is not an internal role")
        self._issuer, self._subject, self._role = issuer, subject, role
        self._token = ""
        self._renew_at = 0.0

    @classmethod
    def for_process(cls, settings: Any, subject: str, role: str) -> ServiceIdentity:
        return cls(TokenIssuer.internal(settings), subject, role)

    def __call__(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._token = self._issuer.issue(
                self._subject, [self._role], ttl_seconds=SERVICE_TOKEN_TTL_SECONDS, now=now
            )
            self._renew_at = now + SERVICE_TOKEN_TTL_SECONDS - SERVICE_TOKEN_RENEW_BEFORE_SECONDS
        return self._token


TokenSource = Callable[[], str]


def static_token(token: str) -> TokenSource:
    """A token source that always presents `token` (CLI, tests, a gateway's configured token)."""
    return lambda: token


ALL_CHANNELS = ("web", "marketplace", "store", "b2b", "agent")


def dev_caller(
    settings: Any,
    subject: str,
    role: str,
    *,
    channels: Iterable[str] = (),
    locations: Iterable[str] = (),
    ttl_seconds: float = 3600,
) -> TokenSource:
    """A token from the dev issuer (the CLI, the benches and the tests act as callers from
    outside, with a token like any other; nothing inside oms skips the check)."""
    issuer = TokenIssuer.from_settings(settings)
    return static_token(
        issuer.issue(
            subject, [role], channels=channels, locations=locations, ttl_seconds=ttl_seconds
        )
    )


def dev_persona(
    settings: Any,
    subject: str,
    role: str,
    *,
    channels: Iterable[str] | None = None,
    locations: Iterable[str] = (),
    ttl_seconds: float = 3600,
) -> TokenSource:
    """A token source for any `role` on a dev stack: internal roles get the service token oms
    processes mint for themselves, external ones a token from the dev issuer (storefronts on
    every channel unless `channels` is given). The tests, the fuzzer and the benches play
    their personas through this."""
    if role in INTERNAL_ROLES:
        return ServiceIdentity.for_process(settings, subject, role)
    if channels is None:
        channels = ALL_CHANNELS if role == STOREFRONT else ()
    return dev_caller(
        settings, subject, role, channels=channels, locations=locations, ttl_seconds=ttl_seconds
    )


# ---- keys -----------------------------------------------------------------------------------


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """A secret from a file (a mounted secret in production), surrounding whitespace removed."""
    try:
        return Path(path).read_bytes().strip()
    except OSError as error:
        raise FileNotFoundError(
            f"secret file {path} is missing: start the dev stack (`oms dev`) once, or mount it"
        ) from error


def _key_id(public_key: Any) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:12]).decode().rstrip("=")


def ensure_dev_keys(keys_dir: str | os.PathLike[str]) -> Path:
    """Create the dev stack's keys once: an ES256 signing key and its JWKS, and the internal
    service-token secret. Existing keys are kept, so tokens stay valid across restarts; of
    processes creating them at once, the first one's are kept."""
    directory = Path(keys_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    signing = directory / "issuer.pem"
    if not signing.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        create_once(
            signing,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    jwks_path = directory / "jwks.json"
    if not jwks_path.exists():
        private = serialization.load_pem_private_key(signing.read_bytes(), password=None)
        public = private.public_key()
        jwk = json.loads(ECAlgorithm.to_jwk(public))  # type: ignore[arg-type]
        jwk.update({"kid": _key_id(public), "use": "sig", "alg": "ES256"})
        create_once(jwks_path, json.dumps({"keys": [jwk]}, indent=2).encode(), 0o644)
    internal = directory / "internal.secret"
    if not internal.exists():
        create_once(internal, base64.urlsafe_b64encode(secrets.token_bytes(32)))
    return directory

"""Access tokens (JWT): signing keys, issuing, verification with pinned algorithms, JWKS."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from uuid6 import uuid7

from marketgraph.errors import DomainError, ErrorCode
from marketgraph.settings import ConfigError, Settings

LEEWAY_SECONDS = 10
MIN_SECRET_BYTES = 32
REQUIRED_CLAIMS = ("sub", "mkt", "roles", "jti", "iat", "exp", "iss", "aud")


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    algorithm: str
    key: Any  # bytes for HMAC, a public key object otherwise


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    jti: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified token says: whose it is, which market, what roles, until when."""

    subject: str
    market: str
    roles: frozenset[str]
    jti: str
    issued_at: float  # unix seconds
    expires_at: dt.datetime

    @property
    def issued_at_ms(self) -> int:
        """When the token was issued, to the millisecond: a UUIDv7 `jti` carries it (`iat`
        has whole seconds); a token with another kind of `jti` gives `iat`."""
        try:
            key = uuid.UUID(hex=self.jti)
        except ValueError:
            key = None
        if key is not None and key.version == 7:
            return key.int >> 80
        return int(self.issued_at * 1000)


class TokenService:
    """Issues and verifies access tokens with one signing key and any number of verifying keys.

    Each key is tied to one algorithm and found by `kid`; verification accepts
    only that key's algorithm, so `alg: none` and HS256-signed-with-the-public-key
    (key confusion) are rejected by construction.
    """

    def __init__(
        self,
        *,
        signing_key: Any,
        signing_kid: str,
        algorithm: str,
        verification_keys: list[VerificationKey],
        issuer: str,
        audience: str,
        ttl: int,
    ) -> None:
        self._signing_key = signing_key
        self._signing_kid = signing_kid
        self.algorithm = algorithm
        self._keys = {key.kid: key for key in verification_keys}
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        # Successful signature checks only (failures raise, and lru_cache keeps no result).
        self._verified = functools.lru_cache(maxsize=4096)(self._verify_signature)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenService:
        """RS256/EdDSA when key files are configured, else HS256 with JWT_SECRET.

        Development without JWT_SECRET generates one into DATA_DIR (kept across
        restarts); production refuses to start without a real secret.
        """
        if settings.jwt_private_key_file is not None:
            return cls._asymmetric(settings)
        secret = settings.jwt_secret.get_secret_value().encode() if settings.jwt_secret else None
        if secret is None:
            if settings.is_production:
                raise ConfigError("production needs JWT_SECRET (or JWT_PRIVATE_KEY_FILE) to be set")
            secret = development_secret(settings.data_dir, "jwt_secret")
        if settings.is_production and len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes in production")
        kid = "hs-" + hashlib.sha256(secret).hexdigest()[:16]
        return cls(
            signing_key=secret,
            signing_kid=kid,
            algorithm="HS256",
            verification_keys=[VerificationKey(kid, "HS256", secret)],
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl=settings.access_token_ttl,
        )

    @classmethod
    def _asymmetric(cls, settings: Settings) -> TokenService:
        assert settings.jwt_private_key_file is not None
        private = serialization.load_pem_private_key(
            settings.jwt_private_key_file.read_bytes(), password=None
        )
        algorithm = _algorithm_for(private)
        public_keys = [private.public_key()]
        if settings.jwt_public_key_file is not None:
            # One file may hold several PEM keys: the old ones still verify during rotation.
            public_keys += [
                serialization.load_pem_public_key(block)
                for block in _pem_blocks(settings.jwt_public_key_file.read_bytes())
            ]
        keys: dict[str, VerificationKey] = {}
        for public in public_keys:
            kid = key_thumbprint(public)
            keys[kid] = VerificationKey(kid, _algorithm_for(public), public)
        return cls(
            signing_key=private,
            signing_kid=key_thumbprint(public_keys[0]),
            algorithm=algorithm,
            verification_keys=list(keys.values()),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl=settings.access_token_ttl,
        )

    def issue(self, subject: str, market: str, roles: list[str]) -> AccessToken:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        expires = now + dt.timedelta(seconds=self.ttl)
        jti = uuid7().hex  # its first 48 bits: the time of issue in milliseconds
        claims = {
            "sub": subject,
            "mkt": market,
            "roles": sorted(roles),
            "jti": jti,
            "iat": now,
            "exp": expires,
            "iss": self.issuer,
            "aud": self.audience,
        }
        token = jwt.encode(
            claims, self._signing_key, algorithm=self.algorithm, headers={"kid": self._signing_kid}
        )
        return AccessToken(token, jti, expires)

    def verify(self, token: str) -> AccessClaims:
        """The token's claims, or `UNAUTHENTICATED` for anything short of a valid, current token.

        The signature check of a token is remembered (a client sends the same token with
        every request for up to its lifetime); the clock checks run every time.
        """
        claims = self._verified(token)
        now = dt.datetime.now(dt.UTC).timestamp()
        if claims.expires_at.timestamp() + LEEWAY_SECONDS <= now:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "The access token has expired")
        if claims.issued_at > now + LEEWAY_SECONDS:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "The access token is not valid")
        return claims

    def _verify_signature(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(str(header.get("kid")))
            if key is None:
                raise jwt.InvalidTokenError("unknown kid")
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS)},
            )
            roles = claims["roles"]
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise jwt.InvalidTokenError("roles")
            return AccessClaims(
                subject=str(claims["sub"]),
                market=str(claims["mkt"]),
                roles=frozenset(roles),
                jti=str(claims["jti"]),
                issued_at=float(claims["iat"]),
                expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC),
            )
        except jwt.ExpiredSignatureError:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "The access token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise DomainError(ErrorCode.UNAUTHENTICATED, "The access token is not valid") from None

    def jwks(self) -> dict[str, Any]:
        """Public keys for other services; empty with a shared secret (HS256)."""
        out = []
        for key in self._keys.values():
            if key.algorithm == "HS256":
                continue
            jwk = json.loads(_jwk_algorithm(key.key).to_jwk(key.key))
            out.append({**jwk, "kid": key.kid, "alg": key.algorithm, "use": "sig"})
        return {"keys": out}


def development_secret(data_dir: Path, name: str) -> bytes:
    """A random secret kept under DATA_DIR (mode 0600), made on first use."""
    path = data_dir / "secrets" / name
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_urlsafe(48).encode()
    path.touch(mode=0o600)
    path.write_bytes(secret)
    return secret


def key_thumbprint(public_key: Any) -> str:
    """RFC 7638 thumbprint of a public key: a stable `kid`."""
    jwk = json.loads(_jwk_algorithm(public_key).to_jwk(public_key))
    required = {
        "RSA": ("e", "kty", "n"),
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
    }[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _jwk_algorithm(key: Any) -> Any:
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return RSAAlgorithm
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return OKPAlgorithm
    return ECAlgorithm


def _algorithm_for(key: Any) -> str:
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return "RS256"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return "EdDSA"
    raise ConfigError("JWT_PRIVATE_KEY_FILE must hold an RSA (RS256) or Ed25519 (EdDSA) key")


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks, current = [], []
    for line in data.splitlines(keepends=True):
        current.append(line)
        if line.startswith(b"-----END"):
            blocks.append(b"".join(current))
            current = []
    return blocks

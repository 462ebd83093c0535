"""The `Authorization` header → a Principal: a verified access token or a live API key."""

from __future__ import annotations

import datetime as dt
import time
import uuid

from marketgraph.auth import api_keys
from marketgraph.auth.principal import Principal
from marketgraph.auth.tokens import TokenService
from marketgraph.db.databases import Databases
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id
from marketgraph.kv import KeyValueStore
from marketgraph.markets import MarketRegistry


def _revoked_key(jti: str) -> str:
    return f"revoked:{jti}"


async def revoke_access_token(kv: KeyValueStore, jti: str, expires_at: dt.datetime) -> None:
    """Refuse this token from now until it would have expired anyway."""
    remaining = (expires_at - dt.datetime.now(dt.UTC)).total_seconds()
    if remaining > 0:
        await kv.set(_revoked_key(jti), "1", remaining + 60)


def _user_cutoff_key(market: str, user_id: uuid.UUID) -> str:
    return f"revoked-before-ms:{market}:{user_id}"


async def revoke_user_tokens(
    kv: KeyValueStore, market: str, user_id: uuid.UUID, access_ttl: int
) -> None:
    """Refuse the user's access tokens issued before this millisecond (logout from all
    sessions); a sign-in right after the logout keeps working."""
    now_ms = time.time_ns() // 1_000_000
    await kv.set(_user_cutoff_key(market, user_id), str(now_ms), access_ttl + 60)


async def authenticate(
    header: str | None,
    *,
    tokens: TokenService,
    kv: KeyValueStore,
    databases: Databases,
    markets: MarketRegistry,
) -> Principal | None:
    """None without a header; a principal for good credentials; `UNAUTHENTICATED` otherwise.

    Bad credentials fail the request rather than falling back to anonymous, so
    a client never mistakes an expired session for an empty one.
    """
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        claims = tokens.verify(credentials)
        try:
            subject = decode_id(claims.subject, "User", field="sub")
        except DomainError:  # a bad credential, not bad input: the same answer as a bad token
            subject = None
        if subject is None or subject.market != claims.market or claims.market not in markets:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "The access token is not valid")
        revoked, cutoff = await kv.get_many(
            _revoked_key(claims.jti), _user_cutoff_key(claims.market, subject.key)
        )
        if revoked is not None or (cutoff is not None and claims.issued_at_ms < int(cutoff)):
            raise DomainError(ErrorCode.UNAUTHENTICATED, "The access token was revoked")
        return Principal(
            market=claims.market,
            roles=claims.roles,
            user_id=subject.key,
            token_id=claims.jti,
            token_expires_at=claims.expires_at,
        )
    if scheme.lower() == "apikey" and credentials:
        market = api_keys.market_of(credentials)
        if market not in markets:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "The API key is not valid")
        return await api_keys.authenticate(databases.store(market, "auth"), credentials)
    raise DomainError(
        ErrorCode.UNAUTHENTICATED, "Use `Authorization: Bearer <token>` or `ApiKey <key>`"
    )

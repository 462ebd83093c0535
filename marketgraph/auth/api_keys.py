"""API keys for server-to-server calls: shown once, stored hashed, scoped to one market.

A key reads `mg_<market>_<random>`: the market picks the auth store that holds
its hash, and the first characters stay visible as a prefix to tell keys apart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from marketgraph.auth.principal import ADMIN, API_KEY, Principal
from marketgraph.db.databases import Store
from marketgraph.db.models.auth import ApiKey
from marketgraph.db.models.base import new_id
from marketgraph.errors import DomainError, ErrorCode

PREFIX_LENGTH = 14  # "mg_kg_" plus eight random characters


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    id: uuid.UUID
    name: str
    key: str
    market: str


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def market_of(key: str) -> str:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "mg" or not parts[1].isalpha() or not parts[2]:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "The API key is not valid")
    return parts[1].lower()


async def create(auth: Store, name: str, created_by: uuid.UUID | None) -> CreatedApiKey:
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT, "Name keys with 1 to 100 characters", field="name"
        )
    market = auth.key.market
    key = f"mg_{market}_{secrets.token_urlsafe(32)}"
    key_id = new_id()
    async with auth.begin() as session:
        await session.execute(
            insert(ApiKey).values(
                id=key_id,
                name=name,
                prefix=key[:PREFIX_LENGTH],
                key_hash=key_hash(key),
                roles=[ADMIN, API_KEY],
                created_by=created_by,
            )
        )
    return CreatedApiKey(key_id, name, key, market)


async def revoke(auth: Store, key_id: uuid.UUID) -> bool:
    """Revoke a key; False when this store holds no such live key."""
    async with auth.begin() as session:
        result = await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=dt.datetime.now(dt.UTC))
            .returning(ApiKey.id)
        )
        return result.first() is not None


async def authenticate(auth: Store, key: str) -> Principal:
    """The principal of a live key, or `UNAUTHENTICATED`."""
    async with auth.connect() as conn:
        row = (
            await conn.execute(
                select(ApiKey.id, ApiKey.roles).where(
                    ApiKey.key_hash == key_hash(key), ApiKey.revoked_at.is_(None)
                )
            )
        ).one_or_none()
    if row is None:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "The API key is not valid")
    return Principal(market=auth.key.market, roles=frozenset(row.roles), api_key_id=row.id)

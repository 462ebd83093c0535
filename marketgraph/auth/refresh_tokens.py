"""Refresh tokens: opaque, single-use, rotated, stored as hashes in families.

A token reads `<market>.<random>` so refreshing finds its market's auth store
without any other routing. Presenting a token that was already used revokes its
whole family: either the client or a thief holds a copy, and neither should
keep a session.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from marketgraph.db.databases import Store
from marketgraph.db.models.auth import RefreshToken
from marketgraph.db.models.base import new_id
from marketgraph.errors import DomainError, ErrorCode


@dataclass(frozen=True, slots=True)
class IssuedRefreshToken:
    id: uuid.UUID
    token: str
    user_id: uuid.UUID
    family_id: uuid.UUID


def token_hash(token: str) -> str:
    # 256 random bits need no slow hash: SHA-256 cannot be brute-forced back.
    return hashlib.sha256(token.encode()).hexdigest()


def market_of(token: str) -> str:
    """The market code a refresh token starts with, or `UNAUTHENTICATED`."""
    market, dot, rest = token.partition(".")
    if not dot or not rest or not market.isalpha():
        raise DomainError(ErrorCode.UNAUTHENTICATED, "The refresh token is not valid")
    return market.lower()


async def issue(
    session: AsyncSession,
    market: str,
    user_id: uuid.UUID,
    ttl: int,
    family_id: uuid.UUID | None = None,
) -> IssuedRefreshToken:
    """A new refresh token for `user_id`, in a new family unless one is given."""
    token = f"{market}.{secrets.token_urlsafe(32)}"
    family = family_id or new_id()
    row_id = new_id()
    await session.execute(
        insert(RefreshToken).values(
            id=row_id,
            user_id=user_id,
            token_hash=token_hash(token),
            family_id=family,
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl),
        )
    )
    return IssuedRefreshToken(row_id, token, user_id, family)


async def rotate(auth: Store, token: str, ttl: int) -> IssuedRefreshToken:
    """Spend `token` and return its successor in the same family.

    The row is locked, so two concurrent uses of one token cannot both rotate:
    the second sees it used and revokes the family.
    """
    reused = False
    async with auth.begin() as session:
        row = (
            await session.execute(
                select(RefreshToken)
                .where(RefreshToken.token_hash == token_hash(token))
                .with_for_update()
            )
        ).scalar_one_or_none()
        now = dt.datetime.now(dt.UTC)
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "The refresh token is not valid")
        if row.used_at is not None:
            await _revoke_families(session, RefreshToken.family_id == row.family_id)
            reused = True
        else:
            successor = await issue(session, auth.key.market, row.user_id, ttl, row.family_id)
            row.used_at = now
            row.replaced_by = successor.id
    if reused:  # raised after the commit, so the family stays revoked
        raise DomainError(ErrorCode.UNAUTHENTICATED, "The refresh token was already used")
    return successor


async def revoke(auth: Store, token: str, *, all_sessions: bool) -> uuid.UUID | None:
    """Revoke the token's family (or every family of its user); return the user id if found."""
    async with auth.begin() as session:
        row = (
            await session.execute(
                select(RefreshToken.user_id, RefreshToken.family_id).where(
                    RefreshToken.token_hash == token_hash(token)
                )
            )
        ).one_or_none()
        if row is None:
            return None
        condition = (
            RefreshToken.user_id == row.user_id
            if all_sessions
            else RefreshToken.family_id == row.family_id
        )
        await _revoke_families(session, condition)
        user_id: uuid.UUID = row.user_id
        return user_id


async def revoke_all_for_user(auth: Store, user_id: uuid.UUID) -> None:
    async with auth.begin() as session:
        await _revoke_families(session, RefreshToken.user_id == user_id)


async def _revoke_families(session: AsyncSession, condition: object) -> None:
    await session.execute(
        update(RefreshToken)
        .where(condition, RefreshToken.revoked_at.is_(None))  # type: ignore[arg-type]
        .values(revoked_at=dt.datetime.now(dt.UTC))
    )

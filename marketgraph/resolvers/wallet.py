"""Wallets: balances, transactions, admin grants and payment-provider top-ups.

A top-up credits exactly once: its transaction row carries the provider's
event id under a unique index, and the balance moves only when that row was
inserted, in the same transaction — a concurrent duplicate waits on the index
and then inserts nothing.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from marketgraph.db.databases import Store
from marketgraph.db.models.app import Wallet, WalletTransaction, WalletTransactionKind
from marketgraph.db.models.auth import User
from marketgraph.db.models.base import new_id
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id
from marketgraph.resolvers.statements import one_per_key

if TYPE_CHECKING:
    from marketgraph.context import RequestContext

WALLET_COLUMNS = tuple(Wallet.__table__.c)
TRANSACTION_COLUMNS = tuple(WalletTransaction.__table__.c)
MAX_CREDIT = 10**12


async def load_transactions_by_id(
    conn: AsyncConnection, keys: list[uuid.UUID]
) -> list[Row[Any] | None]:
    return await one_per_key(conn, TRANSACTION_COLUMNS, WalletTransaction.id, keys)


async def lock_wallet(session: AsyncSession, user_id: uuid.UUID) -> Row[Any]:
    """The user's wallet row, locked (created empty if a crashed sign-up left none)."""
    await session.execute(
        insert(Wallet).values(id=new_id(), user_id=user_id).on_conflict_do_nothing()
    )
    return (
        await session.execute(
            select(*WALLET_COLUMNS).where(Wallet.user_id == user_id).with_for_update()
        )
    ).one()


async def credit(
    session: AsyncSession,
    user_id: uuid.UUID,
    amount_minor: int,
    kind: WalletTransactionKind,
    *,
    external_id: str | None = None,
    reason: str | None = None,
) -> Row[Any] | None:
    """Add to a wallet with its transaction; None when `external_id` was already credited.

    The balance moves by a relative UPDATE, atomic under its row lock, and only
    after the transaction row was inserted.
    """
    await session.execute(
        insert(Wallet).values(id=new_id(), user_id=user_id).on_conflict_do_nothing()
    )
    wallet_id = (
        await session.execute(select(Wallet.id).where(Wallet.user_id == user_id))
    ).scalar_one()
    transaction = (
        await session.execute(
            insert(WalletTransaction)
            .values(
                id=new_id(),
                wallet_id=wallet_id,
                user_id=user_id,
                kind=kind,
                amount_minor=amount_minor,
                external_id=external_id,
                reason=reason,
            )
            .on_conflict_do_nothing(
                index_elements=[WalletTransaction.external_id],
                index_where=text("external_id IS NOT NULL"),
            )
            .returning(*TRANSACTION_COLUMNS)
        )
    ).one_or_none()
    if transaction is None:
        return None
    await session.execute(
        update(Wallet)
        .where(Wallet.id == wallet_id)
        .values(balance_minor=Wallet.balance_minor + amount_minor, updated_at=func.now())
    )
    return transaction


async def user_exists(auth: Store, user_id: uuid.UUID) -> bool:
    async with auth.connect() as conn:
        return (await conn.scalar(select(User.id).where(User.id == user_id))) is not None


def check_credit(amount_minor: int, field: str) -> None:
    """A credit (a grant, a provider's top-up) is positive and at most MAX_CREDIT minor
    units: one rule for every way money enters a wallet."""
    if not 0 < amount_minor <= MAX_CREDIT:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT,
            f"{field} must be between 1 and {MAX_CREDIT}",
            field=field,
        )


async def grant_credit(
    ctx: RequestContext, user_gid: str, amount_minor: int, reason: str
) -> tuple[str, Row[Any]]:
    """Admin: credit a user's wallet (any market) with a GRANT; returns (market, row)."""
    ctx.require_admin()
    check_credit(amount_minor, "amountMinor")
    reason = reason.strip()
    if not 1 <= len(reason) <= 500:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT, "Give a reason of 1 to 500 characters", field="reason"
        )
    user = decode_id(user_gid, "User", field="userId")
    if user.market not in ctx.markets or not await user_exists(
        ctx.store_for(user.market, "auth"), user.key
    ):
        raise DomainError(ErrorCode.NOT_FOUND, "No such user", field="userId")
    async with ctx.store_for(user.market, "app").begin() as session:
        row = await credit(
            session, user.key, amount_minor, WalletTransactionKind.GRANT, reason=reason
        )
    assert row is not None  # only external ids can repeat
    ctx.forget_reads()
    return user.market, row


async def top_up(
    auth: Store, app: Store, user_id: uuid.UUID, amount_minor: int, event_id: str
) -> bool:
    """Credit a provider's top-up once; False when the event was already processed."""
    check_credit(amount_minor, "amount_minor")
    if not await user_exists(auth, user_id):
        raise DomainError(ErrorCode.NOT_FOUND, "No such user")
    async with app.begin() as session:
        row = await credit(
            session, user_id, amount_minor, WalletTransactionKind.TOP_UP, external_id=event_id
        )
    return row is not None

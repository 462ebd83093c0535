"""Orders: checkout and cancellation in one app-store transaction each, and the loaders' batches.

Lock order, the same in every writer so no two can deadlock: the user's cart
row, then product rows in primary-key order, then the wallet row. Cancellation
locks the order row first, then products, then the wallet.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from marketgraph.db.models.app import (
    CartItem,
    Order,
    OrderItem,
    OrderStatus,
    PaymentMethod,
    Product,
    Wallet,
    WalletTransaction,
    WalletTransactionKind,
    order_number_seq,
)
from marketgraph.db.models.base import new_id
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id, encode_id
from marketgraph.resolvers.cart import lock_cart
from marketgraph.resolvers.statements import one_per_key
from marketgraph.resolvers.wallet import lock_wallet

if TYPE_CHECKING:
    from marketgraph.context import RequestContext

ORDER_COLUMNS = tuple(Order.__table__.c)
ORDER_ITEM_COLUMNS = tuple(OrderItem.__table__.c)
MAX_IDEMPOTENCY_KEY = 128


async def load_orders_by_id(conn: AsyncConnection, keys: list[uuid.UUID]) -> list[Row[Any] | None]:
    return await one_per_key(conn, ORDER_COLUMNS, Order.id, keys)


def format_order_number(market: str, sequence: int) -> str:
    return f"{market.upper()}-{sequence:06d}"


async def _existing_order(
    session: AsyncSession, user_id: uuid.UUID, idempotency_key: str
) -> Row[Any] | None:
    return (
        await session.execute(
            select(*ORDER_COLUMNS).where(
                Order.user_id == user_id, Order.idempotency_key == idempotency_key
            )
        )
    ).one_or_none()


async def checkout(
    ctx: RequestContext, idempotency_key: str, payment_method: PaymentMethod
) -> Row[Any]:
    """Turn the viewer's cart into an order; a replayed key returns the first order unchanged.

    Stock and (for WALLET) the balance are checked under row locks; any refusal
    rolls the whole transaction back, so a failed checkout leaves the cart,
    stock and wallet as they were.
    """
    user_id = ctx.require_user()
    key = idempotency_key.strip()
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT,
            f"idempotencyKey must have 1 to {MAX_IDEMPOTENCY_KEY} characters",
            field="idempotencyKey",
        )
    market = ctx.market.code
    async with ctx.app.begin() as session:
        # The cart lock serialises a user's checkouts, so a concurrent replay waits here
        # and then finds the order its twin committed.
        cart_id = await lock_cart(session, user_id)
        existing = await _existing_order(session, user_id, key)
        if existing is not None:
            return existing
        items = (
            await session.execute(
                select(CartItem.product_id, CartItem.quantity)
                .where(CartItem.cart_id == cart_id)
                .order_by(CartItem.product_id)
            )
        ).all()
        if not items:
            raise DomainError(ErrorCode.BAD_USER_INPUT, "The cart is empty")
        products = {
            row.id: row
            for row in (
                await session.execute(
                    select(Product.id, Product.price_minor, Product.stock)
                    .where(Product.id.in_([item.product_id for item in items]))
                    .order_by(Product.id)
                    .with_for_update()
                )
            ).all()
        }
        short = [
            {
                "productId": encode_id("Product", market, item.product_id),
                "requested": item.quantity,
                "available": products[item.product_id].stock,
            }
            for item in items
            if products[item.product_id].stock < item.quantity
        ]
        if short:
            raise DomainError(
                ErrorCode.OUT_OF_STOCK, "Not enough stock for some items", products=short
            )
        total = sum(products[i.product_id].price_minor * i.quantity for i in items)
        for item in items:
            await session.execute(
                update(Product)
                .where(Product.id == item.product_id)
                .values(stock=Product.stock - item.quantity, updated_at=func.now())
            )
        sequence = (await session.execute(select(order_number_seq.next_value()))).scalar_one()
        order_id = new_id()
        status = OrderStatus.PAID if payment_method == PaymentMethod.WALLET else OrderStatus.PLACED
        await session.execute(
            insert(Order).values(
                id=order_id,
                number=format_order_number(market, sequence),
                user_id=user_id,
                status=status,
                payment_method=payment_method,
                total_minor=total,
                idempotency_key=key,
            )
        )
        await session.execute(
            insert(OrderItem),
            [
                {
                    "id": new_id(),
                    "order_id": order_id,
                    "product_id": item.product_id,
                    "quantity": item.quantity,
                    "unit_price_minor": products[item.product_id].price_minor,
                }
                for item in items
            ],
        )
        if payment_method == PaymentMethod.WALLET:
            await _pay_from_wallet(session, user_id, order_id, total)
        await session.execute(delete(CartItem).where(CartItem.cart_id == cart_id))
        order = (await session.execute(select(*ORDER_COLUMNS).where(Order.id == order_id))).one()
    _forget(ctx)
    return order


async def _pay_from_wallet(
    session: AsyncSession, user_id: uuid.UUID, order_id: uuid.UUID, total: int
) -> None:
    wallet = await lock_wallet(session, user_id)
    if wallet.balance_minor < total:
        raise DomainError(
            ErrorCode.INSUFFICIENT_FUNDS,
            "The wallet balance does not cover this order",
            balanceMinor=wallet.balance_minor,
            totalMinor=total,
        )
    await session.execute(
        update(Wallet)
        .where(Wallet.id == wallet.id)
        .values(balance_minor=Wallet.balance_minor - total, updated_at=func.now())
    )
    await session.execute(
        insert(WalletTransaction).values(
            id=new_id(),
            wallet_id=wallet.id,
            user_id=user_id,
            kind=WalletTransactionKind.PAYMENT,
            amount_minor=-total,
            order_id=order_id,
        )
    )


async def cancel_order(ctx: RequestContext, order_gid: str) -> Row[Any]:
    """Cancel the viewer's own order: restore stock, refund a wallet payment.

    Cancelling an already cancelled order returns it unchanged and refunds nothing.
    """
    user_id = ctx.require_user()
    parsed = decode_id(order_gid, "Order")
    if parsed.market != ctx.market.code:
        raise DomainError(ErrorCode.NOT_FOUND, "No such order")
    async with ctx.app.begin() as session:
        order = (
            await session.execute(
                select(*ORDER_COLUMNS)
                .where(Order.id == parsed.key, Order.user_id == user_id)
                .with_for_update()
            )
        ).one_or_none()
        if order is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No such order")
        if order.status == OrderStatus.CANCELLED:
            return order
        items = (
            await session.execute(
                select(OrderItem.product_id, func.sum(OrderItem.quantity).label("quantity"))
                .where(OrderItem.order_id == order.id)
                .group_by(OrderItem.product_id)
                .order_by(OrderItem.product_id)
            )
        ).all()
        await session.execute(
            select(Product.id)
            .where(Product.id.in_([i.product_id for i in items]))
            .order_by(Product.id)
            .with_for_update()
        )
        for item in items:
            await session.execute(
                update(Product)
                .where(Product.id == item.product_id)
                .values(stock=Product.stock + item.quantity, updated_at=func.now())
            )
        if order.status == OrderStatus.PAID and order.payment_method == PaymentMethod.WALLET:
            wallet = await lock_wallet(session, user_id)
            await session.execute(
                update(Wallet)
                .where(Wallet.id == wallet.id)
                .values(
                    balance_minor=Wallet.balance_minor + order.total_minor, updated_at=func.now()
                )
            )
            await session.execute(
                insert(WalletTransaction).values(
                    id=new_id(),
                    wallet_id=wallet.id,
                    user_id=user_id,
                    kind=WalletTransactionKind.REFUND,
                    amount_minor=order.total_minor,
                    order_id=order.id,
                )
            )
        cancelled = (
            await session.execute(
                update(Order)
                .where(Order.id == order.id)
                .values(status=OrderStatus.CANCELLED, updated_at=func.now())
                .returning(*ORDER_COLUMNS)
            )
        ).one()
    _forget(ctx)
    return cancelled


def _forget(ctx: RequestContext) -> None:
    """Drop what this request's loaders read before the write changed it."""
    ctx.forget_reads()

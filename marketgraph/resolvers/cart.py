"""Carts: the loaders' batches and the cart mutations.

Every cart mutation first locks the cart row, as checkout does, so an item
added while a checkout runs either makes it into that order or stays in the
cart — it is never emptied away unordered.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from marketgraph.db.models.app import Cart, CartItem, Product
from marketgraph.db.models.base import new_id
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id

if TYPE_CHECKING:
    from marketgraph.context import RequestContext

CART_COLUMNS = tuple(Cart.__table__.c)
CART_ITEM_COLUMNS = tuple(CartItem.__table__.c)
MAX_QUANTITY = 10_000


async def lock_cart(session: AsyncSession, user_id: uuid.UUID) -> uuid.UUID:
    """The user's cart id, row-locked (created if a crashed sign-up left none)."""
    await session.execute(
        insert(Cart).values(id=new_id(), user_id=user_id).on_conflict_do_nothing()
    )
    cart_id: uuid.UUID = (
        await session.execute(select(Cart.id).where(Cart.user_id == user_id).with_for_update())
    ).scalar_one()
    return cart_id


def _check_quantity(quantity: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= quantity <= MAX_QUANTITY:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT,
            f"quantity must be between {low} and {MAX_QUANTITY}",
            field="quantity",
        )


async def add_to_cart(ctx: RequestContext, product_gid: str, quantity: int) -> uuid.UUID:
    """Add `quantity` of a product of the viewer's market; returns the cart id."""
    user_id = ctx.require_user()
    _check_quantity(quantity, allow_zero=False)
    product = decode_id(product_gid, "Product", field="productId")
    if product.market != ctx.market.code:
        raise DomainError(ErrorCode.NOT_FOUND, "No such product in your market", field="productId")
    async with ctx.app.begin() as session:
        cart_id = await lock_cart(session, user_id)
        exists = await session.scalar(select(Product.id).where(Product.id == product.key))
        if exists is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No such product", field="productId")
        await session.execute(
            insert(CartItem)
            .values(id=new_id(), cart_id=cart_id, product_id=product.key, quantity=quantity)
            .on_conflict_do_update(
                index_elements=[CartItem.cart_id, CartItem.product_id],
                set_={
                    "quantity": func.least(CartItem.quantity + quantity, MAX_QUANTITY),
                    "updated_at": func.now(),
                },
            )
        )
    ctx.forget_reads()
    return cart_id


async def update_cart_item(ctx: RequestContext, item_gid: str, quantity: int) -> uuid.UUID:
    """Set an item's quantity; 0 removes it. Returns the cart id."""
    user_id = ctx.require_user()
    _check_quantity(quantity, allow_zero=True)
    item = decode_id(item_gid, "CartItem", field="itemId")
    if item.market != ctx.market.code:
        raise DomainError(ErrorCode.NOT_FOUND, "No such cart item", field="itemId")
    async with ctx.app.begin() as session:
        cart_id = await lock_cart(session, user_id)
        mine = CartItem.id == item.key, CartItem.cart_id == cart_id
        if quantity == 0:
            result = await session.execute(delete(CartItem).where(*mine).returning(CartItem.id))
        else:
            result = await session.execute(
                update(CartItem)
                .where(*mine)
                .values(quantity=quantity, updated_at=func.now())
                .returning(CartItem.id)
            )
        if result.first() is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No such cart item", field="itemId")
    ctx.forget_reads()
    return cart_id


async def remove_from_cart(ctx: RequestContext, item_gid: str) -> uuid.UUID:
    return await update_cart_item(ctx, item_gid, 0)

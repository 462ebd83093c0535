"""The cart in GraphQL: Cart, CartItem, and the cart mutations."""

from __future__ import annotations

import uuid
from typing import Any

import strawberry
from sqlalchemy import BigInteger, ColumnElement, FromClause, cast, func, select

from marketgraph import markets
from marketgraph.context import Info
from marketgraph.db.models.app import Cart as CartRow
from marketgraph.db.models.app import CartItem as CartItemRow
from marketgraph.db.models.app import Product as ProductRow
from marketgraph.policies import owner_or_admin
from marketgraph.reads import derive
from marketgraph.reads.derive import FromRow
from marketgraph.reads.spec import Column, Computed, IdOf, Lookup, TypeReads
from marketgraph.resolvers import cart
from marketgraph.schema.catalog import Product
from marketgraph.schema.common import Money


def _line_total(item: FromClause) -> ColumnElement[Any]:
    """Quantity × the product's current price."""
    product = ProductRow.__table__.alias()
    price = select(product.c.price_minor).where(product.c.id == item.c.product_id)
    return price.scalar_subquery() * item.c.quantity


def _item_count(cart: FromClause) -> ColumnElement[Any]:
    items = CartItemRow.__table__.alias()
    total = func.coalesce(func.sum(items.c.quantity), 0)
    return select(cast(total, BigInteger)).where(items.c.cart_id == cart.c.id).scalar_subquery()


def _subtotal(cart: FromClause) -> ColumnElement[Any]:
    """The sum of the line totals, in one statement with them (one snapshot)."""
    items = CartItemRow.__table__.alias()
    product = ProductRow.__table__.alias()
    total = func.coalesce(func.sum(product.c.price_minor * items.c.quantity), 0)
    return (
        select(cast(total, BigInteger))
        .select_from(items.join(product, product.c.id == items.c.product_id))
        .where(items.c.cart_id == cart.c.id)
        .scalar_subquery()
    )


CART_ITEM_READS = TypeReads(
    "CartItem",
    CartItemRow.__table__,  # type: ignore[arg-type]
    "app",
    {
        "id": IdOf("CartItem"),
        "quantity": Column("quantity"),
        "product": Lookup("Product", key="product_id", by="id", required="product"),
        "lineTotal": Computed(_line_total, empty=0, money=True),
    },
)

CART_READS = TypeReads(
    "Cart",
    CartRow.__table__,  # type: ignore[arg-type]
    "app",
    {
        # A user whose sign-up crashed before the cart was made has an empty one, whose id
        # is made of the user's.
        "id": IdOf("Cart"),
        "items": Lookup("CartItem", key="id", by="cart_id", many=True),
        "itemCount": Computed(_item_count, empty=0),
        "subtotal": Computed(_subtotal, empty=0, money=True),
    },
)


def empty_cart(user_id: uuid.UUID) -> dict[str, Any]:
    """The stand-in of a cart that was never made."""
    return {"id": user_id, "user_id": user_id}


USER_CART = Lookup("Cart", key="id", by="user_id", stand_in=empty_cart, policy=owner_or_admin)


@strawberry.type(description="One product line of a cart, priced at the product's current price.")
class CartItem(FromRow):
    READS = CART_ITEM_READS
    id: strawberry.ID
    quantity: int
    row: strawberry.Private[Any]
    market_data: strawberry.Private[markets.Market]
    product: Product = derive.field(CART_ITEM_READS, "product")
    line_total: Money = derive.field(
        CART_ITEM_READS, "lineTotal", "Quantity × the product's current price."
    )


@strawberry.type(description="The signed-in user's cart; checkout turns it into an order.")
class Cart(FromRow):
    READS = CART_READS
    id: strawberry.ID
    row: strawberry.Private[Any]
    market_data: strawberry.Private[markets.Market]
    items: list[CartItem] = derive.field(CART_READS, "items")
    item_count: int = derive.field(
        CART_READS, "itemCount", "Units in the cart, all items together."
    )
    subtotal: Money = derive.field(CART_READS, "subtotal", "The sum of the line totals.")


async def viewer_cart(info: Info) -> Cart:
    ctx = info.context
    cart: Cart = await derive.look_up(ctx, ctx.market, USER_CART, ctx.require_user())
    return cart


@strawberry.type
class CartMutations:
    @strawberry.mutation(description="Add a product of your market to your cart.")
    async def add_to_cart(
        self, info: Info, product_id: strawberry.ID, quantity: int | None = 1
    ) -> Cart:
        await cart.add_to_cart(info.context, str(product_id), 1 if quantity is None else quantity)
        return await viewer_cart(info)

    @strawberry.mutation(description="Set an item's quantity; 0 removes it.")
    async def update_cart_item(self, info: Info, item_id: strawberry.ID, quantity: int) -> Cart:
        await cart.update_cart_item(info.context, str(item_id), quantity)
        return await viewer_cart(info)

    @strawberry.mutation
    async def remove_from_cart(self, info: Info, item_id: strawberry.ID) -> Cart:
        await cart.remove_from_cart(info.context, str(item_id))
        return await viewer_cart(info)

"""The cart in GraphQL: Cart, CartItem, and the cart mutations."""

from __future__ import annotations

import uuid
from typing import Any

import strawberry
from sqlalchemy import Row

from marketgraph import markets
from marketgraph.context import Info
from marketgraph.ids import encode_id
from marketgraph.resolvers import cart
from marketgraph.schema.catalog import Product
from marketgraph.schema.common import Money, present


@strawberry.type(description="One product line of a cart, priced at the product's current price.")
class CartItem:
    id: strawberry.ID
    quantity: int
    row: strawberry.Private[Row[Any]]
    market_data: strawberry.Private[markets.Market]

    @strawberry.field
    async def product(self, info: Info) -> Product:
        row = await info.context.loaders_for(self.market_data.code).products_by_id.load(
            self.row.product_id
        )
        return Product.from_row(present(row, "product"), self.market_data)

    @strawberry.field(description="Quantity × the product's current price.")
    async def line_total(self, info: Info) -> Money:
        product = await info.context.loaders_for(self.market_data.code).products_by_id.load(
            self.row.product_id
        )
        return Money.of(present(product, "product").price_minor * self.quantity, self.market_data)

    @classmethod
    def from_row(cls, row: Row[Any], market: markets.Market) -> CartItem:
        return cls(
            id=strawberry.ID(encode_id("CartItem", market.code, row.id)),
            quantity=row.quantity,
            row=row,
            market_data=market,
        )


@strawberry.type(description="The signed-in user's cart; checkout turns it into an order.")
class Cart:
    id: strawberry.ID
    cart_id: strawberry.Private[uuid.UUID | None]
    market_data: strawberry.Private[markets.Market]

    async def _items(self, info: Info) -> list[Row[Any]]:
        if self.cart_id is None:
            return []
        loaders = info.context.loaders_for(self.market_data.code)
        return await loaders.cart_items_by_cart.load(self.cart_id)

    @strawberry.field
    async def items(self, info: Info) -> list[CartItem]:
        return [CartItem.from_row(row, self.market_data) for row in await self._items(info)]

    @strawberry.field(description="Units in the cart, all items together.")
    async def item_count(self, info: Info) -> int:
        return sum(row.quantity for row in await self._items(info))

    @strawberry.field(description="The sum of the line totals.")
    async def subtotal(self, info: Info) -> Money:
        rows = await self._items(info)
        loader = info.context.loaders_for(self.market_data.code).products_by_id
        products = await loader.load_many([row.product_id for row in rows])
        total = sum(
            present(p, "product").price_minor * row.quantity
            for p, row in zip(products, rows, strict=True)
        )
        return Money.of(total, self.market_data)

    @classmethod
    async def of_user(cls, info: Info, user_id: uuid.UUID, market: markets.Market) -> Cart:
        row = await info.context.loaders_for(market.code).carts_by_user.load(user_id)
        # A user whose sign-up crashed before the cart was made still has an (empty) cart.
        key = row.id if row is not None else user_id
        return cls(
            id=strawberry.ID(encode_id("Cart", market.code, key)),
            cart_id=row.id if row is not None else None,
            market_data=market,
        )


async def viewer_cart(info: Info) -> Cart:
    ctx = info.context
    return await Cart.of_user(info, ctx.require_user(), ctx.market)


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

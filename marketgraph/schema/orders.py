"""Orders in GraphQL: Order, OrderItem, the connection, checkout and cancelOrder."""

from __future__ import annotations

import datetime as dt
import enum
import operator
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from sqlalchemy import Row

from marketgraph import markets, policies
from marketgraph.context import Info
from marketgraph.db.models import app as models
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id, encode_id
from marketgraph.policies import owner_or_admin
from marketgraph.reads.spec import Column, IdOf, Lookup, MoneyOf, TypeReads
from marketgraph.resolvers import orders
from marketgraph.schema.catalog import Product
from marketgraph.schema.common import Money, Node, PageInfo, present

if TYPE_CHECKING:
    from marketgraph.schema.accounts import User


ORDER_ITEM_READS = TypeReads(
    "OrderItem",
    models.OrderItem.__table__,  # type: ignore[arg-type]
    "app",
    {
        "quantity": Column("quantity"),
        "unitPrice": MoneyOf(("unit_price_minor",)),
        "lineTotal": MoneyOf(("unit_price_minor", "quantity"), amount=operator.mul),
        "product": Lookup("Product", key="product_id", by="id", required="product"),
    },
)

ORDER_READS = TypeReads(
    "Order",
    models.Order.__table__,  # type: ignore[arg-type]
    "app",
    {
        "id": IdOf("Order"),
        "number": Column("number"),
        "status": Column("status"),
        "paymentMethod": Column("payment_method"),
        "total": MoneyOf(("total_minor",)),
        "createdAt": Column("created_at"),
        "user": Lookup("User", key="user_id", by="id", required="user"),
        "items": Lookup("OrderItem", key="id", by="order_id", many=True),
    },
)
USER_ORDERS = Lookup("Order", key="id", by="user_id", page=True, policy=owner_or_admin)


@strawberry.enum
class OrderStatus(enum.Enum):
    PLACED = "PLACED"
    PAID = "PAID"
    CANCELLED = "CANCELLED"


@strawberry.enum
class PaymentMethod(enum.Enum):
    WALLET = "WALLET"
    CASH_ON_DELIVERY = "CASH_ON_DELIVERY"


@strawberry.type(description="One line of an order, at the price when it was placed.")
class OrderItem:
    quantity: int
    unit_price: Money
    line_total: Money
    row: strawberry.Private[Row[Any]]
    market_data: strawberry.Private[markets.Market]

    @strawberry.field
    async def product(self, info: Info) -> Product:
        loader = info.context.loaders_for(self.market_data.code).products_by_id
        row = present(await loader.load(self.row.product_id), "product")
        return Product.from_row(row, self.market_data)

    @classmethod
    def from_row(cls, row: Row[Any], market: markets.Market) -> OrderItem:
        return cls(
            quantity=row.quantity,
            unit_price=Money.of(row.unit_price_minor, market),
            line_total=Money.of(row.unit_price_minor * row.quantity, market),
            row=row,
            market_data=market,
        )


@strawberry.type(description="A placed order; its lines and total never change after checkout.")
class Order(Node):
    number: str = strawberry.field(description='Human-readable, per market: "KG-000042".')
    status: OrderStatus
    payment_method: PaymentMethod
    total: Money
    created_at: dt.datetime
    row: strawberry.Private[Row[Any]]
    market_data: strawberry.Private[markets.Market]

    @strawberry.field
    async def user(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("marketgraph.schema.accounts")]:
        from marketgraph.schema.accounts import User

        loader = info.context.loaders_for(self.market_data.code).users_by_id
        return User.from_row(present(await loader.load(self.row.user_id), "user"), self.market_data)

    @strawberry.field
    async def items(self, info: Info) -> list[OrderItem]:
        loader = info.context.loaders_for(self.market_data.code).order_items_by_order
        return [OrderItem.from_row(r, self.market_data) for r in await loader.load(self.row.id)]

    @classmethod
    def from_row(cls, row: Row[Any], market: markets.Market) -> Order:
        return cls(
            id=strawberry.ID(encode_id("Order", market.code, row.id)),
            number=row.number,
            status=OrderStatus(row.status.value),
            payment_method=PaymentMethod(row.payment_method.value),
            total=Money.of(row.total_minor, market),
            created_at=row.created_at,
            row=row,
            market_data=market,
        )


@strawberry.type
class OrderEdge:
    cursor: str
    node: Order


@strawberry.type
class OrderConnection:
    edges: list[OrderEdge]
    page_info: PageInfo


async def order_by_id(info: Info, order_gid: str) -> Order:
    """The viewer's own order (any order for admins); anything else is `NOT_FOUND`."""
    ctx = info.context
    parsed = decode_id(order_gid, "Order")
    policies.reader(ctx)  # anonymous callers are told to sign in, whatever the id
    market = policies.reachable_market(ctx, parsed.market, "No such order")
    row = await ctx.loaders_for(market.code).orders_by_id.load(parsed.key)
    if row is None:
        raise DomainError(ErrorCode.NOT_FOUND, "No such order")
    policies.owner_or_admin(ctx, row.user_id, "No such order")
    return Order.from_row(row, market)


@strawberry.type
class OrderMutations:
    @strawberry.mutation(
        description="Turn the cart into an order. Replaying the same key returns the same order."
    )
    async def checkout(
        self,
        info: Info,
        idempotency_key: str,
        payment_method: PaymentMethod | None = PaymentMethod.WALLET,
    ) -> Order:
        method = models.PaymentMethod((payment_method or PaymentMethod.WALLET).value)
        row = await orders.checkout(info.context, idempotency_key, method)
        return Order.from_row(row, info.context.market)

    @strawberry.mutation(description="Cancel your order: stock returns, wallet payments refund.")
    async def cancel_order(self, info: Info, id: strawberry.ID) -> Order:
        row = await orders.cancel_order(info.context, str(id))
        return Order.from_row(row, info.context.market)

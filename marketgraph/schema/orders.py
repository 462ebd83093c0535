"""Orders in GraphQL: Order, OrderItem, the connection, checkout and cancelOrder."""

from __future__ import annotations

import datetime as dt
import enum
import operator
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from marketgraph import markets, policies
from marketgraph.context import Info
from marketgraph.db.models import app as models
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id
from marketgraph.policies import owner_or_admin
from marketgraph.reads import derive
from marketgraph.reads.derive import FromRow, register_connection
from marketgraph.reads.spec import Column, IdOf, Lookup, MoneyOf, TypeReads
from marketgraph.resolvers import orders
from marketgraph.schema.catalog import Product
from marketgraph.schema.common import Money, Node, PageInfo

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
class OrderItem(FromRow):
    READS = ORDER_ITEM_READS
    quantity: int
    unit_price: Money
    line_total: Money
    row: strawberry.Private[Any]
    market_data: strawberry.Private[markets.Market]
    product: Product = derive.field(ORDER_ITEM_READS, "product")


@strawberry.type(description="A placed order; its lines and total never change after checkout.")
class Order(Node, FromRow):
    READS = ORDER_READS
    number: str = strawberry.field(description='Human-readable, per market: "KG-000042".')
    status: OrderStatus
    payment_method: PaymentMethod
    total: Money
    created_at: dt.datetime
    row: strawberry.Private[Any]
    market_data: strawberry.Private[markets.Market]
    user: Annotated[User, strawberry.lazy("marketgraph.schema.accounts")] = derive.field(
        ORDER_READS, "user"
    )
    items: list[OrderItem] = derive.field(ORDER_READS, "items")


@strawberry.type
class OrderEdge:
    cursor: str
    node: Order


@strawberry.type
class OrderConnection:
    edges: list[OrderEdge]
    page_info: PageInfo


register_connection("Order", OrderConnection, OrderEdge)


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

"""The wallet in GraphQL: Wallet, WalletTransaction and its connection, grantCredit."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from marketgraph import markets
from marketgraph.context import Info
from marketgraph.db.models.app import Wallet as WalletRow
from marketgraph.db.models.app import WalletTransaction as TransactionRow
from marketgraph.policies import owner_or_admin
from marketgraph.reads import derive
from marketgraph.reads.derive import FromRow, register_connection
from marketgraph.reads.spec import Column, IdOf, Lookup, MoneyOf, TypeReads
from marketgraph.resolvers import wallet
from marketgraph.schema.common import Money, Node, PageInfo

if TYPE_CHECKING:
    from marketgraph.schema.orders import Order


def empty_wallet(user_id: uuid.UUID) -> dict[str, Any]:
    """The stand-in of a wallet that was never made: a zero balance."""
    return {"id": user_id, "user_id": user_id, "balance_minor": 0}


WALLET_READS = TypeReads(
    "Wallet",
    WalletRow.__table__,  # type: ignore[arg-type]
    "app",
    {"balance": MoneyOf(("balance_minor",))},
)
USER_WALLET = Lookup("Wallet", key="id", by="user_id", stand_in=empty_wallet, policy=owner_or_admin)

TRANSACTION_READS = TypeReads(
    "WalletTransaction",
    TransactionRow.__table__,  # type: ignore[arg-type]
    "app",
    {
        "id": IdOf("WalletTransaction"),
        "kind": Column("kind"),
        "amount": MoneyOf(("amount_minor",)),
        "externalId": Column("external_id"),
        "createdAt": Column("created_at"),
        "order": Lookup("Order", key="order_id", by="id"),
    },
)
USER_TRANSACTIONS = Lookup(
    "WalletTransaction", key="id", by="user_id", page=True, policy=owner_or_admin
)


@strawberry.enum
class WalletTransactionKind(enum.Enum):
    TOP_UP = "TOP_UP"
    PAYMENT = "PAYMENT"
    REFUND = "REFUND"
    GRANT = "GRANT"


@strawberry.type(description="A user's stored value, in the market's currency.")
class Wallet(FromRow):
    READS = WALLET_READS
    balance: Money
    row: strawberry.Private[Any]
    market_data: strawberry.Private[markets.Market]


@strawberry.type(description="One movement of a wallet's balance.")
class WalletTransaction(Node, FromRow):
    READS = TRANSACTION_READS
    kind: WalletTransactionKind
    amount: Money = strawberry.field(
        description="Positive adds to the balance, negative takes from it."
    )
    external_id: str | None = strawberry.field(
        description="The payment provider's session id, for TOP_UP."
    )
    created_at: dt.datetime
    row: strawberry.Private[Any]
    market_data: strawberry.Private[markets.Market]
    order: Annotated[Order, strawberry.lazy("marketgraph.schema.orders")] | None = derive.field(
        TRANSACTION_READS, "order", "The order paid or refunded, if any."
    )


@strawberry.type
class WalletTransactionEdge:
    cursor: str
    node: WalletTransaction


@strawberry.type
class WalletTransactionConnection:
    edges: list[WalletTransactionEdge]
    page_info: PageInfo


register_connection("WalletTransaction", WalletTransactionConnection, WalletTransactionEdge)


@strawberry.type
class WalletMutations:
    @strawberry.mutation(description="Admin: credit a user's wallet with a GRANT.")
    async def grant_credit(
        self, info: Info, user_id: strawberry.ID, amount_minor: int, reason: str
    ) -> WalletTransaction:
        market_code, row = await wallet.grant_credit(
            info.context, str(user_id), amount_minor, reason
        )
        return WalletTransaction.from_row(row, info.context.markets.require(market_code))

"""The app store: products, carts, orders, wallets and their transactions.

User ids here are plain UUID columns: users live in the auth store, possibly in
another database, so there is no cross-database foreign key.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ColumnElement,
    Enum,
    ForeignKey,
    Index,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    func,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from marketgraph.db.models.base import AppBase, created_at, updated_at, uuid_pk


class OrderStatus(enum.StrEnum):
    PLACED = "PLACED"
    PAID = "PAID"
    CANCELLED = "CANCELLED"


class PaymentMethod(enum.StrEnum):
    WALLET = "WALLET"
    CASH_ON_DELIVERY = "CASH_ON_DELIVERY"


class WalletTransactionKind(enum.StrEnum):
    TOP_UP = "TOP_UP"
    PAYMENT = "PAYMENT"
    REFUND = "REFUND"
    GRANT = "GRANT"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # VARCHAR + CHECK rather than a PostgreSQL enum type: no type to create per schema.
    return Enum(cls, name=name, native_enum=False, create_constraint=True, length=24)


# Numbers orders per market store: "KG-000042" reads better than a UUID on a receipt.
order_number_seq = Sequence("order_number_seq", metadata=AppBase.metadata)


# What catalog search matches: the words of the name and SKU, in the language-neutral
# `simple` configuration (no stemming, so Russian and English both work).
# Constants are literal (not bound) so queries repeat the index expression exactly.
def product_search_document(name: Any, sku: Any) -> ColumnElement[Any]:
    empty: ColumnElement[Any] = literal_column("''")
    space: ColumnElement[Any] = literal_column("' '")
    joined = func.coalesce(name, empty).op("||")(space).op("||")(func.coalesce(sku, empty))
    return func.to_tsvector(literal_column("'simple'::regconfig"), joined)


class Product(AppBase):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("price_minor >= 0", name="price_not_negative"),
        Index(
            "ix_products_search",
            product_search_document(text("name"), text("sku")),
            postgresql_using="gin",
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    price_minor: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class Cart(AppBase):
    __tablename__ = "carts"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class CartItem(AppBase):
    __tablename__ = "cart_items"
    __table_args__ = (
        UniqueConstraint("cart_id", "product_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    cart_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("carts.id", ondelete="CASCADE"), index=True
    )
    product_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    quantity: Mapped[int]
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class Order(AppBase):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        CheckConstraint("total_minor >= 0", name="total_not_negative"),
        # Keyset pages of a user's orders, newest first.
        Index("ix_orders_user_id_id", "user_id", "id"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    number: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[uuid.UUID]
    status: Mapped[OrderStatus] = mapped_column(_enum(OrderStatus, "order_status"))
    payment_method: Mapped[PaymentMethod] = mapped_column(_enum(PaymentMethod, "payment_method"))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class OrderItem(AppBase):
    __tablename__ = "order_items"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id"), index=True)
    quantity: Mapped[int]
    # The price when the order was placed; later price changes do not touch orders.
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)


class Wallet(AppBase):
    __tablename__ = "wallets"
    __table_args__ = (CheckConstraint("balance_minor >= 0", name="balance_not_negative"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    balance_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = updated_at()


class WalletTransaction(AppBase):
    __tablename__ = "wallet_transactions"
    __table_args__ = (
        # A payment provider's event credits once: its id is unique where given.
        Index(
            "uq_wallet_transactions_external_id",
            "external_id",
            unique=True,
            postgresql_where=text("external_id IS NOT NULL"),
        ),
        # Keyset pages of a user's transactions, newest first.
        Index("ix_wallet_transactions_user_id_id", "user_id", "id"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    # Null once the wallet is gone: an erased user's transactions are kept for accounting
    # (resolvers/erasure.py). Deleting a wallet detaches its ledger, never deletes it.
    wallet_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("wallets.id", ondelete="SET NULL"), index=True
    )
    user_id: Mapped[uuid.UUID]
    kind: Mapped[WalletTransactionKind] = mapped_column(
        _enum(WalletTransactionKind, "wallet_transaction_kind")
    )
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    external_id: Mapped[str | None] = mapped_column(String(255))
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("orders.id", ondelete="SET NULL"), index=True
    )
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created_at()

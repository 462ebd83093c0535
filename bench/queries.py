"""The benchmark's GraphQL documents, word for word as issue 6 gives them, and who sends each.

The runner sends them; the floor recognises them by their exact text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Caller = Literal["member", "admin", "anonymous"]

_USER_FIELDS = (
    "cart { items { quantity product { name price { amountMinor } } } } "
    "wallet { balance { amountMinor } } "
    "transactions(first: 10) { edges { node { amount { amountMinor } createdAt } } }"
)


def _users(first: int) -> str:
    return f'{{ users(market: "kg", first: {first}) {{ edges {{ node {{ {_USER_FIELDS} }} }} }} }}'


@dataclass(frozen=True, slots=True)
class Query:
    """One benchmark query: its name in the report, document, caller, and `first` of the
    top-level list (the floor needs it; the server reads it from the document)."""

    name: str
    document: str
    caller: Caller
    description: str
    first: int = 0


QUERIES: dict[str, Query] = {
    q.name: q
    for q in (
        Query(
            "Q1",
            f"{{ viewer {{ {_USER_FIELDS} }} }}",
            "member",
            "viewer: cart items + products, wallet, last 10 transactions",
        ),
        Query(
            "Q2",
            _users(50),
            "admin",
            "users(market: kg, first: 50), each with Q1's fields",
            first=50,
        ),
        Query(
            "Q2/10",
            _users(10),
            "admin",
            "Q2 with first: 10 (statements must equal Q2's)",
            first=10,
        ),
        Query(
            "Q3",
            "{ products(first: 50) { edges { node { id name price { amountMinor formatted } "
            "stock } } } }",
            "anonymous",
            "products(first: 50), anonymous, X-Market: kg",
            first=50,
        ),
        Query(
            "Q4",
            "{ viewer { orders(first: 10) { edges { node { number total { formatted } "
            "items { quantity product { name } } } } } } }",
            "member",
            "viewer: last 10 orders with items + products",
            first=10,
        ),
    )
}

BY_DOCUMENT: dict[str, Query] = {q.document: q for q in QUERIES.values()}

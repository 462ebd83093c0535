"""The benchmark's GraphQL documents, word for word as issue 6 gives them, and who sends each.

The runner sends them; the floor recognises them by their exact text. Each also has
the document PostGraphile, the benchmark's peer, answers with the same data (its
schema has other names, raw money columns and no `formatted`: bench/README.md).
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


# PostGraphile's names (pg-simplify-inflector) for the same fields, in the same order: the
# cart's items as a list (simpleCollections), the wallet's raw balance, the transactions
# by id descending like marketgraph's page.
_PEER_USER_FIELDS = (
    "cart { cartItemsList(orderBy: ID_ASC) { quantity product { name priceMinor } } } "
    "wallet { balanceMinor } "
    "walletTransactions(first: 10, orderBy: ID_DESC) { edges { node { amountMinor createdAt } } }"
)


def _users(first: int) -> str:
    return f'{{ users(market: "kg", first: {first}) {{ edges {{ node {{ {_USER_FIELDS} }} }} }} }}'


def _peer_users(first: int) -> str:
    return (
        f"{{ users(first: {first}, orderBy: ID_ASC) "
        f"{{ edges {{ node {{ {_PEER_USER_FIELDS} }} }} }} }}"
    )


@dataclass(frozen=True, slots=True)
class Query:
    """One benchmark query: its name in the report, document, caller, and `first` of the
    top-level list (the floor needs it; the server reads it from the document).

    `peer` is PostGraphile's document for the same data; `peer_only` names the fields of
    its answer that marketgraph's has no counterpart for (raw money where marketgraph
    selects only `formatted`), left out when the runner compares the two answers' values.
    """

    name: str
    document: str
    caller: Caller
    description: str
    peer: str
    first: int = 0
    peer_only: frozenset[str] = frozenset()


QUERIES: dict[str, Query] = {
    q.name: q
    for q in (
        Query(
            "Q1",
            f"{{ viewer {{ {_USER_FIELDS} }} }}",
            "member",
            "viewer: cart items + products, wallet, last 10 transactions",
            f"{{ viewer {{ {_PEER_USER_FIELDS} }} }}",
        ),
        Query(
            "Q2",
            _users(50),
            "admin",
            "users(market: kg, first: 50), each with Q1's fields",
            _peer_users(50),
            first=50,
        ),
        Query(
            "Q2/10",
            _users(10),
            "admin",
            "Q2 with first: 10 (statements must equal Q2's)",
            _peer_users(10),
            first=10,
        ),
        Query(
            "Q3",
            "{ products(first: 50) { edges { node { id name price { amountMinor formatted } "
            "stock } } } }",
            "anonymous",
            "products(first: 50), anonymous, X-Market: kg",
            "{ products(first: 50, orderBy: ID_ASC) { edges { node { id name priceMinor "
            "stock } } } }",
            first=50,
        ),
        Query(
            "Q4",
            "{ viewer { orders(first: 10) { edges { node { number total { formatted } "
            "items { quantity product { name } } } } } } }",
            "member",
            "viewer: last 10 orders with items + products",
            "{ viewer { orders(first: 10, orderBy: ID_DESC) { edges { node { number totalMinor "
            "orderItemsList(orderBy: ID_ASC) { quantity product { name } } } } } } }",
            first=10,
            peer_only=frozenset({"totalMinor"}),
        ),
    )
}

BY_DOCUMENT: dict[str, Query] = {q.document: q for q in QUERIES.values()}

"""The documents written for the planner, and the shapes every differential document takes.

`HAND` holds documents written for the planner: aliases, `__typename` everywhere, fragments
and inline fragments, @skip/@include, field merging, nested connections and paging, every
Node type by id (and ids of other markets, other types and none), `first` at and past its
bounds, search prefixes, preferences filters and the admin roots. The read documents of
the rest of the suite are not copied here — a copy goes stale — but collected from the
tests' source by `tests/planner/corpus.py`.

A `Doc` with `page` set is sent again with its `cursor_variable` = the `endCursor` found
at that path of its first answer (the planner-off answer), so real cursors are paged with.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marketgraph.ids import encode_id


@dataclass(frozen=True)
class Ref:
    """A value of the seeded data set, resolved at run time: `kind` is "Product.kg",
    "User.us", "Order.kg", "WalletTransaction.us", "Cart.kg", "CartItem.kg" (global ids),
    "phone.kg", or "cursor:Order.kg" (the cursor of that row)."""

    kind: str
    index: int = 0


@dataclass(frozen=True)
class Doc:
    """One document and the requests made of it: one per variable set, each as every
    caller."""

    name: str
    query: str
    variables: tuple[Mapping[str, Any] | None, ...] = (None,)  # one request per variable set
    operation_name: str | None = None
    page: tuple[str, ...] | None = None  # data path to a connection: page on with its endCursor
    get: bool = False  # sent as GET ?query=&variables= instead of a JSON POST
    cursor_variable: str = "after"  # the variable `page` sends the endCursor in


# Ids that are well-formed but name nothing the server serves, and ids that are not ids.
_KEY = uuid.UUID("0190b0c4-7a1e-7d3c-9f00-0123456789ab")
SPACESHIP = encode_id("Spaceship", "kg", _KEY)
ZZ_ORDER = encode_id("Order", "zz", _KEY)
ZZ_USER = encode_id("User", "zz", _KEY)
MISSING_PRODUCT = encode_id("Product", "kg", _KEY)
MISSING_ORDER = encode_id("Order", "kg", _KEY)
MISSING_USER = encode_id("User", "kg", _KEY)
MISSING_TX = encode_id("WalletTransaction", "us", _KEY)
BAD_IDS = ("garbage", "", str(_KEY), "VXNlcjprZzo", "bogus")

# --- documents written for the planner ---------------------------------------------------------

MONEY = "amountMinor currency formatted __typename"
PRODUCT_ALL = f"__typename id sku name description stock price {{ {MONEY} }} market {{ code }}"
MARKET_ALL = "__typename code name currency currencySymbol language phoneRegions"
ORDER_ALL = f"""
  __typename id number status paymentMethod createdAt total {{ {MONEY} }}
  items {{ __typename quantity unitPrice {{ {MONEY} }} lineTotal {{ {MONEY} }}
           product {{ {PRODUCT_ALL} }} }}
"""
TX_ALL = f"__typename id kind externalId createdAt amount {{ {MONEY} }}"
USER_SCALARS = """__typename id phone email firstName lastName timezone language userType
  preferences isActive createdAt lastLoginAt market { code currency }"""
USER_DEEP = f"""
  {USER_SCALARS}
  cart {{ __typename id itemCount subtotal {{ {MONEY} }}
         items {{ __typename id quantity lineTotal {{ {MONEY} }} product {{ {PRODUCT_ALL} }} }} }}
  wallet {{ __typename balance {{ {MONEY} }} }}
  orders(first: 2) {{
    __typename
    edges {{ __typename cursor node {{ {ORDER_ALL} user {{ id email }} }} }}
    pageInfo {{ __typename hasNextPage endCursor }}
  }}
  transactions(first: 3) {{
    __typename
    edges {{ __typename cursor
             node {{ {TX_ALL} order {{ id number status total {{ formatted }} }} }} }}
    pageInfo {{ __typename hasNextPage endCursor }}
  }}
"""
NODE_ALL = f"""
  __typename id
  ... on Product {{ {PRODUCT_ALL} }}
  ... on User {{ {USER_SCALARS} wallet {{ balance {{ amountMinor }} }} }}
  ... on Order {{ {ORDER_ALL} }}
  ... on WalletTransaction {{ {TX_ALL} order {{ number }} }}
"""
EVERY_NODE: tuple[Mapping[str, Any], ...] = (
    *(
        {"id": Ref(f"{t}.{m}", i)}
        for t in ("Product", "User", "Order")
        for m in ("kg", "us")
        for i in (0, 2)
    ),
    {"id": Ref("WalletTransaction.kg", 1)},
    {"id": Ref("WalletTransaction.kg", 7)},
    {"id": Ref("WalletTransaction.us", 5)},
    {"id": Ref("Cart.us", 0)},
    {"id": Ref("CartItem.us", 0)},
    {"id": SPACESHIP},
    {"id": ZZ_ORDER},
    {"id": ZZ_USER},
    {"id": MISSING_PRODUCT},
    {"id": MISSING_ORDER},
    {"id": MISSING_USER},
    {"id": MISSING_TX},
    *({"id": bad} for bad in BAD_IDS),
)

HAND: list[Doc] = [
    Doc("hand.typename_root", "{ __typename }"),
    Doc(
        "hand.typename_aliases",
        "{ __schema: __typename viewer { id __type: __typename t2: __typename } "
        "products(first: 1) { __typename edges { __typename } } }",
    ),
    Doc(
        "hand.aliases",
        """
{
  all: markets { c: code n: name }
  kg: market(code: "kg") { cur: currency sym: currencySymbol t: __typename }
  nope: market(code: "zz") { code }
  empty: market(code: "") { code }
  me: viewer { who: id kind: userType }
  cheap: products(first: 2) {
    e: edges { c: cursor n: node { i: id p: price { a: amountMinor f: formatted } } }
    pi: pageInfo { more: hasNextPage }
  }
  t: __typename
}
""",
    ),
    Doc("hand.markets_all", f"{{ markets {{ {MARKET_ALL} }} }}"),
    Doc(
        "hand.market_by_code",
        f"query ($code: ID!) {{ market(code: $code) {{ {MARKET_ALL} }} }}",
        ({"code": "kg"}, {"code": "us"}, {"code": "US"}, {"code": "zz"}, {"code": ""}),
    ),
    Doc("hand.viewer_deep", f"{{ __typename viewer {{ {USER_DEEP} }} }}"),
    Doc(
        "hand.viewer_deep.get",
        "{ viewer { id email cart { itemCount subtotal { formatted } } "
        "transactions(first: 2) { edges { node { kind amount { formatted } } } } } }",
        get=True,
    ),
    Doc(
        "hand.products.get",
        "query ($m: ID, $s: String) { products(market: $m, search: $s) "
        "{ edges { node { sku name price { formatted } } } } }",
        ({"m": "kg", "s": "чай"}, {"m": "us"}, {"m": "zz"}),
        get=True,
    ),
    Doc(
        "hand.fragments",
        """
query Fragments {
  viewer { ...UserBits cart { ...CartBits } }
  products(first: 3) { edges { node { ...ProductBits } } }
}
fragment MoneyBits on Money { amountMinor formatted }
fragment ProductBits on Product { id name price { ...MoneyBits } ...on Product { stock } }
fragment CartBits on Cart {
  itemCount subtotal { ...MoneyBits } items { quantity product { ...ProductBits } }
}
fragment UserBits on User { id ...NodeBits email wallet { balance { ...MoneyBits currency } } }
fragment NodeBits on Node { id __typename }
""",
    ),
    Doc(
        "hand.node_every_type",
        f"query ($id: ID!) {{ node(id: $id) {{ {NODE_ALL} }} }}",
        EVERY_NODE,
    ),
    Doc(
        "hand.node_fragments",
        """
query ($id: ID!) {
  node(id: $id) {
    ...NodeId
    ... on Product { ...P }
    ... on User { id market { code } }
    ... { __typename }
    ... on Order { number items { product { ...P } } }
  }
}
fragment NodeId on Node { id }
fragment P on Product { name sku }
""",
        EVERY_NODE[:14],
    ),
    Doc(
        "hand.product_by_id",
        f"query ($id: ID!) {{ product(id: $id) {{ {PRODUCT_ALL} market {{ {MARKET_ALL} }} }} }}",
        (
            {"id": Ref("Product.kg", 1)},
            {"id": Ref("Product.us", 0)},
            {"id": Ref("User.kg", 0)},
            {"id": MISSING_PRODUCT},
            {"id": encode_id("Product", "zz", _KEY)},
            *({"id": bad} for bad in BAD_IDS),
        ),
    ),
    Doc(
        "hand.order_by_id",
        f"query ($id: ID!) {{ order(id: $id) {{ {ORDER_ALL} user {{ {USER_SCALARS} }} }} }}",
        (
            {"id": Ref("Order.kg", 0)},
            {"id": Ref("Order.kg", 1)},
            {"id": Ref("Order.kg", 2)},
            {"id": Ref("Order.kg", 4)},
            {"id": Ref("Order.us", 0)},
            {"id": Ref("Product.kg", 0)},
            {"id": ZZ_ORDER},
            {"id": MISSING_ORDER},
            {"id": "garbage"},
        ),
    ),
    Doc(
        "hand.order_user_deep",
        "query ($id: ID!) { order(id: $id) { number user { id cart { itemCount } "
        "orders(first: 1) { edges { node { number } } } } } }",
        ({"id": Ref("Order.kg", 0)}, {"id": Ref("Order.us", 3)}),
    ),
    Doc(
        "hand.skip_include_literals",
        """
{
  markets { code name @skip(if: true) currency @include(if: false) language @include(if: true) }
  viewer @skip(if: false) { id email @skip(if: true) }
  products(first: 2) @include(if: false) { edges { cursor } }
  more: products(first: 2) {
    edges { node { ... on Product @include(if: true) { name } ... @skip(if: true) { sku } } }
  }
}
""",
    ),
    Doc(
        "hand.skip_include_variables",
        """
query ($a: Boolean!, $b: Boolean = false, $first: Int = 2) {
  viewer {
    id @include(if: $a)
    email @skip(if: $a)
    cart @include(if: $b) { itemCount }
    orders(first: $first) @skip(if: $b) { edges { node { number @include(if: $a) status } } }
    ...Tx @include(if: $a)
  }
  products(first: $first) { edges { node { name @skip(if: $b) sku @include(if: $b) } } }
}
fragment Tx on User { transactions(first: $first) { edges { node { kind } } } }
""",
        ({"a": True}, {"a": False}, {"a": True, "b": True}, {"a": False, "b": True, "first": 1}),
    ),
    Doc(
        "hand.merging",
        """
{
  viewer {
    id
    cart { items { id } }
    cart { items { quantity product { name } } itemCount }
    transactions(first: 2) { edges { node { id } } }
    transactions(first: 2) {
      pageInfo { hasNextPage } edges { cursor node { kind amount { amountMinor } } }
    }
    ... on User { id email cart { subtotal { formatted } } }
    ...More
  }
  products(first: 2) { edges { node { id } } }
  products(first: 2) { edges { node { name price { currency } } } pageInfo { endCursor } }
}
fragment More on User { wallet { balance { amountMinor } } wallet { balance { formatted } } }
""",
    ),
    Doc(
        "hand.same_field_two_aliases",
        """
{
  a: products(first: 1) { edges { node { id name } } }
  b: products(first: 3, market: "us") { edges { node { id name } } }
  viewer {
    recent: transactions(first: 1) { edges { node { kind } } }
    older: transactions(first: 4) { edges { node { kind createdAt } } }
    o1: orders(first: 1) {
      edges { node { number a: total { amountMinor } b: total { formatted } } }
    }
  }
}
""",
    ),
    Doc(
        "hand.users_nested_pages",
        f"""
query ($market: ID!, $first: Int, $after: String) {{
  users(market: $market, first: $first, after: $after) {{
    __typename
    edges {{ __typename cursor node {{ {USER_DEEP} }} }}
    pageInfo {{ __typename hasNextPage endCursor }}
  }}
}}
""",
        ({"market": "kg", "first": 3}, {"market": "us", "first": 2}, {"market": "us"}),
        page=("users",),
    ),
    Doc(
        "hand.nested_after",
        """
query ($after: String, $first: Int) {
  users(market: "kg", first: 4) {
    edges { node {
      id
      transactions(first: $first, after: $after) {
        edges { cursor node { kind amount { amountMinor } } }
        pageInfo { hasNextPage endCursor }
      }
      orders(first: 1, after: $after) { edges { cursor node { number } } pageInfo { hasNextPage } }
    } }
  }
  viewer { transactions(first: $first, after: $after) { edges { node { kind } } } }
}
""",
        (
            {"after": Ref("cursor:WalletTransaction.kg", 6), "first": 2},
            {"after": Ref("cursor:WalletTransaction.kg", 14), "first": 1},
            {"after": Ref("cursor:Order.kg", 1)},
            {"after": Ref("cursor:Order.kg", 5), "first": 0},
        ),
    ),
    Doc(
        "hand.users_preferences",
        "query ($market: ID!, $p: JSON) { users(market: $market, preferences: $p) "
        "{ edges { node { email preferences firstName } } pageInfo { hasNextPage } } }",
        (
            {"market": "kg", "p": {"notifications": {"sms": True}}},
            {"market": "us", "p": {"nested": {"deep": {"x": 1.5}}}},
            {"market": "kg", "p": {"tags": ["чай"]}},
            {"market": "kg", "p": {"unicode": "привет 👋"}},
            {"market": "kg", "p": {"nope": 1}},
            {"market": "kg", "p": "text"},
            {"market": "kg", "p": 3},
            {"market": "kg", "p": None},
            {"market": "KG"},
        ),
    ),
    Doc(
        "hand.users_preferences_literal",
        '{ users(market: "kg", first: 4, preferences: {theme: "dark"}) '
        "{ edges { node { id preferences } } } }",
    ),
    Doc(
        "hand.viewer_orders_pages",
        "query ($first: Int, $after: String) { viewer { orders(first: $first, after: $after) "
        f"{{ edges {{ cursor node {{ {ORDER_ALL} }} }} "
        "pageInfo { hasNextPage endCursor } } } }",
        ({"first": 1}, {"first": 2}, {"first": 0}),
        page=("viewer", "orders"),
    ),
    Doc(
        "hand.viewer_transactions_pages",
        "query ($first: Int, $after: String) { viewer { transactions(first: $first, after: $after) "
        f"{{ edges {{ cursor node {{ {TX_ALL} order {{ number }} }} }} "
        "pageInfo { hasNextPage endCursor } } } }",
        ({"first": 1}, {"first": 3}, {"first": 100}),
        page=("viewer", "transactions"),
    ),
    Doc(
        "hand.products_pages",
        "query ($m: ID, $first: Int, $after: String, $s: String) "
        "{ products(market: $m, first: $first, after: $after, search: $s) "
        f"{{ edges {{ cursor node {{ {PRODUCT_ALL} }} }} "
        "pageInfo { hasNextPage endCursor } } }",
        (
            {"first": 2},
            {"m": "us", "first": 1},
            {"m": "kg", "first": 1, "s": "чай"},
            {"m": "kg", "first": 1, "s": "TEA-0"},
            {"m": "us", "first": 2, "s": "tea"},
        ),
        page=("products",),
    ),
    Doc(
        "hand.first_bounds",
        """
query ($first: Int) {
  products(first: $first) { edges { cursor } pageInfo { hasNextPage endCursor } }
}
""",
        tuple({"first": f} for f in (0, 1, 100, 101, -1, 1000, None, 2**31 - 1)),
    ),
    Doc(
        "hand.first_bounds_nested",
        """
query ($first: Int) {
  viewer {
    orders(first: $first) { edges { cursor } }
    transactions(first: $first) { pageInfo { hasNextPage } }
  }
}
""",
        tuple({"first": f} for f in (0, 3, 101, -1)),
    ),
    Doc(
        "hand.first_bounds_literals",
        "{ products(first: 0) { edges { cursor } pageInfo { hasNextPage endCursor } } "
        "viewer { transactions(first: 101) { edges { cursor } } } }",
    ),
    Doc(
        "hand.bad_after",
        "query ($a: String) { products(after: $a) { edges { cursor } } viewer { id } }",
        ({"a": "not a cursor"}, {"a": ""}, {"a": "AAAA"}, {"a": Ref("cursor", 0)}),
    ),
    Doc(
        "hand.search_literals",
        """
{
  sku: products(search: "TEA-00") { edges { node { sku } } }
  skuLower: products(search: "tea-010") { edges { node { sku } } }
  cyr: products(search: "Чай") { edges { node { name } } }
  cyrUpper: products(search: "КРУЖ") { edges { node { name } } }
  two: products(search: "чай зел") { edges { node { name } } }
  yo: products(search: "мёд") { edges { node { name } } }
  us: products(market: "us", search: "Пря") { edges { node { name price { formatted } } } }
  nothing: products(search: "") { edges { node { name } } }
  spaces: products(search: "   ") { edges { node { name } } }
  punct: products(search: "&|!():*") { edges { node { name } } }
}
""",
    ),
    Doc(
        "hand.market_stats",
        f"""
{{
  marketStats {{
    __typename
    market {{ {MARKET_ALL} }}
    users orders
    revenue {{ {MONEY} }}
    walletBalances {{ {MONEY} }}
  }}
}}
""",
    ),
    Doc(
        "hand.user_by_phone",
        f"query ($phone: String!) {{ userByPhone(phone: $phone) {{ {USER_DEEP} }} }}",
        (
            {"phone": Ref("phone.kg", 0)},
            {"phone": Ref("phone.kg", 3)},
            {"phone": Ref("phone.us", 1)},
            {"phone": "+996700000000"},
            {"phone": "not a phone"},
            {"phone": ""},
        ),
    ),
    Doc(
        "hand.admin_roots_mixed",
        """
{
  markets { code }
  marketStats { market { code } users }
  users(market: "us", first: 2) { edges { node { id } } }
  products(first: 1) { edges { node { id } } }
}
""",
    ),
    Doc(
        "hand.many_roots",
        """
query Many($id: ID!, $pid: ID!) {
  viewer { id wallet { balance { formatted } } }
  node(id: $id) { id ... on Order { number } }
  product(id: $pid) { name }
  market(code: "us") { name }
  products(first: 1, market: "us") { pageInfo { hasNextPage } }
}
query Other { markets { code } }
""",
        (
            {"id": Ref("Order.kg", 0), "pid": Ref("Product.us", 1)},
            {"id": Ref("Product.kg", 0), "pid": Ref("Product.kg", 1)},
            {"id": Ref("User.kg", 0), "pid": "garbage"},
        ),
        operation_name="Many",
    ),
    Doc(
        "hand.operation_name_other",
        "query Many { viewer { id } } query Other { markets { code } }",
        operation_name="Other",
    ),
    Doc(
        "hand.cart_line_totals",
        "{ viewer { cart { items { product { id price { amountMinor } stock } "
        "lineTotal { amountMinor currency formatted } quantity } subtotal { currency } } } }",
    ),
    Doc(
        "hand.transaction_orders",
        "{ viewer { transactions(first: 20) { edges { node { kind externalId "
        "order { id status paymentMethod items { lineTotal { formatted } product { name } } "
        "user { id } } } } } } }",
    ),
    # Invalid requests: both paths leave them to Strawberry; the answers must still agree.
    Doc("hand.invalid.unknown_field", "{ viewer { nope } }"),
    Doc("hand.invalid.syntax", "{ viewer { id "),
    Doc(
        "hand.invalid.variable_type",
        "query ($first: Int) { products(first: $first) { edges { cursor } } }",
        ({"first": "ten"}, {"first": 1.5}, {"first": 2**40}),
    ),
    Doc(
        "hand.invalid.missing_variable",
        "query ($id: ID!) { node(id: $id) { id } }",
        ({},),
    ),
    Doc("hand.invalid.no_operation", "query A { markets { code } } query B { viewer { id } }"),
]

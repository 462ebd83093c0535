"""The floor: the benchmark's queries answered by a raw ASGI app with a plain asyncpg pool.

    python -m bench.floor --port 8100 [--workers 1]      (DATABASE_URL, JWT_SECRET from the env)

No Starlette, Strawberry, graphql-core or SQLAlchemy: it recognises the
benchmark's documents by their exact text (`bench.queries`), verifies the
bearer token as the server does (HS256, issuer, audience), runs the statements
the GraphQL server runs for that document — the loaders' batched
`= ANY($1::uuid[])` lookups and LATERAL per-parent pages, one statement per
lookup per level, a lookup with no keys skipped — selecting only the columns
the answer needs, on one pooled connection per request (the stores share the
benchmark database; statements take turns on it, as the planner's do), and
builds the same JSON by hand with orjson. It is what a hand-written endpoint
for these four queries costs: the ceiling any GraphQL execution can approach.

It counts its statements per store (`GET /stats`), so the runner can check
them against the server's, and answers `GET /health`.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import jwt
import orjson
import uvicorn

from bench.queries import BY_DOCUMENT, Query

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Json = dict[str, Any]

MAX_POOL = 20  # the server's default pool: DB_POOL_SIZE 5 + DB_MAX_OVERFLOW 15

# The request's one connection (all four stores share the benchmark database).
_connection: ContextVar[asyncpg.Connection] = ContextVar("floor_connection")


@dataclass(frozen=True, slots=True)
class MoneyFormat:
    """How a market writes money (the built-in markets of `marketgraph.markets`)."""

    symbol: str
    symbol_first: bool
    decimal: str
    thousands: str

    def format(self, amount_minor: int) -> str:
        sign = "-" if amount_minor < 0 else ""
        units, minor = divmod(abs(amount_minor), 100)
        number = f"{units:,}".replace(",", self.thousands) + f"{self.decimal}{minor:02d}"
        if self.symbol_first:
            return f"{sign}{self.symbol}{number}"
        return f"{sign}{number}\u00a0{self.symbol}"


MONEY = {
    "kg": MoneyFormat("сом", symbol_first=False, decimal=",", thousands="\u00a0"),
    "us": MoneyFormat("$", symbol_first=True, decimal=".", thousands=","),
}


def encode_id(type_name: str, market: str, key: uuid.UUID) -> str:
    raw = f"{type_name}:{market}:".encode() + key.bytes
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_user_id(value: str) -> tuple[str, uuid.UUID]:
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    type_name, market, _ = raw[:-16].decode("ascii").split(":")
    if type_name != "User":
        raise ValueError("not a user id")
    return market, uuid.UUID(bytes=raw[-16:])


# --- statements: per market, `{auth}`/`{app}` are the stores' schemas --------------------------

USER_BY_ID = "SELECT id FROM {auth}.users WHERE id = ANY($1::uuid[])"
USERS_PAGE = "SELECT id FROM {auth}.users ORDER BY id LIMIT $1"
CARTS_BY_USER = "SELECT id, user_id FROM {app}.carts WHERE user_id = ANY($1::uuid[])"
CART_ITEMS_BY_CART = (
    "SELECT cart_id, product_id, quantity FROM {app}.cart_items "
    "WHERE cart_id = ANY($1::uuid[]) ORDER BY id"
)
PRICED_PRODUCTS_BY_ID = (
    "SELECT id, name, price_minor FROM {app}.products WHERE id = ANY($1::uuid[])"
)
NAMED_PRODUCTS_BY_ID = "SELECT id, name FROM {app}.products WHERE id = ANY($1::uuid[])"
PRODUCTS_PAGE = "SELECT id, name, price_minor, stock FROM {app}.products ORDER BY id LIMIT $1"
WALLETS_BY_USER = "SELECT user_id, balance_minor FROM {app}.wallets WHERE user_id = ANY($1::uuid[])"
ORDER_ITEMS_BY_ORDER = (
    "SELECT order_id, product_id, quantity FROM {app}.order_items "
    "WHERE order_id = ANY($1::uuid[]) ORDER BY id"
)


# Each owner's newest rows in one statement, like `resolvers.pagination.load_pages`.
TRANSACTION_PAGES = (
    "SELECT k.idx, p.* FROM unnest($1::uuid[], $2::uuid[], $3::int[]) "
    "WITH ORDINALITY AS k(owner, after, lim, idx) "
    "JOIN LATERAL (SELECT t.id, t.amount_minor, t.created_at FROM {app}.wallet_transactions t "
    "WHERE t.user_id = k.owner AND (k.after IS NULL OR t.id < k.after) "
    "ORDER BY t.id DESC LIMIT k.lim) p ON true"
)
ORDER_PAGES = (
    "SELECT k.idx, p.* FROM unnest($1::uuid[], $2::uuid[], $3::int[]) "
    "WITH ORDINALITY AS k(owner, after, lim, idx) "
    "JOIN LATERAL (SELECT t.id, t.number, t.total_minor FROM {app}.orders t "
    "WHERE t.user_id = k.owner AND (k.after IS NULL OR t.id < k.after) "
    "ORDER BY t.id DESC LIMIT k.lim) p ON true"
)

STATEMENTS = {
    "USER_BY_ID": USER_BY_ID,
    "USERS_PAGE": USERS_PAGE,
    "CARTS_BY_USER": CARTS_BY_USER,
    "CART_ITEMS_BY_CART": CART_ITEMS_BY_CART,
    "PRICED_PRODUCTS_BY_ID": PRICED_PRODUCTS_BY_ID,
    "NAMED_PRODUCTS_BY_ID": NAMED_PRODUCTS_BY_ID,
    "PRODUCTS_PAGE": PRODUCTS_PAGE,
    "WALLETS_BY_USER": WALLETS_BY_USER,
    "ORDER_ITEMS_BY_ORDER": ORDER_ITEMS_BY_ORDER,
    "TRANSACTION_PAGES": TRANSACTION_PAGES,
    "ORDER_PAGES": ORDER_PAGES,
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Floor:
    """The pool, the per-market statement texts, the statement counter."""

    dsn: str
    secret: str
    issuer: str
    audience: str
    pool: asyncpg.Pool | None = None
    statements: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    _sql: dict[tuple[str, str], str] = field(default_factory=dict)

    async def start(self) -> None:
        # No reset query on release: the floor changes no session state, and asyncpg's default
        # (advisory unlocks, CLOSE ALL, UNLISTEN, RESET ALL) is one more round trip per statement.
        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=MAX_POOL, reset=_keep_session
        )
        # What start-up loaded lives as long as the process: out of the cyclic collector's way.
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def fetch(self, market: str, name: str, *args: Any) -> list[asyncpg.Record]:
        """Run one named statement against `market`'s store, on the request's connection."""
        key = (market, name)
        sql = self._sql.get(key)
        if sql is None:
            sql = STATEMENTS[name].format(auth=f"{market}_auth", app=f"{market}_app")
            self._sql[key] = sql
        store = f"{market}.auth" if "{auth}" in STATEMENTS[name] else f"{market}.app"
        self.statements[store] += 1
        rows: list[asyncpg.Record] = await _connection.get().fetch(sql, *args)
        return rows

    # --- who is asking ---------------------------------------------------------------------

    def principal(self, headers: dict[bytes, bytes]) -> tuple[str, uuid.UUID, frozenset[str]]:
        """(market, user id, roles) of the bearer token; 401 without a good one."""
        header = headers.get(b"authorization", b"").decode()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HttpError(401, "Sign in first")
        try:
            claims = jwt.decode(
                token.strip(),
                self.secret,
                algorithms=["HS256"],
                audience=self.audience,
                issuer=self.issuer,
            )
            market, user_id = decode_user_id(str(claims["sub"]))
        except (jwt.InvalidTokenError, ValueError, KeyError) as exc:
            raise HttpError(401, f"The access token is not valid: {exc}") from None
        if market != claims.get("mkt"):
            raise HttpError(401, "The access token is not valid")
        return market, user_id, frozenset(claims.get("roles", ()))

    # --- the four documents ------------------------------------------------------------------

    async def answer(self, query: Query, headers: dict[bytes, bytes]) -> Json:
        if query.caller == "anonymous":
            market = headers.get(b"x-market", b"kg").decode().strip().lower()
            if market not in MONEY:
                raise HttpError(400, f"unknown market {market!r}")
            return {"products": await self.products(market, query.first)}
        market, user_id, roles = self.principal(headers)
        if query.caller == "admin":
            if "admin" not in roles:
                raise HttpError(403, "Only administrators may do this")
            return {"users": await self.users("kg", query.first)}
        found = await self.fetch(market, "USER_BY_ID", [user_id])
        if not found:
            return {"viewer": None}
        if query.name == "Q1":
            return {"viewer": (await self.user_fields(market, [user_id]))[0]}
        return {"viewer": {"orders": await self.orders(market, user_id, query.first)}}

    async def products(self, market: str, first: int) -> Json:
        rows = await self.fetch(market, "PRODUCTS_PAGE", first + 1)
        money = MONEY[market]
        return {
            "edges": [
                {
                    "node": {
                        "id": encode_id("Product", market, r["id"]),
                        "name": r["name"],
                        "price": {
                            "amountMinor": r["price_minor"],
                            "formatted": money.format(r["price_minor"]),
                        },
                        "stock": r["stock"],
                    }
                }
                for r in rows[:first]
            ]
        }

    async def users(self, market: str, first: int) -> Json:
        rows = await self.fetch(market, "USERS_PAGE", first + 1)
        ids = [r["id"] for r in rows[:first]]
        nodes = await self.user_fields(market, ids)
        return {"edges": [{"node": node} for node in nodes]}

    async def user_fields(self, market: str, user_ids: list[uuid.UUID]) -> list[Json]:
        """cart { items { quantity product { name price } } } wallet { balance }
        transactions(first: 10) for each user."""

        async def cart_items() -> dict[uuid.UUID, list[Json]]:
            carts = await self.fetch(market, "CARTS_BY_USER", user_ids)
            cart_of = {r["user_id"]: r["id"] for r in carts}
            cart_ids = list(dict.fromkeys(cart_of[u] for u in user_ids if u in cart_of))
            items = await self.fetch(market, "CART_ITEMS_BY_CART", cart_ids) if cart_ids else []
            product_ids = list(dict.fromkeys(r["product_id"] for r in items))
            products = (
                await self.fetch(market, "PRICED_PRODUCTS_BY_ID", product_ids)
                if product_ids
                else []
            )
            product = {
                r["id"]: {"name": r["name"], "price": {"amountMinor": r["price_minor"]}}
                for r in products
            }
            by_cart: dict[uuid.UUID, list[Json]] = {c: [] for c in cart_ids}
            for r in items:
                by_cart[r["cart_id"]].append(
                    {"quantity": r["quantity"], "product": product[r["product_id"]]}
                )
            return {u: by_cart[cart_of[u]] if u in cart_of else [] for u in user_ids}

        async def balances() -> dict[uuid.UUID, int]:
            rows = await self.fetch(market, "WALLETS_BY_USER", user_ids)
            return {r["user_id"]: r["balance_minor"] for r in rows}

        # The three sibling lookups take turns on the request's one connection.
        items = await cart_items()
        balance = await balances()
        pages = await self.pages(market, "TRANSACTION_PAGES", user_ids, 10)
        return [
            {
                "cart": {"items": items[u]},
                "wallet": {"balance": {"amountMinor": balance.get(u, 0)}},
                "transactions": {
                    "edges": [
                        {
                            "node": {
                                "amount": {"amountMinor": r["amount_minor"]},
                                # orjson writes datetimes as isoformat() does, in C.
                                "createdAt": r["created_at"],
                            }
                        }
                        for r in page
                    ]
                },
            }
            for u, page in zip(user_ids, pages, strict=True)
        ]

    async def orders(self, market: str, user_id: uuid.UUID, first: int) -> Json:
        (page,) = await self.pages(market, "ORDER_PAGES", [user_id], first)
        order_ids = [r["id"] for r in page]
        items = await self.fetch(market, "ORDER_ITEMS_BY_ORDER", order_ids) if order_ids else []
        product_ids = list(dict.fromkeys(r["product_id"] for r in items))
        names = await self.fetch(market, "NAMED_PRODUCTS_BY_ID", product_ids) if product_ids else []
        product = {r["id"]: {"name": r["name"]} for r in names}
        by_order: dict[uuid.UUID, list[Json]] = {o: [] for o in order_ids}
        for r in items:
            by_order[r["order_id"]].append(
                {"quantity": r["quantity"], "product": product[r["product_id"]]}
            )
        money = MONEY[market]
        return {
            "edges": [
                {
                    "node": {
                        "number": r["number"],
                        "total": {"formatted": money.format(r["total_minor"])},
                        "items": by_order[r["id"]],
                    }
                }
                for r in page
            ]
        }

    async def pages(
        self, market: str, name: str, owners: list[uuid.UUID], first: int
    ) -> list[list[asyncpg.Record]]:
        """Each owner's first `first` rows, newest first (fetched with LIMIT first + 1)."""
        rows = await self.fetch(
            market, name, owners, [None] * len(owners), [first + 1] * len(owners)
        )
        out: list[list[asyncpg.Record]] = [[] for _ in owners]
        for r in rows:
            out[r["idx"] - 1].append(r)
        return [page[:first] for page in out]

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/graphql" and method == "POST":
            body = await _read_body(receive)
            status, payload = await self._graphql(body, dict(scope["headers"]))
        elif path == "/health":
            status, payload = 200, b'{"status":"ok"}'
        elif path == "/stats":
            status = 200
            payload = orjson.dumps({"requests": self.requests, "statements": self.statements})
        else:
            status, payload = 404, b'{"error":"not found"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _graphql(self, body: bytes, headers: dict[bytes, bytes]) -> tuple[int, bytes]:
        self.requests += 1
        try:
            document = orjson.loads(body)["query"]
            query = BY_DOCUMENT.get(document)
            if query is None:
                raise HttpError(400, "the floor answers only the benchmark's documents")
            assert self.pool is not None
            async with self.pool.acquire() as connection:
                token = _connection.set(connection)
                try:
                    data = await self.answer(query, headers)
                finally:
                    _connection.reset(token)
        except HttpError as exc:
            return exc.status, orjson.dumps({"data": None, "errors": [{"message": str(exc)}]})
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return 400, b'{"data":null,"errors":[{"message":"bad request body"}]}'
        return 200, orjson.dumps({"data": data})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:  # reported to uvicorn, which exits
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _keep_session(connection: asyncpg.Connection) -> None:
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def create_app() -> Floor:
    """The floor app from the environment the runner gives the servers (uvicorn factory)."""
    url = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)
    return Floor(
        dsn=url,
        secret=os.environ["JWT_SECRET"],
        issuer=os.environ.get("JWT_ISSUER", "marketgraph"),
        audience=os.environ.get("JWT_AUDIENCE", "marketgraph"),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description="the floor server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    uvicorn.run(
        "bench.floor:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()

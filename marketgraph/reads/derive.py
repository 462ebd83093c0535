"""Strawberry's side of the read specs: each read type's values, resolvers and loaders,
derived from its `TypeReads` — the reference implementation the planner is held to.

- `FromRow.from_row` builds a type's plain fields (columns, money, ids, its market) from a
  row, by the spec.
- `field(spec, name)` is the resolver of a lookup or a computed value: a per-request
  DataLoader per (market, spec entry) batches its keys into one statement per tick, and
  the entry's policy is called first, as the planner calls it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, ClassVar, Self

import strawberry
from aiodataloader import DataLoader
from sqlalchemy import any_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from strawberry.utils.str_converters import to_snake_case

from marketgraph import markets
from marketgraph.context import Info, RequestContext
from marketgraph.ids import encode_id
from marketgraph.reads.spec import (
    Column,
    Computed,
    Converted,
    Field,
    IdOf,
    Lookup,
    MarketOf,
    MoneyOf,
    TypeReads,
    spec_of,
)
from marketgraph.resolvers.pagination import PageKey, check_first, decode_cursor, load_pages
from marketgraph.resolvers.statements import keys_param, many_per_key, one_per_key
from marketgraph.schema.common import Money, edges_of, page_info, present
from marketgraph.schema.markets import Market

# GraphQL type name -> its Strawberry class, and the Relay classes of its connection.
CLASSES: dict[str, Any] = {}
CONNECTIONS: dict[str, tuple[Any, Any]] = {}


class FromRow:
    """A read type built from a row of its spec's table (or a stand-in for a missing one)."""

    READS: ClassVar[TypeReads]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        CLASSES[cls.READS.name] = cls

    @classmethod
    def from_row(cls, row: Any, market: markets.Market) -> Self:
        values = scalar_values(cls.READS, row, market)
        return cls(**values, row=row, market_data=market)  # type: ignore[call-arg]


def register_connection(target: str, connection: Any, edge: Any) -> None:
    CONNECTIONS[target] = (connection, edge)


def scalar_values(spec: TypeReads, row: Any, market: markets.Market) -> dict[str, Any]:
    """The type's plain fields of `row`, by their Python names."""
    out: dict[str, Any] = {}
    for name, entry in spec.fields.items():
        if isinstance(entry, Column):
            value: Any = getattr(row, entry.column)
        elif isinstance(entry, Converted):
            value = entry.convert(getattr(row, entry.column))
        elif isinstance(entry, IdOf):
            value = strawberry.ID(
                encode_id(entry.type_name, market.code, getattr(row, entry.column))
            )
        elif isinstance(entry, MarketOf):
            value = Market.from_market(market)
        elif isinstance(entry, MoneyOf):
            amount = entry.minor(*(getattr(row, c) for c in entry.columns()))
            value = Money.of(amount, market)
        else:
            continue  # a resolver's
        out[to_snake_case(name)] = value
    return out


def field(spec: TypeReads, name: str, description: str | None = None) -> Any:
    """The Strawberry field of a lookup or computed entry, with its derived resolver."""
    entry = spec.fields[name]
    if isinstance(entry, Computed):
        resolver: Callable[..., Any] = _computed(spec, entry)
    elif isinstance(entry, Lookup) and entry.page:
        resolver = _page(entry)
    elif isinstance(entry, Lookup):
        resolver = _lookup(entry)
    else:
        raise TypeError(f"{spec.name}.{name} is a plain field")
    return strawberry.field(resolver=resolver, description=description)


async def look_up(ctx: RequestContext, market: markets.Market, entry: Lookup, key: Any) -> Any:
    """The object (or objects) `entry` finds for `key`, by the entry's rules."""
    target = CLASSES[entry.target]
    if key is None:
        return [] if entry.many else None
    found = await loader(ctx, market, entry).load(key)
    if entry.many:
        return [target.from_row(row, market) for row in found]
    if found is None:
        if entry.stand_in is not None:
            found = SimpleNamespace(**entry.stand_in(key))
        elif entry.required is not None:
            found = present(found, entry.required)  # NOT_FOUND, the reference's wording
        else:
            return None
    return target.from_row(found, market)


def _lookup(entry: Lookup) -> Callable[..., Awaitable[Any]]:
    async def resolve(self: Any, info: Info) -> Any:
        key = getattr(self.row, entry.key)
        entry.policy(info.context, key)
        return await look_up(info.context, self.market_data, entry, key)

    return resolve


def _page(entry: Lookup) -> Callable[..., Awaitable[Any]]:
    async def resolve(
        self: Any, info: Info, first: int | None = 20, after: str | None = None
    ) -> Any:
        owner = getattr(self.row, entry.key)
        entry.policy(info.context, owner)
        key = PageKey(owner, check_first(first), decode_cursor(after))
        page = await loader(info.context, self.market_data, entry).load(key)
        connection, edge = CONNECTIONS[entry.target]
        target = CLASSES[entry.target]
        market = self.market_data
        return connection(
            edges=[
                edge(cursor=c, node=n)
                for c, n in edges_of(page, lambda row: target.from_row(row, market))
            ],
            page_info=page_info(page.rows, page.has_next),
        )

    return resolve


def _computed(spec: TypeReads, entry: Computed) -> Callable[..., Awaitable[Any]]:
    async def resolve(self: Any, info: Info) -> Any:
        found = await loader(info.context, self.market_data, entry, spec).load(self.row.id)
        value = entry.empty if found is None else found
        return Money.of(value, self.market_data) if entry.money else value

    return resolve


def loader(
    ctx: RequestContext, market: markets.Market, entry: Field, spec: TypeReads | None = None
) -> DataLoader[Any, Any]:
    """This request's loader of `entry` in `market` (one batch statement per tick)."""
    key = (market.code, id(entry))
    found = ctx.spec_loaders.get(key)
    if found is None:
        batch = _batch(entry, spec)
        store = ctx.databases.store(market.code, _role(entry, spec))

        async def load(keys: list[Any]) -> list[Any]:
            async with ctx.reading(store) as conn:
                return await batch(conn, keys)

        found = ctx.spec_loaders[key] = DataLoader(load)
    return found


def _role(entry: Field, spec: TypeReads | None) -> Any:
    if isinstance(entry, Lookup):
        return spec_of(entry.target).role
    assert spec is not None
    return spec.role


Batch = Callable[[AsyncConnection, list[Any]], Awaitable[list[Any]]]


def _batch(entry: Field, spec: TypeReads | None) -> Batch:
    """The statement that answers a tick's keys of `entry`."""
    if isinstance(entry, Computed):
        assert spec is not None
        table = spec.table
        statement = select(table.c.id, entry.expression(table)).where(
            table.c.id == any_(keys_param())
        )

        async def computed(conn: AsyncConnection, keys: list[Any]) -> list[Any]:
            rows = (await conn.execute(statement, {"keys": keys})).all()
            values = {row[0]: row[1] for row in rows}
            return [values.get(k) for k in keys]

        return computed
    assert isinstance(entry, Lookup)
    target = spec_of(entry.target)
    table = target.table
    names = target.row_columns()
    columns = [table.c[c] for c in [*names, *([entry.by] if entry.by not in names else [])]]
    by = table.c[entry.by]
    if entry.page:
        return lambda conn, keys: load_pages(conn, keys, columns, by, table.c.id)
    if entry.many:
        order = table.c[entry.order]
        return lambda conn, keys: many_per_key(conn, columns, by, order, keys)
    return lambda conn, keys: one_per_key(conn, columns, by, keys)


__all__ = ["CLASSES", "FromRow", "field", "look_up", "register_connection"]

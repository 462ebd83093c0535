"""The read statements both execution paths share: DataLoaders run them through SQLAlchemy,
the query planner compiles them once to SQL and runs them on the raw driver.

Keys are bound as one array (`= ANY($1)`), so a statement's text does not change with
the number of keys and PostgreSQL prepares it once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    Row,
    Select,
    Uuid,
    any_,
    bindparam,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute

# A column as models expose it (`Product.id`) or as a table does (`products.c.id`).
Column: TypeAlias = ColumnElement[Any] | InstrumentedAttribute[Any]


def keys_param(name: str = "keys") -> Any:
    return bindparam(name, type_=ARRAY(Uuid))


def rows_by_keys(
    columns: Sequence[Any], key: Column, order_by: Column | None = None
) -> Select[Any]:
    """Rows whose `key` is any of `:keys` (optionally ordered, for one-to-many lookups)."""
    stmt = select(*columns).where(key == any_(keys_param()))
    return stmt.order_by(order_by) if order_by is not None else stmt


def pages_by_owner(columns: Sequence[Any], owner: Column, key: Column) -> Select[Any]:
    """Each owner's page, newest first, in ONE statement: a LATERAL subquery per
    (`:owners`, `:afters`, `:limits`) triple over the (owner, id) index, numbered by
    `page_index` (1-based, the triple's position; the last column)."""
    k = (
        func.unnest(
            bindparam("owners", type_=ARRAY(Uuid)),
            bindparam("afters", type_=ARRAY(Uuid)),
            bindparam("limits", type_=ARRAY(Integer)),
        )
        .table_valued("owner", "after", "lim", with_ordinality="idx")
        .render_derived(name="k")
    )
    inner = (
        select(*columns)
        .where(owner == k.c.owner, or_(k.c.after.is_(None), key < k.c.after))
        .order_by(key.desc())
        .limit(k.c.lim)
        .lateral("p")
    )
    # page_index comes last, so the page's own columns keep their positions.
    return select(inner, k.c.idx.label("page_index")).select_from(k).join(inner, true())


async def one_per_key(
    conn: AsyncConnection,
    columns: Sequence[Any],
    key: Column,
    keys: list[uuid.UUID],
) -> list[Row[Any] | None]:
    """The row of each key (or None), in key order: a DataLoader batch for a unique column."""
    rows = (await conn.execute(rows_by_keys(columns, key), {"keys": keys})).all()
    name = str(key.key)
    by_key = {getattr(row, name): row for row in rows}
    return [by_key.get(k) for k in keys]


async def many_per_key(
    conn: AsyncConnection,
    columns: Sequence[Any],
    key: Column,
    order_by: Column,
    keys: list[uuid.UUID],
) -> list[list[Row[Any]]]:
    """The rows of each key, in key order: a DataLoader batch for a one-to-many lookup."""
    rows = (await conn.execute(rows_by_keys(columns, key, order_by), {"keys": keys})).all()
    name = str(key.key)
    by_key: dict[uuid.UUID, list[Row[Any]]] = {k: [] for k in keys}
    for row in rows:
        by_key[getattr(row, name)].append(row)
    return [by_key[k] for k in keys]

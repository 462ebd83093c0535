"""Read specs: each GraphQL field of the read side, declared once.

A type's `TypeReads` says where its rows live (a table of the auth or app store) and what
each of its fields is: a column, money, a global id, the row's market, a value PostgreSQL
computes from the row, or a lookup (one, many, or a page of rows of another type, by which
key, on which store) — with the access policy it needs named (`marketgraph.policies`).

Both read paths are derived from these: Strawberry's resolvers (`reads.derive`, the
reference implementation) and the query planner (`marketgraph.planner`), which fuses the
lookups of one store into one statement. A field's value is computed by the same function
on both paths (`Field.value`), from the same columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Table

from marketgraph import policies
from marketgraph.settings import Role

Policy = Callable[..., Any]


@dataclass(frozen=True, eq=False)
class Field:
    """One field of a type's read spec."""

    policy: Policy = field(default=policies.public, kw_only=True)

    def columns(self) -> tuple[str, ...]:
        """The row's columns the field's value is computed from."""
        return ()


@dataclass(frozen=True, eq=False)
class Column(Field):
    """A column's value as stored (enum columns read as their names)."""

    column: str

    def columns(self) -> tuple[str, ...]:
        return (self.column,)


@dataclass(frozen=True, eq=False)
class Converted(Field):
    """A column's value passed through `convert` (the same function on both paths)."""

    column: str
    convert: Callable[[Any], Any]

    def columns(self) -> tuple[str, ...]:
        return (self.column,)


@dataclass(frozen=True, eq=False)
class IdOf(Field):
    """The row's global id (`type_name`, its market, the key column)."""

    type_name: str
    column: str = "id"

    def columns(self) -> tuple[str, ...]:
        return (self.column,)


@dataclass(frozen=True, eq=False)
class MarketOf(Field):
    """The market the row was read from."""


@dataclass(frozen=True, eq=False)
class MoneyOf(Field):
    """Money in the row's market: the first column, or `amount` of the columns' values."""

    source: tuple[str, ...]
    amount: Callable[..., int] | None = None

    def columns(self) -> tuple[str, ...]:
        return self.source

    def minor(self, *values: Any) -> int:
        return int(values[0] if self.amount is None else self.amount(*values))


@dataclass(frozen=True, eq=False)
class Computed(Field):
    """A value PostgreSQL computes from the row: `expression(alias)` is a scalar SQL
    expression over an alias of the type's table; `empty` is its value for a stand-in row
    (one that does not exist, like the empty cart of a user who never had one)."""

    expression: Callable[[FromClause], ColumnElement[Any]]
    empty: Any
    money: bool = False  # the value is an amount in minor units, answered as Money


@dataclass(frozen=True, eq=False)
class Lookup(Field):
    """Rows of `target` whose column `by` equals this row's column `key`.

    `many`: every such row (ordered by `order`); else the one row, or None — unless
    `required` (what is missing: a non-null field answers `NOT_FOUND`) or `stand_in`
    (a row made of the key for one that does not exist). `page`: the newest first,
    `first`/`after` at a time, as a Relay connection.
    """

    target: str
    key: str
    by: str
    many: bool = False
    page: bool = False
    order: str = "id"
    required: str | None = None
    stand_in: Callable[[Any], dict[str, Any]] | None = None

    def columns(self) -> tuple[str, ...]:
        return (self.key,)

    @property
    def to_many(self) -> bool:
        return self.many or self.page


@dataclass(eq=False)
class TypeReads:
    """The read spec of one GraphQL object type over rows of `table` in store `role`."""

    name: str
    table: Table
    role: Role
    fields: dict[str, Field]

    def __post_init__(self) -> None:
        TYPES[self.name] = self

    def row_columns(self) -> list[str]:
        """Every column any field reads, `id` first (cursors and stand-ins read it)."""
        names = ["id"]
        for entry in self.fields.values():
            names.extend(c for c in entry.columns() if c not in names)
        return names


# Every type's spec, by GraphQL type name: filled as the schema modules define them.
TYPES: dict[str, TypeReads] = {}


def spec_of(type_name: str) -> TypeReads:
    return TYPES[type_name]

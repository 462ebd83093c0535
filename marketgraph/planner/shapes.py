"""Shapes: one selection of a spec type, compiled to a select list and a builder.

A `Shape` reads rows of its type's table: the columns its selected fields need, the values
PostgreSQL computes (`Computed`), and — fused into the same statement — every lookup of
the same store, as a correlated subquery: `ROW(...)` for one row, `ARRAY(SELECT ROW(...))`
for many and for pages. Lookups on the other store are grouped into a `Step`: one
statement for the whole level, keyed by the parents' key column (`unnest(:keys)`).

Records come back from asyncpg as nested tuples; `Shape.slots` names each position once,
at compile time, and the generated builder reads the positions those names were given.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from graphql import FieldNode
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Enum,
    FromClause,
    Integer,
    Select,
    String,
    Uuid,
    bindparam,
    cast,
    func,
    or_,
    select,
)

from marketgraph import policies
from marketgraph.markets import Market
from marketgraph.planner.fields import Arguments, CompileContext, NotPlannable
from marketgraph.planner.inline import (
    connection_plan,
    gid_expr,
    int_expr,
    market_expr,
    money_expr,
)
from marketgraph.planner.plan import ObjectPlan
from marketgraph.planner.runtime import CompiledStatement, Fallback, Run
from marketgraph.reads.spec import (
    Column,
    Computed,
    Converted,
    IdOf,
    Lookup,
    MarketOf,
    MoneyOf,
    TypeReads,
    spec_of,
)
from marketgraph.resolvers.pagination import Page, check_first, decode_cursor
from marketgraph.settings import Role


@dataclass(eq=False)
class Relation:
    """A selected lookup field: how its rows are read (fused or by a step) and built."""

    key: str  # response key
    name: str  # field name
    lookup: Lookup
    child: Shape
    connection: ObjectPlan | None  # for pages: the connection built over them
    arguments: Arguments | None
    number: int  # names the statement parameters of a page: limit_<n>, after_<n>
    key_slot: int = 0  # the parent's key column
    slot: int = 0  # fused: the parent's slot holding the value; by a step: the step's

    def sql(self, parent_key: ColumnElement[Any]) -> ColumnElement[Any]:
        """The lookup as a subquery correlated to `parent_key`."""
        target = self.child.spec.table.alias()
        query: Select[Any] = select(func.row(*self.child.select_list(target))).where(
            target.c[self.lookup.by] == parent_key
        )
        if self.lookup.page:
            after = bindparam(f"after_{self.number}", type_=Uuid)
            query = (
                query.where(or_(after.is_(None), target.c.id < after))
                .order_by(target.c.id.desc())
                .limit(bindparam(f"limit_{self.number}", type_=Integer))
            )
        elif self.lookup.many:
            query = query.order_by(target.c[self.lookup.order])
        else:
            return query.limit(1).scalar_subquery()
        return func.array(query.scalar_subquery())

    def params(self, run: Run) -> dict[str, Any]:
        """This relation's statement parameters, and its fused descendants'."""
        out: dict[str, Any] = {}
        if self.lookup.page:
            assert self.arguments is not None
            args = self.arguments(run)
            first = check_first(args.get("first"))
            out[f"limit_{self.number}"] = first + 1
            out[f"after_{self.number}"] = decode_cursor(args.get("after"))
        out.update(self.child.params(run))
        return out

    async def deliver(
        self, run: Run, values: list[Any], keys: list[Any], market: Market
    ) -> list[Any]:
        """The field's value for each parent, from what its statement returned."""
        if self.lookup.page:
            assert self.arguments is not None and self.connection is not None
            first = check_first(self.arguments(run).get("first"))
            pages = [Page(v[:first], len(v) > first) if v else Page([], False) for v in values]
            return await self.connection.build(run, pages, market)
        if self.lookup.many:
            rows = [row for v in values if v for row in v]
            built = iter(await self.child.plan.build(run, rows, market))
            return [[next(built) for _ in (v or ())] for v in values]
        stand_in = self.lookup.stand_in
        if stand_in is not None:
            values = [
                v if v is not None else self.child.stand_in(stand_in(k))
                for v, k in zip(values, keys, strict=True)
            ]
        elif self.lookup.required is not None and any(v is None for v in values):
            # Strawberry answers the missing row with NOT_FOUND at the field's path.
            raise Fallback(f"missing {self.lookup.required}")
        present = [v for v in values if v is not None]
        built = iter(await self.child.plan.build(run, present, market))
        return [next(built) if v is not None else None for v in values]


@dataclass(eq=False)
class Step:
    """The lookups of one level's parents on another store: one statement, keyed by the
    parents' `key` column, answering every lookup of the group per parent."""

    role: Role
    key: str
    relations: list[Relation] = field(default_factory=list)
    statement: CompiledStatement | None = None

    def finish(self) -> None:
        keys = (
            func.unnest(bindparam("keys", type_=ARRAY(Uuid)))
            .table_valued("key", with_ordinality="idx")
            .render_derived(name="k")
        )
        for slot, relation in enumerate(self.relations, start=1):
            relation.slot = slot
        columns = [keys.c.idx, *(r.sql(keys.c.key) for r in self.relations)]
        self.statement = CompiledStatement(select(*columns).select_from(keys).order_by(keys.c.idx))

    async def rows(self, run: Run, keys: list[Any], market: Market) -> Any:
        """The statement's rows for these keys (run once, whichever lookup asks first — or
        before, when the keys were known up front: `prefetch`)."""
        assert self.statement is not None
        statement = self.statement

        async def fetch() -> list[Any]:
            params: dict[str, Any] = {"keys": keys}
            for relation in self.relations:
                params.update(relation.params(run))
            store = run.ctx.databases.store(market.code, self.role)
            return await run.fetch(store, statement, params)

        return await run.once((id(self), market.code, tuple(keys)), fetch)

    def prefetch(self, run: Run, keys: list[Any], market: Market) -> None:
        """Start this step now, beside the statement its keys would otherwise wait for."""
        run.background(self.rows(run, keys, market))


class Shape:
    """One selection set of a spec type: the select list it needs and its builder."""

    def __init__(self, spec: TypeReads) -> None:
        self.spec = spec
        self.plan = ObjectPlan(spec.name)
        self.slots: list[tuple[str, Any]] = []  # ("column", name) | ("computed", entry) | ...
        self.fused: list[Relation] = []
        self.steps: list[Step] = []
        self.slot("column", "id")  # first: cursors and stand-ins read it

    def slot(self, kind: str, value: Any) -> int:
        """The record position of a column or computed value (one per distinct one), or of
        a fused relation (one each)."""
        if kind != "relation":
            for index, existing in enumerate(self.slots):
                if existing == (kind, value):
                    return index
        self.slots.append((kind, value))
        return len(self.slots) - 1

    def column(self, name: str) -> str:
        return f"p[{self.slot('column', name)}]"

    def select_list(self, table: FromClause) -> list[ColumnElement[Any]]:
        """The record of each row of `table` (the type's table or an alias of it)."""
        out: list[ColumnElement[Any]] = []
        for kind, value in self.slots:
            if kind == "column":
                column = table.c[value]
                # An enum nested in a record is decoded only by name: its type is the
                # database's own, which asyncpg has not met.
                out.append(cast(column, String) if isinstance(column.type, Enum) else column)
            elif kind == "computed":
                out.append(value.expression(table))
            else:
                out.append(value.sql(table.c[value.lookup.key]))
        return out

    def stand_in(self, values: dict[str, Any]) -> tuple[Any, ...]:
        """The record of a row that does not exist (`Lookup.stand_in`): its columns from
        `values`, computed values and lookups empty."""
        out: list[Any] = []
        for kind, value in self.slots:
            if kind == "column":
                out.append(values.get(value))
            elif kind == "computed":
                out.append(value.empty)
            else:
                out.append(None if not value.lookup.to_many else [])
        return tuple(out)

    def params(self, run: Run) -> dict[str, Any]:
        """Parameters of the fused lookups' pages."""
        out: dict[str, Any] = {}
        for relation in self.fused:
            out.update(relation.params(run))
        return out

    def statements(self) -> Counter[Role]:
        """Statements per store role this shape's steps run, below its own statement."""
        counts: Counter[Role] = Counter()
        for relation in self.fused:
            counts.update(relation.child.statements())
        for step in self.steps:
            counts[step.role] += 1
            for relation in step.relations:
                counts.update(relation.child.statements())
        return counts

    def describe(self, depth: int = 0) -> list[str]:
        """Lines for `plan explain`: what is fused into this shape's statement."""
        pad = "  " * depth
        lines = []
        for relation in self.fused:
            kind = "page" if relation.lookup.page else "many" if relation.lookup.many else "one"
            target = relation.child.spec.name
            lines.append(
                f"{pad}fused {self.spec.name}.{relation.name}: {kind} {target} "
                f"by {target}.{relation.lookup.by}"
            )
            lines.extend(relation.child.describe(depth + 1))
        for step in self.steps:
            names = ", ".join(f"{self.spec.name}.{r.name}" for r in step.relations)
            lines.append(f"{pad}step on {step.role} keyed by {self.spec.name}.{step.key}: {names}")
            for relation in step.relations:
                lines.extend(relation.child.describe(depth + 1))
        return lines


class ShapeCompiler:
    """Compiles selections of spec types into shapes."""

    def __init__(self, cc: CompileContext) -> None:
        self.cc = cc
        self._numbers = 0

    def shape(self, type_name: str, nodes: list[FieldNode]) -> Shape:
        shape = Shape(spec_of(type_name))
        self.fill(shape, shape.plan, nodes)
        return shape

    def fill(self, shape: Shape, plan: ObjectPlan, nodes: list[FieldNode]) -> ObjectPlan:
        """Compile `nodes` into `plan`, a builder over `shape`'s records (a second builder
        over the same rows adds the slots it needs)."""
        spec = shape.spec
        type_name = spec.name
        steps: dict[tuple[Role, str], Step] = {}
        for key, name, sub in self.cc.fields(type_name, nodes):
            if name == "__typename":
                plan.add(key, repr(type_name))
                continue
            entry = spec.fields.get(name)
            if entry is None:
                raise NotPlannable(f"{type_name}.{name} has no read spec")
            if entry.policy not in (policies.public,) and not isinstance(entry, Lookup):
                raise NotPlannable(f"{type_name}.{name}: a guarded value")
            if isinstance(entry, Column):
                plan.add(key, shape.column(entry.column))
            elif isinstance(entry, Converted):
                helper = plan.helper(f"_convert{len(plan.env)}", entry.convert)
                plan.add(key, f"{helper}({shape.column(entry.column)})")
            elif isinstance(entry, IdOf):
                plan.add(key, gid_expr(plan, entry.type_name, shape.column(entry.column)))
            elif isinstance(entry, MarketOf):
                plan.add(key, market_expr(self.cc, plan, sub))
            elif isinstance(entry, MoneyOf):
                values = ", ".join(shape.column(c) for c in entry.columns())
                if entry.amount is None:
                    amount = values
                elif entry.amount is operator.mul:
                    amount = "(" + " * ".join(shape.column(c) for c in entry.columns()) + ")"
                else:
                    amount = f"{plan.helper(f'_amount{len(plan.env)}', entry.amount)}({values})"
                plan.add(key, money_expr(self.cc, plan, sub, amount))
            elif isinstance(entry, Computed):
                value = f"p[{shape.slot('computed', entry)}]"
                if entry.money:
                    plan.add(key, money_expr(self.cc, plan, sub, value))
                else:
                    plan.add(key, int_expr(plan, value))
            elif isinstance(entry, Lookup):
                relation = self._relation(type_name, key, name, entry, sub)
                relation.key_slot = shape.slot("column", entry.key)
                target = relation.child.spec
                if target.role == spec.role:
                    relation.slot = shape.slot("relation", relation)
                    shape.fused.append(relation)
                    plan.add_child(key, _fused(relation))
                else:
                    step = steps.get((target.role, entry.key))
                    if step is None:
                        step = steps[(target.role, entry.key)] = Step(target.role, entry.key)
                        shape.steps.append(step)
                    step.relations.append(relation)
                    plan.add_child(key, _stepped(relation, step))
            else:
                raise NotPlannable(f"{type_name}.{name}")
        for step in steps.values():
            step.finish()
        return plan.finish()

    def _relation(
        self, type_name: str, key: str, name: str, entry: Lookup, sub: list[FieldNode]
    ) -> Relation:
        self._numbers += 1
        arguments = Arguments(self.cc.field_def(type_name, sub), sub[0])
        if not entry.page:
            child = self.shape(entry.target, sub)
            return Relation(key, name, entry, child, None, arguments, self._numbers)
        connection, child = self.connection(self.cc.field_type(type_name, name), entry.target, sub)
        return Relation(key, name, entry, child, connection, arguments, self._numbers)

    def connection(
        self, connection_type: str, target: str, nodes: list[FieldNode]
    ) -> tuple[ObjectPlan, Shape]:
        """A Relay connection over pages of `target` rows, and the shape of those rows."""
        holder: list[Shape] = []

        def compile_node(nodes: list[FieldNode]) -> ObjectPlan:
            if holder:  # `edges` under two aliases: both build from the same rows
                return self.fill(holder[0], ObjectPlan(target), nodes)
            holder.append(self.shape(target, nodes))
            return holder[0].plan

        connection = connection_plan(self.cc, connection_type, nodes, compile_node)
        return connection, holder[0] if holder else self.shape(target, [])


def _check(run: Run, relation: Relation, keys: list[Any]) -> None:
    policy = relation.lookup.policy
    if policy is not policies.public:
        for owner in keys:
            policy(run.ctx, owner)


def _fused(relation: Relation) -> Any:
    """The child of a lookup whose rows came inside the parent's records."""
    slot, key_slot = relation.slot, relation.key_slot

    async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
        keys = [p[key_slot] for p in sources]
        _check(run, relation, keys)
        return await relation.deliver(run, [p[slot] for p in sources], keys, market)

    return resolve


def _stepped(relation: Relation, step: Step) -> Any:
    """The child of a lookup on another store: its step's statement, once per level."""
    key_slot = relation.key_slot

    async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
        keys = [p[key_slot] for p in sources]
        _check(run, relation, keys)
        rows = await step.rows(run, keys, market)
        return await relation.deliver(run, [r[relation.slot] for r in rows], keys, market)

    return resolve

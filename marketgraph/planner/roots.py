"""Query's fields: where each read starts, with the same policies as Strawberry's resolvers.

Each root answers once, for the single root source: it picks the market and store (from
the token, an argument or a global id), applies the root's policy, runs its statement —
the root's rows with every same-store lookup below them fused in — and builds its shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import FieldNode
from sqlalchemy import Select, String, Table, any_, bindparam, select

from marketgraph import policies
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import GlobalId, decode_id
from marketgraph.markets import Market, detect_market
from marketgraph.planner.fields import Arguments, CompileContext, Fields, NotPlannable
from marketgraph.planner.inline import _int, market_dict, market_expr, market_keys, money_expr
from marketgraph.planner.plan import Child, ObjectPlan
from marketgraph.planner.runtime import CompiledStatement, Fallback, Run
from marketgraph.planner.shapes import Shape, ShapeCompiler
from marketgraph.reads.spec import spec_of
from marketgraph.resolvers import admin as admin_resolvers
from marketgraph.resolvers.admin import users_page
from marketgraph.resolvers.catalog import catalog_page, catalog_params
from marketgraph.resolvers.pagination import Page, check_first, decode_cursor
from marketgraph.resolvers.statements import keys_param
from marketgraph.settings import Role


@dataclass
class Operation:
    """A compiled query operation: its builder, and what it reads."""

    root: ObjectPlan
    statements: Counter[Role] = field(default_factory=Counter)  # at most, per store role
    lines: list[str] = field(default_factory=list)  # for `plan explain`
    sql: list[tuple[str, Role, CompiledStatement]] = field(default_factory=list)
    shapes: list[tuple[str, Shape]] = field(default_factory=list)  # each root statement's

    def describe(
        self, label: str, shape: Shape, statement: CompiledStatement, rows: str = "rows"
    ) -> None:
        """Record a root statement for `plan explain`: what it reads, fuses and sends."""
        self.lines.append(f"{label}: {shape.spec.name} {rows} on {shape.spec.role}")
        self.lines.extend("  " + line for line in shape.describe())
        self.sql.append((label, shape.spec.role, statement))
        self.shapes.append((label, shape))

    @property
    def snapshot(self) -> bool:
        """Several statements on one store must share a snapshot (one is one by itself)."""
        return any(n > 1 for n in self.statements.values())


def _not_found(message: str = "Not found") -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, message)


class ByIds:
    """The root fields that read one type by global id (`product`, `order`, `node`): one
    shape with all their selections merged, and one statement per market for every id the
    operation names — as Strawberry's loader batches them in one tick."""

    def __init__(self, type_name: str) -> None:
        self.shape = Shape(spec_of(type_name))
        self.ids: list[Callable[[Run], GlobalId | None]] = []  # the id each root reads
        self.statement: CompiledStatement | None = None
        self.only_node = True  # every field reading through it is `node`: one of its choices

    def add(
        self,
        shapes: ShapeCompiler,
        nodes: list[FieldNode],
        ids: Callable[[Run], GlobalId | None],
        owner: str,
    ) -> tuple[ObjectPlan, int | None]:
        plan = shapes.fill(self.shape, ObjectPlan(self.shape.spec.name), nodes)
        self.ids.append(ids)
        return plan, self.shape.slot("column", owner) if owner else None

    def finish(self, operation: Operation, label: str) -> None:
        table = self.shape.spec.table
        self.statement = CompiledStatement(
            select(*self.shape.select_list(table)).where(table.c.id == any_(keys_param()))
        )
        operation.describe(label, self.shape, self.statement, "rows by id")

    async def one(self, run: Run, market: Market, key: Any) -> Any:
        """The row of `key` in `market`, read with every other id of the operation there."""
        assert self.statement is not None
        statement = self.statement
        name = self.shape.spec.name

        async def fetch(keys: set[Any]) -> tuple[set[Any], dict[Any, Any]]:
            store = run.ctx.databases.store(market.code, self.shape.spec.role)
            params = {"keys": list(keys), **self.shape.params(run)}
            rows = await run.fetch(store, statement, params)
            return keys, {row[0]: row for row in rows}

        def every_id() -> set[Any]:
            keys = {key}
            for ids in self.ids:
                parsed = ids(run)
                if parsed is not None and parsed.type_name == name and parsed.market == market.code:
                    keys.add(parsed.key)
            return keys

        asked, found = await run.once((id(self), market.code), lambda: fetch(every_id()))
        if key not in asked:  # not named by an argument (cannot happen; kept exact anyway)
            asked, found = await fetch({key})
        return found.get(key)


def _count(operation: Operation, label: str, shape: Shape, statement: CompiledStatement) -> None:
    operation.statements[shape.spec.role] += 1
    operation.statements.update(shape.statements())
    operation.describe(label, shape, statement)


class RootCompiler:
    """Compiles Query's selected fields into the operation's root plan."""

    def __init__(self, cc: CompileContext) -> None:
        self.cc = cc
        self.shapes = ShapeCompiler(cc)
        self.operation = Operation(ObjectPlan("Query"))
        self.by_ids: dict[str, ByIds] = {}

    def by_id(self, type_name: str, node: bool) -> ByIds:
        group = self.by_ids.get(type_name)
        if group is None:
            group = self.by_ids[type_name] = ByIds(type_name)
        group.only_node = group.only_node and node
        return group

    def query(self, fields: Fields) -> Operation:
        plan = self.operation.root
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name == "__typename":
                plan.add(key, "'Query'")
                continue
            compile_root = ROOTS.get(name)
            if compile_root is None:
                raise NotPlannable(f"Query.{name}")
            arguments = Arguments(self.cc.field_def("Query", nodes), nodes[0])
            plan.add_child(key, compile_root(self, f"Query.{key}", nodes, arguments))
        plan.finish()
        self._finish_by_ids()
        return self.operation

    def _finish_by_ids(self) -> None:
        """Each by-id group is one statement; the groups only `node` reads are choices of
        which one runs, so they count as the most any one of them reads."""
        statements = self.operation.statements
        most: Counter[Role] = Counter()
        for type_name, group in self.by_ids.items():
            group.finish(self.operation, f"by id: {type_name}")
            reads: Counter[Role] = Counter({group.shape.spec.role: 1})
            reads.update(group.shape.statements())
            if group.only_node:
                most |= reads
            else:
                statements.update(reads)
        statements.update(most)


Root = Callable[[RootCompiler, str, list[FieldNode], Arguments], Child]


def _single(answer: Callable[[Run], Awaitable[Any]]) -> Child:
    async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
        return [await answer(run)]

    return resolve


def markets_root(rc: RootCompiler, label: str, nodes: list[FieldNode], args: Arguments) -> Child:
    keys = market_keys(rc.cc, nodes)

    async def answer(run: Run) -> Any:
        return [market_dict(m, keys) for m in run.ctx.markets]

    return _single(answer)


def market_root(rc: RootCompiler, label: str, nodes: list[FieldNode], args: Arguments) -> Child:
    keys = market_keys(rc.cc, nodes)

    async def answer(run: Run) -> Any:
        found = run.ctx.markets.get(str(args(run)["code"]))
        return market_dict(found, keys) if found is not None else None

    return _single(answer)


def viewer_root(rc: RootCompiler, label: str, nodes: list[FieldNode], args: Arguments) -> Child:
    group = rc.by_id("User", node=False)
    steps = len(group.shape.steps)
    plan, _ = group.add(rc.shapes, nodes, _viewer_id, "")
    # The viewer's lookups on the other store are keyed by its id, known from the token:
    # with the stores on two databases, they need not wait for the user's row.
    known = [step for step in group.shape.steps[steps:] if step.key == "id"]

    async def answer(run: Run) -> Any:
        ctx = run.ctx
        if ctx.principal is None or ctx.principal.user_id is None:
            return None
        user_id = ctx.require_user()
        if run.concurrent:
            for step in known:
                step.prefetch(run, [user_id], ctx.market)
        row = await group.one(run, ctx.market, user_id)
        return (await plan.build(run, [row], ctx.market))[0] if row is not None else None

    return _single(answer)


def _product_by_id(
    rc: RootCompiler,
    nodes: list[FieldNode],
    ids: Callable[[Run], GlobalId | None],
    node: bool = False,
) -> Callable[[Run, str], Awaitable[Any]]:
    group = rc.by_id("Product", node)
    plan, _ = group.add(rc.shapes, nodes, ids, "")

    async def fetch(run: Run, gid: str) -> Any:
        parsed = decode_id(gid, "Product", field="id")
        found = policies.any_market(run.ctx, parsed.market)
        if found is None:
            return None
        row = await group.one(run, found, parsed.key)
        return (await plan.build(run, [row], found))[0] if row is not None else None

    return fetch


def _owned_by_id(
    rc: RootCompiler,
    type_name: str,
    nodes: list[FieldNode],
    ids: Callable[[Run], GlobalId | None],
    owner: str,
    message: str,
    node: bool = False,
) -> Callable[[Run, str], Awaitable[Any]]:
    """A user's own object by global id (any, for admins), else `NOT_FOUND`: the rule of
    `order(id:)` and of `node(id:)` for user data."""
    group = rc.by_id(type_name, node)
    plan, owner_slot = group.add(rc.shapes, nodes, ids, owner)
    assert owner_slot is not None

    async def fetch(run: Run, gid: str) -> Any:
        ctx = run.ctx
        parsed = decode_id(gid, type_name) if type_name == "Order" else decode_id(gid)
        policies.reader(ctx)  # anonymous callers are told to sign in, whatever the id
        found = policies.reachable_market(ctx, parsed.market, message)
        row = await group.one(run, found, parsed.key)
        if row is None:
            raise _not_found(message)
        policies.owner_or_admin(ctx, row[owner_slot], message)
        return (await plan.build(run, [row], found))[0]

    return fetch


def _id_of(args: Arguments) -> Callable[[Run], GlobalId | None]:
    """The id argument of a root, parsed (None when it is not one: its field says so)."""

    def parse(run: Run) -> GlobalId | None:
        try:
            return decode_id(str(args(run)["id"]))
        except DomainError:
            return None

    return parse


def _viewer_id(run: Run) -> GlobalId | None:
    principal = run.ctx.principal
    if principal is None or principal.user_id is None:
        return None
    return GlobalId("User", run.ctx.market.code, principal.user_id)


def product_root(rc: RootCompiler, label: str, nodes: list[FieldNode], args: Arguments) -> Child:
    fetch = _product_by_id(rc, nodes, _id_of(args))
    return _single(lambda run: fetch(run, str(args(run)["id"])))


def order_root(rc: RootCompiler, label: str, nodes: list[FieldNode], args: Arguments) -> Child:
    fetch = _owned_by_id(rc, "Order", nodes, _id_of(args), "user_id", "No such order")
    return _single(lambda run: fetch(run, str(args(run)["id"])))


# The Node types `node(id:)` serves: (type, its owner column, the message of NOT_FOUND).
NODE_TYPES = (
    ("Product", "", ""),
    ("Order", "user_id", "No such order"),
    ("User", "id", "Not found"),
    ("WalletTransaction", "user_id", "Not found"),
)


def node_root(rc: RootCompiler, label: str, nodes: list[FieldNode], args: Arguments) -> Child:
    """`node(id:)`: routed by the id's type and market (hand-written, as its Strawberry
    resolver is, over the same policies)."""
    ids = _id_of(args)
    fetchers: dict[str, Callable[[Run, str], Awaitable[Any]]] = {}
    for type_name, owner, message in NODE_TYPES:
        if type_name == "Product":
            fetchers[type_name] = _product_by_id(rc, nodes, ids, node=True)
        else:
            fetchers[type_name] = _owned_by_id(rc, type_name, nodes, ids, owner, message, node=True)

    async def answer(run: Run) -> Any:
        gid = str(args(run)["id"])
        fetch = fetchers.get(decode_id(gid).type_name)
        if fetch is None:
            raise _not_found()
        return await fetch(run, gid)

    return _single(answer)


def _page_root(
    rc: RootCompiler,
    label: str,
    connection_type: str,
    target: str,
    nodes: list[FieldNode],
    build: Callable[[list[Any], bool, bool], Select[Any]],
) -> tuple[ObjectPlan, Shape, dict[tuple[bool, bool], CompiledStatement]]:
    """A root connection's plan and its statement for each (after given, filter given)."""
    connection, shape = rc.shapes.connection(connection_type, target, nodes)
    columns = shape.select_list(shape.spec.table)
    statements = {
        (after, filtered): CompiledStatement(build(columns, after, filtered))
        for after in (False, True)
        for filtered in (False, True)
    }
    _count(rc.operation, label, shape, statements[(False, False)])
    return connection, shape, statements


async def _one_page(
    run: Run,
    shape: Shape,
    connection: ObjectPlan,
    statement: CompiledStatement,
    params: dict[str, Any],
    first: int,
    market: Market,
) -> Any:
    """`first + 1` rows fetched: the extra one only says there is more."""
    store = run.ctx.databases.store(market.code, shape.spec.role)
    rows = await run.fetch(store, statement, {**params, **shape.params(run)})
    return (await connection.build(run, [Page(rows[:first], len(rows) > first)], market))[0]


def products_root(rc: RootCompiler, label: str, nodes: list[FieldNode], args: Arguments) -> Child:
    connection, shape, statements = _page_root(
        rc,
        label,
        "ProductConnection",
        "Product",
        nodes,
        lambda columns, after, search: catalog_page(columns, after=after, search=search),
    )

    async def answer(run: Run) -> Any:
        ctx = run.ctx
        values = args(run)
        first = check_first(values.get("first"))
        code = values.get("market")
        found = policies.any_market(ctx, str(code)) if code is not None else ctx.market
        if found is None:
            raise _not_found(f"No market {code!r}")
        after = decode_cursor(values.get("after"))
        params = catalog_params(first, after, values.get("search"))
        if params is None:
            return (await connection.build(run, [Page([], False)], found))[0]
        statement = statements[(after is not None, "query" in params)]
        return await _one_page(run, shape, connection, statement, params, first, found)

    return _single(answer)


def users_root(rc: RootCompiler, label: str, nodes: list[FieldNode], args: Arguments) -> Child:
    connection, shape, statements = _page_root(
        rc,
        label,
        "UserConnection",
        "User",
        nodes,
        lambda columns, after, prefs: users_page(columns, after=after, preferences=prefs),
    )

    async def answer(run: Run) -> Any:
        ctx = run.ctx
        policies.admin(ctx)
        values = args(run)
        found = ctx.markets.get(str(values["market"]))
        if found is None:
            raise _not_found(f"No market {values['market']!r}")
        first = check_first(values.get("first"))
        after = decode_cursor(values.get("after"))
        preferences = values.get("preferences")
        if preferences is not None and not isinstance(preferences, dict):
            raise DomainError(ErrorCode.BAD_USER_INPUT, "preferences is a JSON object")
        params = {
            "limit": first + 1,
            "after": after,
            "preferences": orjson.dumps(preferences).decode() if preferences is not None else None,
        }
        market = policies.reachable_market(ctx, found.code)
        statement = statements[(after is not None, preferences is not None)]
        return await _one_page(run, shape, connection, statement, params, first, market)

    return _single(answer)


def user_by_phone_root(
    rc: RootCompiler, label: str, nodes: list[FieldNode], args: Arguments
) -> Child:
    shape = rc.shapes.shape("User", nodes)
    users: Table = shape.spec.table
    statement = CompiledStatement(
        select(*shape.select_list(users)).where(users.c.phone == bindparam("phone", type_=String))
    )
    _count(rc.operation, label, shape, statement)

    async def answer(run: Run) -> Any:
        ctx = run.ctx
        policies.admin(ctx)
        found, e164 = detect_market(str(args(run)["phone"]), ctx.markets)
        market = policies.reachable_market(ctx, found.code)
        store = ctx.databases.store(market.code, "auth")
        rows = await run.fetch(store, statement, {"phone": e164, **shape.params(run)})
        return (await shape.plan.build(run, rows, found))[0] if rows else None

    return _single(answer)


def market_stats_root(
    rc: RootCompiler, label: str, nodes: list[FieldNode], args: Arguments
) -> Child:
    """Hand-written, as its Strawberry resolver is: figures gathered from every market."""
    plan = ObjectPlan("MarketStats")
    plan.helper("_int", _int)
    for key, name, sub in rc.cc.fields("MarketStats", nodes):
        if name == "market":
            plan.add(key, market_expr(rc.cc, plan, sub, "p.market"))
        elif name in ("users", "orders"):
            plan.add(key, f"_int(p.{name})")
        elif name == "revenue":
            plan.add(key, money_expr(rc.cc, plan, sub, "p.revenue_minor", "p.market"))
        elif name == "walletBalances":
            plan.add(key, money_expr(rc.cc, plan, sub, "p.wallet_balances_minor", "p.market"))
        elif name == "__typename":
            plan.add(key, "'MarketStats'")
        else:
            raise NotPlannable(f"MarketStats.{name}")
    plan.finish()
    rc.operation.lines.append(f"{label}: market figures from every market (hand-written)")

    async def answer(run: Run) -> Any:
        figures, errors = await admin_resolvers.market_stats(run.ctx)
        if errors:
            raise Fallback("market down")  # Strawberry reports it beside the others
        return await plan.build(run, figures, run.ctx.market)

    return _single(answer)


ROOTS: dict[str, Root] = {
    "markets": markets_root,
    "market": market_root,
    "viewer": viewer_root,
    "product": product_root,
    "order": order_root,
    "node": node_root,
    "products": products_root,
    "users": users_root,
    "userByPhone": user_by_phone_root,
    "marketStats": market_stats_root,
}

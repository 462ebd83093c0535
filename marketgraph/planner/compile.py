"""Compiling a validated query operation into object plans, field by field.

Every (type, field) the planner serves is listed here and reproduces the Strawberry
resolver's rules exactly (authentication, market, permission, null and error
behaviour); a request whose rules fail at run time raises, and the view re-runs it
through Strawberry, which answers with the error. A field that is not listed, carries
a permission class or extension, or uses an unknown directive makes the whole
operation `NotPlannable`: unknown means fallback, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLSchema,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    SelectionSetNode,
    VariableNode,
)
from graphql.execution.values import get_argument_values
from graphql.type.introspection import TypeNameMetaFieldDef
from sqlalchemy import Select, Table

from marketgraph.db.databases import Store
from marketgraph.db.models.app import (
    Cart,
    CartItem,
    Order,
    OrderItem,
    Product,
    Wallet,
    WalletTransaction,
)
from marketgraph.db.models.auth import User
from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import decode_id, encode_ids
from marketgraph.markets import Market, detect_market
from marketgraph.money import format_money, formatter
from marketgraph.planner.plan import Child, ObjectPlan
from marketgraph.planner.runtime import CompiledStatement, Fallback, Run
from marketgraph.resolvers import admin as admin_resolvers
from marketgraph.resolvers.accounts import readable_preferences
from marketgraph.resolvers.admin import user_by_phone_statement, users_page
from marketgraph.resolvers.catalog import catalog_page, catalog_params
from marketgraph.resolvers.pagination import Page, check_first, decode_cursor, encode_cursor
from marketgraph.resolvers.statements import pages_by_owner, rows_by_keys
from marketgraph.settings import Role

INT32 = 2**31


class NotPlannable(Exception):  # noqa: N818 - a verdict, not an error
    """The operation uses something the planner does not serve; Strawberry executes it."""


# --- helpers the generated builders call --------------------------------------------------


def _int(value: int) -> int:
    """GraphQL Int is 32-bit: a larger value is an error Strawberry reports, so fall back."""
    if not -INT32 <= value < INT32:
        raise Fallback("Int out of range")
    return value


def int_expr(plan: ObjectPlan, value: str) -> str:
    """`value` as a GraphQL Int: checked in place, `_int` (the fallback) only when out of range."""
    plan.helper("_int", _int)
    return f"({value} if {-INT32} <= {value} < {INT32} else _int({value}))"


def datetime_expr(value: str) -> str:
    """A DateTime column, left to orjson: asyncpg reads timestamptz as UTC datetimes, which
    orjson writes exactly as Strawberry's `isoformat()` does (tests/unit/test_planner_values)."""
    return value


def gid_expr(plan: ObjectPlan, type_name: str, key: str) -> str:
    """The global id of each source, whose database key is the expression `key`: encoded
    for the whole level in one call."""
    plan.helper("_ids", encode_ids)
    return plan.per_level(f"_ids({type_name!r}, M.code, [{key} for p in P])", per_source=True)


def _market_dict(market: Market, keys: list[tuple[str, str]]) -> dict[str, Any]:
    values = {
        "code": market.code,
        "name": market.name,
        "currency": market.currency,
        "currencySymbol": market.currency_symbol,
        "language": market.language,
        "phoneRegions": list(market.phone_regions),
        "__typename": "Market",
    }
    return {key: values[name] for key, name in keys}


# --- collecting fields -----------------------------------------------------------------------


Fields = dict[str, list[FieldNode]]  # response key -> merged field nodes, in document order


class CompileContext:
    """What compiling one operation needs: the schema, fragments and directive values."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        directive_values: dict[str, bool],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.directive_values = directive_values

    def collect(self, type_name: str, selection_sets: list[SelectionSetNode]) -> Fields:
        """Fields of `type_name` selected by these sets: fragments on that type (or its
        interfaces) expanded, @skip/@include applied, same keys merged."""
        out: Fields = {}
        for selection_set in selection_sets:
            self._collect(type_name, selection_set, out, set())
        return out

    def _collect(
        self, type_name: str, selection_set: SelectionSetNode, out: Fields, visited: set[str]
    ) -> None:
        for node in selection_set.selections:
            if not self._included(node):
                continue
            if isinstance(node, FieldNode):
                key = node.alias.value if node.alias else node.name.value
                out.setdefault(key, []).append(node)
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition.name.value if node.type_condition else None
                if condition is None or self._applies(condition, type_name):
                    self._collect(type_name, node.selection_set, out, visited)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                fragment = self.fragments.get(name)
                if name in visited or fragment is None:
                    continue
                visited.add(name)
                if self._applies(fragment.type_condition.name.value, type_name):
                    self._collect(type_name, fragment.selection_set, out, visited)

    def _applies(self, condition: str, type_name: str) -> bool:
        if condition == type_name:
            return True
        runtime = self.schema.get_type(type_name)
        return condition in {i.name for i in getattr(runtime, "interfaces", ())}

    def _included(self, node: Any) -> bool:
        for directive in node.directives or ():
            name = directive.name.value
            if name not in ("skip", "include"):
                raise NotPlannable(f"directive @{name}")
            argument = directive.arguments[0].value
            if hasattr(argument, "name"):  # a variable
                value = self.directive_values[argument.name.value]
            else:
                value = bool(argument.value)
            if (name == "skip") == value:
                return False
        return True

    def field_def(self, type_name: str, nodes: list[FieldNode]) -> GraphQLField:
        """The field's definition; `NotPlannable` when Strawberry guards it in a way the
        planner does not reproduce (a permission class or field extension)."""
        name = nodes[0].name.value
        if name == "__typename":
            return TypeNameMetaFieldDef
        owner = self.schema.get_type(type_name)
        definition: GraphQLField | None = getattr(owner, "fields", {}).get(name)
        if definition is None:
            raise NotPlannable(f"{type_name}.{name}")
        strawberry_field = (definition.extensions or {}).get("strawberry-definition")
        if strawberry_field is not None and (
            strawberry_field.permission_classes or strawberry_field.extensions
        ):
            raise NotPlannable(f"{type_name}.{name} has permissions or extensions")
        return definition

    def sub(self, nodes: list[FieldNode], type_name: str) -> Fields:
        return self.collect(
            type_name, [n.selection_set for n in nodes if n.selection_set is not None]
        )


class Arguments:
    """A field's arguments, coerced per request exactly as graphql-core coerces them."""

    def __init__(self, definition: GraphQLField, node: FieldNode) -> None:
        self._definition = definition
        self._node = node
        self._static = None if _uses_variables(node) else get_argument_values(definition, node)

    def __call__(self, run: Run) -> dict[str, Any]:
        if self._static is not None:
            return self._static
        return get_argument_values(self._definition, self._node, run.variables)


def _uses_variables(node: FieldNode) -> bool:
    def has_variable(value: Any) -> bool:
        if isinstance(value, VariableNode):
            return True
        if isinstance(value, ListValueNode):
            return any(has_variable(v) for v in value.values)
        if isinstance(value, ObjectValueNode):
            return any(has_variable(f.value) for f in value.fields)
        return False

    return any(has_variable(argument.value) for argument in node.arguments or ())


# --- inline types: Money, Market, PageInfo ---------------------------------------------------


def money_expr(
    cc: CompileContext, plan: ObjectPlan, nodes: list[FieldNode], amount: str, market: str = "M"
) -> str:
    """A dict literal of the selected Money fields of `amount` (an expression) in `market`."""
    parts = []
    for key, sub in cc.sub(nodes, "Money").items():
        name = sub[0].name.value
        cc.field_def("Money", sub)
        if name == "amountMinor":
            parts.append(f"{key!r}: {int_expr(plan, amount)}")
        elif name == "currency":
            parts.append(f"{key!r}: {market}.currency")
        elif name == "formatted" and market == "M":
            plan.helper("_formatter", formatter)
            parts.append(f"{key!r}: {plan.per_level('_formatter(M)')}({amount})")
        elif name == "formatted":
            plan.helper("_fmt", format_money)
            parts.append(f"{key!r}: _fmt({amount}, {market})")
        elif name == "__typename":
            parts.append(f"{key!r}: 'Money'")
        else:
            raise NotPlannable(f"Money.{name}")
    return "{" + ", ".join(parts) + "}"


def money_function(
    cc: CompileContext, nodes: list[FieldNode]
) -> Callable[[int, Market], dict[str, Any]]:
    """The selected Money fields as a function of (amount, market), for amounts a child
    computes itself (cart subtotals, line totals) rather than reads from a row."""
    host = ObjectPlan("Money")
    amount_expr = money_expr(cc, host, nodes, "p")
    prelude = "".join(f"    {name} = {expr}\n" for expr, name in host.levels.items())
    namespace = dict(host.env)
    exec(  # noqa: S102 - the Money dict literal compiled once, like the builders
        compile(f"def money(p, M):\n{prelude}    return {amount_expr}\n", "<plan Money>", "exec"),
        namespace,
    )
    money: Callable[[int, Market], dict[str, Any]] = namespace["money"]
    return money


def market_keys(cc: CompileContext, nodes: list[FieldNode]) -> list[tuple[str, str]]:
    keys = []
    for key, sub in cc.sub(nodes, "Market").items():
        name = sub[0].name.value
        if name != "__typename":
            cc.field_def("Market", sub)
        keys.append((key, name))
    return keys


def market_expr(
    cc: CompileContext, plan: ObjectPlan, nodes: list[FieldNode], market: str = "M"
) -> str:
    helper = plan.helper(f"_mk{len(plan.env)}", market_keys(cc, nodes))
    plan.helper("_market", _market_dict)
    return f"_market({market}, {helper})"


def page_info_expr(cc: CompileContext, plan: ObjectPlan, nodes: list[FieldNode]) -> str:
    """PageInfo of a Page source `p` (its rows carry `id` first)."""
    plan.helper("_cursor", encode_cursor)
    parts = []
    for key, sub in cc.sub(nodes, "PageInfo").items():
        name = sub[0].name.value
        if name != "__typename":
            cc.field_def("PageInfo", sub)  # a guarded field is Strawberry's
        if name == "hasNextPage":
            parts.append(f"{key!r}: p.has_next")
        elif name == "endCursor":
            parts.append(f"{key!r}: _cursor(p.rows[-1][0]) if p.rows else None")
        elif name == "__typename":
            parts.append(f"{key!r}: 'PageInfo'")
        else:
            raise NotPlannable(f"PageInfo.{name}")
    return "{" + ", ".join(parts) + "}"


# --- fetching children ------------------------------------------------------------------------


def fetch_by_key(
    table: Table,
    key_column: str,
    role: Role,
    child: ObjectPlan,
    *,
    many: bool = False,
    required: str | None = None,
    key_of: Callable[[Any], Any],
) -> Child:
    """A child fetched by key for every source in one statement (`= ANY($1)`).

    `required` names what a non-null field reports when its row is missing: the run
    falls back and Strawberry answers `NOT_FOUND` as its resolver does.
    """
    columns = list(child.columns)
    if key_column not in columns:
        columns.append(key_column)
    key_index = columns.index(key_column)
    order = table.c.id if many else None
    statement = CompiledStatement(
        rows_by_keys([table.c[c] for c in columns], table.c[key_column], order)
    )

    async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
        keys = [key_of(p) for p in sources]
        wanted = list({k for k in keys if k is not None})
        store = run.ctx.databases.store(market.code, role)
        rows = await run.fetch(store, statement, {"keys": wanted}) if wanted else []
        if many:
            groups: dict[Any, list[Any]] = {}
            for row, value in zip(rows, await child.build(run, rows, market), strict=True):
                groups.setdefault(row[key_index], []).append(value)
            return [groups.get(k, []) for k in keys]
        found = {row[key_index]: row for row in rows}
        matched = [found.get(k) if k is not None else None for k in keys]
        if required is not None and any(m is None for m in matched):
            raise Fallback(f"missing {required}")
        present = [m for m in matched if m is not None]
        built = await child.build(run, present, market)
        values = iter(built)
        return [next(values) if m is not None else None for m in matched]

    return resolve


def fetch_pages(
    table: Table,
    owner_column: str,
    role: Role,
    connection: ObjectPlan,
    arguments: Arguments,
    key_of: Callable[[Any], Any],
    check: Callable[[Run, list[Any]], None] | None = None,
) -> Child:
    """Each source's page (`first`/`after`) of its rows, newest first, in one statement;
    `check` may refuse the sources first."""
    columns = list(connection.columns) or ["id"]
    statement = CompiledStatement(
        pages_by_owner([table.c[c] for c in columns], table.c[owner_column], table.c.id)
    )

    async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
        if check is not None:
            check(run, sources)
        args = arguments(run)
        first = check_first(args.get("first"))
        after = decode_cursor(args.get("after"))
        owners = [key_of(p) for p in sources]
        params = {
            "owners": owners,
            "afters": [after] * len(owners),
            "limits": [first + 1] * len(owners),
        }
        store = run.ctx.databases.store(market.code, role)
        rows = await run.fetch(store, statement, params)
        grouped: list[list[Any]] = [[] for _ in owners]
        for row in rows:
            grouped[row[-1] - 1].append(row)
        pages = [Page(g[:first], len(g) > first) for g in grouped]
        return await connection.build(run, pages, market)

    return resolve


def table_plan(type_name: str, columns: list[str] | None = None) -> ObjectPlan:
    """A plan over rows of a table; `id` is always the first column (cursors read it).

    Plans that build from the same rows (an edge's node under two aliases) share one
    append-only column list, so every plan's positions stay valid.
    """
    plan = ObjectPlan(type_name, columns=columns if columns is not None else [])
    plan.column("id")
    return plan


def connection_plan(
    cc: CompileContext,
    type_name: str,
    nodes: list[FieldNode],
    compile_node: Callable[[list[FieldNode], list[str]], ObjectPlan],
) -> ObjectPlan:
    """A Relay connection over Page sources; an edge and its node read the same row."""
    plan = ObjectPlan(type_name)
    plan.columns = ["id"]
    edge_type = type_name.replace("Connection", "Edge")
    for key, sub in cc.sub(nodes, type_name).items():
        name = sub[0].name.value
        cc.field_def(type_name, sub)
        if name == "edges":
            edge_plan = ObjectPlan(edge_type)
            for ekey, esub in cc.sub(sub, edge_type).items():
                ename = esub[0].name.value
                cc.field_def(edge_type, esub)
                if ename == "cursor":
                    edge_plan.helper("_cursor", encode_cursor)
                    edge_plan.add(ekey, "_cursor(p[0])")
                elif ename == "node":
                    edge_plan.add_child(ekey, same_sources(compile_node(esub, plan.columns)))
                elif ename == "__typename":
                    edge_plan.add(ekey, repr(edge_type))
                else:
                    raise NotPlannable(f"{edge_type}.{ename}")
            plan.add_child(key, page_rows(edge_plan.finish()))
        elif name == "pageInfo":
            plan.add(key, page_info_expr(cc, plan, sub))
        elif name == "__typename":
            plan.add(key, repr(type_name))
        else:
            raise NotPlannable(f"{type_name}.{name}")
    return plan.finish()


def by_id(fetch: Callable[[Run, str], Any], arguments: Arguments) -> Child:
    """A root field `x(id:)`: `fetch` of the id argument."""

    async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
        return [await fetch(run, str(arguments(run)["id"]))]

    return resolve


def same_sources(plan: ObjectPlan) -> Child:
    async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
        return await plan.build(run, sources, market)

    return resolve


def page_rows(edge_plan: ObjectPlan) -> Child:
    async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
        rows = [row for page in sources for row in page.rows]
        built = iter(await edge_plan.build(run, rows, market))
        return [[next(built) for _ in page.rows] for page in sources]

    return resolve


# --- the types --------------------------------------------------------------------------------

users_t: Table = User.__table__  # type: ignore[assignment]
products_t: Table = Product.__table__  # type: ignore[assignment]
carts_t: Table = Cart.__table__  # type: ignore[assignment]
cart_items_t: Table = CartItem.__table__  # type: ignore[assignment]
orders_t: Table = Order.__table__  # type: ignore[assignment]
order_items_t: Table = OrderItem.__table__  # type: ignore[assignment]
wallets_t: Table = Wallet.__table__  # type: ignore[assignment]
transactions_t: Table = WalletTransaction.__table__  # type: ignore[assignment]

# Current prices of products by id: what subtotals and line totals multiply.
PRICES = CompiledStatement(
    rows_by_keys([products_t.c.id, products_t.c.price_minor], products_t.c.id)
)


def check_readers(run: Run, sources: list[Any]) -> None:
    """User.cart/wallet/orders/transactions of user sources (the id first): each the
    caller's own, or an admin's view."""
    ctx = run.ctx
    if ctx.is_admin or not sources:
        return
    caller = ctx.require_user()
    if any(p[0] != caller for p in sources):
        raise DomainError(ErrorCode.NOT_FOUND, "Not found")


class Compiler:
    """Compiles selection sets of the contract's read types into object plans."""

    def __init__(self, cc: CompileContext) -> None:
        self.cc = cc

    def _fields(
        self, type_name: str, nodes: list[FieldNode]
    ) -> list[tuple[str, str, list[FieldNode]]]:
        out = []
        for key, sub in self.cc.sub(nodes, type_name).items():
            name = sub[0].name.value
            if name != "__typename":
                self.cc.field_def(type_name, sub)
            out.append((key, name, sub))
        return out

    # Product -------------------------------------------------------------------------------
    def product(self, nodes: list[FieldNode], columns: list[str] | None = None) -> ObjectPlan:
        plan = table_plan("Product", columns)
        for key, name, sub in self._fields("Product", nodes):
            if name == "id":
                plan.add(key, gid_expr(plan, "Product", plan.column("id")))
            elif name == "market":
                plan.add(key, market_expr(self.cc, plan, sub))
            elif name in ("sku", "name", "description"):
                plan.add(key, plan.column(name))
            elif name == "stock":
                plan.add(key, plan.column("stock"))
            elif name == "price":
                plan.add(key, money_expr(self.cc, plan, sub, plan.column("price_minor")))
            elif name == "__typename":
                plan.add(key, "'Product'")
            else:
                raise NotPlannable(f"Product.{name}")
        return plan.finish()

    # User ----------------------------------------------------------------------------------
    def user(self, nodes: list[FieldNode], columns: list[str] | None = None) -> ObjectPlan:
        plan = table_plan("User", columns)
        user_id = plan.column("id")
        for key, name, sub in self._fields("User", nodes):
            if name == "id":
                plan.add(key, gid_expr(plan, "User", user_id))
            elif name == "market":
                plan.add(key, market_expr(self.cc, plan, sub))
            elif name in ("phone", "email", "timezone", "language"):
                plan.add(key, plan.column(name))
            elif name in ("firstName", "lastName", "userType", "isActive"):
                column = {
                    "firstName": "first_name",
                    "lastName": "last_name",
                    "userType": "user_type",
                    "isActive": "is_active",
                }[name]
                plan.add(key, plan.column(column))
            elif name == "preferences":
                readable = plan.helper("_prefs", readable_preferences)
                plan.add(key, f"{readable}({plan.column('preferences')})")
            elif name in ("createdAt", "lastLoginAt"):
                column = "created_at" if name == "createdAt" else "last_login_at"
                plan.add(key, datetime_expr(plan.column(column)))
            elif name == "cart":
                plan.add_child(key, self._user_cart(sub))
            elif name == "wallet":
                plan.add_child(key, self._user_wallet(sub))
            elif name == "orders":
                connection = connection_plan(self.cc, "OrderConnection", sub, self.order)
                plan.add_child(
                    key,
                    fetch_pages(
                        orders_t,
                        "user_id",
                        "app",
                        connection,
                        Arguments(self.cc.field_def("User", sub), sub[0]),
                        key_of=lambda p: p[0],
                        check=check_readers,
                    ),
                )
            elif name == "transactions":
                connection = connection_plan(
                    self.cc, "WalletTransactionConnection", sub, self.transaction
                )
                plan.add_child(
                    key,
                    fetch_pages(
                        transactions_t,
                        "user_id",
                        "app",
                        connection,
                        Arguments(self.cc.field_def("User", sub), sub[0]),
                        key_of=lambda p: p[0],
                        check=check_readers,
                    ),
                )
            elif name == "__typename":
                plan.add(key, "'User'")
            else:
                raise NotPlannable(f"User.{name}")
        return plan.finish()

    def _user_cart(self, nodes: list[FieldNode]) -> Child:
        cart = self.cart(nodes)
        statement = CompiledStatement(
            rows_by_keys([carts_t.c.id, carts_t.c.user_id], carts_t.c.user_id)
        )

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            check_readers(run, sources)
            user_ids = [p[0] for p in sources]
            store = run.ctx.databases.store(market.code, "app")
            rows = await run.fetch(store, statement, {"keys": user_ids})
            by_user = {row[1]: row[0] for row in rows}
            # A Cart source: (user id, cart id or None when a crashed sign-up left none).
            return await cart.build(run, [(u, by_user.get(u)) for u in user_ids], market)

        return resolve

    def _user_wallet(self, nodes: list[FieldNode]) -> Child:
        plan = ObjectPlan("Wallet")
        for key, name, sub in self._fields("Wallet", nodes):
            if name == "balance":
                plan.add(key, money_expr(self.cc, plan, sub, "(p[0] if p is not None else 0)"))
            elif name == "__typename":
                plan.add(key, "'Wallet'")
            else:
                raise NotPlannable(f"Wallet.{name}")
        plan.finish()
        statement = CompiledStatement(
            rows_by_keys([wallets_t.c.balance_minor, wallets_t.c.user_id], wallets_t.c.user_id)
        )

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            check_readers(run, sources)
            user_ids = [p[0] for p in sources]
            store = run.ctx.databases.store(market.code, "app")
            rows = await run.fetch(store, statement, {"keys": user_ids})
            by_user = {row[1]: row for row in rows}
            return await plan.build(run, [by_user.get(u) for u in user_ids], market)

        return resolve

    # Cart ----------------------------------------------------------------------------------
    def cart(self, nodes: list[FieldNode]) -> ObjectPlan:
        """Over (user id, cart id | None) sources."""
        plan = ObjectPlan("Cart")
        for key, name, sub in self._fields("Cart", nodes):
            if name == "id":
                plan.add(key, gid_expr(plan, "Cart", "p[1] if p[1] is not None else p[0]"))
            elif name == "items":
                item = self.cart_item(sub)
                plan.add_child(
                    key,
                    fetch_by_key(
                        cart_items_t, "cart_id", "app", item, many=True, key_of=lambda p: p[1]
                    ),
                )
            elif name == "itemCount":
                plan.add_child(key, self._cart_item_count())
            elif name == "subtotal":
                plan.add_child(key, self._cart_subtotal(money_function(self.cc, sub)))
            elif name == "__typename":
                plan.add(key, "'Cart'")
            else:
                raise NotPlannable(f"Cart.{name}")
        return plan.finish()

    def _cart_item_count(self) -> Child:
        statement = CompiledStatement(
            rows_by_keys([cart_items_t.c.cart_id, cart_items_t.c.quantity], cart_items_t.c.cart_id)
        )

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            carts = [p[1] for p in sources if p[1] is not None]
            store = run.ctx.databases.store(market.code, "app")
            rows = await run.fetch(store, statement, {"keys": carts}) if carts else []
            counts: dict[Any, int] = {}
            for row in rows:
                counts[row[0]] = counts.get(row[0], 0) + row[1]
            return [_int(counts.get(p[1], 0)) for p in sources]

        return resolve

    def _cart_subtotal(self, money: Callable[[int, Market], dict[str, Any]]) -> Child:
        items = CompiledStatement(
            rows_by_keys(
                [cart_items_t.c.cart_id, cart_items_t.c.quantity, cart_items_t.c.product_id],
                cart_items_t.c.cart_id,
            )
        )

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            carts = [p[1] for p in sources if p[1] is not None]
            store = run.ctx.databases.store(market.code, "app")
            lines = await run.fetch(store, items, {"keys": carts}) if carts else []
            product_ids = list({row[2] for row in lines})
            priced = await run.fetch(store, PRICES, {"keys": product_ids}) if product_ids else []
            price = {row[0]: row[1] for row in priced}
            totals: dict[Any, int] = {}
            for cart_id, quantity, product_id in lines:
                if product_id not in price:
                    raise Fallback("missing product")
                totals[cart_id] = totals.get(cart_id, 0) + price[product_id] * quantity
            return [money(totals.get(p[1], 0), market) for p in sources]

        return resolve

    def cart_item(self, nodes: list[FieldNode]) -> ObjectPlan:
        plan = table_plan("CartItem")
        for key, name, sub in self._fields("CartItem", nodes):
            if name == "id":
                plan.add(key, gid_expr(plan, "CartItem", plan.column("id")))
            elif name == "quantity":
                plan.add(key, plan.column("quantity"))
            elif name == "product":
                product_id = plan.column("product_id")
                plan.add_child(
                    key,
                    fetch_by_key(
                        products_t,
                        "id",
                        "app",
                        self.product(sub),
                        required="product",
                        key_of=_index_getter(product_id),
                    ),
                )
            elif name == "lineTotal":
                line = self._line_total(
                    plan.column("product_id"), plan.column("quantity"), money_function(self.cc, sub)
                )
                plan.add_child(key, line)
            elif name == "__typename":
                plan.add(key, "'CartItem'")
            else:
                raise NotPlannable(f"CartItem.{name}")
        return plan.finish()

    def _line_total(
        self, product_id: str, quantity: str, money: Callable[[int, Market], dict[str, Any]]
    ) -> Child:
        get_product = _index_getter(product_id)
        get_quantity = _index_getter(quantity)

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            ids = list({get_product(p) for p in sources})
            store = run.ctx.databases.store(market.code, "app")
            price = {r[0]: r[1] for r in await run.fetch(store, PRICES, {"keys": ids})}
            if any(get_product(p) not in price for p in sources):
                raise Fallback("missing product")
            return [money(price[get_product(p)] * get_quantity(p), market) for p in sources]

        return resolve

    # Orders --------------------------------------------------------------------------------
    def order(self, nodes: list[FieldNode], columns: list[str] | None = None) -> ObjectPlan:
        plan = table_plan("Order", columns)
        for key, name, sub in self._fields("Order", nodes):
            if name == "id":
                plan.add(key, gid_expr(plan, "Order", plan.column("id")))
            elif name == "number":
                plan.add(key, plan.column("number"))
            elif name == "status":
                plan.add(key, plan.column("status"))
            elif name == "paymentMethod":
                plan.add(key, plan.column("payment_method"))
            elif name == "total":
                plan.add(key, money_expr(self.cc, plan, sub, plan.column("total_minor")))
            elif name == "createdAt":
                plan.add(key, datetime_expr(plan.column("created_at")))
            elif name == "user":
                plan.add_child(
                    key,
                    fetch_by_key(
                        users_t,
                        "id",
                        "auth",
                        self.user(sub),
                        required="user",
                        key_of=_index_getter(plan.column("user_id")),
                    ),
                )
            elif name == "items":
                plan.add_child(
                    key,
                    fetch_by_key(
                        order_items_t,
                        "order_id",
                        "app",
                        self.order_item(sub),
                        many=True,
                        key_of=_index_getter(plan.column("id")),
                    ),
                )
            elif name == "__typename":
                plan.add(key, "'Order'")
            else:
                raise NotPlannable(f"Order.{name}")
        return plan.finish()

    def order_item(self, nodes: list[FieldNode]) -> ObjectPlan:
        plan = table_plan("OrderItem")
        for key, name, sub in self._fields("OrderItem", nodes):
            if name == "quantity":
                plan.add(key, plan.column("quantity"))
            elif name == "unitPrice":
                plan.add(key, money_expr(self.cc, plan, sub, plan.column("unit_price_minor")))
            elif name == "lineTotal":
                amount = f"{plan.column('unit_price_minor')} * {plan.column('quantity')}"
                plan.add(key, money_expr(self.cc, plan, sub, f"({amount})"))
            elif name == "product":
                plan.add_child(
                    key,
                    fetch_by_key(
                        products_t,
                        "id",
                        "app",
                        self.product(sub),
                        required="product",
                        key_of=_index_getter(plan.column("product_id")),
                    ),
                )
            elif name == "__typename":
                plan.add(key, "'OrderItem'")
            else:
                raise NotPlannable(f"OrderItem.{name}")
        return plan.finish()

    # Wallet transactions -------------------------------------------------------------------
    def transaction(self, nodes: list[FieldNode], columns: list[str] | None = None) -> ObjectPlan:
        plan = table_plan("WalletTransaction", columns)
        for key, name, sub in self._fields("WalletTransaction", nodes):
            if name == "id":
                plan.add(key, gid_expr(plan, "WalletTransaction", plan.column("id")))
            elif name == "kind":
                plan.add(key, plan.column("kind"))
            elif name == "amount":
                plan.add(key, money_expr(self.cc, plan, sub, plan.column("amount_minor")))
            elif name == "externalId":
                plan.add(key, plan.column("external_id"))
            elif name == "createdAt":
                plan.add(key, datetime_expr(plan.column("created_at")))
            elif name == "order":
                plan.add_child(
                    key,
                    fetch_by_key(
                        orders_t,
                        "id",
                        "app",
                        self.order(sub),
                        key_of=_index_getter(plan.column("order_id")),
                    ),
                )
            elif name == "__typename":
                plan.add(key, "'WalletTransaction'")
            else:
                raise NotPlannable(f"WalletTransaction.{name}")
        return plan.finish()


def _index_getter(expr: str) -> Callable[[Any], Any]:
    """`p[3]` as a function of p."""
    index = int(expr[2:-1])
    return lambda p: p[index]


# --- the root ---------------------------------------------------------------------------------


def variants(
    build: Callable[[bool, bool], Select[Any]],
) -> dict[tuple[bool, bool], CompiledStatement]:
    """A root page statement for each (after given, filter given) pair, compiled once."""
    return {
        (after, filtered): CompiledStatement(build(after, filtered))
        for after in (False, True)
        for filtered in (False, True)
    }


async def one_page(
    run: Run,
    store: Store,
    statement: CompiledStatement,
    params: dict[str, Any],
    first: int,
    connection: ObjectPlan,
    market: Market,
) -> list[Any]:
    """A root connection: `first + 1` rows fetched, the extra one only says there is more."""
    rows = await run.fetch(store, statement, params)
    return await connection.build(run, [Page(rows[:first], len(rows) > first)], market)


def _not_found(message: str = "Not found") -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, message)


class RootCompiler(Compiler):
    """Query's fields: each answers once, for the single root source."""

    def query(self, fields: Fields) -> ObjectPlan:
        plan = ObjectPlan("Query")
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name == "__typename":
                plan.add(key, "'Query'")
                continue
            compile_root = getattr(self, f"root_{name}", None)
            if name.startswith("__") or compile_root is None:
                raise NotPlannable(f"Query.{name}")
            arguments = Arguments(self.cc.field_def("Query", nodes), nodes[0])
            plan.add_child(key, compile_root(nodes, arguments))
        return plan.finish()

    def root_markets(self, nodes: list[FieldNode], arguments: Arguments) -> Child:
        keys = market_keys(self.cc, nodes)

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            return [[_market_dict(m, keys) for m in run.ctx.markets]]

        return resolve

    def root_market(self, nodes: list[FieldNode], arguments: Arguments) -> Child:
        keys = market_keys(self.cc, nodes)

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            found = run.ctx.markets.get(str(arguments(run)["code"]))
            return [_market_dict(found, keys) if found is not None else None]

        return resolve

    def _one(self, plan: ObjectPlan, table: Table, key_column: str) -> CompiledStatement:
        return CompiledStatement(
            rows_by_keys([table.c[c] for c in plan.columns], table.c[key_column])
        )

    def root_viewer(self, nodes: list[FieldNode], arguments: Arguments) -> Child:
        user = self.user(nodes)
        statement = self._one(user, users_t, "id")

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            ctx = run.ctx
            if ctx.principal is None or ctx.principal.user_id is None:
                return [None]
            rows = await run.fetch(ctx.auth, statement, {"keys": [ctx.require_user()]})
            return await user.build(run, rows, ctx.market) if rows else [None]

        return resolve

    def root_product(self, nodes: list[FieldNode], arguments: Arguments) -> Child:
        return by_id(self._product_by_id(nodes), arguments)

    def _product_by_id(self, nodes: list[FieldNode]) -> Callable[[Run, str], Any]:
        product = self.product(nodes)
        statement = self._one(product, products_t, "id")

        async def fetch(run: Run, gid: str) -> Any:
            parsed = decode_id(gid, "Product", field="id")
            found = run.ctx.markets.get(parsed.market)
            if found is None:
                return None
            store = run.ctx.databases.store(found.code, "app")
            rows = await run.fetch(store, statement, {"keys": [parsed.key]})
            return (await product.build(run, rows, found))[0] if rows else None

        return fetch

    def root_order(self, nodes: list[FieldNode], arguments: Arguments) -> Child:
        return by_id(self._order_by_id(nodes), arguments)

    def _order_by_id(self, nodes: list[FieldNode]) -> Callable[[Run, str], Any]:
        """`order_by_id`'s rules: the viewer's own order, any order for admins."""
        order = self.order(nodes)
        owner = order.columns.index("user_id") if "user_id" in order.columns else None
        columns = [*order.columns, *([] if owner is not None else ["user_id"])]
        owner_index = columns.index("user_id")
        statement = CompiledStatement(rows_by_keys([orders_t.c[c] for c in columns], orders_t.c.id))

        async def fetch(run: Run, gid: str) -> Any:
            ctx = run.ctx
            parsed = decode_id(gid, "Order")
            viewer = None if ctx.is_admin else ctx.require_user()
            found = ctx.reachable_market(parsed.market)
            if found is None:
                raise _not_found("No such order")
            store = ctx.databases.store(found.code, "app")
            rows = await run.fetch(store, statement, {"keys": [parsed.key]})
            if not rows or (viewer is not None and rows[0][owner_index] != viewer):
                raise _not_found("No such order")
            return (await order.build(run, rows, found))[0]

        return fetch

    def root_node(self, nodes: list[FieldNode], arguments: Arguments) -> Child:
        product = self._product_by_id(nodes)
        order = self._order_by_id(nodes)
        user = self.user(nodes)
        user_statement = self._one(user, users_t, "id")
        transaction = self.transaction(nodes)
        tx_columns = [*transaction.columns]
        if "user_id" not in tx_columns:
            tx_columns.append("user_id")
        tx_owner = tx_columns.index("user_id")
        tx_statement = CompiledStatement(
            rows_by_keys([transactions_t.c[c] for c in tx_columns], transactions_t.c.id)
        )

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            ctx = run.ctx
            gid = str(arguments(run)["id"])
            parsed = decode_id(gid)
            if parsed.type_name == "Product":
                return [await product(run, gid)]
            if parsed.type_name == "Order":
                return [await order(run, gid)]
            if parsed.type_name not in ("User", "WalletTransaction"):
                raise _not_found()
            viewer = None if ctx.is_admin else ctx.require_user()
            found = ctx.reachable_market(parsed.market)
            if found is None:
                raise _not_found()
            if parsed.type_name == "User":
                store = ctx.databases.store(found.code, "auth")
                rows = await run.fetch(store, user_statement, {"keys": [parsed.key]})
                if not rows or (viewer is not None and rows[0][0] != viewer):
                    raise _not_found()
                return await user.build(run, rows, found)
            store = ctx.databases.store(found.code, "app")
            rows = await run.fetch(store, tx_statement, {"keys": [parsed.key]})
            if not rows or (viewer is not None and rows[0][tx_owner] != viewer):
                raise _not_found()
            return await transaction.build(run, rows, found)

        return resolve

    def root_products(self, nodes: list[FieldNode], arguments: Arguments) -> Child:
        connection = connection_plan(self.cc, "ProductConnection", nodes, self.product)
        columns = [products_t.c[c] for c in connection.columns]
        statements = variants(
            lambda after, search: catalog_page(columns, after=after, search=search)
        )

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            ctx = run.ctx
            args = arguments(run)
            first = check_first(args.get("first"))
            code = args.get("market")
            found = ctx.markets.get(str(code)) if code is not None else ctx.market
            if found is None:
                raise _not_found(f"No market {code!r}")
            after = decode_cursor(args.get("after"))
            params = catalog_params(first, after, args.get("search"))
            if params is None:
                return await connection.build(run, [Page([], False)], found)
            statement = statements[(after is not None, "query" in params)]
            store = ctx.databases.store(found.code, "app")
            return await one_page(run, store, statement, params, first, connection, found)

        return resolve

    def root_marketStats(self, nodes: list[FieldNode], arguments: Arguments) -> Child:  # noqa: N802
        plan = ObjectPlan("MarketStats")
        plan.helper("_int", _int)
        for key, name, sub in self._fields("MarketStats", nodes):
            if name == "market":
                plan.add(key, market_expr(self.cc, plan, sub, "p.market"))
            elif name in ("users", "orders"):
                plan.add(key, f"_int(p.{name})")
            elif name == "revenue":
                plan.add(key, money_expr(self.cc, plan, sub, "p.revenue_minor", "p.market"))
            elif name == "walletBalances":
                plan.add(key, money_expr(self.cc, plan, sub, "p.wallet_balances_minor", "p.market"))
            elif name == "__typename":
                plan.add(key, "'MarketStats'")
            else:
                raise NotPlannable(f"MarketStats.{name}")
        plan.finish()

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            figures, errors = await admin_resolvers.market_stats(run.ctx)
            if errors:
                raise Fallback("a market is down: Strawberry reports it beside the others")
            return [await plan.build(run, figures, market)]

        return resolve

    def root_userByPhone(self, nodes: list[FieldNode], arguments: Arguments) -> Child:  # noqa: N802
        user = self.user(nodes)
        statement = CompiledStatement(user_by_phone_statement([users_t.c[c] for c in user.columns]))

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            ctx = run.ctx
            ctx.require_admin()
            found, e164 = detect_market(str(arguments(run)["phone"]), ctx.markets)
            store = ctx.store_for(found.code, "auth")
            rows = await run.fetch(store, statement, {"phone": e164})
            return await user.build(run, rows, found) if rows else [None]

        return resolve

    def root_users(self, nodes: list[FieldNode], arguments: Arguments) -> Child:
        connection = connection_plan(self.cc, "UserConnection", nodes, self.user)
        columns = [users_t.c[c] for c in connection.columns]
        statements = variants(
            lambda after, prefs: users_page(columns, after=after, preferences=prefs)
        )

        async def resolve(run: Run, sources: list[Any], market: Market) -> list[Any]:
            ctx = run.ctx
            ctx.require_admin()
            args = arguments(run)
            found = ctx.markets.get(str(args["market"]))
            if found is None:
                raise _not_found(f"No market {args['market']!r}")
            first = check_first(args.get("first"))
            after = decode_cursor(args.get("after"))
            preferences = args.get("preferences")
            if preferences is not None and not isinstance(preferences, dict):
                raise DomainError(ErrorCode.BAD_USER_INPUT, "preferences is a JSON object")
            params = {
                "limit": first + 1,
                "after": after,
                "preferences": (
                    orjson.dumps(preferences).decode() if preferences is not None else None
                ),
            }
            statement = statements[(after is not None, preferences is not None)]
            store = ctx.store_for(found.code, "auth")
            return await one_page(run, store, statement, params, first, connection, found)

        return resolve

"""The small types a plan writes inline, as expressions of its builder: Money, Market,
PageInfo, global ids and 32-bit Ints; and Relay connections over pages of rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import FieldNode

from marketgraph.ids import encode_ids
from marketgraph.markets import Market
from marketgraph.money import format_money, formatter
from marketgraph.planner.fields import CompileContext, NotPlannable
from marketgraph.planner.plan import Child, ObjectPlan
from marketgraph.planner.runtime import Fallback, Run
from marketgraph.resolvers.pagination import encode_cursor

INT32 = 2**31


def _int(value: int) -> int:
    """GraphQL Int is 32-bit: a larger value is an error Strawberry reports, so fall back."""
    if not -INT32 <= value < INT32:
        raise Fallback("Int out of range")
    return value


def int_expr(plan: ObjectPlan, value: str) -> str:
    """`value` as a GraphQL Int: checked in place, `_int` (the fallback) only when out of range."""
    plan.helper("_int", _int)
    return f"({value} if {-INT32} <= {value} < {INT32} else _int({value}))"


def gid_expr(plan: ObjectPlan, type_name: str, key: str) -> str:
    """The global id of each source, whose database key is the expression `key`: encoded
    for the whole level in one call."""
    plan.helper("_ids", encode_ids)
    return plan.per_level(f"_ids({type_name!r}, M.code, [{key} for p in P])", per_source=True)


def market_dict(market: Market, keys: list[tuple[str, str]]) -> dict[str, Any]:
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


def market_keys(cc: CompileContext, nodes: list[FieldNode]) -> list[tuple[str, str]]:
    return [(key, name) for key, name, _ in cc.fields("Market", nodes)]


def market_expr(
    cc: CompileContext, plan: ObjectPlan, nodes: list[FieldNode], market: str = "M"
) -> str:
    helper = plan.helper(f"_mk{len(plan.env)}", market_keys(cc, nodes))
    plan.helper("_market", market_dict)
    return f"_market({market}, {helper})"


def money_expr(
    cc: CompileContext, plan: ObjectPlan, nodes: list[FieldNode], amount: str, market: str = "M"
) -> str:
    """A dict literal of the selected Money fields of `amount` (an expression) in `market`."""
    parts = []
    for key, name, _ in cc.fields("Money", nodes):
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


def page_info_expr(cc: CompileContext, plan: ObjectPlan, nodes: list[FieldNode]) -> str:
    """PageInfo of a `Page` source `p` (every row's key is its first value)."""
    plan.helper("_cursor", encode_cursor)
    parts = []
    for key, name, _ in cc.fields("PageInfo", nodes):
        if name == "hasNextPage":
            parts.append(f"{key!r}: p.has_next")
        elif name == "endCursor":
            parts.append(f"{key!r}: _cursor(p.rows[-1][0]) if p.rows else None")
        elif name == "__typename":
            parts.append(f"{key!r}: 'PageInfo'")
        else:
            raise NotPlannable(f"PageInfo.{name}")
    return "{" + ", ".join(parts) + "}"


def connection_plan(
    cc: CompileContext,
    type_name: str,
    nodes: list[FieldNode],
    compile_node: Callable[[list[FieldNode]], ObjectPlan],
) -> ObjectPlan:
    """A Relay connection over `Page` sources; an edge and its node read the same row."""
    plan = ObjectPlan(type_name)
    edge_type = cc.field_type(type_name, "edges")
    for key, name, sub in cc.fields(type_name, nodes):
        if name == "edges":
            edge = ObjectPlan(edge_type)
            for ekey, ename, esub in cc.fields(edge_type, sub):
                if ename == "cursor":
                    edge.helper("_cursor", encode_cursor)
                    edge.add(ekey, "_cursor(p[0])")
                elif ename == "node":
                    edge.add_child(ekey, same_sources(compile_node(esub)))
                elif ename == "__typename":
                    edge.add(ekey, repr(edge_type))
                else:
                    raise NotPlannable(f"{edge_type}.{ename}")
            plan.add_child(key, page_rows(edge.finish()))
        elif name == "pageInfo":
            plan.add(key, page_info_expr(cc, plan, sub))
        elif name == "__typename":
            plan.add(key, repr(type_name))
        else:
            raise NotPlannable(f"{type_name}.{name}")
    return plan.finish()


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

"""`marketgraph plan explain`: what the planner does with a document, without running it.

For a planned operation: each root field's steps (its statement and every lookup fused into
it, or answered by a step on the other store), the statements per store at most, whether
the run takes a snapshot, and each statement's SQL for one market's schemas. For anything
else: why Strawberry answers it instead.
"""

from __future__ import annotations

from typing import Any

from marketgraph.db.topology import StoreKey
from marketgraph.planner import Planner
from marketgraph.planner.roots import Operation
from marketgraph.planner.shapes import Shape
from marketgraph.schema import Schema


def explain(
    schema: Schema,
    query: str,
    operation_name: str | None = None,
    variables: dict[str, Any] | None = None,
    market: str = "kg",
) -> str:
    planner = Planner(schema)
    operation, reason = planner.compile(query, operation_name, variables)
    if operation is None:
        return f"not planned: {reason}\nStrawberry's execution answers this document.\n"
    return "\n".join(["planned", "", *describe(operation, market)]) + "\n"


def describe(operation: Operation, market: str) -> list[str]:
    """The plan's steps, statements per store, snapshot, and SQL for `market`'s schemas."""
    lines = list(operation.lines)
    counts = ", ".join(f"{role} {n}" for role, n in sorted(operation.statements.items()))
    lines += ["", f"statements per store, at most: {counts or 'none'}"]
    if operation.snapshot:
        lines.append(
            "one snapshot: a store read by several statements is read in one "
            "REPEATABLE READ READ ONLY transaction"
        )
    else:
        lines.append("one snapshot: each store is read by one statement")
    for label, role, statement in operation.sql:
        sql, order = statement.sql_for(StoreKey(market, role).schema)
        lines += ["", f"-- {label} on {market}.{role}, parameters {list(order)}", sql]
    for label, shape in operation.shapes:
        for depth, step in _steps(shape):
            assert step.statement is not None
            sql, order = step.statement.sql_for(StoreKey(market, step.role).schema)
            names = ", ".join(r.name for r in step.relations)
            lines += [
                "",
                f"-- {label}: step on {market}.{step.role} for {names} (level {depth}), "
                f"parameters {list(order)}",
                sql,
            ]
    return lines


def _steps(shape: Shape, depth: int = 1) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    for relation in shape.fused:
        out.extend(_steps(relation.child, depth + 1))
    for step in shape.steps:
        out.append((depth, step))
        for relation in step.relations:
            out.extend(_steps(relation.child, depth + 1))
    return out

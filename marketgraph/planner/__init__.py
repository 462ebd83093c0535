"""The query planner: read operations compiled once into batched statements and generated
builders, beside Strawberry's execution (the reference and the fallback).

`Planner.prepare` answers, for one request, either a compiled operation with its coerced
variables, or None — mutations, introspection, invalid documents, bad variables and
anything the compiler does not know go to Strawberry. Plans are cached (LRU) by the
document, the operation name and the values of the variables that @skip/@include read,
never by other variables, so one client's plan never carries another's values.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    visit,
)
from graphql.execution.values import get_variable_values
from graphql.language import Visitor

from marketgraph.context import RequestContext
from marketgraph.planner.fields import CompileContext, NotPlannable
from marketgraph.planner.roots import Operation, RootCompiler
from marketgraph.planner.runtime import Fallback, Run
from marketgraph.schema import Schema

__all__ = ["Fallback", "Planner", "Prepared"]


@dataclass(frozen=True, slots=True)
class _Document:
    """A parsed, validated query operation (or the reason it is not planned)."""

    operation: OperationDefinitionNode | None
    fragments: dict[str, FragmentDefinitionNode]
    directive_variables: tuple[str, ...]
    reason: str = ""  # why it is not planned


@dataclass(frozen=True, slots=True)
class Prepared:
    operation: Operation
    variables: Any  # graphql-core's coerced VariableValues
    name: str | None  # the operation's own name (what traces call it)


class Planner:
    """Compiles and runs read operations for one schema."""

    def __init__(self, schema: Schema, maxsize: int = 512) -> None:
        self._schema = schema._schema
        self._checked = schema.documents  # parsed and validated once, shared with Strawberry
        self._maxsize = maxsize
        self._documents: OrderedDict[tuple[str, str | None], _Document] = OrderedDict()
        self._plans: OrderedDict[tuple[Any, ...], Operation | None] = OrderedDict()

    async def check(self, query: str) -> None:
        """Have `query` parsed and validated (off the event loop when it is new), so that
        `prepare` finds it checked."""
        await self._checked.check_async(query)

    def prepare(
        self, query: str, operation_name: str | None, variables: dict[str, Any] | None
    ) -> Prepared | None:
        document = self._document(query, operation_name)
        if document.operation is None:
            return None
        coerced = get_variable_values(
            self._schema, document.operation.variable_definitions or (), variables or {}
        )
        if isinstance(coerced, list):  # variable errors: Strawberry words them
            return None
        directive_values = {
            name: bool(coerced.coerced.get(name)) for name in document.directive_variables
        }
        key = (query, operation_name, tuple(sorted(directive_values.items())))
        if key in self._plans:
            self._plans.move_to_end(key)
            plan = self._plans[key]
        else:
            plan = self._compile(document, directive_values)
            self._remember(self._plans, key, plan)
        if plan is None:
            return None
        name = document.operation.name
        return Prepared(plan, coerced, name.value if name is not None else None)

    async def execute(self, prepared: Prepared, ctx: RequestContext) -> dict[str, Any]:
        """The operation's `data`; raises when only Strawberry can answer exactly."""
        operation = prepared.operation
        async with Run(ctx, prepared.variables, snapshot=operation.snapshot) as run:
            built = await operation.root.build(run, [None], ctx.market)
        return built[0]

    def _document(self, query: str, operation_name: str | None) -> _Document:
        key = (query, operation_name)
        cached = self._documents.get(key)
        if cached is not None:
            self._documents.move_to_end(key)
            return cached
        document = self._parse(query, operation_name)
        self._remember(self._documents, key, document)
        return document

    def compile(
        self, query: str, operation_name: str | None, variables: dict[str, Any] | None
    ) -> tuple[Operation | None, str]:
        """The operation's plan, or None and why Strawberry answers it (`plan explain`)."""
        document = self._document(query, operation_name)
        if document.operation is None:
            return None, document.reason
        coerced = get_variable_values(
            self._schema, document.operation.variable_definitions or (), variables or {}
        )
        if isinstance(coerced, list):
            return None, "the variables have errors: " + "; ".join(e.message for e in coerced)
        values = {name: bool(coerced.coerced.get(name)) for name in document.directive_variables}
        try:
            return self._build(document, values), ""
        except NotPlannable as exc:
            return None, str(exc)

    def _parse(self, query: str, operation_name: str | None) -> _Document:
        checked = self._checked.check(query)
        if checked.document is None or checked.errors:
            # Strawberry answers the errors (from the same cache).
            return _Document(None, {}, (), "the document is not valid")
        try:
            operation = checked.operation(operation_name)
        except GraphQLError as exc:
            return _Document(None, {}, (), exc.message)
        if operation.operation != OperationType.QUERY:
            return _Document(None, {}, (), f"a {operation.operation.value} is not a read")
        ast: DocumentNode = checked.document
        fragments = {
            d.name.value: d for d in ast.definitions if isinstance(d, FragmentDefinitionNode)
        }
        return _Document(operation, fragments, _directive_variables(ast))

    def _compile(self, document: _Document, directive_values: dict[str, bool]) -> Operation | None:
        try:
            return self._build(document, directive_values)
        except NotPlannable:
            return None

    def _build(self, document: _Document, directive_values: dict[str, bool]) -> Operation:
        assert document.operation is not None
        cc = CompileContext(self._schema, document.fragments, directive_values)
        fields = cc.collect("Query", [document.operation.selection_set])
        return RootCompiler(cc).query(fields)

    def _remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        if len(cache) > self._maxsize:
            cache.popitem(last=False)


def _directive_variables(ast: DocumentNode) -> tuple[str, ...]:
    """Variables that @skip/@include read: they shape the plan, so they key it."""
    names: set[str] = set()

    class Directives(Visitor):
        def enter_directive(self, node: Any, *_: Any) -> None:
            if node.name.value in ("skip", "include"):
                for argument in node.arguments:
                    if isinstance(argument.value, VariableNode):
                        names.add(argument.value.name.value)

    visit(ast, Directives())
    return tuple(sorted(names))

"""The Strawberry schema object, built once per app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import ASTValidationRule, GraphQLError, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from marketgraph.schema.limits import LIMIT_RULES
from marketgraph.schema.root import Mutation, Query


class Schema(strawberry.Schema):
    """Strawberry's schema, minus its error logging: `errors.format_error` logs what is
    unexpected (with the request id) and domain errors are answers, not incidents."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        return None


class ExtraErrors(SchemaExtension):
    """Adds the errors a resolver reported without failing its field (a market that is down in
    `marketStats`) to the answer, next to the data of the markets that answered."""

    def on_execute(self) -> Iterator[None]:
        yield
        context = self.execution_context.context
        result = self.execution_context.result
        extra = getattr(context, "extra_errors", None)
        if result is None or not extra:
            return
        result.errors = [
            *(result.errors or []),
            *(GraphQLError(e.message, original_error=e) for e in extra),
        ]


def build_schema(*, introspection: bool = True) -> strawberry.Schema:
    """The GraphQL schema; parsing and validation are cached per document."""
    # Factories: Strawberry builds extensions per request; the caches themselves are shared.
    rules: list[type[ASTValidationRule]] = list(LIMIT_RULES)
    if not introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    extensions: list[Any] = [
        lambda: ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
        lambda: AddValidationRules(rules),
        ExtraErrors,
    ]
    return Schema(query=Query, mutation=Mutation, extensions=extensions)


def export_sdl() -> str:
    """The schema as SDL, as `marketgraph schema export` writes it."""
    return build_schema().as_str() + "\n"

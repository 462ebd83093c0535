"""The Strawberry schema object, built once per app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from marketgraph import tracing
from marketgraph.schema.documents import CheckedDocuments, DocumentRules, Documents
from marketgraph.schema.root import Mutation, Query


class Schema(strawberry.Schema):
    """Strawberry's schema, minus its error logging: `errors.format_error` logs what is
    unexpected (with the request id) and domain errors are answers, not incidents.

    `documents` parses and validates each document once for both execution paths.
    """

    documents: Documents

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        return None

    def _get_custom_context_kwargs(
        self, operation_extensions: dict[str, Any] | None = None, *, sync: bool = False
    ) -> dict[str, Any]:
        kwargs = super()._get_custom_context_kwargs(operation_extensions, sync=sync)
        # Variable errors name the enum values and fields a client may have meant: in
        # production, as in validation, the schema is not told to strangers.
        kwargs["hide_suggestions"] = not self.documents.rules.suggestions
        return kwargs


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


class ReadSnapshots(SchemaExtension):
    """A query's loaders read each store in one snapshot (`context.Reads`), ended with the
    execution; a mutation's reads see what its writes committed."""

    async def on_execute(self) -> AsyncIterator[None]:
        reads = getattr(self.execution_context.context, "reads", None)
        if reads is None:
            yield
            return
        # A query reads one snapshot per store, on a standby if one may answer (`Reads`).
        reads.snapshot = reads.replicas = (
            self.execution_context.operation_type is OperationType.QUERY
        )
        try:
            yield
        finally:
            await reads.close()


def build_schema(rules: DocumentRules | None = None) -> Schema:
    """The GraphQL schema, with the cache that checks its documents under `rules`."""
    schema = Schema(
        query=Query,
        mutation=Mutation,
        # Tracing's span first, so that it holds the others' work (none when tracing is off).
        extensions=[*tracing.schema_extensions(), CheckedDocuments, ExtraErrors, ReadSnapshots],
    )
    schema.documents = Documents(schema._schema, rules or DocumentRules())
    return schema


def export_sdl() -> str:
    """The schema as SDL, as `marketgraph schema export` writes it."""
    return build_schema().as_str() + "\n"

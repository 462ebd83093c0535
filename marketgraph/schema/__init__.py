"""The Strawberry schema object, built once per app."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, ParserCache, ValidationCache

from marketgraph.schema.root import Query


def build_schema(*, introspection: bool = True) -> strawberry.Schema:
    """The GraphQL schema; parsing and validation are cached per document."""
    # Factories: Strawberry builds extensions per request; the caches themselves are shared.
    extensions: list[Any] = [
        lambda: ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
    ]
    if not introspection:
        extensions.append(lambda: AddValidationRules([NoSchemaIntrospectionCustomRule]))
    return strawberry.Schema(query=Query, extensions=extensions)


def export_sdl() -> str:
    """The schema as SDL, as `marketgraph schema export` writes it."""
    return build_schema().as_str() + "\n"

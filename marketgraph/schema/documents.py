"""Documents: each distinct GraphQL document parsed, measured and validated once, for both
execution paths.

The planner and Strawberry's execution ask the same `Documents` cache (Strawberry through
the `CheckedDocuments` extension), keyed by the document's text: a document costs one
parse and one validation however many requests send it and whichever path answers them,
and an invalid or hostile one is refused from the cache after its first time. Parsing is
bounded by characters and tokens, validation by `limits.measure`, so no document holds
the event loop for long.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from graphql import (
    ArgumentNode,
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    NoSchemaIntrospectionCustomRule,
    ObjectFieldNode,
    OperationDefinitionNode,
    StringValueNode,
    ValidationRule,
    VariableDefinitionNode,
    parse,
    specified_rules,
    validate,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from marketgraph.errors import ErrorCode
from marketgraph.schema.limits import QueryBounds, measure, query_limits, too_complex
from marketgraph.settings import Settings
from marketgraph.text import text_problem


@dataclass(frozen=True, slots=True)
class DocumentRules:
    """What a server accepts of a document: its size, and what it reveals (production shows
    neither the schema nor "did you mean" suggestions)."""

    max_chars: int = 100_000
    max_tokens: int = 5_000
    bounds: QueryBounds = field(default_factory=QueryBounds)
    introspection: bool = True
    suggestions: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> DocumentRules:
        return cls(
            max_chars=settings.max_document_chars,
            max_tokens=settings.max_document_tokens,
            bounds=QueryBounds(
                max_depth=settings.query_max_depth,
                max_aliases=settings.query_max_aliases,
                max_objects=settings.query_max_objects,
                max_selections=settings.max_selections,
            ),
            introspection=not settings.is_production,
            suggestions=not settings.is_production,
        )


@dataclass(frozen=True, slots=True)
class CheckedDocument:
    """A parsed document and its validation errors; `document` is None when it could not
    be parsed (a syntax error, or past the size limits)."""

    document: DocumentNode | None
    errors: tuple[GraphQLError, ...]

    def operation(self, name: str | None) -> OperationDefinitionNode:
        """The operation a request names, or a `BAD_USER_INPUT` error to raise: with several
        operations the name is required (the spec; otherwise the first would run)."""
        assert self.document is not None
        operations = [
            d for d in self.document.definitions if isinstance(d, OperationDefinitionNode)
        ]
        if name is None:
            if len(operations) == 1:
                return operations[0]
            raise _bad_input("The document has several operations: say which in operationName")
        for operation in operations:
            if operation.name is not None and operation.name.value == name:
                return operation
        raise _bad_input(f"The document has no operation named {name!r}")


def _bad_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": ErrorCode.BAD_USER_INPUT.value})


class Documents:
    """The cache of checked documents, bounded by entries and by the characters it holds:
    a parsed document keeps about 100 bytes per character (its nodes and tokens, with their
    locations), so a million characters hold about 100 MB at most."""

    def __init__(
        self,
        schema: GraphQLSchema,
        rules: DocumentRules,
        max_entries: int = 1024,
        max_cached_chars: int = 1024 * 1024,
    ) -> None:
        self.schema = schema
        self.rules = rules
        self._validation_rules: tuple[type[ASTValidationRule], ...] = (
            *specified_rules,
            MaybeNullValidationRule,
            OneOfInputValidationRule,
            query_limits(rules.bounds),
            StringLiterals,
            *(() if rules.introspection else (NoSchemaIntrospectionCustomRule,)),
        )
        self._max_entries = max_entries
        self._max_chars = max_cached_chars
        self._chars = 0
        self._cache: OrderedDict[str, CheckedDocument] = OrderedDict()
        self._checking = asyncio.Semaphore(1)

    def check(self, query: str) -> CheckedDocument:
        """`query` parsed and validated (from the cache when it was seen before)."""
        return self._known(query) or self._remember(query, self._check(query))

    async def check_async(self, query: str) -> CheckedDocument:
        """`check`, with a new document's parsing and validation in a worker thread, one at
        a time: the thread holds the GIL, but the event loop takes it back every few
        milliseconds (sys.getswitchinterval), so requests with known documents are served
        meanwhile, and a flood of new (hostile) documents queues behind itself."""
        known = self._known(query)
        if known is not None:
            return known
        async with self._checking:
            cached = self._cache.get(query)  # checked while this request waited
            if cached is not None:
                return cached
            return self._remember(query, await asyncio.to_thread(self._check, query))

    def _remember(self, query: str, checked: CheckedDocument) -> CheckedDocument:
        if query in self._cache:  # checked meanwhile by another request
            return self._cache[query]
        self._cache[query] = checked
        self._chars += len(query)
        while len(self._cache) > self._max_entries or self._chars > self._max_chars:
            evicted, _ = self._cache.popitem(last=False)
            self._chars -= len(evicted)
        return checked

    def _known(self, query: str) -> CheckedDocument | None:
        """The cached answer, or the refusal of a document too long, which is as cheap to
        say again as to look up and is not cached (long documents would push others out)."""
        cached = self._cache.get(query)
        if cached is not None:
            self._cache.move_to_end(query)
            return cached
        limit = self.rules.max_chars
        if len(query) > limit:
            return _refused(
                too_complex(f"The document has {len(query)} characters; at most {limit}")
            )
        return None

    def _check(self, query: str) -> CheckedDocument:
        rules = self.rules
        try:
            document = parse(query, max_tokens=rules.max_tokens)
        except GraphQLError as error:
            if "tokens" in error.message and "Parsing aborted" in error.message:
                error = too_complex(
                    f"The document has more than {rules.max_tokens} tokens; "
                    f"at most {rules.max_tokens}"
                )
            return _refused(error)
        too_big = measure(document, rules.bounds)
        if too_big is not None:
            return _refused(too_big)  # its tree is not kept: answered by the error alone
        errors = validate(
            self.schema,
            document,
            self._validation_rules,
            hide_suggestions=not rules.suggestions,
        )
        return CheckedDocument(document, tuple(errors))


def _refused(error: GraphQLError) -> CheckedDocument:
    error.__traceback__ = None  # cached: it must not keep the parser's frames alive
    return CheckedDocument(None, (error,))


def fresh(error: GraphQLError) -> GraphQLError:
    """A copy of a cached error, to raise: raising the cached one itself would chain every
    request's frames (and its document) onto its traceback, for as long as it is cached."""
    return GraphQLError(
        error.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=error.extensions,
    )


class StringLiterals(ValidationRule):
    """The string rule (`marketgraph.text`) for strings written in the document itself:
    arguments, input object fields, JSON scalar literals and variable defaults."""

    def __init__(self, context: object) -> None:
        super().__init__(context)  # type: ignore[arg-type]
        self._path: list[str] = []

    def enter_argument(self, node: ArgumentNode, *_: object) -> None:
        self._path.append(node.name.value)

    def leave_argument(self, node: ArgumentNode, *_: object) -> None:
        self._path.pop()

    def enter_object_field(self, node: ObjectFieldNode, *_: object) -> None:
        self._path.append(node.name.value)

    def leave_object_field(self, node: ObjectFieldNode, *_: object) -> None:
        self._path.pop()

    def enter_variable_definition(self, node: VariableDefinitionNode, *_: object) -> None:
        self._path.append(f"${node.variable.name.value}")

    def leave_variable_definition(self, node: VariableDefinitionNode, *_: object) -> None:
        self._path.pop()

    def enter_string_value(self, node: StringValueNode, *_: object) -> None:
        problem = text_problem(node.value)
        if problem is not None:
            where = ".".join(self._path) or "a string"
            self.report_error(
                GraphQLError(
                    f"Argument '{where}' {problem}",
                    node,
                    extensions={"code": ErrorCode.BAD_USER_INPUT.value, "argument": where},
                )
            )


class CheckedDocuments(SchemaExtension):
    """Strawberry's parsing and validation, answered by the schema's `Documents` cache.

    Errors are raised from the parsing step, where Strawberry turns a `GraphQLError` into
    the answer's errors; validation then finds nothing left to do.
    """

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        documents: Documents | None = getattr(context.schema, "documents", None)
        if documents is not None and context.graphql_document is None and context.query:
            checked = await documents.check_async(context.query)
            if checked.document is None:
                raise fresh(checked.errors[0])
            checked.operation(context.operation_name)
            context.graphql_document = checked.document
            context.pre_execution_errors = list(checked.errors)
        yield

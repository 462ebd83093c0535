"""How big a query may be: a cheap measure before validation, and a rule applied during it.

Before validation (`measure`, linear in the document): the selections an operation
expands to, fragments included, are counted once per fragment, so a fragment bomb (each
fragment spreading the next one twice) is refused without being expanded; and no
selection set may hold more than MAX_SPREADS_PER_SET fragment spreads or select one
response name more than MAX_SAME_NAME times. graphql-core's overlapping-fields rule
compares those pairwise (quadratic): past these bounds one 20 KB document held the
event loop for seconds.

During validation (`QueryLimits`): `Order.user` leads back to `User.orders`, so without a
bound a short document can ask for millions of rows (users → orders → user → orders …,
each page up to 100). A document is refused with `QUERY_TOO_COMPLEX` when its depth
(nested selection sets, introspection not counted) passes the limit, it has too many
aliases, or the objects it could return pass the limit: each field's count is its
parent's times its page size (`first`, or its default, or MAX_FIRST when a variable gives
it) for connections and LIST_GUESS for plain lists (cart and order items).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    get_named_type,
    get_nullable_type,
)
from graphql.type.definition import GraphQLInterfaceType

from marketgraph.errors import ErrorCode
from marketgraph.resolvers.pagination import MAX_FIRST

LIST_GUESS = 10
# Bounds on what one selection set may hold (see the module's docstring). Relay-style
# documents spread a few dozen fragments on one node and repeat `id` in each.
MAX_SPREADS_PER_SET = 64
MAX_SAME_NAME = 64

_Composite = GraphQLObjectType | GraphQLInterfaceType


@dataclass(frozen=True, slots=True)
class QueryBounds:
    """The limits of one server (settings QUERY_MAX_* and MAX_SELECTIONS)."""

    max_depth: int = 10
    max_aliases: int = 30
    max_objects: int = 50_000
    max_selections: int = 2_000


def too_complex(message: str, node: object = None) -> GraphQLError:
    """A `QUERY_TOO_COMPLEX` error (located at `node` when given)."""
    return GraphQLError(
        message,
        node if node is not None else None,  # type: ignore[arg-type]
        extensions={"code": ErrorCode.QUERY_TOO_COMPLEX.value},
    )


def measure(document: DocumentNode, bounds: QueryBounds) -> GraphQLError | None:
    """The first size bound `document` passes, before any validation rule sees it."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    sizes: dict[str, int] = {}
    pending: set[str] = set()  # fragments being measured: a cycle is NoFragmentCycles' to report

    def size(selection_set: SelectionSetNode) -> int:
        total = 0
        spreads = 0
        names: Counter[str] = Counter()
        sets = [selection_set]
        while sets:  # this set and the inline fragments within it
            for selection in sets.pop().selections:
                total += 1
                if isinstance(selection, FieldNode):
                    names[(selection.alias or selection.name).value] += 1
                    if selection.selection_set is not None:
                        total += size(selection.selection_set)
                elif isinstance(selection, InlineFragmentNode):
                    sets.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    spreads += 1
                    total += fragment_size(selection.name.value)
        if spreads > MAX_SPREADS_PER_SET:
            raise _TooBigError(
                f"A selection set spreads {spreads} fragments; at most {MAX_SPREADS_PER_SET}"
            )
        name, count = names.most_common(1)[0] if names else ("", 0)
        if count > MAX_SAME_NAME:
            raise _TooBigError(
                f"A selection set selects '{name}' {count} times; at most {MAX_SAME_NAME}"
            )
        if total > bounds.max_selections:
            raise _TooBigError(_selections_message(total, bounds))
        return total

    def fragment_size(name: str) -> int:
        if name in sizes:
            return sizes[name]
        fragment = fragments.get(name)
        if fragment is None or name in pending:
            return 0
        pending.add(name)
        sizes[name] = size(fragment.selection_set)
        pending.discard(name)
        return sizes[name]

    try:
        total = 0
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                total += size(definition.selection_set)
            elif isinstance(definition, FragmentDefinitionNode):
                fragment_size(definition.name.value)  # unused fragments are validated too
            if total > bounds.max_selections:
                raise _TooBigError(_selections_message(total, bounds))
    except _TooBigError as refused:
        return too_complex(str(refused))
    except RecursionError:
        return too_complex("The document nests too deeply")
    return None


def _selections_message(total: int, bounds: QueryBounds) -> str:
    return f"The document has {total} or more selections; at most {bounds.max_selections}"


class _TooBigError(Exception):
    """A bound `measure` found passed (its message says which)."""


def query_limits(bounds: QueryBounds) -> type[ValidationRule]:
    """The validation rule that applies `bounds` to each operation."""
    return type("QueryLimits", (QueryLimits,), {"bounds": bounds})


class QueryLimits(ValidationRule):
    """Refuses a query operation past its bounds (once per operation)."""

    bounds = QueryBounds()

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: object) -> None:
        schema = self.context.schema
        root = schema.get_root_type(node.operation)
        if root is None:
            return
        fragments = {
            d.name.value: d
            for d in self.context.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        walk = _Walk(self.context, fragments)
        depth = walk.selections(node.selection_set, root, 1, frozenset())
        name = node.name.value if node.name else "anonymous"
        bounds = self.bounds
        if depth > bounds.max_depth:
            self._refuse(
                f"Operation '{name}' is {depth} levels deep; at most {bounds.max_depth}", node
            )
        elif walk.aliases > bounds.max_aliases:
            self._refuse(
                f"Operation '{name}' has {walk.aliases} aliases; at most {bounds.max_aliases}", node
            )
        elif walk.objects > bounds.max_objects:
            self._refuse(
                f"Operation '{name}' could return about {walk.objects} objects; "
                f"at most {bounds.max_objects} (ask for smaller pages)",
                node,
            )

    def _refuse(self, message: str, node: OperationDefinitionNode) -> None:
        self.report_error(too_complex(message, node))


class _Walk:
    """Depth, aliases and estimated objects of one operation (other rules check validity:
    anything unknown here is skipped, not guessed). `measure` bounded the expansion."""

    def __init__(
        self, context: ValidationContext, fragments: dict[str, FragmentDefinitionNode]
    ) -> None:
        self.context = context
        self.fragments = fragments
        self.aliases = 0
        self.objects = 0

    def selections(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType,
        count: int,
        seen: frozenset[str],
        page: int | None = None,
    ) -> int:
        """The depth below `selection_set` of `count` parents; adds its aliases and objects.
        `page`: the page size of the connection the set belongs to (its `edges` list)."""
        depth = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                depth = max(depth, self.field(selection, parent, count, seen, page))
                continue
            if isinstance(selection, InlineFragmentNode):
                condition, inner = selection.type_condition, selection.selection_set
                inner_seen = seen
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:
                    continue
                condition, inner = fragment.type_condition, fragment.selection_set
                inner_seen = seen | {name}
            else:
                continue
            on = self.context.schema.get_type(condition.name.value) if condition else None
            depth = max(depth, self.selections(inner, on or parent, count, inner_seen, page))
        return depth

    def field(
        self,
        node: FieldNode,
        parent: GraphQLNamedType,
        count: int,
        seen: frozenset[str],
        page: int | None,
    ) -> int:
        if node.alias is not None:
            self.aliases += 1
        name = node.name.value
        if node.selection_set is None or name.startswith("__"):
            return 0
        if not isinstance(parent, _Composite) or name not in parent.fields:
            return 0
        definition = parent.fields[name]
        inner_page = None
        if "first" in definition.args:
            inner_page = _page_size(node, definition.args["first"].default_value)
        elif isinstance(get_nullable_type(definition.type), GraphQLList):
            count *= page if page is not None else LIST_GUESS
        self.objects += count
        inner = get_named_type(definition.type)
        return 1 + self.selections(node.selection_set, inner, count, seen, inner_page)


def _page_size(node: FieldNode, default: object) -> int:
    """`first` as the document gives it; its default; MAX_FIRST for a variable."""
    given = next((a.value for a in node.arguments or () if a.name.value == "first"), None)
    if given is None:
        return default if isinstance(default, int) else MAX_FIRST
    if isinstance(given, IntValueNode):
        return max(0, min(int(given.value), MAX_FIRST))
    return MAX_FIRST

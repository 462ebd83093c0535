"""How big a query may be: a validation rule both execution paths apply.

`Order.user` leads back to `User.orders`, so without a bound a short document can ask for
millions of rows (users → orders → user → orders …, each page up to 100). Before anything
runs, a document is refused with `QUERY_TOO_COMPLEX` when its depth (nested selection sets,
introspection not counted) passes MAX_DEPTH, it has more than MAX_ALIASES aliases, or the
objects it could return pass MAX_OBJECTS: each field's count is its parent's times its page
size (`first`, or its default, or MAX_FIRST when a variable gives it) for connections and
LIST_GUESS for plain lists (cart and order items).
"""

from __future__ import annotations

from graphql import (
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

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_OBJECTS = 50_000
LIST_GUESS = 10

_Composite = GraphQLObjectType | GraphQLInterfaceType


class QueryLimits(ValidationRule):
    """Refuses a query operation past the limits above (once per operation)."""

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
        if depth > MAX_DEPTH:
            self._refuse(f"Operation '{name}' is {depth} levels deep; at most {MAX_DEPTH}", node)
        elif walk.aliases > MAX_ALIASES:
            self._refuse(
                f"Operation '{name}' has {walk.aliases} aliases; at most {MAX_ALIASES}", node
            )
        elif walk.objects > MAX_OBJECTS:
            self._refuse(
                f"Operation '{name}' could return about {walk.objects} objects; "
                f"at most {MAX_OBJECTS} (ask for smaller pages)",
                node,
            )

    def _refuse(self, message: str, node: OperationDefinitionNode) -> None:
        self.report_error(
            GraphQLError(message, node, extensions={"code": ErrorCode.QUERY_TOO_COMPLEX.value})
        )


LIMIT_RULES: tuple[type[ValidationRule], ...] = (QueryLimits,)


class _Walk:
    """Depth, aliases and estimated objects of one operation (other rules check validity:
    anything unknown here is skipped, not guessed)."""

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

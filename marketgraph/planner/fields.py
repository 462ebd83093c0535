"""Reading a validated operation: its fields per type, with fragments expanded, @skip and
@include applied and arguments coerced per request exactly as graphql-core does.

A field Strawberry guards in a way the planner does not reproduce (a permission class or a
field extension), or a directive it does not know, makes the operation `NotPlannable`:
unknown means Strawberry's execution, never a guess.
"""

from __future__ import annotations

from typing import Any

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
    get_named_type,
)
from graphql.execution.values import get_argument_values
from graphql.type.introspection import TypeNameMetaFieldDef

from marketgraph.planner.runtime import Run


class NotPlannable(Exception):  # noqa: N818 - a verdict, not an error
    """The operation uses something the planner does not serve; Strawberry executes it."""


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

    def fields(
        self, type_name: str, nodes: list[FieldNode]
    ) -> list[tuple[str, str, list[FieldNode]]]:
        """(response key, field name, merged nodes) of the selection of `nodes` on
        `type_name`, each field checked by `field_def`."""
        out = []
        for key, sub in self.sub(nodes, type_name).items():
            name = sub[0].name.value
            self.field_def(type_name, sub)
            out.append((key, name, sub))
        return out

    def field_type(self, type_name: str, field_name: str) -> str:
        """The named type of a field (a connection's edge type, an edge's node type)."""
        owner: Any = self.schema.get_type(type_name)
        return str(get_named_type(owner.fields[field_name].type).name)


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

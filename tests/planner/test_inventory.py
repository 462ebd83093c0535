"""Every read field of the contract is served by the planner, from its one read spec, and
every spec entry names its access policy.

The documents are made from the schema itself: for each object type reachable from Query
(the mutations' payload types are not reads) and each of its fields, a path from a root
field down to it, with dummy arguments (compiling a plan reads no argument value). A field
added to the schema without a read spec, or a spec entry without a named policy, fails
here, not silently in production as a fallback.
"""

from __future__ import annotations

from collections import deque

from graphql import (
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    get_named_type,
    is_leaf_type,
    is_non_null_type,
)

from marketgraph import policies
from marketgraph.planner import Planner
from marketgraph.reads.spec import TYPES
from marketgraph.schema import build_schema

DUMMY = {"ID": '"x"', "String": '"x"', "Int": "1", "JSON": "{}", "Boolean": "true"}


def _arguments(field: object) -> str:
    """Dummy values of the field's required arguments."""
    values = [
        f"{name}: {DUMMY[get_named_type(arg.type).name]}"
        for name, arg in field.args.items()  # type: ignore[attr-defined]
        if is_non_null_type(arg.type)
    ]
    return f"({', '.join(values)})" if values else ""


def _paths(schema: GraphQLSchema) -> dict[str, tuple[str, str]]:
    """For each object type reachable from Query: (an opening of a document reaching it,
    its closing), e.g. ("{ viewer { cart {", "} } }")."""
    query = schema.query_type
    assert query is not None
    found: dict[str, tuple[str, str]] = {"Query": ("{", "}")}
    queue = deque(["Query"])
    while queue:
        name = queue.popleft()
        owner = schema.get_type(name)
        assert isinstance(owner, GraphQLObjectType)
        opening, closing = found[name]
        for field_name, field in owner.fields.items():
            target = get_named_type(field.type)
            if is_leaf_type(target) or field_name.startswith("__"):
                continue
            selection = f"{field_name}{_arguments(field)} {{"
            kinds: list[GraphQLObjectType] = []
            if isinstance(target, GraphQLInterfaceType):
                kinds = list(schema.get_implementations(target).objects)
            elif isinstance(target, GraphQLObjectType):
                kinds = [target]
            for kind in kinds:
                if kind.name in found:
                    continue
                fragment = f" ... on {kind.name} {{" if kind is not target else ""
                close = " }" if fragment else ""
                found[kind.name] = (
                    f"{opening} {selection}{fragment}",
                    f"}}{close} {closing}",
                )
                queue.append(kind.name)
    return found


def test_every_read_field_of_the_contract_is_planned() -> None:
    schema = build_schema()
    planner = Planner(schema)
    graphql_schema = schema._schema
    unplanned = []
    checked = 0
    for type_name, (opening, closing) in _paths(graphql_schema).items():
        owner = graphql_schema.get_type(type_name)
        assert isinstance(owner, GraphQLObjectType)
        for field_name, field in owner.fields.items():
            target = get_named_type(field.type)
            leaf = " __typename" if not is_leaf_type(target) else ""
            if isinstance(target, GraphQLInterfaceType):
                leaf = " __typename"
            document = f"{opening} {field_name}{_arguments(field)}"
            document += f" {{{leaf} }} {closing}" if leaf else f" {closing}"
            operation, reason = planner.compile(document, None, None)
            checked += 1
            if operation is None:
                unplanned.append(f"{type_name}.{field_name}: {reason}\n    {document}")
    assert checked > 80  # the walk reached the schema, not only Query
    assert not unplanned, "\n".join(unplanned)


def test_every_spec_entry_names_a_policy() -> None:
    build_schema()  # the schema modules define the specs
    assert {"Product", "User", "Cart", "CartItem", "Order", "OrderItem", "Wallet"} <= set(TYPES)
    for spec in TYPES.values():
        for name, entry in spec.fields.items():
            assert entry.policy in policies.POLICIES, f"{spec.name}.{name}: {entry.policy}"


def test_the_user_s_business_data_is_guarded() -> None:
    """The rule that keeps one user's cart from another: named on every such entry."""
    user = TYPES["User"]
    for name in ("cart", "wallet", "orders", "transactions"):
        assert user.fields[name].policy is policies.owner_or_admin, name

"""Every argument of the contract, fed hostile values by hypothesis, against a real server.

For each root field of the schema (queries and mutations), documents select it with all its
arguments given as variables (and, for strings, written into the document itself), drawn
from strategies that mix plausible values with NUL characters, unpaired surrogates, huge
and out-of-range numbers, deep JSON, wrong types and unknown enum values, sent as an
anonymous client, a member and an admin. Whatever is drawn, the answer is JSON, never a
5xx, never INTERNAL_SERVER_ERROR, never a dropped connection."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    get_named_type,
    is_leaf_type,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketgraph.schema import build_schema
from tests.abuse.conftest import RealServer, assert_sound

pytestmark = pytest.mark.slow

SCHEMA = build_schema()._schema
ROOT_FIELDS = [
    (operation, name, field)
    for operation, root in (("query", SCHEMA.query_type), ("mutation", SCHEMA.mutation_type))
    if root is not None
    for name, field in root.fields.items()
]

NASTY_CHARACTERS = ["\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "😀", "'", '"', "\\", "%", "\n"]
PLAUSIBLE = ["", " ", "kg", "us", "KG", "+996700123456", "+12125550100", "a@example.com", "dark"]


def strings(ids: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.text(alphabet=st.sampled_from([*NASTY_CHARACTERS, "a", "é"]), max_size=12),
        st.sampled_from([*PLAUSIBLE, *ids, "x" * 20_000]),
    )


def integers() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(-(2**31), 2**31 - 1),
        st.sampled_from([0, -1, 101, 2**31, -(2**31) - 1, 2**53, 2**63, -(2**64), 10**30]),
    )


def json_values(ids: list[str]) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(), st.booleans(), integers(), st.floats(allow_nan=False), strings(ids)
    )
    nested = st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(strings(ids), inner, max_size=3)
        ),
        max_leaves=12,
    )
    deep: Any = "bottom"
    for _ in range(40):
        deep = {"k": deep}
    return st.one_of(nested, st.just(deep))


def for_type(type_: GraphQLInputType, ids: list[str]) -> st.SearchStrategy[Any]:
    """Values for an input type: mostly of its shape, sometimes not (wrong types, nulls)."""
    if isinstance(type_, GraphQLNonNull):
        return for_type(type_.of_type, ids)
    if isinstance(type_, GraphQLList):
        return st.lists(for_type(type_.of_type, ids), max_size=3)
    if isinstance(type_, GraphQLEnumType):
        return st.sampled_from([*type_.values, "NOPE", "", "\x00"])
    if isinstance(type_, GraphQLInputObjectType):
        fields = {name: for_type(f.type, ids) for name, f in type_.fields.items()}
        return st.fixed_dictionaries({}, optional=fields)  # type: ignore[arg-type]
    assert isinstance(type_, GraphQLScalarType)
    scalar: st.SearchStrategy[Any] = {
        "String": strings(ids),
        "ID": strings(ids),
        "Int": integers(),
        "Float": st.floats(allow_nan=False, allow_infinity=False),
        "Boolean": st.booleans(),
        "JSON": json_values(ids),
        "DateTime": strings(ids),
    }.get(type_.name, strings(ids))
    return scalar


def wrong_or(strategy: st.SearchStrategy[Any], ids: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, strategy, strategy, st.none(), integers(), strings(ids))


def document_for(operation: str, name: str, field: GraphQLField, literal: dict[str, str]) -> str:
    """`name` selected with every argument: a variable, or the given literal."""
    definitions = ", ".join(
        f"${arg}: {a.type}" for arg, a in field.args.items() if arg not in literal
    )
    arguments = ", ".join(f"{arg}: {literal.get(arg, '$' + arg)}" for arg in field.args)
    selection = "" if is_leaf_type(get_named_type(field.type)) else " { __typename }"
    head = f"{operation} ({definitions})" if definitions else operation
    call = f"{name}({arguments})" if arguments else name
    return f"{head} {{ {call}{selection} }}"


def _is_string(argument: GraphQLArgument) -> bool:
    named = get_named_type(argument.type)
    return isinstance(named, GraphQLScalarType) and named.name in ("String", "ID")


@st.composite
def requests(draw: st.DrawFn, ids: list[str]) -> tuple[str, str, dict[str, Any], str]:
    operation, name, field = draw(st.sampled_from(ROOT_FIELDS))
    variables = {arg: draw(wrong_or(for_type(a.type, ids), ids)) for arg, a in field.args.items()}
    literal: dict[str, str] = {}
    for arg, argument in field.args.items():
        if _is_string(argument) and isinstance(variables[arg], str) and draw(st.booleans()):
            literal[arg] = json.dumps(variables.pop(arg))  # a GraphQL string, escapes and all
    caller = draw(st.sampled_from(["anonymous", "member", "admin"]))
    return name, document_for(operation, name, field, literal), variables, caller


def _headers(server: RealServer, caller: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "X-Market": "kg"}
    if caller != "anonymous":
        token = server.admin_token if caller == "admin" else server.member_token
        headers["Authorization"] = f"Bearer {token}"
    return headers


def test_every_argument_takes_hostile_values_without_a_5xx(real_server: RealServer) -> None:
    ids = [real_server.member_gid, real_server.product_gid]
    fields_sent: set[str] = set()

    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(requests(ids))
    def check(request: tuple[str, str, dict[str, Any], str]) -> None:
        field, document, variables, caller = request
        # ensure_ascii writes an unpaired surrogate as its \\u escape, as JavaScript does.
        body = json.dumps({"query": document, "variables": variables}).encode()
        try:
            response = client.post("/graphql", content=body, headers=_headers(real_server, caller))
        except httpx.TransportError as exc:
            raise AssertionError(f"connection dropped: {exc!r}\n{real_server.output()}") from exc
        assert_sound(response)
        fields_sent.add(field)

    with httpx.Client(base_url=real_server.base_url, timeout=15) as client:
        check()
        assert client.get("/health").status_code == 200
    assert fields_sent == {name for _, name, _ in ROOT_FIELDS}

"""What the planner must never do: leak a field Strawberry guards, answer wrong input
differently, plan a mutation or introspection, bake one request's variables into another's
plan, or grow its cache without bound; and what shadow mode serves and reports."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from graphql import get_named_type, is_leaf_type
from starlette.applications import Starlette
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.utils.str_converters import to_camel_case

from marketgraph.planner import Planner
from marketgraph.schema import build_schema
from tests.helpers import error_code, gql, http_client
from tests.planner.conftest import Pair, Seeded, outcome

REQUEST_ID = "fallback-0001"


class Deny(BasePermission):
    """A permission class added to a field after the planner was written."""

    message = "Not for your eyes"

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return False


def schema_guarding(type_name: str, field_name: str, permission: type[BasePermission]) -> Any:
    """The schema with `type_name.field_name` (GraphQL names) guarded by `permission`, as if
    its declaration said `strawberry.field(permission_classes=[permission])`; the shared
    Strawberry type is left as it was."""
    graphql_type = build_schema()._schema.type_map[type_name]
    definition = graphql_type.extensions["strawberry-definition"]
    index, original = next(
        (i, f)
        for i, f in enumerate(definition.fields)
        if (f.graphql_name or to_camel_case(f.python_name)) == field_name
    )
    guarded = copy.copy(original)
    guarded.permission_classes = [permission]
    guarded.extensions = [
        *original.extensions,
        PermissionExtension([permission()], use_directives=False),
    ]
    definition.fields[index] = guarded
    try:
        return build_schema()
    finally:
        definition.fields[index] = original


async def post(
    app: Starlette,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    async with http_client(app) as client:
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        response = await client.post(
            "/graphql", json=payload, headers={**(headers or {}), "X-Request-ID": REQUEST_ID}
        )
    return response.status_code, response.content


class Outcomes:
    """Deltas of marketgraph_planner_requests_total on one app."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.start = {name: outcome(app, name) for name in ("planned", "fallback", "strawberry")}

    def delta(self) -> dict[str, int]:
        return {name: int(outcome(self.app, name) - v) for name, v in self.start.items()}


# --- a guarded field is never served by the planner -------------------------------------------


@pytest.mark.parametrize(
    ("owner", "field_name", "query", "secret"),
    [
        ("User", "email", "{ viewer { id email } }", b"admin@kg.example"),
        (
            "Product",
            "stock",
            "{ products(first: 2) { edges { node { name stock } } } }",
            b'"stock":',
        ),
    ],
)
async def test_a_field_given_a_permission_class_is_enforced_not_leaked(
    app_factory: Callable[..., Starlette],
    pair: Pair,
    seeded: Seeded,
    owner: str,
    field_name: str,
    query: str,
    secret: bytes,
) -> None:
    schema = schema_guarding(owner, field_name, Deny)
    assert Planner(schema).prepare(query, None, None) is None  # unknown guard: not plannable
    assert Planner(build_schema()).prepare(query, None, None) is not None

    app = app_factory(query_planner="on", schema=schema)
    outcomes = Outcomes(app)
    status, body = await post(app, query, headers=pair.headers["admin-kg"])
    answer = orjson.loads(body)
    assert status == 200
    assert answer["errors"][0]["message"] == "Not for your eyes", answer
    assert answer["errors"][0]["path"][-1] == field_name
    assert secret not in body
    assert outcomes.delta() == STRAWBERRY

    # The same field without the guard is planned, and answers with the data.
    outcomes = Outcomes(pair.on)
    _, unguarded = await post(pair.on, query, headers=pair.headers["admin-kg"])
    assert outcomes.delta()["planned"] == 1
    assert secret in unguarded and b'"errors"' not in unguarded

    # And the guarded answer is Strawberry's own: the same bytes with the planner off.
    off = app_factory(query_planner="off", schema=schema)
    assert await post(off, query, headers=pair.headers["admin-kg"]) == (status, body)


# Where each read type is selected from the root: its fields go in place of %s.
READ_TYPES = {
    "Query": "{ %s }",
    "Market": "{ markets { %s } }",
    "User": "{ viewer { %s } }",
    "Cart": "{ viewer { cart { %s } } }",
    "CartItem": "{ viewer { cart { items { %s } } } }",
    "Wallet": "{ viewer { wallet { %s } } }",
    "Product": "{ products { edges { node { %s } } } }",
    "ProductConnection": "{ products { %s } }",
    "ProductEdge": "{ products { edges { %s } } }",
    "PageInfo": "{ products { pageInfo { %s } } }",
    "Money": "{ products { edges { node { price { %s } } } } }",
    "Order": '{ order(id: "x") { %s } }',
    "OrderItem": '{ order(id: "x") { items { %s } } }',
    "OrderConnection": "{ viewer { orders { %s } } }",
    "OrderEdge": "{ viewer { orders { edges { %s } } } }",
    "WalletTransaction": "{ viewer { transactions { edges { node { %s } } } } }",
    "WalletTransactionConnection": "{ viewer { transactions { %s } } }",
    "WalletTransactionEdge": "{ viewer { transactions { edges { %s } } } }",
    "UserConnection": '{ users(market: "kg") { %s } }',
    "UserEdge": '{ users(market: "kg") { edges { %s } } }',
    "MarketStats": "{ marketStats { %s } }",
}
ROOT_ARGUMENTS = {
    "market": '(code: "kg")',
    "node": '(id: "x")',
    "product": '(id: "x")',
    "order": '(id: "x")',
    "userByPhone": '(phone: "x")',
    "users": '(market: "kg")',
}


def read_fields() -> list[tuple[str, str, str]]:
    """(type, field, a document selecting it) for every field of the read side."""
    schema = build_schema()._schema
    out = []
    for type_name, template in READ_TYPES.items():
        for field_name, field in schema.type_map[type_name].fields.items():  # type: ignore[union-attr]
            named = get_named_type(field.type)
            selection = field_name
            if type_name == "Query":
                selection += ROOT_ARGUMENTS.get(field_name, "")
            if not is_leaf_type(named):
                selection += " { __typename }"
            out.append((type_name, field_name, template % selection))
    return out


def test_every_read_field_given_a_permission_class_goes_to_strawberry() -> None:
    """The planner serves every field of the read side, and not one of them once a
    permission class guards it (Strawberry then enforces it, as the test above shows)."""
    base = Planner(build_schema())
    fields = read_fields()
    assert len(fields) >= 80
    unplanned = [f"{t}.{f}" for t, f, query in fields if base.prepare(query, None, None) is None]
    assert unplanned == [], "read fields the planner does not serve"
    leaked = [
        f"{t}.{f}"
        for t, f, query in fields
        if Planner(schema_guarding(t, f, Deny)).prepare(query, None, None) is not None
    ]
    assert leaked == [], "guarded fields the planner would serve"


# --- wrong input keeps its typed errors ---------------------------------------------------------

WRONG_INPUT = [
    # (what, caller, query, variables, code)
    (
        "an invalid id",
        "member-kg",
        "query ($id: ID!) { product(id: $id) { id name } }",
        {"id": "garbage"},
        "BAD_USER_INPUT",
    ),
    (
        "an invalid node id",
        "anon-kg",
        "query ($id: ID!) { node(id: $id) { id } }",
        {"id": "VXNlcjprZzo"},
        "BAD_USER_INPUT",
    ),
    (
        "an id of another type",
        "member-kg",
        "query ($id: ID!) { order(id: $id) { number } }",
        {"id": "@Product.kg"},
        "BAD_USER_INPUT",
    ),
    (
        "first: 1000",
        "anon-kg",
        "{ products(first: 1000) { edges { cursor } } }",
        None,
        "BAD_USER_INPUT",
    ),
    (
        "first: 1000 nested",
        "member-kg",
        "query ($n: Int) { viewer { id transactions(first: $n) { edges { cursor } } } }",
        {"n": 1000},
        "BAD_USER_INPUT",
    ),
    (
        "first: -1",
        "admin-kg",
        '{ users(market: "kg", first: -1) { edges { cursor } } }',
        None,
        "BAD_USER_INPUT",
    ),
    (
        "a bad cursor",
        "anon-us",
        '{ products(after: "not a cursor") { edges { cursor } } }',
        None,
        "BAD_USER_INPUT",
    ),
    (
        "another market's order",
        "member-kg",
        "query ($id: ID!) { order(id: $id) { number } }",
        {"id": "@Order.us"},
        "NOT_FOUND",
    ),
    (
        "another market's order by node",
        "member-kg",
        "query ($id: ID!) { node(id: $id) { id ... on Order { number } } }",
        {"id": "@Order.us"},
        "NOT_FOUND",
    ),
    (
        "another member's order",
        "member-kg",
        "query ($id: ID!) { order(id: $id) { number } }",
        {"id": "@Order.kg.4"},
        "NOT_FOUND",
    ),
    (
        "another market's user",
        "member-kg",
        "query ($id: ID!) { node(id: $id) { id } }",
        {"id": "@User.us"},
        "NOT_FOUND",
    ),
    (
        "an unknown market",
        "anon-kg",
        '{ products(market: "zz") { edges { cursor } } }',
        None,
        "NOT_FOUND",
    ),
    (
        "a missing token on users",
        "anon-kg",
        '{ users(market: "kg") { edges { cursor } } }',
        None,
        "UNAUTHENTICATED",
    ),
    (
        "a missing token on marketStats",
        "anon-us",
        "{ marketStats { users } }",
        None,
        "UNAUTHENTICATED",
    ),
    (
        "a missing token on userByPhone",
        "anon-kg",
        '{ userByPhone(phone: "+996700123456") { id } }',
        None,
        "UNAUTHENTICATED",
    ),
    (
        "a member on an admin root",
        "member-us",
        '{ users(market: "us") { edges { cursor } } }',
        None,
        "FORBIDDEN",
    ),
    (
        "a missing token on a viewer's order",
        "anon-kg",
        "query ($id: ID!) { order(id: $id) { number } }",
        {"id": "@Order.kg"},
        "UNAUTHENTICATED",
    ),
    (
        "a token for another market than X-Market",
        "member-kg-x-us",
        "{ viewer { id orders { edges { cursor } } } }",
        None,
        "MARKET_MISMATCH",
    ),
]


def resolve_refs(variables: dict[str, Any] | None, seeded: Seeded) -> dict[str, Any] | None:
    """ "@Order.us" is the first US order; "@Order.kg.4" the fifth KG one."""
    if variables is None:
        return None
    out = {}
    for name, value in variables.items():
        if isinstance(value, str) and value.startswith("@"):
            kind, _, index = value[1:].partition(".")
            market, _, n = index.partition(".")
            value = seeded.ids[f"{kind}.{market}"][int(n or 0)]
        out[name] = value
    return out


async def test_wrong_input_keeps_its_typed_error_on_the_planned_path(
    pair: Pair, seeded: Seeded
) -> None:
    """Each case: the same bytes with the planner on and off, the expected code, and the
    planner took it (a plannable document) and handed the error to Strawberry (fallback).
    One data set for all cases; every failing case is reported."""
    failures = []
    for what, caller, query, variables, code in WRONG_INPUT:
        headers = (
            {**pair.headers["member-kg"], "X-Market": "us"}
            if caller == "member-kg-x-us"
            else pair.headers[caller]
        )
        resolved = resolve_refs(variables, seeded)
        outcomes = Outcomes(pair.on)
        on = await post(pair.on, query, resolved, headers)
        off = await post(pair.off, query, resolved, headers)
        answered = error_code(orjson.loads(on[1]))
        if on != off or answered != code or outcomes.delta() != FALLBACK:
            failures.append(
                f"{what}: expected {code}, got {answered}; outcomes {outcomes.delta()}\n"
                f"  planner on  {on!r}\n  planner off {off!r}"
            )
    assert not failures, "\n".join(failures)


FALLBACK = {"planned": 0, "fallback": 1, "strawberry": 0}
STRAWBERRY = {"planned": 0, "fallback": 0, "strawberry": 1}

# --- never planned: mutations, introspection ------------------------------------------------

NEVER_PLANNED = [
    'mutation { updatePreferences(patch: {theme: "dark"}) { preferences } }',
    'mutation M { updateProfile(input: {timezone: "UTC"}) { timezone } }',
    "{ __schema { queryType { name } } }",
    '{ __type(name: "User") { name fields { name } } }',
    "{ markets { code } __schema { types { name } } }",
    'query A { markets { code } } mutation B { logout(refreshToken: "x") }',
]


async def test_mutations_and_introspection_are_never_planned(pair: Pair, seeded: Seeded) -> None:
    for query in NEVER_PLANNED:
        outcomes = Outcomes(pair.on)
        status, body = await post(pair.on, query, headers=pair.headers["member-kg"])
        assert status == 200
        assert b'"data"' in body or b'"errors"' in body
        assert outcomes.delta() == STRAWBERRY, query


# --- shadow mode --------------------------------------------------------------------------------


@pytest.fixture
def planner_log() -> Iterator[list[logging.LogRecord]]:
    """Records of marketgraph.planned_reads (a handler on that logger: the app's logging setup
    replaces the root's handlers, pytest's capture among them)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("marketgraph.planned_reads")
    handler = Keep(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def differences(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    return [
        r.msg
        for r in records
        if isinstance(r.msg, dict) and r.msg.get("event") == "planner differs from Strawberry"
    ]


SHADOWED = [
    ("{ viewer { id email cart { itemCount subtotal { formatted } } } }", "member-kg"),
    ('{ users(market: "us", first: 3) { edges { node { id preferences } } } }', "admin-kg"),
    ("{ products(first: 3) { edges { node { name price { formatted } } } } }", "anon-us"),
]


async def test_shadow_serves_strawberrys_answer_and_runs_the_plan(
    app_factory: Callable[..., Starlette],
    pair: Pair,
    seeded: Seeded,
    planner_log: list[logging.LogRecord],
) -> None:
    shadow = app_factory(query_planner="shadow")
    outcomes = Outcomes(shadow)
    for query, caller in SHADOWED:
        served = await post(shadow, query, headers=pair.headers[caller])
        assert served == await post(pair.off, query, headers=pair.headers[caller])
    assert outcomes.delta() == {"planned": len(SHADOWED), "fallback": 0, "strawberry": 0}
    assert differences(planner_log) == []


async def test_shadow_logs_a_difference_and_still_serves_strawberry(
    app_factory: Callable[..., Starlette],
    pair: Pair,
    seeded: Seeded,
    planner_log: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shadow = app_factory(query_planner="shadow")
    planner = shadow.state.planner
    assert planner is not None
    execute = planner.execute

    async def wrong(prepared: Any, ctx: Any) -> dict[str, Any]:
        data = await execute(prepared, ctx)
        data["viewer"]["email"] = "leaked@example.com"  # a planner bug, simulated
        return data

    monkeypatch.setattr(planner, "execute", wrong)
    query, caller = "{ viewer { id email } }", "member-kg"
    served = await post(shadow, query, headers=pair.headers[caller])
    assert served == await post(pair.off, query, headers=pair.headers[caller])
    assert b"leaked" not in served[1]
    [logged] = differences(planner_log)
    assert "leaked@example.com" in logged["planned"]
    assert logged["strawberry"] == served[1].decode()
    assert logged.get("request_id") == REQUEST_ID or REQUEST_ID in str(logged)


# --- the plan cache -------------------------------------------------------------------------------


def test_the_plan_cache_is_bounded() -> None:
    planner = Planner(build_schema(), maxsize=2)
    documents = [
        "{ markets { code } }",
        "{ viewer { id } }",
        "{ products { edges { cursor } } }",
    ]
    for query in documents:
        assert planner.prepare(query, None, None) is not None
    assert len(planner._plans) == 2 and len(planner._documents) == 2
    assert all(key[0] != documents[0] for key in planner._plans)  # the oldest went first
    # A document used again is kept over one not used since.
    planner.prepare(documents[1], None, None)
    planner.prepare(documents[0], None, None)
    assert {key[0] for key in planner._plans} == {documents[0], documents[1]}
    # Unplannable documents take a bounded place too.
    for n in range(10):
        assert planner.prepare(f'mutation {{ logout(refreshToken: "{n}") }}', None, None) is None
    assert len(planner._plans) <= 2 and len(planner._documents) <= 2


def test_plans_are_keyed_without_variable_values() -> None:
    planner = Planner(build_schema())
    query = (
        "query ($id: ID!, $first: Int) "
        "{ product(id: $id) { name } products(first: $first) { edges { cursor } } }"
    )
    a = planner.prepare(query, None, {"id": "a", "first": 1})
    b = planner.prepare(query, None, {"id": "b", "first": 2})
    assert a is not None and b is not None
    assert a.operation is b.operation  # one plan for the document...
    assert len(planner._plans) == 1
    assert a.variables.coerced == {"id": "a", "first": 1}  # ...each request its own values
    assert b.variables.coerced == {"id": "b", "first": 2}
    # Variables that @skip/@include read shape the plan: each value has its own.
    shaped = "query ($a: Boolean!) { viewer { id @include(if: $a) email } }"
    yes = planner.prepare(shaped, None, {"a": True})
    no = planner.prepare(shaped, None, {"a": False})
    assert yes is not None and no is not None and yes.operation is not no.operation
    assert planner.prepare(shaped, None, {"a": True}).operation is yes.operation  # type: ignore[union-attr]


async def test_the_same_document_with_other_variables_answers_for_them(
    pair: Pair, seeded: Seeded
) -> None:
    query = (
        "query ($id: ID!, $first: Int, $a: Boolean!) { product(id: $id) { name sku } "
        "viewer { id @include(if: $a) transactions(first: $first) { edges { node { kind } } } } }"
    )
    outcomes = Outcomes(pair.on)
    answers = []
    for n, (market, first, a) in enumerate([("kg", 1, True), ("us", 3, False), ("kg", 2, False)]):
        variables = {"id": seeded.ids[f"Product.{market}"][n], "first": first, "a": a}
        on = await post(pair.on, query, variables, pair.headers["member-kg"])
        assert on == await post(pair.off, query, variables, pair.headers["member-kg"])
        body = orjson.loads(on[1])["data"]
        assert len(body["viewer"]["transactions"]["edges"]) == first
        assert ("id" in body["viewer"]) is a
        answers.append(body["product"]["sku"])
    assert len(set(answers)) == 3 or answers[0] != answers[1]
    assert outcomes.delta() == {"planned": 3, "fallback": 0, "strawberry": 0}


async def test_a_get_request_is_planned_like_a_post(pair: Pair, seeded: Seeded) -> None:
    outcomes = Outcomes(pair.on)
    async with http_client(pair.on) as on, http_client(pair.off) as off:
        params = {
            "query": "query ($m: ID) { products(market: $m, first: 2) { edges { cursor } } }",
            "variables": '{"m": "us"}',
        }
        a = await on.get("/graphql", params=params, headers={"X-Request-ID": REQUEST_ID})
        b = await off.get("/graphql", params=params, headers={"X-Request-ID": REQUEST_ID})
    assert (a.status_code, a.content) == (b.status_code, b.content)
    assert outcomes.delta()["planned"] == 1


async def test_the_helpers_see_the_planner(pair: Pair, seeded: Seeded) -> None:
    """tests/helpers.gql goes through the planner like any client."""
    outcomes = Outcomes(pair.on)
    body = await gql(pair.on_client, "{ markets { code } }")
    assert body == {"data": {"markets": [{"code": "kg"}, {"code": "us"}]}}
    assert outcomes.delta()["planned"] == 1

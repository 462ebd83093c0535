"""What a client sends to /graphql is checked before anything runs, on both paths: malformed
requests are JSON 400s, bad strings are BAD_USER_INPUT naming where they are, documents
past the size limits are QUERY_TOO_COMPLEX, and each document is parsed and validated once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from graphql import parse as graphql_parse
from graphql import validate as graphql_validate
from starlette.applications import Starlette

from marketgraph.schema import documents
from tests.factories import (  # noqa: F401 - fixtures are found by pytest
    SqlCounter,
    app_fixture,
    http_fixture,
    sql_counter_fixture,
)
from tests.helpers import error, gql, http_client

SEARCH = "query ($s: String) { products(search: $s) { pageInfo { hasNextPage } } }"
REGISTER = """
mutation ($input: RegisterInput!) { register(input: $input) { accessToken } }
"""


def refused(response: httpx.Response, says: str) -> dict[str, Any]:
    """A JSON 400 refusal, no `data`, whose one error says `says`."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert "data" not in body
    [err] = body["errors"]
    assert err["extensions"]["code"] == "BAD_USER_INPUT"
    assert says in err["message"], err["message"]
    return err


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"null", "JSON object"),
        (b"42", "JSON object"),
        (b'"{ markets { code } }"', "JSON object"),
        (b'[{"query": "{ markets { code } }"}]', "Batched requests"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"query": 1}', "`query` must be a string"),
        (b'{"query": "{ markets { code } }", "operationName": 1}', "`operationName`"),
        (b'{"query": "{ markets { code } }", "variables": []}', "`variables` must be"),
        (b'{"query": "{ markets { code } }", "extensions": "x"}', "`extensions` must be"),
        (b'{"query": "{ markets { code } }", "variables": ' + b"[" * 100_000, "too deeply"),
    ],
    ids=[
        "null",
        "number",
        "string",
        "batch",
        "truncated",
        "not-utf8",
        "query-type",
        "name-type",
        "variables-type",
        "extensions-type",
        "nested-100000",
    ],
)
async def test_a_malformed_request_is_a_json_400(
    http: httpx.AsyncClient, body: bytes, says: str
) -> None:
    response = await http.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )
    refused(response, says)


async def test_other_refusals_of_the_view_are_json_too(http: httpx.AsyncClient) -> None:
    no_query = await http.get("/graphql", headers={"accept": "application/json"})
    refused(no_query, "No GraphQL query")
    # The other statuses (405, 406, 415): tests/api/test_graphql_over_http.py.


async def test_variables_nested_past_the_limit_are_refused(
    app_factory: Callable[..., Starlette],
) -> None:
    query = 'query ($p: JSON) { users(market: "kg", preferences: $p) { pageInfo { hasNextPage } } }'

    def variables(depth: int) -> Any:
        """Variables nesting objects `depth` levels deep, themselves included."""
        value: Any = 1
        for _ in range(depth - 1):
            value = {"a": value}
        return {"p": value}

    async with http_client(app_factory(max_variables_depth=6)) as client:
        deep = await client.post("/graphql", json={"query": query, "variables": variables(7)})
        fine = await client.post("/graphql", json={"query": query, "variables": variables(6)})
    refused(deep, "at most 6")
    assert fine.status_code == 200  # (UNAUTHENTICATED: anonymous; but it was read)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [("a\x00b", "NUL character"), ("a\ud800b", "unpaired surrogate")],
    ids=["nul", "surrogate"],
)
async def test_a_variable_with_a_bad_string_is_refused_naming_it(
    http: httpx.AsyncClient, sql_counter: SqlCounter, bad: str, problem: str
) -> None:
    cases = [
        (SEARCH, {"s": bad}, "$s"),
        (
            REGISTER,
            {"input": {"email": "a@example.com", "password": "x" * 12, "firstName": bad}},
            "$input.firstName",
        ),
        (
            'query ($p: JSON) { users(market: "kg", preferences: $p) { edges { cursor } } }',
            {"p": {"theme": [1, {bad: 1}]}},
            "$p.theme[1]",
        ),
    ]
    with sql_counter.counting():
        for query, variables, where in cases:
            # json.dumps writes a lone surrogate as its escape, as a JavaScript client would.
            body = json.dumps({"query": query, "variables": variables}).encode()
            response = await http.post(
                "/graphql", content=body, headers={"content-type": "application/json"}
            )
            err = refused(response, problem)
            assert err["extensions"]["variable"] == where
            assert f"'{where}'" in err["message"]
    assert sum(sql_counter.counts.values()) == 0


async def test_a_literal_with_a_nul_is_refused_naming_the_argument(
    http: httpx.AsyncClient, sql_counter: SqlCounter
) -> None:
    cases = [
        ('{ products(search: "a\\u0000") { pageInfo { hasNextPage } } }', "search"),
        (
            'mutation { register(input: {email: "a@example.com", password: "long enough pw",'
            ' lastName: "\\u0000"}) { accessToken } }',
            "input.lastName",
        ),
        (
            '{ users(market: "kg", preferences: {k: ["\\u0000"]}) { pageInfo { hasNextPage } } }',
            "preferences.k",
        ),
    ]
    with sql_counter.counting():
        for query, where in cases:
            body = await gql(http, query)
            assert "data" not in body  # a request error: nothing executed
            err = error(body)
            assert err["extensions"]["code"] == "BAD_USER_INPUT"
            assert err["message"] == f"Argument '{where}' contains a NUL character"
    assert sum(sql_counter.counts.values()) == 0


async def test_several_operations_need_an_operation_name(http: httpx.AsyncClient) -> None:
    document = "query A { markets { code } } query B { markets { name } }"
    unnamed = await gql(http, document)
    assert "data" not in unnamed  # a request error: nothing executed
    assert error(unnamed)["extensions"]["code"] == "BAD_USER_INPUT"
    assert "operationName" in error(unnamed)["message"]
    response = await http.post("/graphql", json={"query": document, "operationName": "C"})
    assert error(response.json())["extensions"]["code"] == "BAD_USER_INPUT"
    named = await http.post("/graphql", json={"query": document, "operationName": "B"})
    assert named.json() == {
        "data": {"markets": [{"name": "Кыргызстан"}, {"name": "United States"}]}
    }


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("{ markets { code } }" + " " * 30_000, "characters"),
        ("{ " + " ".join(f"a{n}: markets {{ code }}" for n in range(400)) + " }", "tokens"),
        (
            "{ products(first: 1) { edges { node { "
            + " ".join(f"...F{n}" for n in range(80))
            + " } } } } "
            + " ".join(f"fragment F{n} on Product {{ id }}" for n in range(80)),
            "spreads 80 fragments",
        ),
        ("{ markets { " + "code " * 70 + "} }", "selects 'code' 70 times"),
        (
            "{ ...F0 } "
            + " ".join(f"fragment F{n} on Query {{ ...F{n + 1} ...F{n + 1} }}" for n in range(20))
            + " fragment F20 on Query { markets { code } }",
            "selections",
        ),
    ],
    ids=["chars", "tokens", "spreads", "same-name", "fragment-bomb"],
)
async def test_a_document_past_the_size_limits_is_refused_before_validation(
    app_factory: Callable[..., Starlette],
    sql_counter: SqlCounter,
    monkeypatch: pytest.MonkeyPatch,
    document: str,
    says: str,
) -> None:
    validated: list[object] = []
    monkeypatch.setattr(
        documents, "validate", lambda *a, **k: validated.append(a) or graphql_validate(*a, **k)
    )
    app = app_factory(max_document_chars=20_000, max_document_tokens=1000, max_selections=500)
    async with http_client(app) as client:
        with sql_counter.counting():
            body = await gql(client, document)
    assert "data" not in body  # a request error: nothing executed
    assert error(body)["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert says in error(body)["message"]
    assert validated == []
    assert sum(sql_counter.counts.values()) == 0


async def test_a_document_is_parsed_and_validated_once_for_both_paths(
    app: Starlette, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def counted(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(documents, "parse", counted("parse", graphql_parse))
    monkeypatch.setattr(documents, "validate", counted("validate", graphql_validate))
    invalid = "{ markets { code nope } }"
    for _ in range(3):
        body = await gql(http, invalid)
        assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    for _ in range(3):
        assert (await gql(http, "{ markets { code } }"))["data"]
    assert calls == ["parse", "validate", "parse", "validate"]


async def test_production_suggests_no_field_names(app_factory: Callable[..., Starlette]) -> None:
    typo = "{ markets { cod } }"
    async with http_client(app_factory()) as client:
        development = error(await gql(client, typo))["message"]
    production = app_factory(
        environment="production",
        jwt_secret="x" * 40,
        login_code_secret="y" * 40,
        payment_webhook_secret="z" * 40,
        sms_backend="webhook",
        sms_webhook_url="http://127.0.0.1:9/sms",
    )
    async with http_client(production) as client:
        hidden = error(await gql(client, typo))["message"]
        enum = await client.post(
            "/graphql",
            json={"query": "query ($t: UserType) { __typename }", "variables": {"t": "ADMN"}},
        )
    assert "Did you mean" in development
    assert hidden == "Cannot query field 'cod' on type 'Market'."
    assert "Did you mean" not in enum.text

"""A GraphQL request over HTTP: its parameters, read from a JSON body or a query string once
per request and checked before anything runs, for both execution paths.

Refused here, with a JSON error and HTTP 400: a body that is not a JSON object (batches
included), parameters of the wrong type, variables nested deeper than
MAX_VARIABLES_DEPTH, and a variable holding a string PostgreSQL cannot store
(`marketgraph.text`), named by its path (`$input.firstName`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import Scope

from marketgraph.errors import ErrorCode
from marketgraph.text import find_bad_text, json_depth

_STATE_KEY = "graphql_params"


@dataclass(frozen=True, slots=True)
class GraphQLParams:
    query: str | None
    operation_name: str | None
    variables: dict[str, Any] | None
    extensions: dict[str, Any] | None


class RequestRefused(Exception):  # noqa: N818 - an answer, carried up to where it is sent
    """The request cannot be run as sent; answered with `status` and a JSON error."""

    def __init__(self, message: str, status: int = 400, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = ErrorCode.BAD_USER_INPUT
        self.extensions = extensions


def request_params(scope: Scope, body: bytes | None, max_depth: int) -> GraphQLParams:
    """The parameters of the request (`body` for a POST, None for a GET), read once and
    kept in its scope for whichever path runs it; raises `RequestRefused`."""
    state = scope.setdefault("state", {})
    known = state.get(_STATE_KEY)
    if known is None:
        try:
            if body is None:
                known = _from_query_string(scope["query_string"], max_depth)
            else:
                known = _checked(_load_json(body, "The request body", max_depth), max_depth)
        except RequestRefused as refused:
            known = refused
        state[_STATE_KEY] = known
    if isinstance(known, RequestRefused):
        raise known
    params: GraphQLParams = known
    return params


def _from_query_string(query_string: bytes, max_depth: int) -> GraphQLParams:
    # As Starlette reads a query string (the last of repeated names wins).
    payload: dict[str, Any] = dict(
        parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    )
    for name in ("variables", "extensions"):
        if payload.get(name):
            payload[name] = _load_json(payload[name].encode(), f"`{name}`", max_depth)
        else:
            payload.pop(name, None)
    return _checked(payload, max_depth)


def _load_json(raw: bytes, what: str, max_depth: int) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc):
            raise RequestRefused(f"{what} nests too deeply (at most {max_depth} levels)") from None
    # orjson refuses an unpaired surrogate (`"\\ud800"`), which is valid JSON: read it here
    # so that the string rule can say which variable holds it.
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestRefused(f"{what} is not valid JSON") from None


def _checked(payload: Any, max_depth: int) -> GraphQLParams:
    if isinstance(payload, list):
        raise RequestRefused("Batched requests are not supported: send one operation a request")
    if not isinstance(payload, dict):
        raise RequestRefused("The request must be a JSON object with a `query`")
    query, name = payload.get("query"), payload.get("operationName")
    variables, extensions = payload.get("variables"), payload.get("extensions")
    if not isinstance(query, str | None):
        raise RequestRefused("`query` must be a string")
    if not isinstance(name, str | None):
        raise RequestRefused("`operationName` must be a string")
    if not isinstance(variables, dict | None):
        raise RequestRefused("`variables` must be an object")
    if not isinstance(extensions, dict | None):
        raise RequestRefused("`extensions` must be an object")
    for what, value in (("`variables`", variables), ("`extensions`", extensions)):
        depth = json_depth(value) if value else 0
        if depth > max_depth:
            raise RequestRefused(f"{what} nest {depth} levels deep; at most {max_depth}")
    bad = find_bad_text(variables, "$") if variables else None
    if bad is not None:
        where, problem = bad
        where = where.replace("$.", "$", 1)
        raise RequestRefused(f"Variable '{where}' {problem}", variable=where)
    return GraphQLParams(query, name, variables, extensions)

"""GraphQL over HTTP (the GraphQL Foundation's spec): a request's parameters, read from a
JSON body or a query string once per request and checked before anything runs, the media
type of the answer, and its status, for both execution paths.

Refused here, with a JSON error: a body that is not a JSON object (batches included),
parameters of the wrong type, variables nested deeper than MAX_VARIABLES_DEPTH, and a
variable holding a string PostgreSQL cannot store (`marketgraph.text`), named by its path
(`$input.firstName`) — all 400; an `Accept` header that admits no JSON media type (406).
A persisted document's id is resolved to its text here too (`marketgraph.persisted`).

The answer is `application/graphql-response+json` when `Accept` prefers it, else
`application/json` (also for no `Accept`, or `*/*`). A request error — the request fails
before execution: a syntax or validation error, variables that do not coerce, a refused
credential, an unknown persisted document — is answered without `data`; its status is 200
in `application/json` (what the spec asks of that legacy type, so old clients read the
error), and 4xx or 5xx in `application/graphql-response+json` (`request_error_status`).
An executed operation is 200 in both, errors or not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import orjson
from starlette.types import Scope

from marketgraph.errors import DomainError, ErrorCode, error_body, refusal_body
from marketgraph.kv import KeyValueStore
from marketgraph.middleware import header
from marketgraph.persisted import PersistedDocuments
from marketgraph.text import find_bad_text, json_depth

_STATE_KEY = "graphql_params"

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"

# A request error's status in `application/graphql-response+json`, by its code (else 400).
_REQUEST_ERROR_STATUS: dict[str, int] = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.PERSISTED_DOCUMENT_REQUIRED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL_SERVER_ERROR: 500,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
}


@dataclass(frozen=True, slots=True)
class GraphQLParams:
    """A request's parameters; `query` is a persisted document's text once resolved, and
    `persisted` says it was sent by id alone (what a shared cache may keep, see
    `cache_control`)."""

    query: str | None
    operation_name: str | None
    variables: dict[str, Any] | None
    extensions: dict[str, Any] | None
    media_type: str = JSON
    document_id: str | None = None
    persisted: bool = False


class RequestRefused(Exception):  # noqa: N818 - an answer, carried up to where it is sent
    """The request cannot be run as sent; answered with `status` and a JSON error."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers or {}
        self.code = ErrorCode.BAD_USER_INPUT
        self.extensions = extensions


def negotiate(accept: str | None) -> str | None:
    """The media type to answer a request with this `Accept` header in, or None when it
    admits neither: the highest quality wins, a named type over a wildcard, and
    `application/graphql-response+json` over `application/json` at equal quality."""
    if not accept:
        return JSON
    best: tuple[float, int, str] | None = None
    for item in accept.split(","):
        media, *options = (part.strip() for part in item.split(";"))
        media = media.lower()
        if media == GRAPHQL_RESPONSE_JSON:
            candidate = (2, GRAPHQL_RESPONSE_JSON)
        elif media == JSON:
            candidate = (1, JSON)
        elif media in ("*/*", "application/*"):
            candidate = (0, JSON)  # curl and older clients: the legacy type
        else:
            continue
        quality = 1.0
        for option in options:
            name, _, value = option.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0 and (best is None or (quality, candidate[0]) > best[:2]):
            best = (quality, *candidate)
    return best[2] if best is not None else None


def answer_media_type(scope: Scope) -> str:
    """The media type this request is answered in (JSON when its `Accept` admits none:
    the 406 that says so is JSON too)."""
    return negotiate(header(scope, b"accept")) or JSON


def request_error_status(media_type: str, code: str | None) -> int:
    """The status of an answer without `data` (nothing was executed)."""
    if media_type != GRAPHQL_RESPONSE_JSON:
        return 200
    return _REQUEST_ERROR_STATUS.get(code or "", 400)  # ErrorCode is a str enum


def retry_after(extensions: dict[str, Any] | None) -> dict[str, str]:
    """A `Retry-After` header for an error that says when to come back."""
    seconds = (extensions or {}).get("retryAfter")
    return {"retry-after": str(int(seconds))} if isinstance(seconds, int | float) else {}


def cache_control(scope: Scope, params: GraphQLParams, ok: bool, seconds: int) -> str | None:
    """`Cache-Control` of a GET answer: public for `seconds` when the read was sent by
    persisted id alone, anonymously, and answered without errors (what a CDN can share);
    never stored otherwise. POST answers carry none (shared caches do not keep them)."""
    if scope["method"] != "GET":
        return None
    anonymous = header(scope, b"authorization") is None
    if ok and params.persisted and anonymous and seconds > 0:
        return f"public, max-age={seconds}"
    return "private, no-store"


class Answer(NamedTuple):
    """A GraphQL answer, ready to send on either path."""

    status: int
    body: bytes
    headers: dict[str, str]


def executed_answer(
    scope: Scope, params: GraphQLParams, body: bytes, ok: bool, cache_seconds: int
) -> Answer:
    """An executed operation's answer: 200, errors or not."""
    headers = {"content-type": params.media_type}
    cache = cache_control(scope, params, ok, cache_seconds)
    if cache is not None:
        headers["cache-control"] = cache
        if cache.startswith("public"):
            headers["vary"] = "Accept, Authorization, X-Market"
    return Answer(200, body, headers)


def request_error_answer(
    scope: Scope, media_type: str, code: str | None, extensions: dict[str, Any] | None, body: bytes
) -> Answer:
    """The answer to a request that failed before execution (its body has no `data`)."""
    headers = {"content-type": media_type, **retry_after(extensions)}
    if scope["method"] == "GET":
        headers["cache-control"] = "private, no-store"
    return Answer(request_error_status(media_type, code), body, headers)


def refusal_answer(scope: Scope, exc: DomainError, request_id: str | None) -> Answer:
    """The answer to a request a `DomainError` refused before execution (bad credentials,
    an unknown market or persisted document, a store that is down)."""
    body = refusal_body(exc, request_id)
    return request_error_answer(scope, answer_media_type(scope), exc.code, exc.extensions, body)


def refused_answer(scope: Scope, refused: RequestRefused, request_id: str | None) -> Answer:
    """The answer to a malformed request: its own status in either media type."""
    body = error_body(refused.code, refused.message, request_id, **refused.extensions)
    media_type = JSON if refused.status == 406 else answer_media_type(scope)
    return Answer(refused.status, body, {"content-type": media_type, **refused.headers})


def known_params(scope: Scope) -> GraphQLParams | None:
    """The request's parameters, when `read_request` read them successfully."""
    known = scope.get("state", {}).get(_STATE_KEY)
    return known if isinstance(known, GraphQLParams) else None


async def read_request(
    scope: Scope,
    body: bytes | None,
    max_depth: int,
    persisted: PersistedDocuments,
    kv: KeyValueStore,
) -> GraphQLParams:
    """The parameters of the request (`body` for a POST, None for a GET), read once and
    kept in its scope for whichever path runs it, a persisted document resolved to its
    text; raises `RequestRefused` for a malformed request, a `DomainError` for a persisted
    document the server cannot run."""
    state = scope.setdefault("state", {})
    known = state.get(_STATE_KEY)
    if known is None:
        try:
            media_type = negotiate(header(scope, b"accept"))
            if media_type is None:
                raise RequestRefused(
                    f"Accept {JSON} or {GRAPHQL_RESPONSE_JSON}: this server answers in those",
                    status=406,
                )
            if body is None:
                params = _from_query_string(scope["query_string"], max_depth)
            else:
                params = _checked(_load_json(body, "The request body", max_depth), max_depth)
            params = replace(params, media_type=media_type)
            found = await persisted.resolve(params.query, params.document_id, params.extensions, kv)
            if found is not None:
                query, document_id, by_id = found
                params = replace(params, query=query, document_id=document_id, persisted=by_id)
            known = params
        except (RequestRefused, DomainError) as refused:
            known = refused
        state[_STATE_KEY] = known
    if isinstance(known, RequestRefused | DomainError):
        raise known
    result: GraphQLParams = known
    return result


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
    document_id = payload.get("documentId")
    if not isinstance(query, str | None):
        raise RequestRefused("`query` must be a string")
    if not isinstance(document_id, str | None):
        raise RequestRefused("`documentId` must be a string")
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
    return GraphQLParams(query, name, variables, extensions, document_id=document_id)

"""ErrorCode, DomainError, and the one place that turns exceptions into GraphQL errors."""

from __future__ import annotations

import enum
from typing import Any

import orjson
import structlog
from graphql import GraphQLError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = structlog.get_logger(__name__)


class ErrorCode(enum.StrEnum):
    """The contract's error codes; the value of every error's `extensions.code`."""

    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    INVALID_PHONE = "INVALID_PHONE"
    UNSUPPORTED_MARKET = "UNSUPPORTED_MARKET"
    MARKET_MISMATCH = "MARKET_MISMATCH"
    INVALID_CODE = "INVALID_CODE"
    RATE_LIMITED = "RATE_LIMITED"
    CONFLICT = "CONFLICT"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    # Persisted documents (Apollo's codes, which its clients act on).
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
    PERSISTED_DOCUMENT_REQUIRED = "PERSISTED_DOCUMENT_REQUIRED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class DomainError(Exception):
    """The only exception whose message reaches clients, with its code and extras."""

    def __init__(self, code: ErrorCode, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extensions = extensions


# Seconds a client is asked to wait after a dependency failed (a breaker says its own).
RETRY_AFTER_SECONDS = 5
UNAVAILABLE_MESSAGE = "A backing service is unavailable; try again shortly"


class ServiceUnavailableError(DomainError):
    """A store or the key-value store cannot be reached; callers may retry later.

    `reason` names what failed (an error class, for logs and health probes), never told
    to clients."""

    def __init__(self, message: str = UNAVAILABLE_MESSAGE, **extensions: Any) -> None:
        extensions.setdefault("retryAfter", RETRY_AFTER_SECONDS)
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, message, **extensions)
        self.reason: str | None = None


# SQLSTATE classes of a server that cannot serve: connection exception (08), insufficient
# resources such as "too many clients" (53), operator intervention such as a shutdown, a
# server starting up or a cancelled statement (57), system error (58).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})
# A write refused by a database in a read-only window (`db move`'s runbook) or on a replica.
READ_ONLY_SQLSTATE = "25006"


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means a database could not serve (not a bad statement): refused, timed
    out, out of connections, shutting down — raw from the driver or wrapped by SQLAlchemy."""
    seen: BaseException | None = exc
    for _ in range(4):  # the exception, what SQLAlchemy wrapped, and what that wrapped
        if seen is None:
            return False
        if isinstance(
            seen,
            (ServiceUnavailableError, PoolTimeoutError, ConnectionError, TimeoutError, OSError),
        ):
            return True
        if isinstance(seen, (OperationalError, InterfaceError)):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate == READ_ONLY_SQLSTATE
        ):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def describe_error(exc: BaseException) -> str:
    """A short reason class for `exc`, safe to answer with: never its message, URL or password."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, PoolTimeoutError):
        return "pool_timeout"
    if isinstance(exc, ServiceUnavailableError) and exc.reason is not None:
        return exc.reason  # a breaker refusing at once: what made it open
    # SQLAlchemy wraps the driver's error, which wraps asyncpg's: the innermost names the cause.
    root, seen = exc, {id(exc)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    return type(root).__name__


def _error(code: ErrorCode, message: str, request_id: str | None, **extensions: Any) -> Any:
    extensions = {**extensions, "code": code.value}
    if request_id is not None:
        extensions["requestId"] = request_id
    return {"message": message, "extensions": extensions}


def error_body(code: ErrorCode, message: str, request_id: str | None, **extensions: Any) -> bytes:
    """A JSON answer of one error, for requests refused before they reach GraphQL (too big,
    malformed, a busy server): no `data`, as nothing was executed."""
    return orjson.dumps({"errors": [_error(code, message, request_id, **extensions)]})


def refusal_body(exc: DomainError, request_id: str | None, executed: bool = False) -> bytes:
    """The answer to a GraphQL request refused by a `DomainError` (bad credentials, an
    unknown market, a store that is down): the error, without `data` when it came before
    execution (the GraphQL spec's request error), with `data` null when execution failed."""
    error = _error(exc.code, exc.message, request_id, **exc.extensions)
    if executed:
        return orjson.dumps({"data": None, "errors": [error]})
    return orjson.dumps({"errors": [error]})


def format_error(error: GraphQLError, request_id: str | None) -> GraphQLError:
    """The client's view of `error`: its code and extras, never internals.

    GraphQL's own errors (syntax, validation, variable coercion) keep their
    message as `BAD_USER_INPUT`; anything unforeseen is logged in full and
    answered as `INTERNAL_SERVER_ERROR` with the request id.
    """
    original = error.original_error
    extensions: dict[str, Any]
    if original is None or isinstance(original, GraphQLError):
        extensions = {"code": (error.extensions or {}).get("code", ErrorCode.BAD_USER_INPUT.value)}
        message = error.message
    elif isinstance(original, DomainError):
        extensions = {**original.extensions, "code": original.code.value}
        message = original.message
    elif is_unavailable(original):
        log.warning("store unavailable", error=repr(original), path=error.path)
        extensions = {
            "code": ErrorCode.SERVICE_UNAVAILABLE.value,
            "retryAfter": RETRY_AFTER_SECONDS,
        }
        message = UNAVAILABLE_MESSAGE
    else:
        log.error("unhandled error", path=error.path, exc_info=original)
        extensions = {"code": ErrorCode.INTERNAL_SERVER_ERROR.value}
        message = "Internal server error"
    if request_id is not None:
        extensions["requestId"] = request_id
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )

"""ErrorCode, DomainError, and the one place that turns exceptions into GraphQL errors."""

from __future__ import annotations

import enum
from typing import Any

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
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class DomainError(Exception):
    """The only exception whose message reaches clients, with its code and extras."""

    def __init__(self, code: ErrorCode, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extensions = extensions


class ServiceUnavailableError(DomainError):
    """A store or the key-value store cannot be reached; callers may retry later."""

    def __init__(
        self,
        message: str = "A backing service is unavailable; try again shortly",
        **extensions: Any,
    ) -> None:
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, message, **extensions)


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means a database could not be reached (not a bad statement)."""
    if isinstance(exc, (PoolTimeoutError, ConnectionError, TimeoutError, OSError)):
        return True
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


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
        extensions = {"code": ErrorCode.SERVICE_UNAVAILABLE.value}
        message = "A backing service is unavailable; try again shortly"
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

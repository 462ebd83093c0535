"""The status and headers of a request error: what a client and a load balancer act on."""

from __future__ import annotations

import pytest

from marketgraph.errors import ErrorCode
from marketgraph.graphql_http import (
    GRAPHQL_RESPONSE_JSON,
    JSON,
    negotiate,
    request_error_status,
    retry_after,
)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.BAD_USER_INPUT, 400),
        (ErrorCode.QUERY_TOO_COMPLEX, 400),
        (ErrorCode.PERSISTED_QUERY_NOT_FOUND, 400),
        (ErrorCode.UNAUTHENTICATED, 401),
        (ErrorCode.PERSISTED_DOCUMENT_REQUIRED, 403),
        (ErrorCode.RATE_LIMITED, 429),
        (ErrorCode.SERVICE_UNAVAILABLE, 503),
        (None, 400),
        ("SOMETHING_NEW", 400),
    ],
)
def test_a_request_error_is_4xx_or_5xx_only_in_the_spec_media_type(
    code: str | None, status: int
) -> None:
    assert request_error_status(GRAPHQL_RESPONSE_JSON, code) == status
    assert request_error_status(JSON, code) == 200


def test_an_error_that_says_when_to_come_back_gets_retry_after() -> None:
    assert retry_after({"retryAfter": 5}) == {"retry-after": "5"}
    assert retry_after({"retryAfter": 2.5}) == {"retry-after": "2"}
    assert retry_after({"retryAfter": "soon"}) == {}
    assert retry_after(None) == {}


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("application/graphql-response+json;q=0", None),
        ("application/*;q=0.5, application/graphql-response+json;q=0.4", JSON),
        ("APPLICATION/GRAPHQL-RESPONSE+JSON", GRAPHQL_RESPONSE_JSON),
        ("text/html;q=x", None),
        ("", JSON),
    ],
)
def test_negotiation_follows_quality_values(accept: str, chosen: str | None) -> None:
    assert negotiate(accept) == chosen

"""A planned run that fails is never hidden: Strawberry still answers the request, and the
failure is logged at WARNING with the request id and counted by reason in /metrics — while
a GraphQL error the plan meets (Strawberry words it, with its path) is counted, not logged.
The caller is authenticated once either way."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette

from marketgraph import planned_reads
from marketgraph.auth import authenticate
from marketgraph.planner import inline
from tests.helpers import http_client
from tests.planner.conftest import Seeded

QUERY = "{ products(first: 2) { edges { node { id name } } } }"


class Log:
    """Stands in for the planned reads' logger (structlog caches its loggers, so capturing
    them depends on test order)."""

    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


def fallbacks(app: Starlette, reason: str) -> float:
    value = app.state.metrics.registry.get_sample_value(
        "marketgraph_planner_fallbacks_total", {"reason": reason}
    )
    return float(value or 0.0)


async def test_a_planner_bug_is_logged_counted_and_answered_by_strawberry(
    app_factory: Any, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> list[str]:
        raise RuntimeError("a planner bug")

    monkeypatch.setattr(inline, "encode_ids", broken)  # global ids, in the planner only
    log = Log()
    monkeypatch.setattr(planned_reads, "log", log)
    app = app_factory(query_planner="on")
    async with http_client(app) as client:
        response = await client.post(
            "/graphql",
            json={"query": QUERY},
            headers={"X-Market": "kg", "X-Request-ID": "bug-0001"},
        )
    body = response.json()
    assert "errors" not in body and len(body["data"]["products"]["edges"]) == 2
    assert fallbacks(app, "RuntimeError") == 1
    [(event, fields)] = log.warnings
    assert "planned run" in event
    assert fields["request_id"] == "bug-0001" and "a planner bug" in fields["error"]


async def test_a_graphql_error_is_counted_not_logged_and_the_caller_authenticated_once(
    app_factory: Any, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = authenticate.authenticate

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr("marketgraph.context.authenticate", counting)
    log = Log()
    monkeypatch.setattr(planned_reads, "log", log)
    app = app_factory(query_planner="on")
    headers = {"Authorization": f"ApiKey {seeded.api_keys['kg']}"}
    async with http_client(app) as client:
        response = await client.post(
            "/graphql",
            json={"query": "{ products(first: 101) { edges { cursor } } }"},
            headers=headers,
        )
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert fallbacks(app, "error") == 1
    assert not log.warnings
    assert calls == 1  # the planned run's context served Strawberry's fallback too

"""Each access rule is one function (`marketgraph.policies`) that both read paths call: a
rule broken in that one place is broken on both, so the differential test and the API tests
guard every caller type of every path at once.

The rule here is market reachability: an API key stays in its market. The same request —
an API key of kg listing the users of us — is refused on both paths; with the rule
replaced by one that lets every caller reach every market, both paths answer it.
"""

from __future__ import annotations

from typing import Any

import pytest

from marketgraph import policies
from marketgraph.markets import Market
from tests.planner.conftest import Pair

OTHER_MARKET_USERS = '{ users(market: "us", first: 2) { edges { node { id market { code } } } } }'


async def answers(pair: Pair) -> list[dict[str, Any]]:
    headers = pair.headers["apikey-kg"]
    bodies = []
    for client in (pair.on_client, pair.off_client):
        response = await client.post(
            "/graphql", json={"query": OTHER_MARKET_USERS}, headers=headers
        )
        bodies.append(response.json())
    return bodies


async def test_an_api_key_stays_in_its_market_on_both_paths(pair: Pair) -> None:
    for body in await answers(pair):
        assert body["data"] is None  # the root field failed during execution
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_breaking_the_one_rule_breaks_both_paths(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reaches_everywhere(ctx: Any, code: str) -> Market | None:
        return ctx.markets.get(code)  # the bug: an API key reaches every market

    monkeypatch.setattr(policies, "reachable", reaches_everywhere)
    planned, strawberry = await answers(pair)
    assert planned == strawberry
    edges = planned["data"]["users"]["edges"]
    assert edges and {e["node"]["market"]["code"] for e in edges} == {"us"}

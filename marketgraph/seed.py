"""Demo data: products with local names and prices per market, and users."""

from __future__ import annotations

from marketgraph.settings import Settings


async def seed_if_empty(settings: Settings) -> None:
    """Load the demo data when the catalog of every market is empty."""

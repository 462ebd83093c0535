"""Topology: which database URL and PostgreSQL schema hold each (market, role) store."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from sqlalchemy.engine import URL

from marketgraph.settings import (
    ROLES,
    Role,
    database_url_variables,
    parse_database_url,
    parse_replica_urls,
    replica_url_variables,
)


@dataclass(frozen=True, slots=True)
class StoreKey:
    """A store's name: one market's data of one bounded context."""

    market: str
    role: Role

    def __str__(self) -> str:
        return f"{self.market}.{self.role}"

    @property
    def schema(self) -> str:
        """Every store lives in its own PostgreSQL schema, so shared databases never mix tables."""
        return f"{self.market}_{self.role}"


@dataclass(frozen=True, slots=True)
class StoreLocation:
    key: StoreKey
    url: URL
    source: str  # the variable that decided the URL, or "embedded"
    replicas: tuple[URL, ...] = ()  # its read replicas' URLs (a replica variable's), if any

    @property
    def schema(self) -> str:
        return self.key.schema


class Topology:
    """The resolved location of every store, in market then role order."""

    def __init__(self, locations: list[StoreLocation]) -> None:
        self._locations = {loc.key: loc for loc in locations}

    def __iter__(self) -> Iterator[StoreLocation]:
        return iter(self._locations.values())

    def __getitem__(self, key: StoreKey) -> StoreLocation:
        return self._locations[key]

    def keys(self) -> list[StoreKey]:
        return list(self._locations)

    def select(self, market: str | None = None, role: Role | None = None) -> list[StoreLocation]:
        """The stores matching `market` and `role` (None matches all)."""
        return [
            loc
            for loc in self
            if (market is None or loc.key.market == market)
            and (role is None or loc.key.role == role)
        ]

    @classmethod
    def resolve(
        cls,
        market_codes: tuple[str, ...],
        database_urls: Mapping[str, str],
        embedded_url: Callable[[StoreKey], URL] | None = None,
        replica_urls: Mapping[str, str] | None = None,
    ) -> Topology:
        """Place every (market, role): the most specific variable wins, else the embedded server.

        `embedded_url` is asked only when no variable applies; without it such a
        store is a configuration error naming the variables that could place it. Replicas
        follow the same rule among `replica_urls` (`[<MARKET>_][<ROLE>_]REPLICA_URL`).
        """
        locations = []
        for market in market_codes:
            for role in ROLES:
                key = StoreKey(market, role)
                for name in database_url_variables(market, role):
                    if name in database_urls:
                        url = parse_database_url(name, database_urls[name])
                        replicas = tuple(
                            r if r.database else r.set(database=url.database)
                            for r in _replicas(market, role, replica_urls or {})
                        )
                        locations.append(StoreLocation(key, url, name, replicas))
                        break
                else:
                    if embedded_url is None:
                        raise ValueError(
                            f"store {key} has no database: set one of "
                            f"{', '.join(database_url_variables(market, role))}"
                        )
                    locations.append(StoreLocation(key, embedded_url(key), "embedded"))
        return cls(locations)


def _replicas(market: str, role: Role, replica_urls: Mapping[str, str]) -> tuple[URL, ...]:
    for name in replica_url_variables(market, role):
        if name in replica_urls:
            return parse_replica_urls(name, replica_urls[name])
    return ()

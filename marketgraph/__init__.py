"""marketgraph: a GraphQL API server for commerce data split by market and bounded context."""

__version__ = "0.1.0"

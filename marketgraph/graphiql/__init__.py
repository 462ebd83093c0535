"""GraphiQL hosted by the server itself (development only): the page at `GET /graphql` and
its pinned assets under `/graphiql/`, so that it works with no internet access."""

from marketgraph.graphiql.assets import asset_routes
from marketgraph.graphiql.page import graphiql_page

__all__ = ["asset_routes", "graphiql_page"]

"""The GraphiQL page at `GET /graphql`: markup only. Its script (`static/boot.js`) and styles
are files of `static/`, so the Content-Security-Policy lets scripts come from 'self' alone."""

from __future__ import annotations

import functools
import html
import json

from starlette.responses import HTMLResponse

from marketgraph.graphiql.assets import asset_url

# Styles may be inline: GraphiQL's dialogs (Radix) add <style> elements as they open.
# Fonts and the icon are data: URLs; requests go to this server only.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_STYLES = ("graphiql.min.css", "plugin-explorer.css", "page.css")
_SCRIPTS = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "plugin-explorer.umd.js",
    "boot.js",
)
DEFAULT_QUERY = """\
# GraphiQL for marketgraph: Ctrl-Enter runs the query, Ctrl-Space completes.
# The Explorer (left) builds queries by ticking fields; the Headers tab (below)
# picks the market of anonymous requests (X-Market) and can carry
# "Authorization": "Bearer <access token>".

{
  markets {
    code
    currency
  }
}
"""


@functools.cache
def page_html(market: str) -> str:
    """The page, with `{"X-Market": market}` as the headers editor's example."""
    headers = json.dumps({"X-Market": market}, indent=2)
    styles = "".join(f'<link rel="stylesheet" href="{asset_url(n)}">' for n in _STYLES)
    scripts = "".join(f'<script src="{asset_url(n)}"></script>' for n in _SCRIPTS)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>marketgraph · GraphiQL</title><link rel="icon" href="data:,">'
        f"{styles}</head><body>"
        f'<div id="graphiql" data-headers="{html.escape(headers)}"'
        f' data-query="{html.escape(DEFAULT_QUERY)}">Loading…</div>'
        f"{scripts}</body></html>"
    )


def graphiql_page(market: str) -> HTMLResponse:
    """The page's response: never cached (it names the assets' current versions)."""
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"}
    return HTMLResponse(page_html(market), headers=headers)

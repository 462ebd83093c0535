"""The self-hosted GraphiQL over HTTP (no browser): the page names only this server's
assets, each served with its type and a long cache life; unknown files and production get
JSON 404s."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable

import httpx
from starlette.applications import Starlette

from marketgraph.graphiql.assets import STATIC, assets
from tests.helpers import http_client

HTML = {"Accept": "text/html,application/xhtml+xml"}
PRODUCTION = {
    "environment": "production",
    "jwt_secret": "x" * 40,
    "login_code_secret": "y" * 40,
    "payment_webhook_secret": "z" * 40,
    "sms_backend": "webhook",
    "sms_webhook_url": "http://127.0.0.1:9/sms",
}


CDN_URL = re.compile(r"(https?:)?//[\w.-]*(unpkg|jsdelivr|cdnjs|googleapis|gstatic)\.")


def page_assets(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


async def test_the_page_loads_only_this_servers_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "connect-src 'self'" in policy
    assert "unpkg" not in page.text
    assert "&quot;X-Market&quot;: &quot;kg&quot;" in page.text
    urls = page_assets(page.text)
    assert "data:," in urls  # the icon: no request at all
    names = {url.removeprefix("graphiql/").split("?v=")[0] for url in urls if url != "data:,"}
    assert names == set(assets())
    for url in urls:
        assert not url.startswith(("http:", "https:", "//", "/"))  # relative to /graphql


async def test_assets_have_their_types_and_are_cached_for_good(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers=HTML)
    for url in page_assets(page.text):
        if url.startswith("data:"):
            continue
        answer = await client.get("/" + url, headers={"Accept-Encoding": "identity"})
        name = url.removeprefix("graphiql/").split("?")[0]
        assert answer.status_code == 200, url
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        expected = "text/css" if name.endswith(".css") else "text/javascript"
        assert answer.headers["content-type"].startswith(expected)
        assert answer.content == (STATIC / name).read_bytes()
    zipped = await client.get("/graphiql/boot.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == (STATIC / "boot.js").read_bytes()  # httpx decoded it
    assert gzip.decompress(assets()["boot.js"].gzipped) == zipped.content


async def test_no_stylesheet_loads_from_another_host() -> None:
    """Fonts and icons are data: URLs; scripts name no CDN (the browser test checks what
    the page really requests)."""
    for name in assets():
        text = (STATIC / name).read_text()
        if name.endswith(".css"):
            assert "@import" not in text, name
            for url in re.findall(r"url\(\s*['\"]?([^'\")]*)", text):
                assert url.startswith("data:"), (name, url[:80])
        assert not CDN_URL.search(text), (name, CDN_URL.search(text))


async def test_unknown_files_are_json_404s(client: httpx.AsyncClient) -> None:
    for path in ("/graphiql/nothing.js", "/graphiql/..%2Fpage.py", "/graphiql/static/boot.js"):
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_production_serves_no_graphiql(app_factory: Callable[..., Starlette]) -> None:
    async with http_client(app_factory(**PRODUCTION)) as client:
        page = await client.get("/graphql", headers=HTML)
        asset = await client.get("/graphiql/graphiql.min.js")
    assert page.status_code == 404
    assert page.json()["errors"]
    assert asset.status_code == 404

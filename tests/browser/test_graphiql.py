"""GraphiQL in a real browser with no internet: headless Chromium (Debian's, driven by
Playwright) opens `/graphql` on a server on loopback, with every request to another host
refused and recorded. GraphiQL must render, show the Explorer and the headers editor with
its X-Market example, and run a query typed into its editor. A screenshot is kept in
TEST_ARTIFACTS_DIR (default: test-artifacts/ in the repository)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import pytest
from starlette.applications import Starlette

from tests.helpers import serving

pytestmark = pytest.mark.slow
async_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
)

# Never `playwright install`: it downloads a browser. Debian's chromium package is used.
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000
TYPED_QUERY = "{ typed: markets { code currency } }"
ARTIFACTS = Path(
    os.environ.get("TEST_ARTIFACTS_DIR") or Path(__file__).parents[2] / "test-artifacts"
)


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def server(app_factory: Callable[..., Starlette]) -> AsyncIterator[str]:
    """The app (on the test stores) under uvicorn on a free loopback port: its base URL."""
    async with serving(app_factory()) as base:
        yield base


async def test_graphiql_runs_a_query_offline(chromium: str, artifacts: Path, server: str) -> None:
    expect = async_api.expect
    elsewhere: list[str] = []  # requests to any other origin: refused, and a failure
    posted: dict[str, dict[str, str]] = {}  # GraphiQL's requests to /graphql: their headers
    problems: list[str] = []  # page errors and console errors (a CSP refusal is one)

    def on_console(message: Any) -> None:
        if message.type == "error":
            problems.append(message.text)

    async def only_the_server(route: Any) -> None:
        request = route.request
        parts = urlsplit(request.url)
        if f"{parts.scheme}://{parts.netloc}" != server:
            elsewhere.append(request.url)
            await route.abort()
            return
        if request.method == "POST" and parts.path == "/graphql":
            posted[request.post_data or ""] = await request.all_headers()
        await route.continue_()

    page: Any = None
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(TIMEOUT_MS)
            await context.route("**/*", only_the_server)
            page = await context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", on_console)
            await page.goto(f"{server}/graphql")

            # Rendered: the editors, the Explorer's button, the headers tab with the example.
            query_editor = page.locator(".graphiql-query-editor .CodeMirror")
            await expect(query_editor).to_be_visible()
            headers_editor = page.get_by_role("region", name="Headers")
            await expect(headers_editor).to_be_visible()
            await expect(headers_editor).to_contain_text('"X-Market": "kg"')
            await page.get_by_role("button", name="Show GraphiQL Explorer").click()
            explorer = page.locator(".graphiql-explorer-root")
            await expect(explorer).to_be_visible()
            await expect(explorer).to_contain_text("markets")

            # Type a query over the example, run it, read the answer.
            await query_editor.click()
            await page.keyboard.press("ControlOrMeta+A")
            await page.keyboard.insert_text(TYPED_QUERY)
            await page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()
            response = page.locator(".graphiql-response")
            await expect(response).to_contain_text('"typed"')
            await expect(response).to_contain_text('"KGS"')
            await expect(response).to_contain_text('"USD"')
            assert TYPED_QUERY in unquote_plus(page.url)  # kept in the URL, to share it
        finally:
            if page is not None:  # a screenshot of the end, good or bad
                with contextlib.suppress(async_api.Error):
                    await page.screenshot(path=artifacts / "graphiql.png")
            await browser.close()

    assert elsewhere == []
    assert problems == []
    [ran] = [headers for body, headers in posted.items() if "typed" in body]
    assert ran["x-market"] == "kg"
    assert ran["accept"] == "application/graphql-response+json, application/json"
    assert ran["content-type"] == "application/json"

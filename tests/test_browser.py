"""The app in a real browser: Debian's chromium through Playwright, against `streamlit run`.

Screenshots of every page go to test-artifacts/. Without /usr/bin/chromium (apt package
`chromium`) these tests are skipped, and say why.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from sqlalchemy.engine import URL

from app_helpers import NOTES, Seeded, seed
from browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Guard,
    current_sidebar_label,
    exceptions,
    open_page,
    screenshot,
    sidebar_labels,
    streamlit_server,
    wait_idle,
)

pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) "
        "to run the browser tests",
        allow_module_level=True,
    )
expect = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
).expect

PAGES = ["Collections", "Browse", "Search", "Ingest"]


@pytest.fixture(scope="module")
async def app(new_database: Callable[[], Awaitable[URL]]) -> AsyncIterator[tuple[str, Seeded]]:
    """A fresh seeded database and `streamlit run app.py` serving it; yield (base URL, data)."""
    url = await new_database()
    data = await seed(url)
    with streamlit_server(url) as base:
        yield base, data


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    """Debian's chromium, driven by Playwright."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(app: tuple[str, Seeded], browser: Any) -> AsyncIterator[tuple[Any, Guard]]:
    """A fresh tab whose requests to any other host are blocked and recorded."""
    base, _ = app
    context = await browser.new_context(viewport={"width": 1400, "height": 2200})
    tab = await context.new_page()
    guard = Guard(base)
    await guard.attach(tab)
    try:
        yield tab, guard
        assert not guard.foreign, f"requests to other hosts: {guard.foreign}"
        assert not guard.dialogs, f"dialogs opened: {guard.dialogs}"
    finally:
        await context.close()


def link(path: str, **params: str | list[str]) -> str:
    """Return `path` with query parameters (repeated for lists)."""
    return f"{path}?{urlencode(params, doseq=True, quote_via=quote)}" if params else path


async def test_each_page_loads_by_url_with_its_title(
    page: tuple[Any, Guard], app: tuple[str, Seeded]
) -> None:
    tab, _ = page
    base, _ = app
    # A deep link first: the first run of a fresh server is where old folder-based page names
    # used to show up in the sidebar.
    for path, title, shot in (
        ("/browse", "Browse", "browse"),
        ("/search", "Search", "search-empty"),
        ("/ingest", "Ingest", "ingest"),
        ("/", "Collections", "collections"),
    ):
        await open_page(tab, base, path, title)
        assert await sidebar_labels(tab) == PAGES, path
        assert await current_sidebar_label(tab) == title
        assert await tab.title() == "KB Explorer" or title in await tab.title()
        assert not await exceptions(tab), path
        await screenshot(tab, shot)
    # The chart and the database panel of the Collections page (table cells fill in lazily).
    await tab.wait_for_selector("[data-testid='stVegaLiteChart']", timeout=30_000)
    await tab.wait_for_selector(
        "[data-testid^='glide-cell']:has-text('pgvector')", state="attached", timeout=30_000
    )


async def test_a_search_returns_results(page: tuple[Any, Guard], app: tuple[str, Seeded]) -> None:
    tab, _ = page
    base, _ = app
    await open_page(tab, base, link("/search", collection=NOTES), "Search")
    query = tab.get_by_role("textbox", name="Query")
    await query.fill("gardening")
    await query.press("Enter")
    await tab.wait_for_selector("text=cosine similarity", timeout=60_000)
    await wait_idle(tab)
    await expect(tab.get_by_text(re.compile(r"^#\d+ · cosine similarity"))).to_have_count(10)
    assert "q=gardening" in await tab.evaluate("location.href")
    assert not await exceptions(tab)
    await screenshot(tab, "search-results")
    await tab.get_by_text("Explain", exact=True).click()
    button = tab.get_by_role("button", name="Explain this search")
    await button.wait_for(state="visible", timeout=30_000)
    await button.click()
    await wait_idle(tab)
    if not await tab.get_by_text("Index used:").count():
        # On a loaded machine the click can land while a rerun replaces the expander.
        await button.click()
    await tab.wait_for_selector("text=Index used:", timeout=60_000)
    await wait_idle(tab)
    assert not await exceptions(tab)
    await screenshot(tab, "search-explain")


async def test_a_deep_link_restores_the_view(
    page: tuple[Any, Guard], app: tuple[str, Seeded]
) -> None:
    tab, _ = page
    base, data = app
    path = link("/search", collection=NOTES, q="gardening", mode="text", k="5")
    await open_page(tab, base, path, "Search")
    # expect() retries: widgets can take a moment to show the values the run gave them.
    await expect(tab.get_by_role("textbox", name="Query")).to_have_value("gardening")
    await expect(tab.get_by_role("radio", name="Full text")).to_be_checked()
    await expect(tab.get_by_label("k (results)")).to_have_value("5")
    await expect(tab.get_by_text(re.compile(r"^#\d+ · full-text rank"))).to_have_count(5)
    assert not await exceptions(tab)

    path = link("/browse", collection=NOTES, size="10", order="oldest", doc=data.guide_ids[1])
    await open_page(tab, base, path, "Browse")
    await expect(tab.get_by_role("heading", name="Guide")).to_have_count(1)
    await expect(tab.get_by_text("Chapter two: the guide continues").first).to_be_visible()
    location = await tab.evaluate("location.href")
    assert "doc=" in location and "order=oldest" in location
    assert not await exceptions(tab)
    await screenshot(tab, "browse-document")


async def test_clicking_a_row_opens_the_document(
    page: tuple[Any, Guard], app: tuple[str, Seeded]
) -> None:
    tab, _ = page
    base, data = app
    await open_page(tab, base, link("/browse", collection=NOTES, size="10"), "Browse")
    grid = await tab.locator("[data-testid='stDataFrame']").first.bounding_box()
    # The table is drawn on a canvas: click the first row's selection box (rows are 35 px).
    await tab.mouse.click(grid["x"] + 15, grid["y"] + 35 + 17)
    await expect(tab.get_by_role("heading", name="Guide")).to_have_count(1)
    await wait_idle(tab)
    assert f"doc={data.guide_ids[2]}" in await tab.evaluate("location.href")
    assert not await exceptions(tab)


async def test_an_upload_ingests(page: tuple[Any, Guard], app: tuple[str, Seeded]) -> None:
    tab, _ = page
    base, _ = app
    await open_page(tab, base, "/ingest", "Ingest")
    await tab.locator("input[type='file']").set_input_files(
        [
            {
                "name": "web-notes.md",
                "mimeType": "text/markdown",
                "buffer": b"# Web notes\n\nUploaded from a real browser into KB Explorer.\n",
            },
            {"name": "empty.txt", "mimeType": "text/plain", "buffer": b""},
        ]
    )
    await wait_idle(tab)
    await tab.get_by_role("combobox", name="Collection").click()
    await tab.get_by_role("option", name="New collection…").click()
    await wait_idle(tab)
    name = tab.get_by_label("New collection name")
    await name.fill("web uploads")
    await name.press("Enter")
    await wait_idle(tab)
    await tab.get_by_role("button", name="Ingest").click()
    await tab.wait_for_selector("text=Ingested into 'web uploads'", timeout=90_000)
    await wait_idle(tab)
    # The per-file reasons are in a table (drawn on a canvas; its cells are in the DOM too).
    await tab.wait_for_selector(
        "[data-testid^='glide-cell']:has-text('empty file')", state="attached", timeout=30_000
    )
    assert not await exceptions(tab)
    await screenshot(tab, "ingest-report")
    await open_page(tab, base, link("/browse", collection="web uploads"), "Browse")
    await expect(tab.get_by_text("1 documents", exact=False)).to_have_count(1)


async def test_hostile_document_text_stays_inert(
    page: tuple[Any, Guard], app: tuple[str, Seeded]
) -> None:
    tab, guard = page
    base, data = app
    views = [
        (link("/browse", collection=NOTES, contains="gardening", doc=data.hostile_id), "Browse"),
        (
            link(
                "/search",
                collection=NOTES,
                q="gardening tips",
                meta="topic=hostile",
                doc=data.hostile_id,
            ),
            "Search",
        ),
    ]
    for path, title in views:
        await open_page(tab, base, path, title)
        assert await tab.evaluate("window.__kb_pwned") is None, path
        assert await tab.locator("img[src*='evil'], img[onerror]").count() == 0
        assert await tab.locator("a[href*='evil']").count() == 0
        # The markup is on screen as text.
        body = await tab.locator("[data-testid='stMain']").inner_text()
        assert "<script>window.__kb_pwned = 2</script>" in body
        assert "![tracker](http://evil.example/tracker.png)" in body
        assert not await exceptions(tab)
        await screenshot(tab, f"hostile-{title.lower()}")
    assert not guard.foreign


async def test_export_downloads_every_matching_document(
    page: tuple[Any, Guard], app: tuple[str, Seeded]
) -> None:
    tab, _ = page
    base, _ = app
    await open_page(tab, base, link("/browse", collection=NOTES, meta="topic=cooking"), "Browse")
    async with tab.expect_download(timeout=60_000) as info:
        await tab.get_by_role("button", name="CSV", exact=True).click()
    download = await info.value
    rows = list(csv.DictReader(io.StringIO((await download.path()).read_text())))
    assert len(rows) == 10 and {r["collection"] for r in rows} == {NOTES}

"""Reliability in a real browser: Debian's chromium through Playwright, against `streamlit run`.

The database down before the app starts (every page, recovering by itself), and a bounded load
test: several browser sessions searching and browsing at once, with latency, server memory and
database connections measured. Without /usr/bin/chromium these tests are skipped, and say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import psutil
import pytest
from sqlalchemy.engine import URL

from app_helpers import NOTE_COUNT, NOTES, TOPICS, Forwarder, free_port, seed
from browser_helpers import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    IDLE,
    Guard,
    exceptions,
    screenshot,
    sidebar_labels,
    streamlit_server,
)
from kb.db import asyncpg_kwargs

pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) "
        "to run the browser tests",
        allow_module_level=True,
    )
pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
)

ERRORS = "[data-testid='stException'], [data-testid='stAlertContentError']"
# True once the last run's elements have all replaced the previous run's.
NO_STALE = "() => !document.querySelector(\"[data-stale='true']\")"


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


async def new_tab(browser: Any, base: str) -> tuple[Any, Any, Guard]:
    """Return (context, page, guard): a tab of its own whose foreign requests are blocked."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1800})
    tab = await context.new_page()
    guard = Guard(base)
    await guard.attach(tab)
    return context, tab, guard


async def main_text(tab: Any) -> str:
    return str(await tab.locator("[data-testid='stMain']").inner_text())


# --- Database down before the app starts ----------------------------------------------------

# Each page by URL, and what it shows once the database answers.
VIEWS = [
    ("/", "Collections", "text=Documents added over time"),
    (f"/browse?collection={NOTES}&size=10", "Browse", f"text={NOTE_COUNT + 4} documents"),
    (f"/search?collection={NOTES}&q=gardening", "Search", "text=/^#1 · cosine similarity/"),
    ("/ingest", "Ingest", "text=New ingest"),
]


async def test_database_down_at_start_every_page_says_so_then_recovers_by_itself(
    new_database: Callable[[], Awaitable[URL]], browser: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = await new_database()
    await seed(url)
    port = free_port()
    password = url.password or "pw-never-shown-7"  # the embedded server trusts any password
    # The database is reached through a port that forwards only once the test opens it.
    through = URL.create(
        "postgresql+asyncpg",
        username=url.username or "postgres",
        password=password,
        host="127.0.0.1",
        port=port,
        database=url.database,
    )
    with streamlit_server(through, env={"KB_CONNECT_TIMEOUT": "2"}) as base:
        tabs = [await new_tab(browser, base) for _ in VIEWS]
        try:

            async def down(tab: Any, path: str, title: str) -> None:
                await tab.goto(base + path)
                await tab.wait_for_selector(f"h1:has-text('{title}')", timeout=60_000)
                await tab.wait_for_selector("text=Database unavailable", timeout=60_000)
                await tab.wait_for_selector(IDLE, timeout=60_000)
                await tab.wait_for_function(NO_STALE, timeout=60_000)
                shown = await main_text(tab)
                # Where it looked, password hidden, in the panel's own box.
                where = tab.locator("[data-testid='stMain'] [data-testid='stCode']").first
                assert await where.inner_text() == (
                    f"postgresql+asyncpg://{through.username}:***@127.0.0.1:{port}/{url.database}"
                ), path
                assert await sidebar_labels(tab) == ["Collections", "Browse", "Search", "Ingest"]
                assert password not in shown and password not in await tab.content(), path
                assert "What to check" in shown and "DATABASE_URL" in shown, path
                assert not await exceptions(tab), path

            await asyncio.gather(
                *(
                    down(tab, path, title)
                    for (_, tab, _), (path, title, _) in zip(tabs, VIEWS, strict=True)
                )
            )
            await screenshot(tabs[2][1], "database-unavailable-search")

            with Forwarder(port, url):
                started = time.monotonic()

                async def back(tab: Any, path: str, marker: str) -> float:
                    # No click, no reload: the page's own check brings it back.
                    await tab.wait_for_selector(marker, timeout=45_000)
                    await tab.wait_for_selector(IDLE, timeout=30_000)
                    await tab.wait_for_function(NO_STALE, timeout=30_000)
                    assert "Database unavailable" not in await main_text(tab), path
                    assert not await exceptions(tab), path
                    return time.monotonic() - started

                waited = await asyncio.gather(
                    *(
                        back(tab, path, mark)
                        for (_, tab, _), (path, _, mark) in zip(tabs, VIEWS, strict=True)
                    )
                )
                await screenshot(tabs[2][1], "database-recovered-search")
            with capsys.disabled():
                print(f"\nrecovered by itself after {', '.join(f'{s:.1f} s' for s in waited)}")
            for _, _, guard in tabs:
                assert not guard.foreign and not guard.dialogs
        finally:
            for context, _, _ in tabs:
                await context.close()


# --- Load -------------------------------------------------------------------------------------

SESSIONS = 4
# Measured for a fixed time after one warm-up round per session (the first run of each page
# imports and caches what the server then keeps); KB_TEST_LOAD_SECONDS runs it longer (a soak).
SECONDS = float(os.environ.get("KB_TEST_LOAD_SECONDS", "20"))
POOL_SIZE, MAX_OVERFLOW = 4, 4
# "Flat": from the end of the warm-up to the end, the server's memory grows by less than this.
MAX_RSS_GROWTH_MB = 32.0
WORDS = ("tips", "notes", "guide", "number", "words", "talks", "more", "find", "searches")
FIRST_RESULT = re.compile(r"^#1 · cosine similarity")


@dataclass
class Load:
    """What the sessions and the sampler recorded."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)
    connections: list[tuple[float, int, int]] = field(default_factory=list)  # (s, all, in tx)
    measuring: bool = False

    def timed(self, kind: str, seconds: float) -> None:
        if self.measuring:
            self.latencies.setdefault(kind, []).append(seconds)


def percentile(values: list[float], q: float) -> float:
    """Return the nearest-rank percentile `q` (0-1] of `values`."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def streamlit_process(port: str) -> psutil.Process:
    """Return the `streamlit run` child of this test process serving on `port`."""
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if "streamlit" in cmdline and port in cmdline:
            return child
    raise AssertionError(f"no streamlit process on port {port}")


async def app_connections(admin: asyncpg.Connection, database: str) -> tuple[int, int, int]:
    """Return the app's connections to `database`: all, active, idle in a transaction."""
    row = await admin.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'active') AS active, "
        "count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS in_tx "
        "FROM pg_stat_activity WHERE datname = $1 AND application_name = 'kb-explorer'",
        database,
    )
    assert row is not None
    return int(row["n"]), int(row["active"]), int(row["in_tx"])


class Session:
    """One browser tab searching and browsing, every action timed until what it shows is new."""

    def __init__(self, tab: Any, load: Load, seed_: int) -> None:
        self.tab = tab
        self.load = load
        self.rng = random.Random(seed_)
        self.query = ""
        tab.on("pageerror", lambda e: load.errors.append(f"page error: {e}"))

    async def open(self, base: str) -> None:
        await self.tab.goto(f"{base}/search?collection={NOTES}")
        await self.tab.wait_for_selector("h1:has-text('Search')", timeout=60_000)
        await self.tab.wait_for_selector(IDLE, timeout=60_000)

    async def settle(self, url_condition: str, arg: object = None) -> None:
        """Wait for the URL the run writes, the end of the run, and no element left stale."""
        await self.tab.wait_for_function(url_condition, arg=arg, timeout=60_000)
        await self.tab.wait_for_selector(IDLE, timeout=60_000)
        await self.tab.wait_for_function(NO_STALE, timeout=60_000)

    async def act(self, kind: str, action: Callable[[], Awaitable[None]]) -> None:
        started = time.monotonic()
        await action()
        self.load.timed(kind, time.monotonic() - started)
        found = await self.tab.locator(ERRORS).all_inner_texts()
        self.load.errors += [f"{kind}: {text}" for text in found]

    async def search(self) -> None:
        query = self.query
        while query == self.query:
            query = f"{self.rng.choice(TOPICS)} {self.rng.choice(WORDS)}"
        self.query = query
        box = self.tab.get_by_role("textbox", name="Query")
        await box.fill(query)
        await box.press("Enter")
        await self.settle("q => new URL(location.href).searchParams.get('q') === q", query)
        await self.tab.get_by_text(FIRST_RESULT).wait_for(timeout=30_000)

    async def to_browse(self) -> None:
        await self.tab.locator("[data-testid='stSidebarNav'] a").filter(has_text="Browse").click()
        await self.settle("() => location.pathname.endsWith('/browse')")
        await self.tab.locator("[data-testid='stDataFrame']").wait_for(timeout=30_000)

    async def page_through(self) -> None:
        before = await self.tab.evaluate("new URL(location.href).searchParams.get('after')")
        nxt = self.tab.get_by_role("button", name="Next")
        first = self.tab.get_by_role("button", name="First page")
        await (nxt if await nxt.is_enabled() else first).click()
        await self.settle("a => new URL(location.href).searchParams.get('after') !== a", before)
        await self.tab.locator("[data-testid='stDataFrame']").wait_for(timeout=30_000)

    async def to_search(self) -> None:
        await self.tab.locator("[data-testid='stSidebarNav'] a").filter(has_text="Search").click()
        # The page comes back with the view it had (its last query).
        await self.settle(
            "q => location.pathname.endsWith('/search') && "
            "new URL(location.href).searchParams.get('q') === q",
            self.query,
        )
        await self.tab.get_by_text(FIRST_RESULT).wait_for(timeout=30_000)

    def actions(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """Return one round: two searches, to Browse, two pages on, back to Search."""
        return [
            ("search", self.search),
            ("search", self.search),
            ("open Browse", self.to_browse),
            ("next page", self.page_through),
            ("next page", self.page_through),
            ("open Search", self.to_search),
        ]

    async def warm_up(self) -> None:
        """Run every kind of action once: the first run of each page in the server."""
        for kind, action in self.actions()[1:4]:
            await self.act(kind, action)
        await self.act("open Search", self.to_search)

    async def run_until(self, deadline: float) -> None:
        while True:
            for kind, action in self.actions():
                if time.monotonic() >= deadline:
                    return
                await self.act(kind, action)


async def sample(
    load: Load, proc: psutil.Process, admin: asyncpg.Connection, database: str, stop: asyncio.Event
) -> None:
    """Record the server's memory and the app's connections twice a second until `stop`."""
    started = time.monotonic()
    while not stop.is_set():
        at = time.monotonic() - started
        load.rss.append((at, proc.memory_info().rss / 2**20))
        n, _, in_tx = await app_connections(admin, database)
        load.connections.append((at, n, in_tx))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


async def test_browser_sessions_under_load_stay_correct_and_flat(
    new_database: Callable[[], Awaitable[URL]], browser: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = await new_database()
    await seed(url)
    env = {"DATABASE_POOL_SIZE": str(POOL_SIZE), "DATABASE_MAX_OVERFLOW": str(MAX_OVERFLOW)}
    admin = await asyncpg.connect(**asyncpg_kwargs(url))
    load = Load()
    with streamlit_server(url, env=env) as base:
        proc = streamlit_process(base.rsplit(":", 1)[1])
        tabs = [await new_tab(browser, base) for _ in range(SESSIONS)]
        sessions = [Session(tab, load, i) for i, (_, tab, _) in enumerate(tabs)]
        stop = asyncio.Event()
        try:
            await asyncio.gather(*(s.open(base) for s in sessions))
            await asyncio.gather(*(s.warm_up() for s in sessions))
            sampler = asyncio.create_task(sample(load, proc, admin, str(url.database), stop))
            load.measuring = True
            started = time.monotonic()
            await asyncio.gather(*(s.run_until(started + SECONDS) for s in sessions))
            elapsed = time.monotonic() - started
            stop.set()
            await sampler
            await screenshot(tabs[0][1], "load-session-0")
            for _, _, guard in tabs:
                assert not guard.foreign and not guard.dialogs
        finally:
            stop.set()
            for context, _, _ in tabs:
                await context.close()
        # Every session is gone: what the app still holds.
        await asyncio.sleep(1.0)
        after = await app_connections(admin, str(url.database))
    await admin.close()

    every = [s for values in load.latencies.values() for s in values]
    rss = [mb for _, mb in load.rss]
    report = {
        "sessions": SESSIONS,
        "seconds": round(elapsed, 1),
        "actions": len(every),
        "actions_per_s": round(len(every) / elapsed, 1),
        "latency_ms": {
            kind: {
                "n": len(values),
                "p50": round(statistics.median(values) * 1000),
                "p99": round(percentile(values, 0.99) * 1000),
            }
            for kind, values in sorted({**load.latencies, "all": every}.items())
        },
        "rss_mb": {
            "after_warm_up": round(rss[0], 1),
            "end": round(rss[-1], 1),
            "max": round(max(rss), 1),
        },
        "connections": {
            "max": max(n for _, n, _ in load.connections),
            "after": {"all": after[0], "active": after[1], "idle_in_transaction": after[2]},
            "pool_size": POOL_SIZE,
            "max_overflow": MAX_OVERFLOW,
        },
        "errors": load.errors,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "browser-load.json").write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        print("\nbrowser load:", json.dumps(report, indent=2))

    assert not load.errors, load.errors
    assert len(every) >= 2 * SESSIONS and len(load.rss) >= 10  # the load was measured
    # Flat: memory stays where the warm-up left it, connections stay within the pool while
    # the load runs, and afterwards no more than the pool's idle ones remain, none of them
    # busy or inside a transaction.
    assert rss[-1] - rss[0] < MAX_RSS_GROWTH_MB, report["rss_mb"]
    assert report["connections"]["max"] <= POOL_SIZE + MAX_OVERFLOW, report["connections"]
    assert after[0] <= POOL_SIZE and after[1] == 0 and after[2] == 0, after

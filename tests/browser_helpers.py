"""Run the app with `streamlit run` and drive it with Debian's chromium through Playwright."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import URL

from app_helpers import free_port
from helpers import ROOT, url_text

CHROMIUM = Path(os.environ.get("KB_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
IDLE = "[data-test-script-state='notRunning']"


@contextmanager
def streamlit_server(url: URL, *, env: dict[str, str] | None = None) -> Iterator[str]:
    """Serve app.py on a free port against the database at `url`; yield the base URL."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "KB_"))}
    child_env.update(
        {
            "DATABASE_URL": url_text(url),
            "KB_EMBEDDER": "hashing",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
    )
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "streamlit-server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "app.py"),
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--server.fileWatcherType",
                "none",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=ROOT,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, proc, log_path)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"streamlit did not become healthy:\n{log_path.read_text()[-3000:]}")


class Guard:
    """Records what a page tried that it must not: other hosts and dialogs (alert, ...)."""

    def __init__(self, base: str) -> None:
        self.own = urlsplit(base).netloc
        self.foreign: list[str] = []
        self.dialogs: list[str] = []

    async def attach(self, page: Any) -> None:
        """Block and record every request to another host; record and dismiss dialogs."""

        async def route(r: Any) -> None:
            target = urlsplit(r.request.url)
            if target.scheme in ("data", "blob") or target.netloc == self.own:
                await r.continue_()
            else:
                self.foreign.append(r.request.url)
                await r.abort()

        await page.route("**/*", route)

        async def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            await d.dismiss()

        page.on("dialog", dialog)


async def wait_idle(page: Any, limit_ms: float = 60_000) -> None:
    """Wait until the script has run and nothing is running any more."""
    await page.wait_for_selector(IDLE, timeout=limit_ms)
    # A rerun can follow the first run at once (the page writes its URL): let it settle.
    await page.wait_for_timeout(400)
    await page.wait_for_selector(IDLE, timeout=limit_ms)


async def open_page(page: Any, base: str, path: str, title: str) -> None:
    """Open `path` and wait for the page titled `title` to finish running."""
    await page.goto(base + path)
    await page.wait_for_selector(f"h1:has-text('{title}')", timeout=60_000)
    await wait_idle(page)


def _label(text: str) -> str:
    # A link holds the icon (a font ligature, read as its name) and the label, line by line.
    return text.strip().splitlines()[-1].strip()


async def sidebar_labels(page: Any) -> list[str]:
    """Return the page names in the sidebar navigation, in order."""
    texts = await page.locator("[data-testid='stSidebarNav'] a").all_inner_texts()
    return [_label(t) for t in texts]


async def current_sidebar_label(page: Any) -> str:
    """Return the sidebar label of the page being shown."""
    link = page.locator("[data-testid='stSidebarNav'] a[aria-current='page']")
    return _label(await link.inner_text())


async def exceptions(page: Any) -> list[str]:
    """Return the text of every exception element on the page."""
    return [str(t) for t in await page.locator("[data-testid='stException']").all_inner_texts()]


async def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot of the page under test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path

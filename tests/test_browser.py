"""The web page in a real browser: Debian's chromium driven by Playwright against uvicorn on loopback.

Skipped when /usr/bin/chromium is missing, except under CI (environment variable CI set), where it fails.
Every request the page makes is checked to stay on 127.0.0.1 (others are aborted and reported).
"""

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from components import missing
from tbpr.search.service import create_app, serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "browser-key"
QUERY = "a woman in a red jacket and black trousers carrying a white bag"
ALL_IMAGES_LOADED = (
    "n => { const imgs = [...document.querySelectorAll('#results img')];"
    " return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }"
)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        missing(str(CHROMIUM), "make browser installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A fresh page that records off-loopback requests (and aborts them) and console errors."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1100, "height": 760})
        self.external: list[str] = []
        self.console_errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda err: self.console_errors.append(str(err)))

    def _route(self, route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()

    def search(self, k: int) -> None:
        page = self.page
        page.select_option("#k", str(k))
        page.focus("#query")
        page.keyboard.type(QUERY)
        page.keyboard.press("Enter")
        page.wait_for_function(ALL_IMAGES_LOADED, arg=k, timeout=20_000)

    def assert_stayed_local(self) -> None:
        assert self.external == []
        assert self.console_errors == []


@pytest.fixture
def open_server(tiny_searcher):
    with serve_in_thread(create_app(tiny_searcher)) as url:
        yield url


@pytest.fixture
def keyed_server(tiny_searcher):
    with serve_in_thread(create_app(tiny_searcher, api_key=KEY)) as url:
        yield url


def test_search_enlarge_and_close_with_the_keyboard(browser, open_server, tiny_searcher, tmp_path):
    session = Page(browser)
    page = session.page
    page.goto(open_server + "/")
    page.wait_for_function("() => document.getElementById('gallery-info').textContent.includes('images')")
    assert f"{len(tiny_searcher)} images" in page.text_content("#gallery-info")

    session.search(k=10)
    ranks = page.locator("#results .caption b").all_text_contents()
    assert ranks == [f"#{r}" for r in range(1, 11)]
    expected = [f"{r.score:.3f}" for r in tiny_searcher.search(QUERY, k=10)]
    assert page.locator("#results .caption span").all_text_contents() == expected
    assert "10 results" in page.text_content("#status")
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)

    # Tab from the search box reaches the results; Enter enlarges, Escape closes and restores focus
    page.focus("#query")
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('result')"):
            break
    assert page.evaluate("document.activeElement.getAttribute('aria-label')").startswith("Rank 1, score")
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    page.wait_for_function("() => document.getElementById('viewer-image').naturalWidth > 0")
    assert page.text_content("#viewer-title").startswith("Rank 1")
    page.screenshot(path=str(tmp_path / "enlarged.png"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer:not([open])", state="attached")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')").startswith("Rank 1, score")

    # the k selector
    page.fill("#query", "")
    session.search(k=5)
    assert page.locator("#results li").count() == 5
    session.assert_stayed_local()
    session.context.close()


def test_page_asks_for_the_api_key_and_sends_it(browser, keyed_server):
    session = Page(browser)
    page = session.page
    page.goto(keyed_server + "/")
    page.wait_for_selector("#key-dialog[open]")  # /api/health answered 401
    assert "API key" in page.text_content("#error")
    page.keyboard.type(KEY)  # the key input has the focus
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('gallery-info').textContent.includes('images')")
    assert page.evaluate("sessionStorage.getItem('tbpr-api-key')") == KEY
    session.search(k=5)  # images come through fetch with the key, shown as blob: URLs
    assert all(
        src.startswith("blob:") for src in page.eval_on_selector_all("#results img", "e => e.map(i => i.src)")
    )
    assert page.is_hidden("#error")
    # 401s are expected console errors here; nothing may leave loopback
    assert session.external == []
    session.context.close()


def test_a_wrong_key_is_reported(browser, keyed_server):
    session = Page(browser)
    page = session.page
    page.goto(keyed_server + "/")
    page.evaluate("sessionStorage.setItem('tbpr-api-key', 'wrong')")
    page.reload()
    page.wait_for_selector("#key-dialog[open]")
    page.keyboard.press("Escape")
    page.focus("#query")
    page.keyboard.type(QUERY)
    page.keyboard.press("Enter")
    page.wait_for_selector("#key-dialog[open]")
    assert page.locator("#results li").count() == 0
    assert session.external == []
    session.context.close()

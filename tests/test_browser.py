"""The web page in a real browser: Debian's chromium driven by Playwright against uvicorn on loopback.

Skipped when /usr/bin/chromium is missing, except under CI (environment variable CI set), where it fails.
Every request the page makes is checked to stay on 127.0.0.1 (others are aborted and reported).
"""

from pathlib import Path
from urllib.parse import urlencode, urlsplit

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

    def __init__(self, browser, width: int = 1100):
        self.context = browser.new_context(viewport={"width": width, "height": 760})
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

    def search(self, k: int, query: str = QUERY) -> None:
        page = self.page
        page.select_option("#k", str(k))
        page.focus("#query")
        page.keyboard.type(query)
        page.keyboard.press("Enter")
        self.wait_for_results(k)

    def wait_for_results(self, k: int) -> None:
        self.page.wait_for_function(ALL_IMAGES_LOADED, arg=k, timeout=20_000)

    def viewer_title(self) -> str:
        return self.page.text_content("#viewer-title")

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
    # the file name under each result, the whole path in its tooltip
    hits = tiny_searcher.search(QUERY, k=10)
    assert page.locator("#results .path").all_text_contents() == [h.path.split("/")[-1] for h in hits]
    assert page.eval_on_selector_all("#results .path", "e => e.map(p => p.title)") == [h.path for h in hits]
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
    # the arrow keys step through the results (not past either end)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert session.viewer_title().startswith("Rank 3")
    page.keyboard.press("ArrowLeft")
    assert session.viewer_title().startswith("Rank 2")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert session.viewer_title().startswith("Rank 1") and page.is_disabled("#viewer-prev")
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer:not([open])", state="attached")
    page.wait_for_function(
        "() => (document.activeElement.getAttribute('aria-label') || '').startsWith('Rank 1, score')",
        timeout=5_000,
    )

    # a click outside the enlarged view closes it, a click inside does not; focus returns to the result shown
    page.locator("#results .result").nth(3).click()
    page.wait_for_selector("#viewer[open]")
    page.click("#viewer-next")
    assert session.viewer_title().startswith("Rank 5")
    page.click("#viewer-title")
    assert page.is_visible("#viewer")
    page.mouse.click(5, 5)
    page.wait_for_selector("#viewer:not([open])", state="attached")
    # focus moves back after the dialog's close event: wait for it rather than read it at once
    page.wait_for_function(
        "() => (document.activeElement.getAttribute('aria-label') || '').startsWith('Rank 5, score')",
        timeout=5_000,
    )

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
    assert page.text_content("#error") == "This server needs an API key: enter it to continue."
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
    assert page.text_content("#error") == "The API key was rejected: enter the right key."
    assert page.locator("#results li").count() == 0
    assert session.external == []
    session.context.close()


def result_ids(page) -> list[str]:
    return page.eval_on_selector_all("#results .result", "e => e.map(b => b.getAttribute('aria-label'))")


def test_the_search_is_in_the_url_survives_a_reload_and_can_be_shared(browser, open_server, tiny_searcher):
    session = Page(browser)
    page = session.page
    page.goto(open_server + "/")
    session.search(k=5)
    assert page.url == f"{open_server}/?{urlencode({'q': QUERY, 'k': 5})}"
    before = result_ids(page)
    page.reload()
    session.wait_for_results(5)
    assert result_ids(page) == before and page.input_value("#query") == QUERY
    # a shared link with a k the menu does not offer
    other = "a man in a green t-shirt"
    shared = session.context.new_page()
    shared.goto(f"{open_server}/?{urlencode({'q': other, 'k': 3})}")
    shared.wait_for_function(ALL_IMAGES_LOADED, arg=3, timeout=20_000)
    assert shared.input_value("#query") == other and shared.input_value("#k") == "3"
    expected = [f"{r.score:.3f}" for r in tiny_searcher.search(other, k=3)]
    assert shared.locator("#results .caption span").all_text_contents() == expected
    # back returns to the previous search
    page.fill("#query", "")
    session.search(k=10, query=other)
    page.go_back()
    session.wait_for_results(5)
    assert result_ids(page) == before
    session.assert_stayed_local()
    session.context.close()


def wait_for_similar(page, server: str, source) -> None:
    """Until the page shows the answer for images like ``source``: the previous five results stay on the
    page while the request runs, so a count of results alone says nothing."""
    page.wait_for_url(f"{server}/?{urlencode({'similar': source.id, 'k': 5})}")
    page.wait_for_function(
        "path => document.querySelector('#status').textContent.includes('similar to ' + path)",
        arg=source.path,
    )
    page.wait_for_function(ALL_IMAGES_LOADED, arg=5, timeout=20_000)


def test_find_similar_from_a_result_and_from_the_enlarged_view(browser, open_server, tiny_searcher):
    session = Page(browser)
    page = session.page
    page.goto(open_server + "/")
    session.search(k=5)
    first = tiny_searcher.search(QUERY, k=5)[0]
    page.locator("#results .similar").first.click()
    wait_for_similar(page, open_server, first)
    expected = tiny_searcher.similar(first.id, k=5)
    assert page.locator("#results .caption span").all_text_contents() == [f"{r.score:.3f}" for r in expected]
    assert page.locator("#results .path").all_text_contents() == [r.path.split("/")[-1] for r in expected]
    assert f"similar to {first.path}" in page.text_content("#status")
    assert page.url == f"{open_server}/?{urlencode({'similar': first.id, 'k': 5})}"
    page.reload()  # the similar search is in the URL too
    session.wait_for_results(5)
    assert f"similar to {first.path}" in page.text_content("#status")

    page.locator("#results .result").nth(1).click()
    page.wait_for_selector("#viewer[open]")
    page.click("#viewer-similar")
    wait_for_similar(page, open_server, expected[1])
    again = tiny_searcher.similar(expected[1].id, k=5)
    assert page.locator("#results .path").all_text_contents() == [r.path.split("/")[-1] for r in again]
    session.assert_stayed_local()
    session.context.close()


def test_an_image_that_cannot_be_loaded_gets_a_placeholder(browser, open_server, tiny_searcher):
    session = Page(browser)
    page = session.page
    missing = tiny_searcher.search(QUERY, k=5)[2].id
    page.route(f"**/api/images/{missing}", lambda route: route.fulfill(status=404, json={"detail": "gone"}))
    page.goto(open_server + "/")
    page.select_option("#k", "5")
    page.fill("#query", QUERY)
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .placeholder")
    placeholders = page.locator("#results .placeholder")
    assert placeholders.count() == 1 and placeholders.first.is_visible()
    assert "image unavailable" in placeholders.first.get_attribute("aria-label")
    assert page.locator("#results li").nth(2).locator(".placeholder").count() == 1
    page.locator("#results .result").nth(2).click()
    page.wait_for_selector("#viewer[open]")
    assert page.is_visible("#viewer-missing") and page.is_hidden("#viewer-image")
    session.context.close()


def test_the_empty_page_offers_example_queries(browser, open_server, tiny_searcher):
    session = Page(browser)
    page = session.page
    page.goto(open_server + "/")
    examples = page.locator("#examples .example")
    assert examples.count() >= 3 and page.is_visible("#examples")
    text = examples.first.text_content()
    examples.first.click()
    session.wait_for_results(10)
    assert page.input_value("#query") == text and page.is_hidden("#examples")
    expected = [f"{r.score:.3f}" for r in tiny_searcher.search(text, k=10)]
    assert page.locator("#results .caption span").all_text_contents() == expected
    session.assert_stayed_local()
    session.context.close()


def test_header_and_search_box_fit_a_400_px_screen(browser, open_server, tmp_path):
    session = Page(browser, width=400)
    page = session.page
    page.goto(open_server + "/")
    page.wait_for_function("() => document.getElementById('gallery-info').textContent.includes('images')")
    assert page.evaluate("document.documentElement.scrollWidth") <= 400  # nothing overflows sideways
    for selector in (".bar h1", "#gallery-info", "#key-button", "#query", "#k", "#search-form button"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 400, selector
    assert page.locator("#query").bounding_box()["width"] >= 300  # the box keeps the whole width
    session.search(k=5)
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.screenshot(path=str(tmp_path / "search-400.png"), full_page=True)
    session.assert_stayed_local()
    session.context.close()

"""End to end in a real headless Chromium: type a query, see ranked results, the audio element and the
spectrogram thumbnails load, "more like this" reranks by a result and updates the shareable URL.

Uses Debian's chromium (/usr/bin/chromium, installed by scripts/install_browser.sh) driven by Python
playwright; playwright's own browser download is never used. With CI=true a missing browser fails the
test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.search.build import build_index  # noqa: E402
from test_index import GOOD, make_library, make_model  # noqa: E402

CHROMIUM = os.environ.get("SOUNDSIFT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require(ok: bool, why: str) -> None:
    if ok:
        return
    message = f"{why}; run scripts/install_browser.sh and install the 'browser' extra (playwright)"
    if IN_CI:
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium():
    """Fails (CI) or skips (elsewhere) before any set-up when the browser or playwright is missing."""
    _require(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is not installed")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _require(False, "the playwright Python package is not installed")
    return CHROMIUM


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        import uvicorn

        from soundsift.search.server import LOOPBACK_HOSTS, create_app
    except ImportError as exc:
        _require(False, f"the serve extra is missing ({exc})")
    base = tmp_path_factory.mktemp("browser")
    lib = make_library(base / "sounds")
    build_index(lib, base / "idx", make_model(base / "model.pt"), progress=False)
    app = create_app(base / "idx", allowed_hosts=list(LOOPBACK_HOSTS))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.mark.slow
def test_search_page_in_headless_chromium(chromium, server):
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)  # a loaded 2-core CI machine
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(server + "/")
            # Waits go through locators or page.evaluate: wait_for_function compiles its predicate with
            # eval in the page, which the server's Content-Security-Policy rightly forbids.
            page.locator("#info", has_text="sounds indexed").wait_for()
            assert f"{len(GOOD)} sounds indexed" in page.text_content("#info")

            page.fill("#q", "water dripping in a cave")
            page.press("#q", "Enter")
            page.wait_for_selector("#results .result")
            assert page.locator("#results .result").count() == len(GOOD)  # k=10 > library: all, ranked
            scores = [float(x) for x in page.locator("#results .result .score").all_text_contents()]
            assert scores == sorted(scores, reverse=True)
            paths = page.locator("#results .result .path").all_text_contents()
            api = page.evaluate("""async () => (await (await fetch(
                '/api/search?q=' + encodeURIComponent('water dripping in a cave') + '&k=10')).json())""")
            assert [round(h["score"], 3) for h in api] == scores
            assert all(p.startswith(h["path"]) for p, h in zip(paths, api))
            assert "water+dripping" in page.url or "water%20dripping" in page.url  # shareable URL

            # The first player loads its audio: metadata decoded, duration known.
            loaded = "(() => { const a = document.querySelector('#results audio');" \
                     " return !!a && a.readyState >= 1 && a.duration > 0; })()"
            deadline = time.monotonic() + 15
            while not page.evaluate(loaded) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert page.evaluate(loaded), "the first audio player did not load its file"
            duration = page.evaluate("document.querySelector('#results audio').duration")
            assert duration == pytest.approx(api[0]["duration"], abs=0.1)
            assert page.evaluate("document.querySelector('#results audio').error") is None

            # Every result shows its spectrogram thumbnail, an image the browser decoded.
            thumbs = "(() => [...document.querySelectorAll('#results img.thumb')]" \
                     ".map(i => i.complete ? i.naturalWidth : 0))()"
            deadline = time.monotonic() + 15
            while not all(w > 0 for w in page.evaluate(thumbs)) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert page.evaluate(thumbs) == [96] * len(GOOD)
            assert page.evaluate("document.querySelector('#results img.thumb').naturalHeight") == 32

            # "More like this": a real button; clicking it ranks by that sound and makes the URL shareable.
            first = page.locator("#results .result").first
            liked = first.get_attribute("data-id")
            liked_path = api[0]["path"]
            more = first.locator("button.more")
            assert more.evaluate("b => b.tagName + ':' + b.type") == "BUTTON:button"
            more.click()
            page.locator("#status", has_text="sounds like").wait_for()
            assert f"like={liked}" in page.url and "q=" not in page.url
            ids = page.locator("#results .result").evaluate_all("els => els.map(e => e.dataset.id)")
            assert liked not in ids and len(ids) == len(GOOD) - 1  # the example itself is left out
            like_api = page.evaluate(f"async () => (await (await fetch('/api/search?like={liked}&k=10')).json())")
            assert ids == [str(h["id"]) for h in like_api]
            assert liked_path in page.text_content("#like-bar") and page.is_visible("#like-bar")

            # Keyboard: focus moved to the first new result's button; reached with Tab it shows a focus
            # ring, and Enter runs it.
            focused = "document.activeElement.classList.contains('more')"
            assert page.evaluate(focused)
            page.keyboard.press("Shift+Tab")
            page.keyboard.press("Tab")
            assert page.evaluate(focused) and page.evaluate("document.activeElement.matches(':focus-visible')")
            assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
            second = page.evaluate("document.activeElement.closest('.result').dataset.id")
            page.keyboard.press("Enter")
            page.wait_for_url(f"**like={second}**")
            page.locator("#results .result").first.wait_for()
            ids = page.locator("#results .result").evaluate_all("els => els.map(e => e.dataset.id)")
            assert second not in ids and liked in ids

            # A text query typed now is combined with the example; the shared URL carries both.
            page.fill("#q", "rain")
            page.press("#q", "Enter")
            page.wait_for_url("**q=rain**")
            assert f"like={second}" in page.url
            combined = page.evaluate(f"async () => (await (await fetch('/api/search?q=rain&like={second}&k=10'))"
                                     ".json()).map(h => String(h.id))")
            page.locator("#status", has_text="rain").wait_for()
            assert page.locator("#results .result").evaluate_all("els => els.map(e => e.dataset.id)") == combined
            # Back in history restores the like-only results.
            page.go_back()
            page.wait_for_url(f"**like={second}**")
            page.locator("#status", has_text="sounds like").wait_for()
            assert page.input_value("#q") == ""
            page.click("#like-clear")
            assert not page.is_visible("#like-bar")

            # A query that is too long gets a clear error in the page, not a crash.
            page.evaluate("document.getElementById('q').removeAttribute('maxlength')")
            page.fill("#q", "x" * 1001)
            page.press("#q", "Enter")
            page.wait_for_selector("#status.error")
            assert "1000" in page.text_content("#status")
        finally:
            browser.close()
    assert all(u.startswith(server) or u.startswith("data:") for u in requests), requests
    assert not [e for e in errors if "422" not in e], errors  # the 422 above is expected

"""A real browser (Debian's chromium via Playwright) uploads a photo and slides the smile, live."""

import shutil

import pytest

from bench.appserver import CHROMIUM_ARGS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def chromium_browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


RECORD_READY = """() => {
  window.readyStates = [];
  const root = document.querySelector('#live .live');
  new MutationObserver(() => window.readyStates.push(root.dataset.ready)).observe(root, {attributes: true, attributeFilter: ['data-ready']});
}"""


def live_src(page) -> str:
    return page.locator("#live img.live-frame").get_attribute("src")


def test_upload_then_the_slider_swaps_frames_without_asking_the_server(chromium_browser, app_server, astronaut_path, tmp_path):
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(app_server)
    page.wait_for_selector("#live .live", state="attached")
    page.evaluate(RECORD_READY)
    page.locator("#photo input[type=file]").set_input_files(str(astronaut_path))
    page.wait_for_selector("#live [data-ready='1']", timeout=90_000)
    assert page.locator("#live img.live-frame").is_visible()
    states = page.evaluate("window.readyStates")  # a first look of a few frames was shown before every frame came
    assert "partial" in states and states.index("partial") < states.index("1"), states
    # the upload's chained work (less, more, then the strip) is in the page before sliding starts: its fetches are not the slider's
    page.wait_for_function(
        "() => ['#more img', '#less img', '#strip img'].every((s) => { const i = document.querySelector(s); return i && i.complete; })",
        timeout=60_000,
    )
    first = live_src(page)

    requests = []
    page.on("request", lambda request: requests.append(request.url))
    slider = page.locator("#strength input[type=range]")
    seen = {first}
    for value in (-3.5, 0.0, 3.5):
        before = live_src(page)
        slider.fill(str(value))  # fires the standard `input` event
        page.wait_for_function("(old) => document.querySelector('#live img.live-frame').src !== old", arg=before, timeout=5_000)
        assert float(page.locator("#live img.live-frame").get_attribute("data-strength")) == value
        seen.add(live_src(page))
    assert len(seen) == 4  # the default strength and three other frames, all different
    assert not [url for url in requests if not url.startswith("blob:")]  # no request left the page while sliding
    page.locator("text=Under the hood").click()  # the model's own decode follows the same slider (opening it loads its images)
    page.wait_for_selector("#raw_live [data-ready='1']", timeout=10_000)
    raw = page.locator("#raw_live img.live-frame")
    before = raw.get_attribute("src")
    slider.fill("-2.0")
    page.wait_for_function("(old) => document.querySelector('#raw_live img.live-frame').src !== old", arg=before, timeout=5_000)
    assert float(raw.get_attribute("data-strength")) == -2.0 and raw.is_visible()
    page.screenshot(path=str(tmp_path / "smile.png"), full_page=True)
    page.close()

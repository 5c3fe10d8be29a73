"""A real browser (Debian's chromium via Playwright) uploads a photo and moves the slider."""
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium_browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def image_src(page, elem_id: str) -> str | None:
    locator = page.locator(f"#{elem_id} img")
    return locator.first.get_attribute("src") if locator.count() else None


def test_upload_and_slide(chromium_browser, app_server, astronaut_path, tmp_path):
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(app_server)
    page.locator("#photo input[type=file]").set_input_files(str(astronaut_path))
    page.wait_for_selector("#photo img")
    page.wait_for_function("() => document.querySelector('#more img') && document.querySelector('#in_photo img')", timeout=60_000)
    first_more = image_src(page, "more")
    assert image_src(page, "crop") and image_src(page, "less") and image_src(page, "recon")

    slider = page.locator("#strength input[type=range]")
    slider.fill("3.5")
    slider.dispatch_event("pointerup")
    page.wait_for_function(
        "(old) => { const img = document.querySelector('#more img'); return img && img.src !== old; }",
        arg=first_more, timeout=60_000,
    )
    assert image_src(page, "more") != first_more
    page.screenshot(path=str(tmp_path / "smile.png"), full_page=True)
    assert (tmp_path / "smile.png").stat().st_size > 10_000
    page.close()

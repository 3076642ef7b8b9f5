"""In a real browser: headless Chromium (Debian's package) driven by Playwright.

Opens the app, drops a face image onto the Detect tab's image box (a real
``drop`` event with a ``DataTransfer``, as a person dragging a file does),
waits for the verdict card (a drop analyses at once), checks it, re-runs it
with the Analyze button, and saves a
screenshot (pytest tmp dir, copied to ``test-results/``). The detector has
random weights: the test is about the page, not the verdict.
"""
from __future__ import annotations

import base64
import shutil
import socket
from pathlib import Path

import pytest

from fakeface.modeling.detector import create_detector, save_detector, set_release_facts
from fakeface.data.preprocess import Preprocessing
from fakeface.serving.models import ModelRegistry
from fakeface.app.layout import build_app, launch_app

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
EXAMPLE = Path(__file__).resolve().parent.parent / "fakeface" / "app" / "examples" / "synthetic-fake-1.jpg"
RESULTS = Path(__file__).resolve().parent.parent / "test-results"
# --no-sandbox: Chromium runs as root here. The rest stop it from calling
# Google services, which this machine's closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

DROP_FILE_JS = """
([selector, name, mime, b64]) => {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    const file = new File([bytes], name, {type: mime});
    const transfer = new DataTransfer();
    transfer.items.add(file);
    const target = document.querySelector(selector);
    for (const type of ['dragenter', 'dragover', 'drop']) {
        target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
    }
    return target.tagName;
}
"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    model = create_detector("mobilenetv2_100", preprocessing=Preprocessing(input_size=(3, 64, 64), num_test_crops=5))
    set_release_facts(model, synthetic_training_data=True)
    save_detector(model, tmp / "demo_model")
    demo = build_app(ModelRegistry([str(tmp / "demo_model")]), environ={})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = launch_app(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield url
    demo.close()


def _drop_target(page) -> str:
    """The element of the Detect image box that listens for drops."""
    for selector in ("#detect-input [data-testid='upload-area']", "#detect-input .upload-container",
                     "#detect-input button", "#detect-input"):
        if page.query_selector(selector) is not None:
            return selector
    raise AssertionError("the Detect tab has no image box")


def test_drop_an_image_and_see_the_verdict(app_url, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: run `make system-deps` (scripts/install_system_deps.sh)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1100})
            page.goto(app_url, wait_until="domcontentloaded")
            page.wait_for_selector("[data-testid='demo-banner']", timeout=60_000)
            target = _drop_target(page)
            page.evaluate(DROP_FILE_JS, [target, EXAMPLE.name, "image/jpeg",
                                         base64.b64encode(EXAMPLE.read_bytes()).decode()])
            # The dropped image shows up in the box and is analysed at once, no click needed.
            page.wait_for_selector("#detect-input img", timeout=30_000)
            verdict = page.wait_for_selector("#verdict [data-testid='verdict']", timeout=120_000)
            headline = verdict.inner_text()
            assert headline in ("Likely AI-generated", "Likely a real photo", "Uncertain")
            card = page.inner_text("#verdict")
            assert EXAMPLE.name in card and "probability of being AI-generated" in card
            assert "mobilenetv2_100" in card
            # Analyze runs it again, here without Grad-CAM: the verdict stays, the options apply.
            page.get_by_label("Grad-CAM heatmap").uncheck()
            page.click("#detect-button")
            page.wait_for_function("document.querySelector('#verdict') && !document.querySelector('#verdict .pending')",
                                   timeout=120_000)
            assert page.inner_text("#verdict [data-testid='verdict']") == headline
            page.get_by_label("Grad-CAM heatmap").check()
            page.click("#detect-button")
            page.wait_for_timeout(1500)                  # let the Grad-CAM image finish painting
            shot = tmp_path / "detect.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(shot, RESULTS / "browser_detect.png")

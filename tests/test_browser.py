"""In a real browser: headless Chromium (Debian's package) driven by Playwright.

Opens the app, drops a face image onto the Detect tab's image box (a real
``drop`` event with a ``DataTransfer``, as a person dragging a file does),
waits for the verdict card (a drop analyses at once), checks it, re-runs it
with the Analyze button, and saves a
screenshot (pytest tmp dir, copied to ``test-results/``). A second app serves
a model with a face stage: a real FFHQ photo and a real group photo are
dropped and the page must show the photo with its face boxes and one table
row per face the API returns. The detectors have random weights: the tests
are about the page, not the verdict.
"""
from __future__ import annotations

import base64
import shutil
import socket
from pathlib import Path

import pytest

from fakeface.modeling.config import Decision
from fakeface.modeling.detector import create_detector, save_detector, set_decision, set_face_crop, set_release_facts
from fakeface.data.preprocess import Preprocessing
from fakeface.faces import FaceCrop
from fakeface.serving.models import ModelRegistry
from fakeface.app.layout import build_app, launch_app

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
EXAMPLE = Path(__file__).resolve().parent.parent / "fakeface" / "app" / "examples" / "synthetic-fake-1.jpg"
RESULTS = Path(__file__).resolve().parent.parent / "test-results"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FACE_PHOTOS = (SHARED / "seed-ffhq" / "ffhq_00152.png", SHARED / "faces-dev" / "real" / "group-photos-ulfd" / "ulfd_2.jpg")
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


def _serve(tmp, *, face_crop: FaceCrop | None, decision: Decision | None = None):
    model = create_detector("mobilenetv2_100", preprocessing=Preprocessing(input_size=(3, 64, 64), num_test_crops=5))
    set_release_facts(model, synthetic_training_data=True)
    set_face_crop(model, face_crop)
    if decision is not None:
        set_decision(model, decision)
    save_detector(model, tmp / "demo_model")
    demo = build_app(ModelRegistry([str(tmp / "demo_model")]), environ={})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = launch_app(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return demo, url


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    demo, url = _serve(tmp_path_factory.mktemp("browser"), face_crop=None)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def face_app_url(tmp_path_factory):
    """The app serving a model whose config carries the face crop (as training writes it)."""
    demo, url = _serve(tmp_path_factory.mktemp("browser-faces"), face_crop=FaceCrop())
    yield url
    demo.close()


# A band measured on held-out generator families; the temperature squeezes the random weights' p(fake) into it.
UNSEEN = "generators it never saw (faces-dev, each family held out)"
WIDE_BAND = Decision(temperature=1e4, threshold_real=0.3, threshold_fake=0.7, calibrated=True, band_source=UNSEEN,
                     band_target=0.05, confidently_wrong=0.05, coverage=0.2)


@pytest.fixture(scope="module")
def abstaining_app_url(tmp_path_factory):
    """The app serving a release whose uncertain band covers the photo's p(fake)."""
    demo, url = _serve(tmp_path_factory.mktemp("browser-abstains"), face_crop=None, decision=WIDE_BAND)
    yield url
    demo.close()


def _browser(sync_api):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: run `make system-deps` (scripts/install_system_deps.sh)")
    return sync_api.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def _drop(page, path: Path, mime: str) -> None:
    page.evaluate(DROP_FILE_JS, [_drop_target(page), path.name, mime, base64.b64encode(path.read_bytes()).decode()])


def _open_and_drop(browser, url: str, path: Path, mime: str):
    """A new page of the app, once loaded, with ``path`` dropped onto the Detect tab's image box."""
    page = browser.new_page(viewport={"width": 1360, "height": 1100})
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("[data-testid='demo-banner']", timeout=60_000)
    _drop(page, path, mime)
    return page


def _drop_target(page) -> str:
    """The element of the Detect image box that listens for drops."""
    for selector in ("#detect-input [data-testid='upload-area']", "#detect-input .upload-container",
                     "#detect-input button", "#detect-input"):
        if page.query_selector(selector) is not None:
            return selector
    raise AssertionError("the Detect tab has no image box")


def test_drop_an_image_and_see_the_verdict(app_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = _open_and_drop(browser, app_url, EXAMPLE, "image/jpeg")
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


def test_real_photos_show_their_face_boxes_and_a_verdict_per_face(face_app_url, tmp_path):
    """A real FFHQ face and a real group photo: the annotated photo and one row per face the API found."""
    missing = [str(path) for path in FACE_PHOTOS if not path.is_file()]
    if missing:
        pytest.skip(f"{missing} absent (the shared real-face data must sit next to the repo, in ../shared/data)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from gradio_client import Client, handle_file

    client = Client(face_app_url, verbose=False)
    expected = {path.name: client.predict(handle_file(str(path)), False, False, api_name="/detect")[0]
                for path in FACE_PHOTOS}
    assert all(r["faces"] for r in expected.values()), {k: r["notes"] for k, r in expected.items()}
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1400})
            for path in FACE_PHOTOS:
                faces = expected[path.name]["faces"]
                page.goto(face_app_url, wait_until="domcontentloaded")       # a fresh page: an empty image box
                page.wait_for_selector("[data-testid='demo-banner']", timeout=60_000)
                _drop(page, path, "image/png" if path.suffix == ".png" else "image/jpeg")
                page.wait_for_selector("#verdict [data-testid='faces-table']", timeout=180_000)
                annotated = page.wait_for_selector("#detect-faces img", timeout=60_000)
                assert annotated.is_visible()
                rows = page.query_selector_all("#verdict [data-testid='face-row']")
                assert len(rows) == len(faces), (path.name, len(rows), len(faces))
                card = page.inner_text("#verdict")
                assert f"{len(faces)} face(s) found" in card
                assert "most suspicious face" in card              # the photo's verdict says where it came from
                for row, face in zip(rows, faces):
                    cells = row.inner_text()
                    assert ("too small" if face["too_small"] else face["verdict"]) in cells
                    assert ", ".join(str(v) for v in face["box"]) in cells
                page.wait_for_timeout(800)                         # let the annotated photo finish painting
                shot = tmp_path / f"faces-{path.stem}.png"
                page.screenshot(path=str(shot), full_page=True)
                RESULTS.mkdir(exist_ok=True)
                shutil.copy(shot, RESULTS / f"browser_faces_{path.stem}.png")
        finally:
            browser.close()


def test_a_photo_in_the_uncertain_band_shows_uncertain_with_its_reason(abstaining_app_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from gradio_client import Client, handle_file

    answer = Client(abstaining_app_url, verbose=False).predict(handle_file(str(EXAMPLE)), api_name="/verdict")
    assert 0.3 <= answer["p_fake"] < 0.7, answer["p_fake"]        # the band covers it, as this test needs
    assert answer["verdict"] == "uncertain"
    assert answer["reason"] == WIDE_BAND.reason(answer["p_fake"]) and UNSEEN in answer["reason"]
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = _open_and_drop(browser, abstaining_app_url, EXAMPLE, "image/jpeg")
            headline = page.wait_for_selector("#verdict [data-testid='verdict']", timeout=120_000)
            assert headline.inner_text() == "Uncertain"
            reason = page.inner_text("#verdict [data-testid='reason']")
            assert reason.startswith(f"Uncertain: p(fake) {answer['p_fake']:.2f} lies in the band 0.30–0.70")
            assert "wrong too often on generators it never saw" in reason and "abstains rather than guess" in reason
            page.wait_for_timeout(500)
            shot = tmp_path / "uncertain.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(shot, RESULTS / "browser_uncertain.png")

"""The Space end to end: launched once on loopback, every endpoint driven through gradio_client.

The app serves two random-weight detectors (plumbing only: a local folder
whose config says it was trained on synthetic data, and one pulled from the
loopback Hub fake), plus a missing one that must not stop start-up. The
dataset comes from the Hub fake, generation from the loopback OpenAI fake,
whose only valid key is the planted Space key: it must never appear in a
response, the page, or the logs.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import socket
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image, PngImagePlugin

from fakeface.data.dataset import build_face_dataset, push_face_dataset
from fakeface.modeling.config import Decision
from fakeface.modeling.detector import create_detector, push_detector, save_detector, set_decision, set_release_facts
from fakeface.data.preprocess import Preprocessing
from fakeface.serving.models import ModelRegistry
from fakeface.app.layout import build_app, launch_app
from tests.fakes.hub_fixtures import point_clients_at_hub
from tests.fakes.hub_server import FakeHub
from tests.fakes.openai_server import FakeOpenAI

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

PLANTED_KEY = "sk-test-PLANTED-123-0123456789abcdef"
WRONG_KEY = "sk-test-WRONG-456-fedcba9876543210"
EXAMPLES = Path(__file__).resolve().parent.parent / "fakeface" / "app" / "examples"
HUB_MODEL, HUB_DATASET, MISSING_MODEL = "fakeface/tiny-hub-detector", "fakeface/tiny-faces", "fakeface/missing-model"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))          # message + formatted traceback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """The launched app and its fakes: a namespace with url, hub, openai, logs, paths."""
    tmp = tmp_path_factory.mktemp("space")
    mp = pytest.MonkeyPatch()
    records = _Records()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(records)
    root.setLevel(logging.DEBUG)
    hub = FakeHub().start()
    openai = FakeOpenAI(api_key=PLANTED_KEY).start()
    demo = None
    import torch

    torch_threads = torch.get_num_threads()          # launch_app sets the process's; restored for later tests
    try:
        point_clients_at_hub(hub, mp, tmp / "hf-home")
        mp.setenv("OPENAI_BASE_URL", openai.base_url)
        mp.delenv("OPENAI_API_KEY", raising=False)
        pp = Preprocessing(input_size=(3, 64, 64), num_test_crops=1)
        local = create_detector("mobilenetv2_100", preprocessing=pp)       # random weights: plumbing only
        set_release_facts(local, synthetic_training_data=True)
        set_decision(local, Decision(threshold_fake=0.7, threshold_real=0.3))
        save_detector(local, tmp / "demo_model")
        save_detector(create_detector("mobilenetv2_050", preprocessing=pp), tmp / "hub_model")
        hub_sha = push_detector(tmp / "hub_model", HUB_MODEL)
        data = build_face_dataset(tmp / "faces", synthetic=24, synthetic_size=64, seed=0, progress=False)
        push_face_dataset(data.output_dir, HUB_DATASET)
        env = {
            "FAKEFACE_MODEL": f"{tmp / 'demo_model'},{HUB_MODEL},{MISSING_MODEL}",
            "FAKEFACE_DATASET": HUB_DATASET,
            "OPENAI_API_KEY": PLANTED_KEY,                 # the Space's own key
            "FAKEFACE_GENERATE_PER_SESSION": "2",
            "FAKEFACE_GENERATE_TIMEOUT_S": "2",
        }
        demo = build_app(ModelRegistry.from_env(env), environ=env)
        _, url, _ = launch_app(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(),
                               quiet=True)

        class Space:
            pass

        space = Space()
        space.url, space.hub, space.openai, space.records = url, hub, openai, records
        space.hub_sha, space.tmp, space.local_dataset = hub_sha, tmp, data.output_dir
        space.client = Client(url, verbose=False)
        yield space
    finally:
        if demo is not None:
            demo.close()
        torch.set_num_threads(torch_threads)
        openai.stop()
        hub.stop()
        mp.undo()
        root.removeHandler(records)
        root.setLevel(old_level)


def _client(space) -> Client:
    """A new client: a new Gradio session (the rate limit is per session)."""
    return Client(space.url, verbose=False)


def _example(name: str) -> str:
    return str(EXAMPLES / name)


# --------------------------------------------------------------------------- start-up, status, page

def test_status_reports_models_failures_and_the_synthetic_banner(space):
    status, banner, models_line, about, model_choice, cards = space.client.predict(api_name="/status")
    names = [m["name"] for m in status["models"]]
    assert len(names) == 2 and names[0].startswith("mobilenetv2_100 · demo_model")
    assert status["models"][1]["revision"] == space.hub_sha
    assert status["models"][0]["threshold_fake"] == 0.7
    [failure] = status["failures"]
    assert failure["source"] == MISSING_MODEL and "not found on the Hub" in failure["problem"]
    assert status["synthetic_demo"] is True
    assert "Demo model, synthetic training data" in banner and "not a face-forgery detector" in banner
    assert MISSING_MODEL in banner and "How to fix" in banner
    assert "Serving 2 model(s)" in models_line
    assert "Scope and limits" in about and space.hub_sha in about
    assert cards == "No model card ships with the loaded model(s)."
    assert model_choice["value"] == names[0] and [c[1] for c in model_choice["choices"]] == names


def test_the_launched_app_gives_each_torch_call_its_share_of_the_cores(space):
    """Two CPU-lane calls and the verdict batcher's may run at once: on <= 3 cores each torch call gets one thread
    (torch's default, and the conftest's OMP_NUM_THREADS, is 2)."""
    import torch

    from fakeface.app.common import CPU_CONCURRENCY
    from fakeface.serving.threads import serving_torch_threads
    from fakeface.serving.verdicts import VERDICT_WORKERS
    from fakeface.utils.settings import Settings

    assert torch.get_num_threads() == serving_torch_threads(Settings(), CPU_CONCURRENCY + VERDICT_WORKERS) == 1


def test_page_and_config_hold_no_secret(space):
    for path in ("/", "/config", "/gradio_api/info"):
        response = httpx.get(space.url.rstrip("/") + path, timeout=30)
        assert response.status_code == 200
        assert PLANTED_KEY not in response.text and "PLANTED" not in response.text
    assert "fakeface" in httpx.get(space.url, timeout=30).text


def test_importing_app_builds_the_blocks_without_loading_anything(monkeypatch):
    import gradio as gr

    monkeypatch.delenv("FAKEFACE_MODEL", raising=False)
    sys.modules.pop("app", None)
    import app

    try:
        assert isinstance(app.demo, gr.Blocks)
        registry = app.demo.fakeface_registry
        assert not registry.loading_started and not registry.loaded          # nothing loaded at import
        assert {d.api_name for d in app.demo.fns.values() if d.api_name} >= {
            "detect", "verdict", "detect_batch", "generate", "dataset_load", "dataset_samples", "dataset_evaluate",
            "status"}
    finally:
        sys.modules.pop("app", None)


def test_python_app_py_serves_on_the_configured_port_with_the_demo_banner(tmp_path):
    """`python app.py` as `make demo` runs it: host/port from GRADIO_SERVER_*, banner from FAKEFACE_DEMO_BANNER."""
    import os
    import subprocess
    import time

    save_detector(create_detector("mobilenetv2_100", preprocessing=Preprocessing(input_size=(3, 64, 64), num_test_crops=1)),
                  tmp_path / "demo_model")                    # its config does not say "synthetic": the variable must
    port = _free_port()
    env = {**os.environ, "FAKEFACE_MODEL": str(tmp_path / "demo_model"), "FAKEFACE_DEMO_BANNER": "1",
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "OPENAI_API_KEY": PLANTED_KEY}
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "app.py did not come up"
            time.sleep(0.5)
        status, banner, *_ = Client(url, verbose=False).predict(api_name="/status")
        assert status["synthetic_demo"] is True and "Demo model, synthetic training data" in banner
        assert [m["architecture"] for m in status["models"]] == ["mobilenetv2_100"]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "PLANTED" not in output
    assert "loaded mobilenetv2_100" in output                  # app.py logs at INFO


# --------------------------------------------------------------------------- the image input

def test_the_image_input_passes_files_through_untouched(tmp_path):
    import base64

    import gradio as gr
    from gradio.data_classes import ImageData

    from fakeface.app.components import OriginalImage

    component = OriginalImage(type="filepath")
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"any bytes at all")                  # not even decoded here
    assert component.preprocess(ImageData(path=str(path), orig_name="photo.jpg")) == str(path)
    assert component.preprocess(None) is None
    pasted = _png(Image.new("RGB", (8, 8)), text={"k": "v"})
    saved = component.preprocess(ImageData(url="data:image/png;base64," + base64.b64encode(pasted).decode()))
    assert Path(saved).read_bytes() == pasted
    with pytest.raises(gr.Error, match="malformed"):
        component.preprocess(ImageData(url="data:image/png;base64,@@not-base64@@"))
    assert component.get_block_name() == "image"
    import fakeface

    assert not list(Path(fakeface.__file__).parent.glob("*.pyi"))      # Gradio wrote no stub copy


def test_tab_callbacks_run_without_a_server(space):
    """The callbacks are module-level functions of an AppContext: called here directly, no HTTP."""
    import gradio as gr

    from fakeface.app.common import AppContext
    from fakeface.app.tabs.batch import detect_batch
    from fakeface.app.tabs.detect import detect, show_detection, verdict
    from fakeface.serving.models import load_models
    from fakeface.utils.settings import Settings

    registry = ModelRegistry.from_models(load_models([str(space.tmp / "demo_model")]))
    ctx = AppContext.create(Settings(), registry)
    result, overlay = detect(ctx, _example("synthetic-fake-1.jpg"), False, True)
    assert result["robustness"]["checks"] and overlay is None and "gradcam" not in result
    assert verdict(ctx, _example("synthetic-fake-1.jpg"))["verdict"] == result["verdict"]
    panels = show_detection(result, _example("synthetic-fake-1.jpg"))
    assert len(panels) == 5 and ("Likely" in panels[0] or "Uncertain" in panels[0])
    # No face stage in this model: the whole image was scored, and the panel frames the whole photo in its colour.
    import numpy as np
    from PIL import ImageColor

    from fakeface.app.render import VERDICT_STYLE

    with Image.open(_example("synthetic-fake-1.jpg")) as original:
        assert panels[1] is not None and panels[1].size == original.size
        framed, plain = np.asarray(panels[1]), np.asarray(original.convert("RGB"))
    colour = ImageColor.getrgb(VERDICT_STYLE[result["verdict"]][1])
    assert tuple(framed[-1, framed.shape[1] // 2]) == colour and tuple(framed[framed.shape[0] // 2, 0]) == colour
    h, w = plain.shape[:2]
    assert np.array_equal(framed[h // 3:2 * h // 3, w // 3:2 * w // 3], plain[h // 3:2 * h // 3, w // 3:2 * w // 3])
    assert show_detection({**result, "mode": "faces", "faces": []}, _example("synthetic-fake-1.jpg"))[1] is None
    table, csv_path = detect_batch(ctx, [_example("synthetic-real-1.jpg")], progress=lambda *a, **k: None)
    assert table["data"][0][0] == "synthetic-real-1.jpg" and Path(csv_path).parent == ctx.output_dir
    with pytest.raises(gr.Error, match="Add an image first"):
        verdict(ctx, None)


def test_a_bad_setting_stops_the_app_at_start_up_naming_the_variable():
    from fakeface.utils.settings import SettingsError

    with pytest.raises(SettingsError, match="FAKEFACE_FAST_PATH='maybe'"):
        build_app(environ={"FAKEFACE_MODEL": "org/x", "FAKEFACE_FAST_PATH": "maybe"})


def test_temporary_outputs_expire(tmp_path):
    import os
    import time

    from fakeface.app.common import TEMP_FILE_TTL_S, new_output_path

    old, recent = tmp_path / "old.csv", tmp_path / "recent.csv"
    old.write_text("x")
    recent.write_text("y")
    os.utime(old, (time.time() - TEMP_FILE_TTL_S - 5,) * 2)
    path = new_output_path(tmp_path, "results", ".csv")
    assert not old.exists() and recent.exists()
    assert path.parent == tmp_path and path.suffix == ".csv" and not path.exists()


# --------------------------------------------------------------------------- detect

def test_detect_scores_every_model_with_evidence(space):
    result, gradcam = space.client.predict(handle_file(_example("synthetic-fake-1.jpg")), True, True, api_name="/detect")
    assert result["file"] == "synthetic-fake-1.jpg"
    assert result["verdict"] in ("real", "fake", "uncertain")
    assert [m["architecture"] for m in result["models"]] == ["mobilenetv2_100", "mobilenetv2_050"]
    assert (result["models"][0]["threshold_fake"], result["models"][0]["threshold_real"]) == (0.7, 0.3)
    # Every verdict carries its reason; this band was never measured for confident mistakes, and says so.
    assert result["reason"] == result["models"][0]["reason"] and result["reason"].startswith("p(fake) ")
    assert result["models"][0]["band"]["source"] is None and result["models"][0]["band"]["threshold_fake"] == 0.7
    assert result["models"][1]["revision"] == space.hub_sha
    assert result["image"]["format"] == "JPEG" and result["image"]["width"] == 240
    assert result["image"]["jpeg_quality"] is not None
    assert result["robustness"]["checks"] and isinstance(result["robustness"]["stable"], bool)
    assert result["provenance"]["c2pa"]["status"] == "none"
    assert result["synthetic_model"] is True
    with Image.open(gradcam) as overlay:
        assert overlay.size == (240, 240)


def test_verdict_endpoint_gives_the_detect_verdict_without_the_evidence(space):
    from concurrent.futures import ThreadPoolExecutor

    example = _example("synthetic-real-1.jpg")
    full, _ = space.client.predict(handle_file(example), False, False, api_name="/detect")
    quick = space.client.predict(handle_file(example), api_name="/verdict")
    assert quick["file"] == "synthetic-real-1.jpg" and quick["verdict"] == full["verdict"]
    assert quick["reason"] == full["reason"] and quick["reason"]
    assert [m["model"] for m in quick["models"]] == [m["model"] for m in full["models"]]
    for fast, slow in zip(quick["models"], full["models"]):
        assert fast["p_fake"] == pytest.approx(slow["p_fake"], abs=1e-4) and fast["verdict"] == slow["verdict"]
    assert quick["faces"] == [] and not {"robustness", "provenance", "image", "gradcam"} & set(quick)
    # Concurrent clients (each its own session) all get that verdict, whether or not their calls shared a batch.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _client(space).predict(handle_file(example), api_name="/verdict"), range(4)))
    assert {a["verdict"] for a in answers} == {quick["verdict"]}
    assert all(a["p_fake"] == pytest.approx(quick["p_fake"], abs=1e-4) for a in answers)
    with pytest.raises(AppError, match="Add an image first"):
        space.client.predict(None, api_name="/verdict")


def test_detect_receives_the_original_bytes(space, tmp_path):
    from tests.test_provenance import sign_png

    signed = sign_png(_png(Image.new("RGB", (72, 72), (180, 120, 90)), text={"parameters": "a face, Steps: 20"}))
    path = tmp_path / "signed.png"
    path.write_bytes(signed)
    result, _ = space.client.predict(handle_file(str(path)), False, False, api_name="/detect")
    c2pa = result["provenance"]["c2pa"]
    assert c2pa["status"] == "valid" and c2pa["software_agents"] == ["gpt-image-2"]   # a re-encode would lose it
    assert result["provenance"]["text_chunks"]["parameters"] == "a face, Steps: 20"
    assert result["image"]["bytes"] == len(signed)
    assert result["robustness"] is None


@pytest.mark.parametrize("content, message", [
    (b"just some notes", "a text file, not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "PNG"),
    (b"", "empty"),
])
def test_bad_files_get_clear_errors_and_the_app_keeps_serving(space, tmp_path, content, message):
    bad = tmp_path / "upload.png"
    bad.write_bytes(content)
    with pytest.raises(AppError, match="This file cannot be analysed") as caught:
        space.client.predict(handle_file(str(bad)), True, True, api_name="/detect")
    assert message in str(caught.value)
    assert str(tmp_path) not in str(caught.value)
    result, _ = space.client.predict(handle_file(_example("synthetic-real-1.jpg")), False, False, api_name="/detect")
    assert result["verdict"] in ("real", "fake", "uncertain")


def test_detect_without_an_image_says_what_to_do(space):
    with pytest.raises(AppError, match="Add an image first"):
        space.client.predict(None, True, True, api_name="/detect")


def test_batch_gives_a_table_and_a_csv(space, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    files = [handle_file(_example("synthetic-real-1.jpg")), handle_file(str(bad)), handle_file(_example("synthetic-fake-2.png"))]
    table, csv_path = space.client.predict(files, api_name="/detect_batch")
    headers, rows = table["headers"], table["data"]
    assert headers[:4] == ["file", "verdict", "p_fake", "model"] and "reason" in headers
    assert any(h.startswith("p_fake [mobilenetv2_050") for h in headers)
    by_file = {row[0]: dict(zip(headers, row)) for row in rows}
    assert set(by_file) == {"synthetic-real-1.jpg", "notes.txt", "synthetic-fake-2.png"}
    assert by_file["notes.txt"]["verdict"] == "error" and "text file" in by_file["notes.txt"]["error"]
    assert by_file["synthetic-fake-2.png"]["format"] == "PNG"
    with open(csv_path, newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [r["file"] for r in written] == [row[0] for row in rows]
    assert float(written[0]["p_fake"]) == pytest.approx(float(by_file[written[0]["file"]]["p_fake"]))


# --------------------------------------------------------------------------- generate

def _generate(client: Client, key: str = "", *, prompt: str = "", gender: str = "female", model: str = "gpt-image-2"):
    return client.predict(key, model, "1024x1024", "low", prompt, "30-44", gender, "any", "smiling", "eyeglasses",
                          api_name="/generate")


def test_generate_with_the_users_key_shows_the_face_with_its_verdict(space):
    before = len(space.openai.requests)
    image_path, result, gradcam = _generate(space.client, PLANTED_KEY)
    request = space.openai.requests[before]
    assert request.json["model"] == "gpt-image-2" and request.json["quality"] == "low"
    assert "woman" in request.json["prompt"] and "eyeglasses" in request.json["prompt"]
    assert Path(image_path).read_bytes() == request.image                 # the bytes as OpenAI sent them
    assert result["generated"]["model"] == "gpt-image-2" and result["generated"]["key"] == "yours"
    assert result["generated"]["attributes"] == {"age": "30-44", "gender": "female", "expression": "smiling",
                                                 "glasses": "eyeglasses"}
    assert result["verdict"] in ("real", "fake", "uncertain") and len(result["models"]) == 2
    assert result["provenance"]["text_chunks"]["fake-openai"]
    assert gradcam is not None


def test_a_generated_face_shows_its_c2pa_credentials(space, monkeypatch):
    """OpenAI's images carry C2PA content credentials: the fake signs its PNGs here, and the tab shows them."""
    import tests.fakes.openai_server as fake_server
    from tests.test_provenance import sign_png

    unsigned = fake_server.render_png
    monkeypatch.setattr(fake_server, "render_png", lambda *args, **kwargs: sign_png(unsigned(*args, **kwargs)))
    image_path, result, _ = _generate(space.client, PLANTED_KEY, prompt="a signed portrait")
    c2pa = result["provenance"]["c2pa"]
    assert c2pa["status"] == "valid" and c2pa["ai_generated"] is True
    assert c2pa["software_agents"] == ["gpt-image-2"] and c2pa["issuer"] == "Test Image Generator Inc"
    from fakeface.serving.provenance import read_provenance

    assert read_provenance(Path(image_path).read_bytes())["c2pa"]["status"] == "valid"   # served unmodified


FAILURES = [
    ("invalid_key", "rejected"),
    ("permission", "not allowed"),
    ("content_policy", "safety system refused"),
    ("moderation", "safety system refused"),
    ("rate_limit", "rate limiting"),
    ("quota", "run out of credit"),
    ("server", "server error (500)"),
    ("unavailable", "server error (503)"),
    ("drop", "connection failed"),
    ("slow", "did not answer in time"),
    ("garbage", "not a valid image"),
]


@pytest.mark.parametrize("kind, message", FAILURES)
def test_every_openai_failure_becomes_a_clear_message(space, kind, message):
    space.openai.fail_next(kind, delay=4 if kind == "slow" else None)
    try:
        with pytest.raises(AppError) as caught:
            _generate(space.client, PLANTED_KEY, prompt=f"portrait for {kind}")
    finally:
        space.openai.clear_failures()
    text = str(caught.value)
    assert message in text
    assert PLANTED_KEY not in text and "PLANTED" not in text


def test_a_wrong_user_key_is_rejected_without_being_echoed(space):
    with pytest.raises(AppError, match="rejected") as caught:
        _generate(space.client, WRONG_KEY)
    assert "WRONG" not in str(caught.value)


def test_the_spaces_key_is_rate_limited_per_session(space):
    client = _client(space)
    first_image, first, _ = _generate(client)
    assert first["generated"]["key"] == "the Space's"
    assert space.openai.requests[-1].authorization == f"Bearer {PLANTED_KEY}"
    _generate(client, gender="male")
    with pytest.raises(AppError, match="allows 2 generation"):
        _generate(client)
    _generate(_client(space))                           # another session has its own allowance
    _generate(client, PLANTED_KEY)                      # and one's own key is not limited


def test_generate_needs_a_description(space):
    with pytest.raises(AppError, match="Describe the face"):
        space.client.predict(PLANTED_KEY, "gpt-image-2", "1024x1024", "low", "", "any", "any", "any", "any", "any",
                             api_name="/generate")


def test_the_key_never_appears_in_responses_or_logs(space, capfd):
    base = space.url.rstrip("/") + "/gradio_api/call/generate"
    bodies = []
    for key, failure in ((PLANTED_KEY, None), (PLANTED_KEY, "invalid_key"), (WRONG_KEY, None), (PLANTED_KEY, "server")):
        if failure:
            space.openai.fail_next(failure)
        data = [key, "gpt-image-2", "1024x1024", "low", "a calm face", "any", "any", "any", "any", "any"]
        event = httpx.post(base, json={"data": data}, timeout=30).json()["event_id"]
        with httpx.stream("GET", f"{base}/{event}", timeout=60) as stream:
            bodies.append("".join(stream.iter_text()))
        space.openai.clear_failures()
    assert "event: complete" in bodies[0] and "event: error" in bodies[1]
    out, err = capfd.readouterr()
    logs = "\n".join(space.records.lines)
    assert space.records.lines                           # the server did log (so the check means something)
    for text in [*bodies, out, err, logs]:
        assert PLANTED_KEY not in text and "PLANTED" not in text
        assert WRONG_KEY not in text and "WRONG-456" not in text


# --------------------------------------------------------------------------- dataset

def test_dataset_load_samples_and_evaluate(space):
    summary, table = space.client.predict(HUB_DATASET, api_name="/dataset_load")
    assert set(summary["splits"]) == {"train", "validation", "test"}
    assert summary["splits"]["train"]["rows"] == 18 and "synthetic-upsampler" in summary["generators"]
    assert HUB_DATASET in table and "| train | 18 |" in table
    gallery = space.client.predict(HUB_DATASET, "train", "fake", "any", "any", "any", "any", "any", "any",
                                   api_name="/dataset_samples")
    assert gallery and all(item["caption"].startswith("fake · synthetic-upsampler") for item in gallery)
    with Image.open(gallery[0]["image"]) as thumb:
        assert max(thumb.size) <= 256
    metrics, metrics_md, confusion, roc = space.client.predict(HUB_DATASET, "train", None, 12, api_name="/dataset_evaluate")
    assert metrics["n"] == 12 and metrics["threshold"] == 0.7
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    assert "ROC-AUC" in metrics_md
    assert confusion["type"] == "matplotlib" and roc["type"] == "matplotlib"


def test_dataset_errors_are_clear(space):
    with pytest.raises(AppError, match="Only Hub datasets"):
        space.client.predict(str(space.local_dataset), api_name="/dataset_load")
    with pytest.raises(AppError, match="could not be loaded"):
        space.client.predict("fakeface/no-such-dataset", api_name="/dataset_load")
    with pytest.raises(AppError, match="no split 'nope'"):
        space.client.predict(HUB_DATASET, "nope", "any", "any", "any", "any", "any", "any", "any",
                             api_name="/dataset_samples")


def test_rendered_page_assets_are_html_escaped(space, tmp_path):
    """A hostile file name and metadata come back in the JSON verbatim, and never unescaped in the panels."""
    from fakeface.app.render import render_facts, render_provenance, render_verdict

    hostile = '<img src=x onerror=alert(1)>'
    path = tmp_path / "evil.png"
    path.write_bytes(_png(Image.new("RGB", (64, 64), (10, 200, 30)), text={"Comment": hostile}))
    result, _ = space.client.predict(handle_file(str(path)), False, False, api_name="/detect")
    assert result["provenance"]["text_chunks"]["Comment"] == hostile
    html = render_verdict({**result, "file": hostile}) + render_provenance(result["provenance"]) + render_facts(result)
    assert hostile not in html and "&lt;img src=x" in html
    json.dumps(result)


# --------------------------------------------------------------------------- faces on the Detect tab

def test_the_detect_tab_draws_each_face_and_lists_its_verdict(tmp_path):
    """Callbacks called directly with a face-stage model on a real group photo: boxes, per-face rows, notes."""
    import numpy as np

    from fakeface.app.common import AppContext
    from fakeface.app.render import TOO_SMALL_COLOUR, VERDICT_STYLE, render_faces
    from fakeface.app.tabs.batch import detect_batch
    from fakeface.app.tabs.detect import detect, show_detection
    from fakeface.faces import FaceCrop
    from fakeface.modeling.detector import set_face_crop
    from fakeface.serving.models import load_models
    from fakeface.utils.settings import Settings

    group = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces-dev" / "real" / \
        "group-photos-ulfd" / "ulfd_2.jpg"
    if not group.is_file():
        pytest.skip(f"{group} is absent (the shared real-face data must sit next to the repo, in ../shared/data)")
    model = create_detector("mobilenetv2_050", preprocessing=Preprocessing(input_size=(3, 64, 64), num_test_crops=1))
    set_face_crop(model, FaceCrop())
    save_detector(model, tmp_path / "face_model")
    ctx = AppContext.create(Settings(), ModelRegistry.from_models(load_models([str(tmp_path / "face_model")],
                                                                              use_fast_path=False)))
    result, overlay = detect(ctx, str(group), True, False)
    faces = result["faces"]
    assert result["mode"] == "faces" and len(faces) >= 2 and overlay is not None
    card, drawn, *_ = show_detection(result, str(group))
    assert card.count('data-testid="face-row"') == len(faces) == render_faces(result).count("<tr data-testid")
    assert "most suspicious face" in card and "the photo&#x27;s verdict comes from this face" in card
    # the boxes are drawn on the photo, each in its verdict's colour
    with Image.open(group) as original:
        assert drawn.size == original.size                          # 1024 wide: shown as is
        before = np.asarray(original.convert("RGB"))
    after = np.asarray(drawn)
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        colour = TOO_SMALL_COLOUR if face["too_small"] else VERDICT_STYLE[face["verdict"]][1]
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        assert tuple(after[(y0 + y1) // 2, x0]) == rgb and tuple(before[(y0 + y1) // 2, x0]) != rgb
    table, _ = detect_batch(ctx, [str(group)], progress=lambda *a, **k: None)
    rows = [dict(zip(table["headers"], row)) for row in table["data"]]
    assert [r["row"] for r in rows] == ["photo"] + [f"face {f['face']}" for f in faces]
    assert [[r["x0"], r["y0"], r["x1"], r["y1"]] for r in rows[1:]] == [f["box"] for f in faces]

"""The Space's cold start: the page and the first verdict import only what they need, and an int8 release is
served before its torch model is built, with the very answers it gives once the model is there.

How long the cold start takes is measured by ``scripts/cold_start_benchmark.py`` (results/cold_start.md);
these tests time nothing. They fail when an eager import of a heavy package comes back, or when the early
int8 detector answers differently from the one loaded after its torch model.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import typing

import numpy as np
import pytest
from PIL import Image

from benchmarks.cold_start import HEAVY_MODULES
from fakeface.data.preprocess import Preprocessing, build_eval_arrays, build_eval_transform, eval_crop_origins
from fakeface.faces import FaceCrop
from fakeface.modeling.detector import (
    ReleaseConfig, create_detector, fetch_detector_files, load_detector, save_detector, set_face_crop,
)
from fakeface.modeling.fastpath import (
    FAST_INFO_NAME, load_fast_path, load_fast_path_unbuilt, read_fast_path_info, release_files_sha256,
)
from fakeface.modeling.fastpath.export import saved_files_sha256
from fakeface.serving import models as serving_models
from fakeface.serving.analysis import analyze_bytes
from tests.helpers import REPO, toy_images
from tests.make_int8_release import ARCH, INT8_RELEASE, PREPROCESSING, RELEASE_DIR


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _vouch(folder) -> None:
    """Record the files' hashes in fastpath.json, as an export of this release's saved files would."""
    info = read_fast_path_info(folder)
    info["source"]["files_sha256"] = saved_files_sha256(load_detector(folder), folder)
    assert info["source"]["files_sha256"] == release_files_sha256(folder)
    (folder / FAST_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The committed int8 release with a face stage (re-saved as train.py saves one) and the files' hashes that
    an export records: its graph passes the full check here, torch model loaded, before it is vouched for."""
    folder = tmp_path_factory.mktemp("cold-start") / "release"
    shutil.copytree(INT8_RELEASE / RELEASE_DIR, folder)
    model = load_detector(folder)
    set_face_crop(model, FaceCrop())
    save_detector(model, folder)
    assert load_fast_path(folder).detector is not None, "the committed int8 graph is not served on this CPU"
    _vouch(folder)
    return folder


_CHILD = r"""
import json, sys
heavy, image = json.loads(sys.argv[1]), sys.argv[2]
seen = {}
def note(stage):
    seen[stage] = sorted(m for m in heavy if m in sys.modules)
import app
note("import app")
ctx = app.demo.fakeface_context
[model] = ctx.registry.load()
note("models loaded")
from fakeface.faces import detect
from fakeface.serving.analysis import analyze_bytes
from fakeface.serving.verdicts import verdict_bytes
data = open(image, "rb").read()
quick = verdict_bytes(data, "toy.png", ctx.batcher)
note("first verdict")
full = analyze_bytes(data, "toy.png", ctx.models(), explain=True, robustness=False, provenance=False)
note("grad-cam")
print(json.dumps({"seen": seen, "runtime": model.runtime, "face_sessions": len(detect._SESSIONS),
                  "verdict": quick["p_fake"], "detect": full["p_fake"], "gradcam": full["gradcam"] is not None}))
"""


def _first_verdict_in_a_fresh_process(release, tmp_path) -> tuple:
    """(the toy image, what ``_CHILD`` saw): the app started on ``release`` in a new interpreter."""
    image = tmp_path / "toy.png"
    image.write_bytes(_png(toy_images(3, 1)[0][0]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKEFACE_")}
    env.update(FAKEFACE_MODEL=str(release), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(HEAVY_MODULES), str(image)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    return image, child


def test_the_page_and_the_first_verdict_import_only_what_they_need(release, tmp_path):
    """``import app`` (the page built), the models' load and a verdict leave the heavy packages unloaded; the
    first Grad-CAM loads torch and timm and builds the model, whose answer is the verdict's."""
    image, child = _first_verdict_in_a_fresh_process(release, tmp_path)
    seen = child["seen"]
    assert seen["import app"] == [], f"building the page imported {seen['import app']}"
    assert seen["models loaded"] == [], f"loading the release imported {seen['models loaded']}"
    assert seen["first verdict"] == [], f"the first verdict imported {seen['first verdict']}"
    assert child["runtime"] == "onnxruntime-int8" and child["face_sessions"] == 1   # the face session: made at load
    assert {"torch", "timm"} <= set(seen["grad-cam"]) and child["gradcam"]
    assert child["detect"] == child["verdict"]


@pytest.fixture(scope="module")
def panel_release(release, tmp_path_factory):
    """The release above made a panel as build_panel makes one: a trace expert with its own graph (fp32 here: it
    is exported without labels) and the fusion written into config.json, whose rewrite keeps the content graph's
    vouch."""
    import torch

    from fakeface.modeling.config import Decision
    from fakeface.modeling.detector import set_stem_stride
    from fakeface.modeling.fastpath import export_fast_path
    from fakeface.modeling.panel import ExpertSpec, Fusion, PanelSpec, write_panel

    folder = tmp_path_factory.mktemp("cold-start-panel") / "release"
    shutil.copytree(release, folder)
    torch.manual_seed(1)
    trace = create_detector(ARCH, preprocessing=Preprocessing(input_size=(3, 32, 32), num_test_crops=5))
    set_stem_stride(trace, 1)
    spec = PanelSpec((ExpertSpec("content", "content", None, 2.0), ExpertSpec("trace", "trace", "experts/trace", 0.7)),
                     Fusion(("content", "trace"), (0.5, 1.5), -0.2, (1.0, 0.5), "test rows"))
    write_panel(folder, spec, {"trace": trace}, Decision(temperature=1.3, threshold_real=0.3, threshold_fake=0.8))
    assert read_fast_path_info(folder)["source"]["files_sha256"] == release_files_sha256(folder)   # re-vouched
    export_fast_path(load_detector(folder / "experts" / "trace"), folder / "experts" / "trace", toy_images(6, 8)[0])
    return folder


def test_a_rewrite_that_changes_the_weights_is_not_vouched_for(release, tmp_path):
    """revouch_release_files carries the graph's vouch over a config rewrite only: new weights written inside it
    leave the old hashes, so the release is loaded the full way (and its graph refused as other weights)."""
    import torch

    from fakeface.modeling.fastpath import revouch_release_files

    folder = tmp_path / "release"
    shutil.copytree(release, folder)
    before = read_fast_path_info(folder)["source"]["files_sha256"]
    assert before == release_files_sha256(folder)
    model = load_detector(folder)
    with torch.no_grad(), revouch_release_files(folder):
        next(model.parameters()).add_(1.0)
        save_detector(model, folder)
    assert read_fast_path_info(folder)["source"]["files_sha256"] == before != release_files_sha256(folder)
    assert load_fast_path_unbuilt(fetch_detector_files(str(folder))) is None


def test_a_panel_release_serves_its_first_verdict_without_torch(panel_release, tmp_path, monkeypatch):
    """Every expert of a panel is served from its vouched-for graph: the page, the load and the first verdict
    import no heavy package, and the fused answer is the one the panel gives when every model is built first."""
    import fakeface.modeling.fastpath as fastpath

    image, child = _first_verdict_in_a_fresh_process(panel_release, tmp_path)
    for stage in ("import app", "models loaded", "first verdict"):
        assert child["seen"][stage] == [], f"{stage} imported {child['seen'][stage]}"
    assert child["runtime"] == "panel: content onnxruntime-int8, trace onnxruntime-fp32"
    monkeypatch.setattr(fastpath, "load_fast_path_unbuilt", lambda files: None)   # the experts' models first
    late = _without_early_path(monkeypatch, panel_release)
    assert late.runtime == child["runtime"] and not isinstance(late.detector.release, ReleaseConfig)
    want = analyze_bytes(image.read_bytes(), "toy.png", [late], explain=False, robustness=False, provenance=False)
    assert child["verdict"] == pytest.approx(want["p_fake"], abs=1e-5)


def _without_early_path(monkeypatch, folder):
    with monkeypatch.context() as patch:
        patch.setattr(serving_models, "load_fast_path_unbuilt", lambda files: None)
        return serving_models.load_model(str(folder))


def test_an_int8_release_served_before_its_model_answers_as_after(release, monkeypatch):
    early = serving_models.load_model(str(release))
    assert isinstance(early.detector.release, ReleaseConfig) and not early.detector.release.built
    late = _without_early_path(monkeypatch, release)      # the torch model first, then load_fast_path's checks
    assert not isinstance(late.detector.release, ReleaseConfig) and late.runtime == early.runtime == "onnxruntime-int8"
    assert early.describe() == late.describe()
    images, _ = toy_images(5, 4)
    for image in [*images, Image.new("RGB", (24, 17), (90, 20, 200))]:   # smaller than a crop: upscaled
        data = _png(image)
        got, want = (analyze_bytes(data, "a.png", [m], provenance=False) for m in (early, late))
        assert np.array_equal(np.asarray(got.pop("gradcam")), np.asarray(want.pop("gradcam")))
        got.pop("timings_ms"), want.pop("timings_ms")
        assert got == want
    assert early.detector.release.built       # Grad-CAM built the model, once, from the same files


def test_changed_files_are_loaded_the_full_way(release, tmp_path):
    """Files that are not the ones the export hashed: no early path; the full load decides (and serves)."""
    folder = tmp_path / "edited"
    shutil.copytree(release, folder)
    config = json.loads((folder / "config.json").read_text())
    config["note"] = "edited after the export"
    (folder / "config.json").write_text(json.dumps(config))
    assert load_fast_path_unbuilt(fetch_detector_files(folder)) is None
    loaded = serving_models.load_model(str(folder))
    assert loaded.runtime == "onnxruntime-int8" and not isinstance(loaded.detector.release, ReleaseConfig)


def test_a_model_built_late_must_have_the_graphs_weights(release, tmp_path):
    folder = tmp_path / "replaced"
    shutil.copytree(release, folder)
    early = serving_models.load_model(str(folder))
    assert isinstance(early.detector.release, ReleaseConfig)
    other = save_detector(create_detector(ARCH, preprocessing=PREPROCESSING), tmp_path / "other")
    shutil.copy(other / "model.safetensors", folder / "model.safetensors")   # retrained while the app runs
    with pytest.raises(RuntimeError, match="changed after its int8 graph was loaded"):
        early.detector.model


def test_the_export_vouches_only_for_files_holding_its_model(release, tmp_path):
    model = load_detector(release)
    assert saved_files_sha256(model, release) == release_files_sha256(release)
    assert saved_files_sha256(create_detector(ARCH, preprocessing=PREPROCESSING), release) is None   # other weights
    assert saved_files_sha256(model, tmp_path) is None                                              # nothing saved


def _torch_eval_transform(pp: Preprocessing, image: Image.Image):
    """The evaluation crops as the torch transform computed them before the arrays came first (the reference)."""
    import torch

    crop_h, crop_w = pp.crop_size
    if pp.crop_protocol == "resize":
        arrays = [np.asarray(image.convert("RGB").resize((crop_w, crop_h), Image.Resampling.BICUBIC))]
    else:
        arr = np.asarray(image.convert("RGB"))
        arrays = [arr[y:y + crop_h, x:x + crop_w] for y, x in eval_crop_origins(arr.shape[0], arr.shape[1], pp)]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    return batch.sub_(torch.tensor(pp.mean).view(1, 3, 1, 1)).div_(torch.tensor(pp.std).view(1, 3, 1, 1))


@pytest.mark.parametrize("pp", [
    Preprocessing(input_size=(3, 32, 32), num_test_crops=5),
    Preprocessing(input_size=(3, 24, 40), num_test_crops=9, mean=(0.5,) * 3, std=(0.5,) * 3),
    Preprocessing(input_size=(3, 28, 28), crop_protocol="resize", num_test_crops=1),
], ids=["native-5", "native-9", "resize"])
def test_the_int8_paths_arrays_are_the_torch_transforms_bits(pp):
    """The fast path feeds ONNX Runtime numpy arrays; they hold exactly the bits the torch transform computes."""
    rng = np.random.default_rng(0)
    for size in ((61, 47), (40, 40), (300, 203)):
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        want = _torch_eval_transform(pp, image).numpy()
        assert np.array_equal(build_eval_arrays(pp)(image), want)
        assert np.array_equal(build_eval_transform(pp)(image).numpy(), want)


def test_image_model_choices_read_from_the_sdk_source_are_the_sdks():
    """The Generate tab lists the SDK's models and qualities without importing it: the same lists as its types."""
    from openai.types import ImageModel
    from openai.types.image_generate_params import ImageGenerateParamsBase

    from fakeface.generation import client

    client._sdk_choices.cache_clear()
    quality = typing.get_type_hints(ImageGenerateParamsBase)["quality"]
    assert client._sdk_choices("models") == typing.get_args(ImageModel)
    assert client._sdk_choices("qualities") == typing.get_args(next(a for a in typing.get_args(quality)
                                                                     if typing.get_args(a)))


def test_the_space_venv_says_it_lacks_disk_before_pip_starts(tmp_path, monkeypatch):
    # The CI run that filled its disk failed half-way through pip; the Space venv now refuses first, saying why.
    from benchmarks import cold_start

    venv = tmp_path / "space-venv"
    one_gb_free = shutil._ntuple_diskusage(total=10**12, used=10**12 - 10**9, free=10**9)
    monkeypatch.setattr(cold_start.shutil, "disk_usage", lambda path: one_gb_free)
    monkeypatch.setattr(cold_start.subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a[0]} without the disk"))
    with pytest.raises(OSError, match=r"needs about 8 GB of disk; 1\.0 GB free"):
        cold_start.space_python(venv)
    assert not (venv / "bin").exists()

"""The app's logic without a server (fakeface.serving): loading, one image, batches, rate limit, data.

Detectors here have random weights (a MobileNetV2 at 64 px): enough for the
plumbing, the verdicts mean nothing. Where a test needs a verdict to change
it plugs in its own scorer.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from fakeface.utils.constants import SYNTHETIC_GENERATOR
from fakeface.data.images import ImageDecodeError, load_image
from fakeface.modeling.config import Decision
from fakeface.modeling.inference import Detector, fake_probability
from fakeface.modeling.detector import (
    create_detector, load_detector, push_detector, save_detector, set_decision, set_release_facts,
)
from fakeface.data.preprocess import Preprocessing
from fakeface.modeling.photo import NOTE_NO_FACE_STAGE
from fakeface.serving.analysis import analyze_bytes
from fakeface.serving.batch import analyze_files, write_rows_csv
from fakeface.serving.browse import DatasetCache, evaluate_sample, filter_indices, sample_gallery, summarize_dataset
from fakeface.serving.errors import AppError, RateLimitExceeded
from fakeface.serving.generate import GenerationRequest, RateLimiter, generate_and_analyze
from fakeface.serving.models import LoadedModel, LoadFailure, ModelRegistry, load_models
from fakeface.serving.release import describe_release
from fakeface.utils.settings import Settings, parse_model_sources

TINY_PP = Preprocessing(input_size=(3, 64, 64), num_test_crops=1)


def save_tiny_detector(folder: Path, arch: str = "mobilenetv2_100", **settings) -> Path:
    model = create_detector(arch, preprocessing=TINY_PP)
    decision_fields = {f.name for f in dataclasses.fields(Decision)}
    if any(k in decision_fields for k in settings):
        set_decision(model, Decision(**{k: v for k, v in settings.items() if k in decision_fields}))
    facts = {k: v for k, v in settings.items() if k not in decision_fields}
    if facts:
        set_release_facts(model, **facts)
    return save_detector(model, folder)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_detector(tmp_path_factory.mktemp("model") / "tiny", temperature=2.0, threshold_fake=0.6,
                              threshold_real=0.4, calibrated=True)


@pytest.fixture(scope="module")
def loaded(model_dir) -> LoadedModel:
    [model] = load_models([str(model_dir)])
    assert isinstance(model, LoadedModel)
    return model


# --------------------------------------------------------------------------- loading

def test_parse_model_sources():
    assert parse_model_sources(" org/a, ./b ;org/c\n org/a ") == ["org/a", "./b", "org/c"]
    assert parse_model_sources("") == [] and parse_model_sources(None) == []


def test_load_failures_say_what_is_wrong_and_how_to_fix_it(tmp_path, model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((model_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    results = load_models([str(tmp_path / "nowhere"), str(broken), str(model_dir)])
    missing, corrupt, good = results
    assert isinstance(missing, LoadFailure) and "does not exist" in missing.problem and "FAKEFACE_MODEL" in missing.fix
    assert isinstance(corrupt, LoadFailure) and "corrupt" in corrupt.problem and "Re-download" in corrupt.fix
    assert isinstance(good, LoadedModel)
    assert (missing.kind, corrupt.kind) == ("not_found", "corrupt_weights")       # decided from fields, not text
    assert missing.describe()["kind"] == "not_found"
    [none] = load_models([])
    assert isinstance(none, LoadFailure) and "FAKEFACE_MODEL" in none.problem and "make demo" in none.fix


def test_registry_from_env_loads_once_and_reports_status(model_dir, tmp_path):
    registry = ModelRegistry.from_env({"FAKEFACE_MODEL": f"{model_dir}, {tmp_path / 'missing'}",
                                       "FAKEFACE_DATASET": "org/data", "FAKEFACE_DEMO_BANNER": "1"})
    registry.start_loading()
    first = registry.load()
    assert registry.load() == first and registry.models[0] is first[0]      # loaded once
    status = registry.status()
    assert [m["source"] for m in status["models"]] == [f"local folder '{model_dir.name}'"]    # no server paths
    assert status["failures"][0]["source"] == str(tmp_path / "missing")
    assert status["dataset"] == "org/data" and status["synthetic_demo"] is True
    assert str(tmp_path) not in json.dumps(status["models"][0]["name"])


def test_registry_without_models_raises_a_helpful_app_error(tmp_path):
    registry = ModelRegistry([str(tmp_path / "missing")])
    with pytest.raises(AppError, match="No detector is available.*does not exist"):
        registry.require_models()


def test_synthetic_training_data_in_the_config_turns_the_banner_on(tmp_path):
    folder = save_tiny_detector(tmp_path / "demo", synthetic_training_data=True,
                                trained_on={"fake_generators": [SYNTHETIC_GENERATOR], "real_sources": ["synthetic-camera"]})
    registry = ModelRegistry([str(folder)])
    assert registry.show_synthetic_banner
    assert registry.models[0].describe()["synthetic_training_data"] is True
    assert not ModelRegistry.from_models([]).show_synthetic_banner


def test_hub_models_load_and_fall_back_to_the_cache_when_the_hub_is_down(hub, tmp_path, model_dir):
    sha = push_detector(model_dir, "fakeface/tiny-detector")
    [model] = load_models(["fakeface/tiny-detector"])
    assert isinstance(model, LoadedModel)
    assert model.revision == sha and model.notice is None
    assert model.name.endswith(f"fakeface/tiny-detector@{sha[:7]}")
    [missing] = load_models(["fakeface/no-such-model"])
    assert isinstance(missing, LoadFailure) and "not found on the Hub" in missing.problem and "HF_TOKEN" in missing.fix
    [no_branch] = load_models(["fakeface/tiny-detector@no-such-branch"])
    assert isinstance(no_branch, LoadFailure) and no_branch.kind == "not_found"
    assert no_branch.fix.startswith("Use an existing branch")
    with hub.offline():
        [cached] = load_models(["fakeface/tiny-detector"])
        [never] = load_models(["fakeface/never-downloaded"])
    assert isinstance(cached, LoadedModel) and "cached revision" in cached.notice
    assert ModelRegistry.from_models([cached]).status()["models"][0]["notice"] == cached.notice
    assert isinstance(never, LoadFailure) and "could not be reached" in never.problem
    assert never.fix.startswith("Check the network")


# --------------------------------------------------------------------------- one image

def test_analyze_bytes_applies_the_models_preprocessing_temperature_and_thresholds(loaded, model_dir):
    data = encode(noise(80, 80))
    result = analyze_bytes(data, "/srv/uploads/tmp123/face.png", [loaded])
    # The same numbers straight from the core: load_image -> Detector -> temperature -> thresholds.
    detector = Detector(load_detector(model_dir))
    logits = detector.logits([load_image(data).image])
    p = float(fake_probability(logits, 2.0)[0])
    assert result["p_fake"] == pytest.approx(p, abs=1e-5)
    assert result["verdict"] == Decision(threshold_fake=0.6, threshold_real=0.4).verdict(p)
    assert (result["threshold_fake"], result["threshold_real"]) == (0.6, 0.4)
    row = result["models"][0]
    assert row["temperature"] == 2.0 and row["calibrated"] is True and row["runtime"] == "torch-fp32"
    assert result["file"] == "face.png"                               # never a server path
    assert result["image"] == {**result["image"], "format": "PNG", "width": 80, "height": 80, "bytes": len(data)}
    assert result["warnings"] == []
    assert result["gradcam"].size == (80, 80)
    assert {c["check"] for c in result["robustness"]["checks"]} == {"jpeg75", "downscale0.5"}
    assert result["provenance"]["c2pa"]["status"] == "none"
    json.dumps({k: v for k, v in result.items() if k != "gradcam"})  # everything else is JSON


def test_every_model_is_scored_side_by_side(loaded, tmp_path):
    [other] = load_models([str(save_tiny_detector(tmp_path / "other", "mobilenetv2_050"))])
    result = analyze_bytes(encode(noise(64, 64)), "x.png", [loaded, other])
    assert [r["architecture"] for r in result["models"]] == ["mobilenetv2_100", "mobilenetv2_050"]
    assert result["agreement"] == (len({r["verdict"] for r in result["models"]}) == 1)
    assert result["model"] == loaded.name


def test_provenance_comes_from_the_original_bytes(loaded):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a portrait, Steps: 20")
    result = analyze_bytes(encode(noise(64, 64), pnginfo=info), "sd.png", [loaded], explain=False, robustness=False)
    assert result["provenance"]["text_chunks"] == {"parameters": "a portrait, Steps: 20"}
    assert result["gradcam"] is None and result["robustness"] is None


def test_bad_input_raises_a_clear_error_and_loses_nothing(loaded):
    with pytest.raises(ImageDecodeError, match="text file"):
        analyze_bytes(b"hello, not an image", "notes.png", [loaded])
    with pytest.raises(ImageDecodeError, match="empty"):
        analyze_bytes(b"", "empty.png", [loaded])
    with pytest.raises(AppError, match="No detector"):
        analyze_bytes(encode(noise(32, 32)), "x.png", [])
    assert analyze_bytes(encode(noise(64, 64)), "ok.png", [loaded], explain=False)["verdict"] in ("real", "fake", "uncertain")


@pytest.mark.parametrize("size, fmt, kwargs, expected", [
    ((40, 40), "PNG", {}, "Small image"),
    ((100, 64), "PNG", {}, "Not square"),
    ((80, 80), "JPEG", {"quality": 35}, "Heavily compressed"),
])
def test_inputs_far_from_training_data_are_flagged(loaded, size, fmt, kwargs, expected):
    result = analyze_bytes(encode(noise(*size), fmt, **kwargs), "x", [loaded], explain=False, robustness=False)
    assert [w for w in result["warnings"] if w.startswith(expected)], result["warnings"]
    assert len(result["warnings"]) == 1


def test_partial_crop_coverage_is_a_note_not_a_warning(loaded):
    result = analyze_bytes(encode(noise(600, 600)), "big.png", [loaded], explain=False, robustness=False)
    assert result["warnings"] == []
    stage, note = result["notes"]
    assert stage == NOTE_NO_FACE_STAGE and result["mode"] == "whole-image" and result["faces"] == []
    assert "1 crop(s) of 64×64 px" in note and "covering 1% of this image" in note
    small = analyze_bytes(encode(noise(64, 64)), "s.png", [loaded], explain=False, robustness=False)
    assert small["notes"] == [NOTE_NO_FACE_STAGE]


@dataclass
class _Scores:
    p_fake: np.ndarray
    verdicts: list


class SizeScorer:
    """A pluggable scorer: 'fake' for images at least ``min_side`` px, 'real' below."""

    runtime = "test-scorer"

    def __init__(self, min_side: int):
        self.min_side = min_side
        self.calls = 0

    def score(self, images):
        self.calls += 1
        p = np.array([0.9 if min(im.size) >= self.min_side else 0.1 for im in images])
        return _Scores(p, ["fake" if v > 0.5 else "real" for v in p])


def test_the_scorer_is_pluggable_and_robustness_flags_unstable_verdicts(loaded):
    stable = LoadedModel("stub", loaded.detector, SizeScorer(min_side=10))
    unstable = LoadedModel("stub", loaded.detector, SizeScorer(min_side=100))
    data = encode(noise(128, 128))
    ok = analyze_bytes(data, "a.png", [stable])
    assert ok["verdict"] == "fake" and ok["models"][0]["runtime"] == "test-scorer"
    assert ok["robustness"]["stable"] is True and ok["robustness"]["summary"].startswith("Stable")
    shaky = analyze_bytes(data, "a.png", [unstable])
    assert shaky["robustness"]["stable"] is False
    half = next(c for c in shaky["robustness"]["checks"] if c["check"] == "downscale0.5")
    assert half["verdict"] == "real" and half["delta"] == pytest.approx(-0.8)
    assert "downscaled to half size" in shaky["robustness"]["summary"]
    assert shaky["gradcam"] is not None                                  # Grad-CAM from the torch model


def test_load_models_uses_a_valid_fast_path(monkeypatch, model_dir):
    import fakeface.serving.models as models
    from fakeface.modeling.fastpath import FastPathLoad, FastPathRefusal, RefusalCode

    fast = SizeScorer(min_side=1)
    monkeypatch.setattr(models, "load_fast_path", lambda model: FastPathLoad(fast))
    [model] = load_models([str(model_dir)])
    assert model.scorer is fast and model.runtime == "test-scorer"
    assert model.describe()["fast_path"]["served"] is True and model.describe()["fast_path"]["code"] is None
    [fp32] = load_models([str(model_dir)], use_fast_path=False)
    assert fp32.scorer is fp32.detector and fp32.describe()["fast_path"]["code"] == "disabled"
    refusal = FastPathRefusal(RefusalCode.OVER_BUDGET, "it loses 0.2 AUC", "Serve fp32.")
    monkeypatch.setattr(models, "load_fast_path", lambda model: FastPathLoad(None, refusal))
    [refused] = load_models([str(model_dir)])
    assert refused.scorer is refused.detector and refused.runtime == "torch-fp32"
    assert refused.describe()["fast_path"] == {"served": False, "code": "over_budget", "problem": "it loses 0.2 AUC",
                                               "fix": "Serve fp32.", "check": None}
    # A runtime's error text naming the local folder is shown with the folder's name only.
    leaky = FastPathRefusal(RefusalCode.GRAPH_UNLOADABLE, f"cannot load {model_dir}/model.int8.onnx")
    monkeypatch.setattr(models, "load_fast_path", lambda model: FastPathLoad(None, leaky))
    [hidden] = load_models([str(model_dir)])
    assert str(model_dir) not in json.dumps(hidden.describe())
    assert hidden.describe()["fast_path"]["problem"] == f"cannot load {model_dir.name}/model.int8.onnx"
    monkeypatch.undo()   # the real loader, on a release without an int8 graph: fp32, and the status says why
    [plain] = load_models([str(model_dir)])
    assert plain.scorer is plain.detector and plain.describe()["fast_path"]["code"] == "absent"


# --------------------------------------------------------------------------- batch

def test_batch_rows_csv_and_per_file_errors(loaded, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encode(noise(64, 64)))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    formula = tmp_path / "=HYPERLINK(1).png"
    formula.write_bytes(encode(noise(64, 64, seed=2)))
    seen = []
    rows = analyze_files([good, bad, formula], [loaded], progress=lambda i, n, name: seen.append((i, n, name)))
    assert [r["file"] for r in rows] == ["good.png", "bad.jpg", "=HYPERLINK(1).png"]    # no faces: photo rows only
    assert {r["row"] for r in rows} == {"photo"} and rows[0]["faces"] == 0 and rows[0]["mode"] == "whole-image"
    assert rows[1]["verdict"] == "error" and "HTML" in rows[1]["error"]
    assert rows[0]["verdict"] in ("real", "fake", "uncertain") and rows[0]["error"] == ""
    assert seen == [(0, 3, "good.png"), (1, 3, "bad.jpg"), (2, 3, "=HYPERLINK(1).png")]
    path = write_rows_csv(rows, tmp_path / "out.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [r["file"] for r in table] == ["good.png", "bad.jpg", "'=HYPERLINK(1).png"]
    assert float(table[0]["p_fake"]) == pytest.approx(rows[0]["p_fake"])
    with pytest.raises(AppError, match="Too many files"):
        analyze_files([good] * 101, [loaded])


# --------------------------------------------------------------------------- rate limit

def test_rate_limiter_per_session_global_and_window():
    now = [0.0]
    limiter = RateLimiter(per_session=2, global_limit=3, window_s=60, clock=lambda: now[0])
    limiter.acquire("a")
    limiter.acquire("a")
    with pytest.raises(RateLimitExceeded, match="2 generation.*this session") as caught:
        limiter.acquire("a")
    error = caught.value
    assert error.retry_after == pytest.approx(60) and (error.scope, error.limit, error.window_s) == ("session", 2, 60)
    assert error.kind == "rate_limited" and error.fix.startswith("try again in")
    limiter.acquire("b")
    with pytest.raises(RateLimitExceeded, match="this Space") as caught:
        limiter.acquire("c")
    assert (caught.value.scope, caught.value.limit) == ("space", 3)
    now[0] = 61.0
    limiter.acquire("a")
    limiter.acquire("c")


# --------------------------------------------------------------------------- generation

def test_generation_uses_the_users_key_else_the_spaces_key_under_the_limit(openai_fake, loaded):
    key = openai_fake.api_key
    limiter = RateLimiter(per_session=1, global_limit=10)
    request = GenerationRequest(attributes={"gender": "female", "age": "30-44"}, model="gpt-image-2", quality="low",
                                user_key=key)
    result = generate_and_analyze(request, [loaded], session_id="s1", limiter=limiter, settings=Settings())
    assert result["generated"]["key"] == "yours" and result["image_bytes"] == openai_fake.images_served[-1]
    assert result["provenance"]["text_chunks"]["fake-openai"]            # the bytes as served
    assert openai_fake.requests[-1].authorization == f"Bearer {key}"
    assert key not in repr(request) and key not in json.dumps(result["generated"])

    with pytest.raises(AppError, match="no OpenAI key"):
        generate_and_analyze(GenerationRequest(prompt="a face"), [loaded], session_id="s1", limiter=limiter, settings=Settings())
    space = {"OPENAI_API_KEY": key}
    generate_and_analyze(GenerationRequest(prompt="a face"), [loaded], session_id="s1", limiter=limiter, settings=Settings.from_env(space))
    with pytest.raises(RateLimitExceeded):
        generate_and_analyze(GenerationRequest(prompt="a face"), [loaded], session_id="s1", limiter=limiter, settings=Settings.from_env(space))
    with pytest.raises(AppError, match="Describe the face") as caught:
        generate_and_analyze(GenerationRequest(user_key=key), [loaded], session_id="s2", limiter=limiter, settings=Settings())
    assert caught.value.kind == "no_input"


# --------------------------------------------------------------------------- dataset browser

@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    from fakeface.data.dataset import build_face_dataset

    return build_face_dataset(tmp_path_factory.mktemp("data") / "faces", synthetic=24, synthetic_size=64,
                              seed=0, progress=False).output_dir


def test_dataset_cache_allows_only_the_configured_folder(dataset_dir, tmp_path):
    with pytest.raises(AppError, match="Only Hub datasets"):
        DatasetCache().load(str(dataset_dir))
    cache = DatasetCache(allowed_folders=[str(dataset_dir)])
    data = cache.load(str(dataset_dir))
    assert cache.load(str(dataset_dir)) is data
    with pytest.raises(AppError, match="Enter a dataset"):
        cache.load("  ")
    with pytest.raises(AppError, match="neither an existing folder nor a Hub dataset id"):
        cache.load("not a dataset id")


def test_dataset_summary_filters_gallery_and_evaluation(dataset_dir, loaded):
    data = DatasetCache(allowed_folders=[str(dataset_dir)]).load(str(dataset_dir))
    summary = summarize_dataset(data)
    assert set(summary["splits"]) == {"train", "validation", "test"}
    train = summary["splits"]["train"]
    assert train["rows"] == train["real"] + train["fake"] == len(data["train"])
    assert SYNTHETIC_GENERATOR in summary["generators"]
    fakes = filter_indices(data["train"], label="fake")
    assert fakes and all(data["train"][i]["label"] == 1 for i in fakes)
    assert filter_indices(data["train"], label="any") == list(range(len(data["train"])))
    gallery = sample_gallery(data["train"], fakes, n=4)
    assert len(gallery) == min(4, len(fakes))
    assert all(caption.startswith("fake · ") for _, caption in gallery)
    progress = []
    metrics = evaluate_sample(loaded, data["train"], n=10, batch_size=4, progress=lambda f, d: progress.append(f))
    assert metrics["n"] == 10 and len(metrics["p_fake"]) == 10
    assert metrics["threshold"] == 0.6 and sum(metrics["verdicts"].values()) == 10
    assert progress[0] == 0.0 and progress[-1] == 1.0


def test_describe_release_reads_metrics_and_card(tmp_path, model_dir):
    folder = save_tiny_detector(tmp_path / "release")
    (folder / "eval_results.json").write_text(json.dumps({
        "overall": {"n": 40, "roc_auc": 0.97, "accuracy": 0.9},
        "training": {"config": {"dataset": "org/faces", "dataset_revision": "abc123"}},
    }))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Card\n![plot](plots/roc.png)\nText.\n")
    [model] = load_models([str(folder)])
    release = describe_release(model)
    assert release["metrics"]["roc_auc"] == 0.97 and release["n_test"] == 40
    assert (release["dataset"], release["dataset_revision"]) == ("org/faces", "abc123")
    assert release["card"] == "# Card\n\nText."
    from fakeface.app.render import render_about, render_model_cards

    about = render_about(ModelRegistry.from_models([model]).status(), [release])
    assert "0.970" in about and "`org/faces` at revision `abc123`" in about and str(tmp_path) not in about
    cards = render_model_cards([release])
    assert cards.startswith(f"## {model.name}") and "\n### Card\n" in cards and "Text." in cards
    assert render_model_cards([]) == "No model card ships with the loaded model(s)."


# --------------------------------------------------------------------------- settings

def test_settings_read_every_variable_with_one_boolean_rule():
    for text in ("1", "true", "TRUE", "Yes", "on", " On "):
        assert Settings.from_env({"FAKEFACE_DEMO_BANNER": text}).demo_banner is True
        assert Settings.from_env({"FAKEFACE_FAST_PATH": text}).fast_path is True
    for text in ("0", "false", "No", "OFF"):
        assert Settings.from_env({"FAKEFACE_DEMO_BANNER": text}).demo_banner is False
        assert Settings.from_env({"FAKEFACE_FAST_PATH": text}).fast_path is False
    default = Settings.from_env({})
    assert default == Settings() and default.fast_path is True and default.demo_banner is False
    assert Settings.from_env({"FAKEFACE_FAST_PATH": ""}).fast_path is True           # empty = unset
    values = Settings.from_env({
        "FAKEFACE_MODEL": "org/a, ./b", "FAKEFACE_DATASET": " org/data ", "FAKEFACE_THREADS": "3",
        "FAKEFACE_GENERATE_PER_SESSION": "5", "FAKEFACE_GENERATE_GLOBAL": "0", "FAKEFACE_GENERATE_WINDOW_S": "60",
        "FAKEFACE_GENERATE_TIMEOUT_S": "2.5", "FAKEFACE_VERDICT_BATCH": "4", "FAKEFACE_VERDICT_WAIT_MS": "0",
    })
    assert values.models == ("org/a", "./b") and values.dataset == "org/data" and values.resolve_threads() == 3
    assert (values.generate_per_session, values.generate_global, values.generate_window_s) == (5, 0, 60.0)
    assert values.generate_timeout_s == 2.5 and (values.verdict_batch_size, values.verdict_wait_ms) == (4, 0.0)
    assert 1 <= default.resolve_threads() <= 2


@pytest.mark.parametrize("variable, value, expected", [
    ("FAKEFACE_FAST_PATH", "maybe", "1/true/yes/on or 0/false/no/off"),
    ("FAKEFACE_DEMO_BANNER", "2", "1/true/yes/on or 0/false/no/off"),
    ("FAKEFACE_THREADS", "two", "whole number >= 1"),
    ("FAKEFACE_THREADS", "0", "whole number >= 1"),
    ("FAKEFACE_GENERATE_PER_SESSION", "-1", "whole number >= 0"),
    ("FAKEFACE_GENERATE_WINDOW_S", "soon", "seconds > 0"),
    ("FAKEFACE_GENERATE_TIMEOUT_S", "nan", "seconds > 0"),
    ("FAKEFACE_VERDICT_BATCH", "1.5", "whole number >= 1"),
])
def test_a_bad_value_is_a_typed_error_naming_the_variable(variable, value, expected):
    from fakeface.utils.settings import SettingsError

    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    error = caught.value
    assert (error.variable, error.value) == (variable, value) and expected in error.expected
    assert variable in str(error) and repr(value) in str(error)


def test_the_openai_key_is_kept_for_use_but_never_shown():
    key = "sk-test-settings-0123456789"
    settings = Settings.from_env({"OPENAI_API_KEY": key})
    assert settings.space_has_openai_key and settings.openai_api_key == key
    assert key not in repr(settings) and key not in json.dumps(settings.describe())
    assert settings.describe()["OPENAI_API_KEY"] == "set"
    assert not Settings.from_env({"OPENAI_API_KEY": "  "}).space_has_openai_key


def test_every_fakeface_variable_in_the_repository_is_a_setting():
    import re

    from fakeface.utils.settings import ENV

    repo = Path(__file__).resolve().parent.parent
    texts = [p.read_text(errors="replace") for folder in ("fakeface", "benchmarks", "scripts", "docs")
             for p in (repo / folder).rglob("*") if p.suffix in (".py", ".md") and p.is_file()]
    texts += [(repo / name).read_text() for name in ("app.py", "Makefile", "README.md") if (repo / name).is_file()]
    # FAKEFACE_KEY / FAKEFACE_FILES-like Python names are constants, not variables: only ALL-CAPS env names
    # that appear as a variable (in backticks, an assignment, or a quoted string) count.
    seen = {m for text in texts for m in re.findall(r"[`\"'$({ ]\s*(FAKEFACE_[A-Z0-9_]+)", text)}
    seen -= {"FAKEFACE_KEY"}
    assert seen, "the scan found nothing: its pattern is wrong"
    assert seen <= set(ENV.values()), sorted(seen - set(ENV.values()))


# --------------------------------------------------------------------------- verdicts in shared batches

class RecordingScorer:
    """Wraps a real scorer; records the batch size of every call; the first call can be held at a gate."""

    def __init__(self, inner, gate=None):
        import threading

        self.inner, self.gate, self.sizes = inner, gate, []
        self.entered = threading.Event()
        self.runtime = getattr(inner, "runtime", "torch-fp32")

    def score(self, images):
        self.sizes.append(len(images))
        self.entered.set()
        if self.gate is not None and len(self.sizes) == 1:
            self.gate.wait(timeout=60)
        return self.inner.score(images)


def test_concurrent_verdicts_share_one_model_call_and_match_single_calls(loaded):
    import threading

    from fakeface.serving.analysis import score_images
    from fakeface.serving.verdicts import VerdictBatcher

    gate = threading.Event()
    recording = RecordingScorer(loaded.scorer, gate)
    model = LoadedModel(loaded.source, loaded.detector, recording, folder=loaded.folder)
    batcher = VerdictBatcher(lambda: [model], max_batch_size=8, max_wait_ms=0)
    images = [noise(64 + 8 * i, 64 + 8 * i, seed=i) for i in range(8)]
    first = batcher.submit(images[0])
    assert recording.entered.wait(timeout=60)      # the worker holds image 0 at the gate...
    rest = [batcher.submit(image) for image in images[1:]]    # ...while 7 more requests queue up
    gate.set()
    batched = [first.result(timeout=60)] + [f.result(timeout=60) for f in rest]
    assert recording.sizes == [1, 7] and batcher.batch_sizes == {1: 1, 7: 1}
    singles = [score_images([loaded], [image])[0] for image in images]
    for verdict, single in zip(batched, singles):
        # A batch of 7 runs other convolution kernels than a batch of 1: p agrees to ~1e-5, not bit for bit.
        assert verdict.primary.p_fake == pytest.approx(single.primary.p_fake, abs=1e-4)
        assert verdict.primary.verdict == single.primary.verdict
        assert verdict.to_dict()["threshold_fake"] == 0.6 and verdict.faces == ()


class SideScorer(SizeScorer):
    """p(fake) = the image's short side / 1000: random weights give nearly one p for every image, this shows
    which caller got which image's result."""

    def score(self, images):
        self.calls += 1
        p = np.array([min(im.size) / 1000 for im in images])
        return _Scores(p, ["fake" if v >= 0.1 else "real" for v in p])


def test_each_request_gets_its_own_images_verdict_back(loaded):
    import threading

    from fakeface.serving.verdicts import VerdictBatcher

    gate = threading.Event()
    recording = RecordingScorer(SideScorer(0), gate)
    batcher = VerdictBatcher(lambda: [LoadedModel("stub", loaded.detector, recording)], max_batch_size=4,
                             max_wait_ms=0)
    sides = [50, 80, 120, 90, 60, 130, 70]
    futures = [batcher.submit(noise(sides[0], sides[0]))]
    assert recording.entered.wait(timeout=60)
    futures += [batcher.submit(noise(side, side)) for side in sides[1:]]
    gate.set()
    results = [f.result(timeout=60) for f in futures]
    assert recording.sizes == [1, 4, 2]                               # max_batch_size caps a batch
    assert [r.primary.p_fake for r in results] == pytest.approx([side / 1000 for side in sides])
    assert [r.primary.verdict for r in results] == ["real" if side < 100 else "fake" for side in sides]


def test_a_gathered_batch_is_scored_in_model_calls_within_the_pixel_budget(loaded):
    """Seven requests wait together; a budget of two 64² crops per call scores them in calls of 2, 2, 2, 1."""
    import threading

    from fakeface.serving.verdicts import VerdictBatcher

    gate = threading.Event()
    recording = RecordingScorer(SideScorer(0), gate)
    model = LoadedModel("stub", loaded.detector, recording)          # TINY_PP: one 64 px crop per photo
    batcher = VerdictBatcher(lambda: [model], max_batch_size=8, max_wait_ms=0, pixel_budget=2 * 64 * 64 + 100)
    sides = [50, 80, 120, 90, 60, 130, 70, 110]
    futures = [batcher.submit(noise(sides[0], sides[0]))]
    assert recording.entered.wait(timeout=60)
    futures += [batcher.submit(noise(side, side)) for side in sides[1:]]
    gate.set()
    results = [f.result(timeout=60) for f in futures]
    assert batcher.batch_sizes == {1: 1, 7: 1}                          # one batch of 7 gathered...
    assert recording.sizes == [1, 2, 2, 2, 1] and batcher.call_sizes == {1: 2, 2: 3}     # ...scored in 4 calls
    assert [r.primary.p_fake for r in results] == pytest.approx([side / 1000 for side in sides])


def test_images_per_call_fits_the_costliest_models_crops_in_the_budget():
    from types import SimpleNamespace

    from fakeface.serving.verdicts import MODEL_CALL_PIXELS, images_per_call

    def model(size: int, crops: int, protocol: str = "native-crops"):
        return SimpleNamespace(preprocessing=Preprocessing(input_size=(3, size, size), crop_protocol=protocol,
                                                           num_test_crops=crops))

    five_128, face_112 = model(128, 5), model(112, 1, "resize")
    assert images_per_call([five_128]) == MODEL_CALL_PIXELS // (5 * 128 * 128) == 2     # the load test's model
    assert images_per_call([face_112]) == MODEL_CALL_PIXELS // (112 * 112) == 13       # a face-stage release
    assert images_per_call([face_112, five_128]) == 2                                     # the costliest decides
    assert images_per_call([model(512, 5)]) == 1                                          # never fewer than one
    assert images_per_call([face_112], pixel_budget=10**9) > 8                          # a big budget: one call


def test_the_servers_torch_threads_share_the_cores_among_concurrent_model_calls(monkeypatch):
    import sys

    import torch

    from fakeface.serving import threads

    monkeypatch.setattr(threads, "default_threads", lambda: 2)
    assert threads.serving_torch_threads(Settings(), concurrent_calls=3) == 1        # the Space: 2 cores, 3 lanes
    assert threads.serving_torch_threads(Settings(), concurrent_calls=1) == 2
    monkeypatch.setattr(threads, "default_threads", lambda: 8)
    assert threads.serving_torch_threads(Settings(), concurrent_calls=3) == 2
    assert threads.serving_torch_threads(Settings(threads=3), concurrent_calls=3) == 3   # FAKEFACE_THREADS as set
    with pytest.raises(ValueError):
        threads.serving_torch_threads(Settings(), concurrent_calls=0)
    before = torch.get_num_threads()
    try:
        assert threads.apply_serving_threads(Settings(threads=1), 3) == 1 and torch.get_num_threads() == 1
        assert threads.apply_serving_threads(Settings(threads=2), 3) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")               # restored after the test
    monkeypatch.delitem(sys.modules, "torch")                # torch not imported yet: torch will read the variable
    assert threads.apply_serving_threads(Settings(threads=1), 3) == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_a_scoring_error_reaches_every_waiting_request_and_the_batcher_lives_on(loaded):
    from fakeface.serving.verdicts import VerdictBatcher, verdict_bytes

    registry = ModelRegistry([])                     # no models: require_models raises
    batcher = VerdictBatcher(registry.require_models, max_batch_size=4, max_wait_ms=0)
    with pytest.raises(AppError) as caught:
        batcher.verdict(noise(32, 32))
    assert caught.value.kind == "no_model" and "FAKEFACE_MODEL" in str(caught.value)
    working = VerdictBatcher(lambda: [loaded], max_batch_size=4, max_wait_ms=1)
    result = verdict_bytes(encode(noise(70, 70)), "/srv/tmp/x/face.png", working)
    assert result["file"] == "face.png" and result["verdict"] in ("real", "fake", "uncertain")
    assert "gradcam" not in result and "robustness" not in result and result["faces"] == []
    with pytest.raises(ImageDecodeError):
        verdict_bytes(b"not an image", "x.png", working)
    assert working.verdict(noise(64, 64)).primary.model is loaded      # still serving after the bad input


# --------------------------------------------------------------------------- the face stage

@pytest.fixture(scope="module")
def face_model(tmp_path_factory) -> LoadedModel:
    """A tiny detector whose config carries the face crop (as training writes it)."""
    from fakeface.faces import FaceCrop
    from fakeface.modeling.detector import set_face_crop

    model = create_detector("mobilenetv2_050", preprocessing=TINY_PP)
    set_face_crop(model, FaceCrop())
    [loaded] = load_models([str(save_detector(model, tmp_path_factory.mktemp("faces") / "face-model"))],
                           use_fast_path=False)
    assert loaded.detector.face_crop == FaceCrop()          # read back from config.json
    return loaded


def _shared_photo(*parts: str) -> Path:
    path = Path(__file__).resolve().parents[1].parent.joinpath("shared", "data", *parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared real-face data must sit next to the repo, in ../shared/data)")
    return path


def test_detect_on_a_group_photo_gives_each_face_its_box_and_verdict(face_model):
    from fakeface.faces import crop_faces
    from fakeface.modeling.photo import score_photos

    path = _shared_photo("faces-dev", "real", "group-photos-ulfd", "ulfd_2.jpg")
    data = path.read_bytes()
    result = analyze_bytes(data, path.name, [face_model])
    photo = load_image(data).image
    [expected] = score_photos(face_model.scorer, [photo])        # the one path, straight
    assert result["mode"] == "faces" == expected.mode and len(result["faces"]) >= 2
    assert [f["box"] for f in result["faces"]] == [list(f.box) for f in expected.faces]
    assert [f["p_fake"] for f in result["faces"]] == pytest.approx([f.p_fake for f in expected.faces], abs=1e-5)
    worst = max((f for f in result["faces"] if not f["too_small"]), key=lambda f: f["p_fake"])
    assert worst["most_suspicious"] and sum(f["most_suspicious"] for f in result["faces"]) == 1
    assert result["p_fake"] == pytest.approx(worst["p_fake"], abs=1e-6)
    assert result["notes"][0].startswith("The photo's verdict is that of its most suspicious face: "
                                         f"face {worst['face']}")
    # the evidence is of that face's crop, not of the whole photo
    crop = crop_faces(photo, face_model.detector.face_crop).faces[worst["face"] - 1]
    assert result["evidence_of"] == f"face {worst['face']}" and result["gradcam"].size == crop.image.size
    assert result["robustness"]["of"] == f"face {worst['face']}" and "face the verdict comes from" in \
        result["robustness"]["summary"]
    json.dumps({k: v for k, v in result.items() if k != "gradcam"})


def test_no_face_and_too_small_faces_say_the_whole_image_was_scored(face_model):
    from fakeface.modeling.photo import NOTE_NO_FACE

    blank = analyze_bytes(encode(noise(300, 300)), "noise.png", [face_model], explain=False, robustness=False)
    assert blank["mode"] == "whole-image" and blank["faces"] == [] and blank["notes"][0] == NOTE_NO_FACE
    assert blank["evidence_of"] == "the whole image"
    seed = load_image(_shared_photo("seed-ffhq", "ffhq_00156.png")).image
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    canvas.paste(seed.resize((100, 100), Image.Resampling.LANCZOS), (320, 240))
    tiny = analyze_bytes(encode(canvas), "tiny.png", [face_model], explain=False, robustness=False)
    [face] = tiny["faces"]
    assert face["too_small"] and face["p_fake"] is None and face["verdict"] is None
    assert tiny["mode"] == "whole-image" and "too small to judge: the whole image was scored" in tiny["notes"][0]


def test_models_sharing_a_face_crop_share_one_face_scan(face_model, monkeypatch):
    import fakeface.serving.analysis as analysis

    calls = []
    real = analysis.run_face_stage
    monkeypatch.setattr(analysis, "run_face_stage",
                        lambda images, face_crop: calls.append(face_crop) or real(images, face_crop))
    twin = LoadedModel("twin", face_model.detector, SizeScorer(min_side=10))
    photo = load_image(_shared_photo("seed-ffhq", "ffhq_00152.png")).image
    [verdict] = analysis.score_images([face_model, twin], [photo])
    assert len(calls) == 1
    assert [m.mode for m in verdict.models] == ["faces", "faces"]
    assert verdict.models[1].p_fake == 0.9          # the stub scored the face crop (>= 10 px): p 0.9


def test_batch_and_csv_carry_a_row_per_face_with_its_box(face_model, tmp_path):
    group = _shared_photo("faces-dev", "real", "group-photos-ulfd", "ulfd_2.jpg")
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(noise(200, 200)))
    rows = analyze_files([group, blank], [face_model])
    photo_rows = [r for r in rows if r["row"] == "photo"]
    face_rows = [r for r in rows if r["row"] != "photo"]
    assert [r["file"] for r in photo_rows] == ["ulfd_2.jpg", "blank.png"]
    assert photo_rows[0]["faces"] == len(face_rows) >= 2 and photo_rows[1]["faces"] == 0
    # every scored row says why it got its verdict, in the same words as the app
    assert all("p(fake)" in r["reason"] for r in photo_rows + [r for r in face_rows if not r["too_small"]])
    assert [r["row"] for r in face_rows] == [f"face {i}" for i in range(1, len(face_rows) + 1)]
    assert rows[1:1 + len(face_rows)] == face_rows, "a photo's face rows follow its photo row"
    assert all(r["x0"] < r["x1"] and r["y0"] < r["y1"] and r["file"] == "ulfd_2.jpg" for r in face_rows)
    path = write_rows_csv(rows, tmp_path / "faces.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [r["row"] for r in table] == [r["row"] for r in rows]
    assert [int(r["x0"]) for r in table if r["row"] != "photo"] == [r["x0"] for r in face_rows]
    assert max(float(r["p_fake"]) for r in table if r["row"] != "photo" and r["p_fake"]) == \
        pytest.approx(float(table[0]["p_fake"]))


def test_the_verdict_endpoint_carries_the_faces(face_model):
    from fakeface.serving.verdicts import VerdictBatcher, verdict_bytes

    data = _shared_photo("seed-ffhq", "ffhq_00152.png").read_bytes()
    quick = verdict_bytes(data, "face.png", VerdictBatcher(lambda: [face_model], max_wait_ms=0))
    full = analyze_bytes(data, "face.png", [face_model], explain=False, robustness=False, provenance=False)
    assert quick["mode"] == "faces" and quick["faces"] == full["faces"] and quick["verdict"] == full["verdict"]
    assert quick["notes"][0] == full["notes"][0]

"""A panel of experts in one release: the fusion, the sentence, the release round trip and one scoring path.

Random-weight experts (plumbing only): what is checked is that every entry point scores a panel release the same
way and shows each expert, not how good the experts are (results/panel.md measures that).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakeface.data.preprocess import Preprocessing
from fakeface.evaluation.abstention import abstention_rates, choose_confident_band
from fakeface.modeling.config import Decision
from fakeface.modeling.detector import create_detector, load_detector, save_detector, set_stem_stride
from fakeface.modeling.inference import Detector
from fakeface.modeling.panel import (ExpertSpec, Fusion, PanelScorer, PanelSpec, evidence_sentence, fit_fusion,
                                     panel_spec, release_scorer, write_panel)

CONTENT_PP = Preprocessing(input_size=(3, 64, 64), num_test_crops=1, crop_protocol="resize")
TRACE_PP = Preprocessing(input_size=(3, 32, 32), num_test_crops=5)
DECISION = Decision(temperature=1.3, threshold_real=0.3, threshold_fake=0.8, calibrated=True,
                    band_source="held-out families (test)", band_target=0.05)


def _spec(weights=(0.5, 1.5), intercept=-0.2) -> PanelSpec:
    return PanelSpec((ExpertSpec("content", "content", None, 2.0), ExpertSpec("trace", "trace", "experts/trace", 0.7)),
                     Fusion(("content", "trace"), weights, intercept, (1.0, 0.5), "test rows"))


# --------------------------------------------------------------------------- the fusion

def test_fit_fusion_is_monotone_and_uses_the_expert_that_separates():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200), np.ones(200)].astype(int)
    useful = np.where(y == 1, 2.0, -2.0) + rng.normal(0, 1, 400)
    backwards = np.where(y == 1, -1.0, 1.0) + rng.normal(0, 1, 400)      # says "real" for fakes
    noise = rng.normal(0, 5, 400)
    fusion = fit_fusion(np.column_stack([useful, backwards, noise]), y, ("a", "b", "c"))
    assert all(w >= 0 for w in fusion.weights)
    assert fusion.weights[1] == pytest.approx(0.0, abs=1e-6)             # a backwards expert gets no weight
    assert fusion.weights[0] > 5 * fusion.weights[2]
    margin = fusion.margin(np.column_stack([useful, backwards, noise]))
    assert ((margin > 0) == (y == 1)).mean() > 0.95
    assert Fusion.from_cfg(json.loads(json.dumps(fusion.to_cfg()))) == fusion


def test_a_fusion_or_panel_that_does_not_fit_is_refused():
    with pytest.raises(ValueError):
        Fusion(("a", "b"), (1.0, -0.1), 0.0, (1.0, 1.0))
    with pytest.raises(ValueError):
        PanelSpec((ExpertSpec("content", "content", None),), Fusion(("trace",), (1.0,), 0.0, (1.0,)))
    with pytest.raises(ValueError):
        ExpertSpec("x", "astrology")


def test_the_sentence_names_the_evidence_that_decided():
    spec = _spec()
    trace_spoke = evidence_sentence(spec, np.array([0.1, 3.0]), "fake")
    assert trace_spoke.startswith("Decided by pixel traces") and "trace expert" in trace_spoke
    content_spoke = evidence_sentence(spec, np.array([6.0, 0.05]), "fake")
    assert "face content unlike the real faces" in content_spoke and "content expert" in content_spoke
    real = evidence_sentence(spec, np.array([-0.2, -3.0]), "real")
    assert "without a decoder's or upsampler's traces" in real
    torn = evidence_sentence(spec, np.array([4.0, -2.0]), "uncertain")
    assert torn.startswith("The experts disagree") and "content expert" in torn and "trace expert" in torn


def test_the_confident_band_keeps_confident_verdicts_right():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(150), np.ones(150)].astype(int)
    p = np.r_[rng.beta(2, 4, 150), rng.beta(4, 2, 150)]
    band = choose_confident_band(y, p, 0.95)
    rates = abstention_rates(y, p, band.threshold_real, band.threshold_fake)
    assert rates.confidently_wrong <= 0.05 * rates.coverage + 1e-9
    # No wider band keeps the promise: widening either threshold to the next score breaks it or covers less.
    for lo, hi in ((band.threshold_real + 0.02, band.threshold_fake), (band.threshold_real, band.threshold_fake - 0.02)):
        wider = abstention_rates(y, p, min(lo, 0.5), max(hi, 0.5))
        assert wider.confidently_wrong > 0.05 * wider.coverage or wider.coverage <= rates.coverage
    hopeless = choose_confident_band(y, rng.uniform(0, 1, 300), 0.95, min_coverage=0.5)
    assert not hopeless.met and "below the required 50 %" in hopeless.notes[-1]


# --------------------------------------------------------------------------- a panel release, end to end

def _trace_model():
    torch.manual_seed(1)
    model = create_detector("mobilenetv2_050", preprocessing=TRACE_PP)
    set_stem_stride(model, 1)
    return model


@pytest.fixture(scope="module")
def panel_release(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("panel") / "release"
    torch.manual_seed(0)
    save_detector(create_detector("mobilenetv2_050", preprocessing=CONTENT_PP), folder)
    write_panel(folder, _spec(), {"trace": _trace_model()}, DECISION)
    return folder


def _photos(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(5)
    return [Image.fromarray(rng.integers(0, 256, (80 + 8 * k, 96, 3), dtype=np.uint8)) for k in range(n)]


def test_the_release_carries_its_experts_and_the_one_function_resolves_them(panel_release):
    model = load_detector(panel_release)
    assert panel_spec(model) == _spec()
    scorer = release_scorer(model)
    assert isinstance(scorer, PanelScorer) and scorer.decision.temperature == DECISION.temperature
    trace = load_detector(panel_release / "experts" / "trace")
    assert trace.conv_stem.stride == (1, 1)            # the stride-1 stem survives the round trip
    photos = _photos()
    scores = scorer.score(photos)
    # The fused p(fake) is the fusion of each expert's own margin, through the release's decision.
    margins = np.column_stack([np.diff(Detector(m).logits(photos), axis=1)[:, 0] for m in (model, trace)])
    fused = _spec().fusion.margin(margins)
    assert np.allclose(scores.p_fake, 1 / (1 + np.exp(-fused / DECISION.temperature)), atol=1e-5)
    assert np.allclose(scores.experts["trace"], _spec().experts[1].p_fake(margins[:, 1]), atol=1e-5)
    assert scores.verdicts == [DECISION.verdict(float(p)) for p in scores.p_fake]
    assert all(s.endswith(".") for s in scores.evidence)


def test_a_single_model_release_scores_as_before(tmp_path):
    save_detector(create_detector("mobilenetv2_050", preprocessing=CONTENT_PP), tmp_path / "one")
    model = load_detector(tmp_path / "one")
    scorer = release_scorer(model)
    assert isinstance(scorer, Detector) and scorer.score(_photos(1)).experts is None


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_app_batch_and_scan_give_the_same_fused_verdict_and_show_each_expert(panel_release, tmp_path):
    from fakeface.scan.runner import load_scan_model, photo_rows
    from fakeface.serving.analysis import analyze_bytes
    from fakeface.serving.batch import batch_rows
    from fakeface.serving.models import load_model
    from fakeface.modeling.photo import score_photos

    loaded = load_model(str(panel_release), use_fast_path=False)
    photo = _photos(1)[0]
    result = analyze_bytes(_png(photo), "x.png", [loaded], explain=False, robustness=False, provenance=False)
    assert set(result["experts"]) == {"content", "trace"} and result["evidence"]
    assert result["models"][0]["experts"] == result["experts"] and "panel:" in result["models"][0]["runtime"]
    rows = batch_rows(result)
    assert rows[0]["p_fake [expert: trace]"] == round(result["experts"]["trace"], 4)
    assert rows[0]["evidence"] == result["evidence"]
    scan_model = load_scan_model(str(panel_release), use_fast_path=False)
    [scanned] = score_photos(scan_model.scorer, [photo], face_crop=None)
    [row] = photo_rows({}, scanned)
    assert row["p_fake"] == pytest.approx(result["p_fake"], abs=1e-5)
    assert json.loads(row["experts"]) == pytest.approx(result["experts"], abs=1e-5)
    assert row["evidence"] == result["evidence"]


def test_the_verdict_card_shows_the_sentence_and_each_expert(panel_release):
    from fakeface.app.render import render_verdict
    from fakeface.serving.analysis import analyze_bytes
    from fakeface.serving.models import load_model

    loaded = load_model(str(panel_release), use_fast_path=False)
    result = analyze_bytes(_png(_photos(1)[0]), "x.png", [loaded], explain=False, robustness=False, provenance=False)
    html = render_verdict(result)
    assert 'data-testid="evidence"' in html and "trace expert" in html and "content expert" in html


def test_a_release_missing_an_expert_fails_to_load_with_its_reason(panel_release, tmp_path):
    import shutil

    from fakeface.serving.models import LoadFailure, load_model

    broken = tmp_path / "broken"
    shutil.copytree(panel_release, broken)
    shutil.rmtree(broken / "experts")
    failure = load_model(str(broken), use_fast_path=False)
    assert isinstance(failure, LoadFailure) and failure.kind == "bad_panel"
    assert "trace expert is missing" in failure.problem and "experts/" in failure.fix


def test_the_status_and_about_tab_list_every_expert(panel_release):
    from fakeface.app.render import render_about
    from fakeface.serving.models import ModelRegistry, load_model

    registry = ModelRegistry.from_models([load_model(str(panel_release), use_fast_path=False)])
    status = registry.status()
    panel = status["models"][0]["panel"]
    assert [e["name"] for e in panel["experts"]] == ["content", "trace"]
    about = render_about(status, [{"model": status["models"][0]}])
    assert "A panel of 2 experts" in about and "Cannot see" in about and "*trace*" in about


def _entry(tmp_path: Path) -> Path:
    band = {"threshold_real": 0.25, "threshold_fake": 0.85, "source": "generators it never saw (test)",
            "target": 0.05, "confidently_wrong": 0.01, "coverage": 0.4, "n": 100, "met": False, "notes": []}
    entry = {"default": "fusion", "fusion": _spec().fusion.to_cfg(), "expert_temperatures": {"content": 2.5,
             "trace": 0.5}, "temperature": 1.7, "band": band, "trace_expert": {"epochs": 1}}
    path = tmp_path / "panel_release.json"
    path.write_text(json.dumps(entry))
    (tmp_path / "panel.json").write_text(json.dumps({"results": {s: {"gan": {
        "auc": {"clean": 0.5 + 0.1 * k}, "right_when_confident": 0.9, "coverage": 0.3}}
        for k, s in enumerate(("content", "trace", "fusion"))}}))
    return path


def test_build_panel_release_puts_the_measured_fusion_and_band_in_the_release(tmp_path):
    from fakeface.training.panel import PanelEntryError, build_panel_release

    content, trace = tmp_path / "content", tmp_path / "trace"
    save_detector(create_detector("mobilenetv2_050", preprocessing=CONTENT_PP), content)
    (content / "README.md").write_text("# card\n")
    save_detector(_trace_model(), trace)
    out = build_panel_release(content, trace, _entry(tmp_path), tmp_path / "panel")
    model = load_detector(out)
    spec = panel_spec(model)
    assert [e.temperature for e in spec.experts] == [2.5, 0.5] and spec.fusion == _spec().fusion
    scorer = release_scorer(model)
    assert scorer.decision.threshold_fake == 0.85 and scorer.decision.temperature == 1.7
    assert "never saw" in scorer.decision.band_source
    card = (out / "README.md").read_text()
    assert "## A panel of experts" in card and "| gan | 0.500 | 0.600 | 0.700 | 90.0 % | 30.0 % |" in card
    assert (content / "config.json").read_text() != (out / "config.json").read_text()   # the content release kept
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(PanelEntryError, match="panel_benchmark.py"):
        build_panel_release(content, trace, tmp_path / "bad.json", tmp_path / "panel2")


def test_a_panel_fitted_on_the_validation_split_says_so(tmp_path):
    """No families to hold out (the demo, a user's folders): the fusion and band come from validation, in words."""
    from fakeface.modeling.config import VALIDATION_SOURCE
    from fakeface.training.panel import build_validation_panel
    from fakeface.training.traces import TraceSettings
    from tests.test_training import make_tiny_dataset, write_dataset_folder

    data = write_dataset_folder(make_tiny_dataset(n_train=24, n_validation=16, n_test=4), tmp_path / "data")
    content = tmp_path / "content"
    save_detector(create_detector("mobilenetv2_050", preprocessing=CONTENT_PP), content)
    (content / "README.md").write_text("# card\n")
    out = build_validation_panel(content, str(data), content,
                                 settings=TraceSettings(crop=32, epochs=1, pairs_per_batch=4))
    model = load_detector(out)
    spec = panel_spec(model)
    assert spec.fusion.source == VALIDATION_SOURCE and all(w >= 0 for w in spec.fusion.weights)
    scorer = release_scorer(model)
    assert scorer.decision.band_source == VALIDATION_SOURCE and scorer.decision.calibrated
    assert "not fitted by the panel benchmark" in (out / "README.md").read_text()
    assert len(scorer.score(_photos(2)).evidence) == 2


def test_a_real_and_its_twin_get_the_same_crop_flip_and_jpeg():
    """Synced augmentation: with a twin identical to its real, both views come out identical however the crop,
    flip and JPEG are drawn; a different twin differs only where it differs."""
    import random

    from fakeface.training.traces import TracePair, TraceSettings, _synced_views

    rng = np.random.default_rng(2)
    real = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    settings = TraceSettings(crop=32, jpeg_prob=0.5)
    draw = random.Random(0)
    for _ in range(20):
        a, b = _synced_views(TracePair(real, [real.copy()]), 32, settings, draw)
        assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    small = real.resize((20, 24))                                   # smaller than the crop: enlarged alike
    a, b = _synced_views(TracePair(small, [small.copy()]), 32, settings, draw)
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)

"""The generalisation benchmark's decision logic: nested bands, the default-choice rule, rendering, --render-only.

No model is trained here: the rows are built from synthetic scores through the benchmark's own summaries.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.generalisation import (ROWS, GeneralisationSettings, held_out_reals, lofo_split, nested_bands,
                                       release_band, summarize_family, _pooled)
from benchmarks.generalisation_report import choose_default, finish, render_generalisation
from benchmarks.real_faces import FAMILIES, ImageItem, load_manifest
from fakeface.evaluation.abstention import abstention_rates, choose_abstention_band, load_abstention_band

REPO = Path(__file__).resolve().parents[1]
FACES_DEV = REPO.parent / "shared" / "data" / "faces-dev"


def _separable(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = np.r_[np.zeros(n), np.ones(n)].astype(int)
    return y, np.r_[rng.uniform(0.02, 0.2, n), rng.uniform(0.8, 0.98, n)]


def test_nested_band_never_uses_the_judged_familys_scores():
    rng = np.random.default_rng(0)
    scores = {"b": _separable(40, rng), "c": _separable(40, rng)}
    # Family a: its fakes look real (p 0.25-0.35). Had a's scores been used, the band would have widened over them.
    y_a = np.r_[np.zeros(40), np.ones(40)].astype(int)
    fooled = np.r_[rng.uniform(0.02, 0.2, 40), rng.uniform(0.25, 0.35, 40)]
    nested = nested_bands({"a": (y_a, fooled), **scores}, 0.05, 0.5)
    assert nested["a"]["confidently_wrong"] == pytest.approx(0.5)  # every fake of a called real, confidently
    assert not nested["a"]["met"]
    assert "a" not in nested["a"]["band"]["source"].split("families ")[1].split(", ")
    # The case where it matters: a band fitted with a's scores (not nested) would hide a's failure.
    leaky = choose_abstention_band(np.r_[y_a, scores["b"][0], scores["c"][0]],
                                   np.r_[fooled, scores["b"][1], scores["c"][1]], 0.05)
    leaked = abstention_rates(y_a, fooled, leaky.threshold_real, leaky.threshold_fake).confidently_wrong
    assert leaked < 0.2 < nested["a"]["confidently_wrong"]
    # And a's own scores do not move a's band at all.
    other = nested_bands({"a": (y_a, rng.uniform(0, 1, 80)), **scores}, 0.05, 0.5)
    assert other["a"]["band"] == nested["a"]["band"]
    assert other["b"]["band"] != nested["b"]["band"]  # b's band does depend on a's scores


def _items(n_real: int, n_fake: int) -> list[ImageItem]:
    wild = ["web-faces-maskdet", "ffhq-140k"]
    return ([ImageItem(f"r{i}.png", 0, wild[i % 2], f"file:r{i}", None, "PNG") for i in range(n_real)]
            + [ImageItem(f"f{i}.png", 1, "stylegan3", f"file:f{i}", "gan", "PNG") for i in range(n_fake)])


def _row(auc_shift: float, fooled: bool, seed: int) -> dict:
    """A row from synthetic LOFO scores, through the benchmark's summaries; ``fooled`` makes one family fail."""
    rng = np.random.default_rng(seed)
    items = _items(30, 30)
    lofo, scores = {}, {}
    for k, family in enumerate(FAMILIES):
        y = np.array([it.label for it in items])
        z = np.where(y == 1, 2.0 + auc_shift, -2.0) + rng.normal(0, 1, y.size)
        if fooled and k == 0:
            z[y == 1] = -3.0 + rng.normal(0, 0.2, 30)
        res = {"test_idx": np.arange(len(items)), "y": y, "z": {"clean": z, "control": z + rng.normal(0, 1, y.size)},
               "temperature": 1.0, "threshold": 0.5, "twins_trained": 0,
               "val_band": choose_abstention_band(y, 1 / (1 + np.exp(-z)), 0.05)}
        lofo[family] = summarize_family(res, items)
        scores[family] = (y, 1 / (1 + np.exp(-z)))
    return {"spec": {}, "lofo": lofo, "nested": nested_bands(scores, 0.05, 0.5),
            "release_band": release_band(scores, 0.05, 0.5, "x"), "pooled": _pooled(lofo),
            "pair_140k": {"auc": 0.9, "auc_control": 0.8, "n": 10},
            "facts": {"recipe": "traces", "model": "mobilenetv2_100", "crop_protocol": "native-crops",
                      "input_size": 128, "epochs": 3, "description": "d"},
            "train_images_per_s": {"x_median": 20.0, "x_p90": 22.0}, "score_ms": {"ms_median": 30.0, "ms_p90": 40.0},
            "seconds": 60.0}


def test_default_rule_prefers_rows_that_keep_their_abstention_promise():
    strong_but_fooled, honest = _row(3.0, fooled=True, seed=1), _row(0.0, fooled=False, seed=2)
    assert all(f["met"] for f in honest["nested"].values())
    assert not all(f["met"] for f in strong_but_fooled["nested"].values())
    name, why = choose_default({"fooled": strong_but_fooled, "honest": honest})
    assert name == "honest" and "meets the nested abstention target" in why
    # No row meets it: the lowest worst-family confidently-wrong rate wins, not the highest AUC.
    worse = _row(3.0, fooled=True, seed=3)
    worse["nested"]["gan"]["confidently_wrong"] = 0.6
    name, why = choose_default({"worse": worse, "fooled": strong_but_fooled})
    assert name == "fooled" and "lowest worst-family" in why


def _data(rows: dict) -> dict:
    return {"command": "python scripts/generalisation_benchmark.py", "rows": rows, "dropped": {"dinov2": "budget"},
            "settings": {**GeneralisationSettings(data_dir="x").__dict__, "rows": list(rows)},
            "environment": {"cpu": "test cpu", "cpus_available": 2, "cpu_flags": ["avx2"], "load_average": [1, 2, 3]},
            "dataset": {"images": 60, "real": 30, "fake": 30, "held_out_reals": 30, "held_out_groups": 30},
            "face_stage": {"seconds": 1.0, "made": 0, "s_per_image_median": None, "s_per_image_p90": None,
                           "no_face_by_source": {}},
            "twins": {"twins": 0, "seconds": 0.0}}


def test_rendering_states_rule_choice_targets_and_drops(tmp_path):
    data = finish(_data({"fooled": _row(3.0, True, 1), "honest": _row(0.0, False, 2)}), start=0.0)
    text = render_generalisation(data)
    assert data["default"] == "honest"
    assert "**Chosen default: honest**" in text
    assert text.index("Rule, stated before the numbers") < text.index("## Rows")
    assert "missed by" in text or all(v["met"] for v in data["verdict"])
    assert "- dinov2: budget" in text
    for family in FAMILIES:
        assert f"{family} CW / cov nested" in text
    json.dumps(data)  # JSON-safe
    band = tmp_path / "band.json"
    band.write_text(json.dumps(data["abstention_band"]))
    loaded = load_abstention_band(band)
    assert "never saw" in loaded.source and all(f in loaded.source for f in FAMILIES)


def test_render_only_rewrites_the_committed_results(tmp_path):
    committed = REPO / "results" / "generalisation.json"
    if not committed.is_file():
        pytest.skip("results/generalisation.json is not committed yet (written by the full run)")
    shutil.copy(committed, tmp_path / "generalisation.json")
    done = subprocess.run([sys.executable, "scripts/generalisation_benchmark.py", "--render-only", "--results-dir",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "generalisation.md").read_text()
    data = json.loads(committed.read_text())
    assert f"**Chosen default: {data['default']}**" in text
    assert (REPO / "results" / "generalisation.md").read_text() == text
    assert json.loads((tmp_path / "abstention_band.json").read_text()) == json.loads(
        (REPO / "results" / "abstention_band.json").read_text())


def test_every_model_card_quotes_the_chosen_rows_figures():
    from benchmarks.generalisation_report import card_summary
    from fakeface.training.card import REAL_FACES_SUMMARY, real_faces_section

    committed = REPO / "results" / "generalisation.json"
    if not committed.is_file():
        pytest.skip("results/generalisation.json is not committed yet (written by the full run)")
    data = json.loads(committed.read_text())
    summary = card_summary(data)
    assert json.loads(Path(str(REAL_FACES_SUMMARY)).read_text()) == json.loads(json.dumps(summary))
    recipe, model = summary["recipe"].split("/")
    section = real_faces_section(recipe, model)
    assert "This release was trained with that recipe." in section and "results/generalisation.md" in section
    for family, entry in data["rows"][data["default"]]["nested"].items():
        assert f"confidently wrong with {family} held out" in section
        assert f"{entry['confidently_wrong']:.3f}".rstrip("0") in section or f"{entry['confidently_wrong']:.3f}" in section
    assert "is not that recipe" in real_faces_section("traces", model)


def test_lofo_splits_on_faces_dev_keep_groups_apart():
    if not (FACES_DEV / "manifest.csv").is_file():
        pytest.skip(f"{FACES_DEV} is absent: this check reads faces-dev's manifest from ../shared")
    items = load_manifest(FACES_DEV)
    settings = GeneralisationSettings(data_dir=str(FACES_DEV))
    test_reals = held_out_reals(items, settings)
    assert test_reals.size > 100 and all(items[i].label == 0 for i in test_reals)
    for family in FAMILIES:
        train, test = lofo_split(items, family, test_reals)
        assert not {items[i].group for i in train} & {items[i].group for i in test}
        assert not any(items[i].family == family for i in train)
        assert {items[i].family for i in test if items[i].label} == {family}


def test_every_best_of_row_names_rows_that_exist():
    for name, spec in ROWS.items():
        assert (spec.recipe is None) == bool(spec.best_of), name
        assert all(b in ROWS and ROWS[b].recipe for b in spec.best_of), name

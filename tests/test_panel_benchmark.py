"""The panel benchmark's nesting: a held-out family's fusion, temperature and band never see that family.

Synthetic out-of-family margins through benchmarks.panel_score (no model is trained here).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from benchmarks.pack import ImageItem
from benchmarks.panel_score import evaluate_panel, format_key

FAMILIES = ("a", "b", "c")
SETTINGS = SimpleNamespace(seed=0, band_target=0.05, min_coverage=0.5)


def _pack(rng: np.random.Generator, fooled_a: bool):
    items, formats = [], []
    for k in range(60):                                            # test reals, each its own group
        items.append(ImageItem(f"r{k}.jpg", 0, "web-faces-maskdet", f"file:r{k}", None, "JPEG"))
        formats.append({"format": "JPEG", "width": 300, "height": 300, "jpeg_quality": 92})
    for f in FAMILIES:
        for k in range(40):
            items.append(ImageItem(f"{f}{k}.png", 1, f"src-{f}", f"file:{f}{k}", f, "PNG"))
            formats.append({"format": "PNG", "width": 512, "height": 512, "jpeg_quality": None})
    test_reals = np.arange(60)
    scored = np.arange(len(items))
    y = np.array([i.label for i in items])
    trace = np.where(y == 1, 1.5, -1.5) + rng.normal(0, 1, y.size)
    if fooled_a:   # family a's fakes look real to the trace expert
        trace[[i for i, it in enumerate(items) if it.family == "a"]] = -3.0
    content = {}
    for f in FAMILIES:
        idx = np.r_[test_reals, [i for i, it in enumerate(items) if it.family == f]]
        z = np.where(y[idx] == 1, 1.0, -1.0) + rng.normal(0, 1, idx.size)
        content[f] = {"idx": idx, "y": y[idx], "z": {"clean": z, "control": z + rng.normal(0, 0.3, idx.size)}}
    trace_z = {"clean": trace, "control": trace + rng.normal(0, 0.3, trace.size)}
    return items, formats, test_reals, scored, trace_z, content


def test_a_familys_band_and_temperature_never_see_its_own_scores():
    honest = evaluate_panel(*_pack(np.random.default_rng(0), fooled_a=False), SETTINGS)
    fooled = evaluate_panel(*_pack(np.random.default_rng(0), fooled_a=True), SETTINGS)
    for scorer in ("trace", "fusion"):
        assert fooled["results"][scorer]["a"]["band"] == honest["results"][scorer]["a"]["band"]
        assert fooled["results"][scorer]["a"]["temperature"] == honest["results"][scorer]["a"]["temperature"]
        # ... while the other families' bands do depend on a's scores, so the comparison can fail.
        assert fooled["results"][scorer]["b"]["temperature"] != honest["results"][scorer]["b"]["temperature"]
    # The fooled family is judged as it is: its trace AUC collapses, and so does the fusion's.
    assert fooled["results"]["trace"]["a"]["auc"]["clean"] < 0.2 < honest["results"]["trace"]["a"]["auc"]["clean"]
    assert fooled["results"]["fusion"]["a"]["auc"]["clean"] < honest["results"]["fusion"]["a"]["auc"]["clean"]
    # Every fusion is monotone, and the release's is fitted on every family.
    assert all(w >= 0 for ws in fooled["fusion_weights_by_family"].values() for pair in ws for w in pair)
    assert "a, b, c" in fooled["release"]["fusion"]["source"]


def test_format_keys_put_fakes_and_reals_of_one_format_together():
    jpeg = {"format": "JPEG", "width": 768, "height": 1024, "jpeg_quality": 75}
    assert format_key(jpeg) == "JPEG >=768 q75-89"
    assert format_key({"format": "PNG", "width": 112, "height": 112, "jpeg_quality": None}) == "PNG <192 lossless"
    assert format_key({**jpeg, "jpeg_quality": 95}) != format_key(jpeg)

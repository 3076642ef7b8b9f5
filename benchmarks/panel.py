"""The panel benchmark: each expert alone and their fitted fusion, on generator families none of them saw.

``make panel-benchmark`` (``scripts/panel_benchmark.py``); not in CI (about half an hour on 2 cores, most of it
twins and the five content fine-tunes, all cached in ``.cache/``). On faces-dev:

1. **Data.** The app's face stage once per image (shared with the generalisation benchmark). The reals are split
   once into 3 grouped folds; fold 0 (the *test reals*) is never trained on by any expert.
2. **Experts.**
   - *trace*: :func:`fakeface.training.traces.train_trace_expert` on the other folds' reals and their twins only
     (TAEF2, Real-ESRGAN and three re-upsampling kernels, made from each real's window and compressed like it).
     Every generated face of faces-dev is unseen to it.
   - *content*: the product's finetune recipe, once per held-out family (trained without that family and without
     the test reals), as the generalisation benchmark does.
3. **Fusion, nested.** For held-out family f the fusion (:func:`fakeface.modeling.panel.fit_fusion`, monotone
   logistic regression on the experts' margins) is fitted on the other families' out-of-family scores; the test
   reals are cross-fitted in two grouped halves (a half is scored by the fusion fitted without it). Its
   temperature and abstention band are chosen on fused scores of the other families g from fusions fitted
   without f *and* g, so nothing about f touches f's verdicts.
4. **Report** per family: each expert alone and the fusion, clean and control views, format-matched subsets
   (fakes and test reals of one container, size class and JPEG quality), the 140K pair, the survey pairs,
   confidently-wrong rate and coverage, ECE, in-the-wild false positives. The release's fusion, temperature and
   band (``results/panel_release.json``) come from the same out-of-family scores, pooled.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.generalisation import (ROWS, GeneralisationSettings, Images, build_crops, fit_and_score,
                                       held_out_reals, lofo_split)
from benchmarks.pack import FAMILIES, ImageItem, load_manifest
from benchmarks.panel_data import format_facts, real_windows, window_twins
from benchmarks.panel_score import evaluate_panel
from fakeface.training.traces import TracePair, TraceSettings, train_trace_expert

logger = logging.getLogger(__name__)

__all__ = ["PanelSettings", "run_panel"]

TWIN_MAKERS = ("taef2", "esrgan", "resample-nearest", "resample-bilinear", "resample-transposed")


@dataclass(frozen=True)
class PanelSettings:
    data_dir: str
    cache_dir: str = ".cache/generalisation"   # face crops, shared with the generalisation benchmark
    panel_cache: str = ".cache/panel"          # windows and the trace expert
    twin_cache: str = ".cache/twins"
    window: int = 256
    makers: tuple[str, ...] = TWIN_MAKERS
    content_epochs: int = 3
    trace: TraceSettings = field(default_factory=lambda: TraceSettings(epochs=10))
    real_folds: int = 3
    band_target: float = 0.05
    min_coverage: float = 0.5
    seed: int = 0
    threads: int = 2
    limit: int | None = None

    def generalisation(self) -> GeneralisationSettings:
        return GeneralisationSettings(data_dir=self.data_dir, cache_dir=self.cache_dir, twin_cache=self.twin_cache,
                                      epochs=self.content_epochs, real_folds=self.real_folds, seed=self.seed,
                                      threads=self.threads, limit=self.limit, twins=0)


def _trace_expert(items: Sequence[ImageItem], crops: Sequence[str], test_reals: np.ndarray,
                  settings: PanelSettings) -> tuple[Any, dict[str, Any]]:
    """Train (or load the cached) trace expert on the non-test reals' windows and their twins."""
    from PIL import Image

    from fakeface.modeling.detector import load_detector, save_detector

    windows = real_windows(items, crops, settings.data_dir, settings.panel_cache, settings.window)
    test = set(test_reals.tolist())
    train = {i: w for i, w in windows.items() if i not in test}
    twins, twin_facts = window_twins(train, items, settings.makers, settings.twin_cache, threads=1)
    folder = Path(settings.panel_cache) / "trace-expert"
    key = repr((sorted(train), settings.makers, asdict(settings.trace)))
    stamp = folder / "trained_on.txt"
    if stamp.is_file() and stamp.read_text() == key and (folder / "model.safetensors").is_file():
        logger.info("trace expert: cached in %s", folder)
        return load_detector(folder), {**_read_facts(folder), "twin_makers": twin_facts, "cached": True}

    def opened(path: str) -> Image.Image:
        with Image.open(path) as im:
            return im.convert("RGB")

    pairs = [TracePair(opened(train[i]), [opened(t) for t in twins[i]]) for i in sorted(train) if twins[i]]

    model, facts = train_trace_expert(pairs, settings.trace, log=logger.info)
    save_detector(model, folder)
    (folder / "facts.json").write_text(json.dumps(facts, indent=2))
    stamp.write_text(key)
    return model, {**facts, "twin_makers": twin_facts, "cached": False}


def _read_facts(folder: Path) -> dict[str, Any]:
    path = folder / "facts.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _margins(scorer: Any, images: Sequence[Any], batch: int = 16) -> np.ndarray:
    out = []
    for k in range(0, len(images), batch):
        logits = np.asarray(scorer.logits(list(images[k:k + batch])), np.float64)
        out.append(logits[:, 1] - logits[:, 0])
    return np.concatenate(out) if out else np.zeros(0)


def _score_trace(model: Any, images: Images, idx: np.ndarray) -> tuple[dict[str, np.ndarray], list[float]]:
    """The trace expert's margins on ``idx``, clean and control, and its seconds per image."""
    from fakeface.modeling.inference import Detector

    detector = Detector(model)
    seconds, clean = [], []
    for i in idx:
        start = time.perf_counter()
        clean.append(_margins(detector, [images.clean(int(i))])[0])
        seconds.append(time.perf_counter() - start)
    control = _margins(detector, [images.control(int(i)) for i in idx])
    return {"clean": np.array(clean), "control": control}, seconds


def _content_lofo(images: Images, test_reals: np.ndarray, settings: PanelSettings,
                  on_family: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """The content expert per held-out family: its test indices and margins (clean, control)."""
    out = {}
    gsettings = settings.generalisation()
    for family in FAMILIES:
        train, test = lofo_split(images.items, family, test_reals)
        if not any(images.items[j].family == family for j in test):
            continue
        res = fit_and_score(ROWS["finetune"], images, train, test, gsettings)
        out[family] = {"idx": res["test_idx"], "y": res["y"], "z": res["z"],
                       "train_images_per_s": res["facts"]["train_images_per_s"],
                       "score_seconds": res["facts"]["score_seconds"], "facts": res["facts"]}
        on_family(family)
    return out


def run_panel(settings: PanelSettings, *, command: str = "") -> dict[str, Any]:
    import torch
    from threadpoolctl import threadpool_limits

    from benchmarks.measure import collect_environment

    start = time.perf_counter()
    items = load_manifest(settings.data_dir, limit=settings.limit)
    torch.set_num_threads(settings.threads)
    data: dict[str, Any] = {"command": command, "settings": asdict(settings), "environment": collect_environment()}
    with threadpool_limits(settings.threads):
        crops, data["face_stage"] = build_crops(items, settings.generalisation())
        test_reals = held_out_reals(items, settings.generalisation())
        images = Images(items, crops, {}, settings.seed)
        t0 = time.perf_counter()
        trace_model, data["trace_expert"] = _trace_expert(items, crops, test_reals, settings)
        data["trace_expert"]["seconds"] = time.perf_counter() - t0
        scored = np.array(sorted({*test_reals.tolist(), *[i for i, it in enumerate(items) if it.label]}))
        trace_z, trace_seconds = _score_trace(trace_model, images, scored)
        logger.info("trace expert scored %d images (%.0f s so far)", scored.size, time.perf_counter() - start)
        content = _content_lofo(images, test_reals, settings, lambda f: logger.info(
            "content / %s done (%.0f s so far)", f, time.perf_counter() - start))
        formats = format_facts(items, settings.data_dir)
        data.update(evaluate_panel(items, formats, test_reals, scored, trace_z, content, settings))
        data["timing"] = {"trace_ms_per_image": _timing_ms(trace_seconds),
                          "content_ms_per_image": _timing_ms([s for c in content.values()
                                                              for s in c["score_seconds"]])}
    data["seconds"] = time.perf_counter() - start
    return data


def _timing_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    if not seconds:
        return {"median": None, "p90": None, "n": 0}
    ms = 1000 * np.asarray(seconds)
    return {"median": round(float(np.median(ms)), 2), "p90": round(float(np.percentile(ms, 90)), 2),
            "n": int(ms.size)}

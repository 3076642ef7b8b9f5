"""The generalisation benchmark: which recipe carries its verdicts over to generators it never saw
(``make real-benchmark``, ``scripts/generalisation_benchmark.py``). It decides the released default.

Question: trained without a generator family, does a recipe still tell that family's fakes from unseen reals, and
how often is it *confidently* wrong there? Everything else is held fixed across rows: the images (all of
faces-dev), the face stage, the splits, the seeds, the epochs, the calibration and the band rules.

Protocol (the results state it again beside the numbers):

1. **Face stage once.** Every image decoded with the app's decoder, its largest judgeable face cut by the app's
   :class:`FaceCrop` (the whole image when none is found, as the app scores it), stored losslessly (PNG, native
   resolution) under ``.cache/generalisation``.
2. **Leave one family out** over :data:`benchmarks.real_faces.FAMILIES`: the reals are split once into grouped
   folds and fold 0 is held out for every family (the CPU budget: one model per family and row). A family's model
   trains on the other families' fakes + the reals outside the held-out fold (no group on both sides), a grouped
   fifth of that training side is the validation part (temperature, threshold at 5 % FPR, the validation band);
   it is tested on the family's fakes vs the held-out reals, on the clean crops and through
   :func:`benchmarks.real_faces.control_view` (crop, rescale, JPEG 60-95 on both classes: format cannot help).
3. **Abstention, nested.** The uncertain band judged on family f is chosen (``choose_abstention_band``, 5 %
   target) on the LOFO scores of the *other* families only, never on f's; the validation-chosen band is shown
   for contrast. The release band (``results/abstention_band.json``) is chosen on all families' LOFO scores.
4. **Format-matched pairs.** The 140K pair alone (stylegan1-140k vs ffhq-140k, grouped k-fold, trained and tested
   inside it) and the survey prompts' fakes vs their laion reals where LOFO tested them (tiny; n reported).
5. **Rows** train with the product's recipe definitions and training pieces (``TrainingConfig``,
   ``create_training_model``, ``build_optimizer``, ``build_scheduler``, the recipe's train/eval transforms, logits
   averaged over the recipe's test crops), i.e. what ``train.py --recipe R --model M`` trains, minus the release
   machinery (no best-epoch selection: a fixed number of epochs). A row with twins adds TAEF2 twins of training
   reals as fakes (:mod:`fakeface.data.twins`; made from the centre window of the face crop, at most
   ``twin_window`` px, of a seeded subsample of reals outside the held-out fold; a twin joins a training set
   only with its own real, so no twin of a validation or test real is ever trained on).

Rendering, the default-choice rule and the targets live in :mod:`benchmarks.generalisation_report`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from benchmarks.pack import FAMILIES, PAIR_140K, ImageItem, is_in_the_wild, load_manifest
from benchmarks.protocols import grouped_folds, validation_part
from benchmarks.real_faces import control_view
from benchmarks.recipe_fit import fit_product_recipe
from fakeface.evaluation.abstention import abstention_rates, choose_abstention_band
from fakeface.evaluation.calibration import choose_thresholds, fit_temperature
from fakeface.evaluation.metrics import expected_calibration_error
from fakeface.faces import FaceCrop, crop_faces

logger = logging.getLogger(__name__)

__all__ = ["ROWS", "GeneralisationSettings", "RowSpec", "nested_bands", "run_generalisation"]

_CACHE_VERSION = 1
SURVEY_REAL = "laion-survey"


@dataclass(frozen=True)
class RowSpec:
    """One row: a product recipe on a backbone at an input size, with or without twins as extra fakes.

    ``recipe=None``: the better (mean control-view LOFO AUC) of the rows named in ``best_of``, decided at run time.
    """

    recipe: str | None
    model: str = "mobilenetv2_100"
    input_size: int | None = None       # None: the settings' size for the recipe's protocol
    twins: bool = False
    best_of: tuple[str, ...] = ()
    epochs: int | None = None           # None: the settings' epochs


ROWS: dict[str, RowSpec] = {
    "finetune": RowSpec("finetune", input_size=112),
    "traces": RowSpec("traces"),
    "traces+twins": RowSpec("traces", twins=True),
    "lite2": RowSpec(None, model="tf_efficientnet_lite2", best_of=("traces", "traces+twins")),
    # DINOv2 ViT-S/14 at 112 px (an 8x8 patch grid) and 2 epochs: about 3x MobileNetV2's training time per image here.
    "dinov2": RowSpec(None, model="vit_small_patch14_dinov2", input_size=112, best_of=("traces", "traces+twins"),
                      epochs=2),
}


@dataclass(frozen=True)
class GeneralisationSettings:
    data_dir: str
    cache_dir: str = ".cache/generalisation"
    twin_cache: str = ".cache/twins"
    rows: tuple[str, ...] = tuple(ROWS)
    epochs: int = 3
    batch_size: int = 16                # train.py's default
    traces_size: int = 128              # native crop side of the traces rows (the recipe's default is 224)
    twins: int = 120                    # TAEF2 twins of training reals (3.6 s each here at 256 px)
    twin_window: int = 256              # twin the centre window of a face crop, at most this side
    real_folds: int = 3                 # held-out real fold 0 of this many
    pair_folds: int = 3                 # grouped folds of the 140K pair, each held out once
    target_fpr: float = 0.05            # the verdict threshold's false-positive rate on validation reals
    band_target: float = 0.05           # the abstention band's confidently-wrong budget
    min_coverage: float = 0.5           # the least share of images the band must still decide
    seed: int = 0
    threads: int = 2                    # torch, BLAS and twin-maker threads
    limit: int | None = None            # first N manifest rows per source (smoke runs)
    budget_minutes: float | None = None  # rows not started by then are dropped (and said so)


# --------------------------------------------------------------------------- the face stage and twins, cached

def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def build_crops(items: Sequence[ImageItem], settings: GeneralisationSettings) -> tuple[list[str], dict[str, Any]]:
    """The app's face stage on every image, once: the largest judgeable face (else the whole image) as a PNG."""
    from fakeface.data.images import load_image

    face_crop = FaceCrop()
    folder = Path(settings.cache_dir) / "crops"
    folder.mkdir(parents=True, exist_ok=True)
    paths, no_face, made, seconds = [], {}, 0, []
    for n, item in enumerate(items):
        key = _key(_CACHE_VERSION, item.file, face_crop.to_cfg())
        png, meta = folder / f"{key}.png", folder / f"{key}.json"
        if not (png.is_file() and meta.is_file()):
            start = time.perf_counter()
            image = load_image(Path(settings.data_dir) / item.file).image.convert("RGB")
            scan = crop_faces(image, face_crop, threads=1)
            region = scan.judgeable[0].image if scan.judgeable else image
            tmp = png.with_suffix(".tmp.png")
            region.convert("RGB").save(tmp, format="PNG", compress_level=1)
            os.replace(tmp, png)
            meta.write_text(json.dumps({"no_face": not scan.judgeable, "size": region.size}))
            seconds.append(time.perf_counter() - start)
            made += 1
        if json.loads(meta.read_text())["no_face"]:
            no_face[item.source] = no_face.get(item.source, 0) + 1
        paths.append(str(png))
        if n % 200 == 0:
            logger.info("face stage: %d/%d (%d made)", n, len(items), made)
    return paths, {"made": made, "no_face_by_source": no_face, **_timing(seconds, "s_per_image")}


def held_out_reals(items: Sequence[ImageItem], settings: GeneralisationSettings) -> np.ndarray:
    """Indices of the reals every family is tested against: grouped real fold 0."""
    labels = np.array([i.label for i in items])
    real_idx = np.flatnonzero(labels == 0)
    fold = grouped_folds([items[i].group for i in real_idx], labels[real_idx], settings.real_folds, settings.seed)
    return real_idx[fold == 0]


def build_twins(items: Sequence[ImageItem], crops: Sequence[str], settings: GeneralisationSettings
                ) -> tuple[dict[int, str], dict[str, Any]]:
    """TAEF2 twins (real index -> twin file) of a seeded subsample of reals outside the held-out fold."""
    from fakeface.data.split import seeded_key
    from fakeface.data.twins import create_twin_maker, make_twin

    if settings.twins <= 0:
        return {}, {"twins": 0}
    test = set(held_out_reals(items, settings).tolist())
    pool = [i for i, it in enumerate(items) if it.label == 0 and i not in test]
    chosen = sorted(pool, key=lambda i: seeded_key(settings.seed, items[i].file))[:settings.twins]
    maker = create_twin_maker("taef2", threads=settings.threads)
    folder = Path(settings.cache_dir) / "twin-src"
    folder.mkdir(parents=True, exist_ok=True)
    out, seconds, psnr = {}, [], []
    for i in chosen:
        window = folder / f"{_key(crops[i], settings.twin_window)}.png"
        if not window.is_file():
            crop = Image.open(crops[i]).convert("RGB")
            side = min(settings.twin_window, *crop.size)
            x, y = (crop.width - side) // 2, (crop.height - side) // 2
            crop.crop((x, y, x + side, y + side)).save(window, format="PNG", compress_level=1)
        start = time.perf_counter()
        twin = make_twin(window, maker, settings.twin_cache, source_id=items[i].group)
        if not twin.cached:
            seconds.append(time.perf_counter() - start)
        psnr.append(twin.psnr_db)
        out[i] = twin.path
    return out, {"twins": len(out), "maker": maker.name, "version": maker.version, "window": settings.twin_window,
                 "made_now": len(seconds), "psnr_median": float(np.median(psnr)) if psnr else None,
                 "by_source": _count([items[i].source for i in out]), **_timing(seconds, "s_per_twin")}


def _count(values: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _timing(seconds: Sequence[float], name: str) -> dict[str, Any]:
    if not seconds:
        return {f"{name}_median": None, f"{name}_p90": None, "timed": 0}
    return {f"{name}_median": round(float(np.median(seconds)), 4),
            f"{name}_p90": round(float(np.percentile(seconds, 90)), 4), "timed": len(seconds)}


# --------------------------------------------------------------------------- one model: the product's recipe

class Images:
    """Decoded face crops (clean), their control views (seeded per file, as the real-faces benchmark draws them)
    and the twins, loaded once."""

    def __init__(self, items: Sequence[ImageItem], crops: Sequence[str], twins: dict[int, str], seed: int) -> None:
        self.items, self.crops, self.twin_paths, self.seed = items, crops, twins, seed
        self._clean: dict[int, Image.Image] = {}
        self._control: dict[int, Image.Image] = {}
        self._twins: dict[int, Image.Image] = {}

    def clean(self, i: int) -> Image.Image:
        if i not in self._clean:
            with Image.open(self.crops[i]) as im:
                self._clean[i] = im.convert("RGB")
        return self._clean[i]

    def control(self, i: int) -> Image.Image:
        if i not in self._control:
            self._control[i] = control_view(self.clean(i), random.Random(f"{self.seed}:{self.items[i].file}"))
        return self._control[i]

    def twin(self, i: int) -> Image.Image:
        if i not in self._twins:
            with Image.open(self.twin_paths[i]) as im:
                self._twins[i] = im.convert("RGB")
        return self._twins[i]


def train_model(spec: RowSpec, train: list[Image.Image], labels: np.ndarray, settings: GeneralisationSettings
                ) -> tuple[Callable[[list[Image.Image]], np.ndarray], dict[str, Any]]:
    """``train.py --recipe R --model M --input-size S`` on these images for a fixed number of epochs
    (:func:`benchmarks.recipe_fit.fit_product_recipe`); the row's epochs override the benchmark's."""
    return fit_product_recipe(spec.recipe, train, labels, model=spec.model,
                              input_size=spec.input_size or settings.traces_size,
                              epochs=spec.epochs or settings.epochs, batch_size=settings.batch_size, seed=settings.seed)


def _sigmoid(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(z, float) / t))


def fit_and_score(spec: RowSpec, images: Images, train_idx: np.ndarray, test_idx: np.ndarray,
                  settings: GeneralisationSettings) -> dict[str, Any]:
    """Train on train minus a grouped validation part (+ twins of the fit reals); calibrate on the validation part;
    score the test images clean and through the control view."""
    items = images.items
    fit_idx, val_idx = validation_part(train_idx, items, settings.seed)
    twin_of = [i for i in fit_idx if i in images.twin_paths] if spec.twins else []
    train = [images.clean(i) for i in fit_idx] + [images.twin(i) for i in twin_of]
    labels = np.array([items[i].label for i in fit_idx] + [1] * len(twin_of), np.int64)
    score, facts = train_model(spec, train, labels, settings)
    val_z = score([images.clean(i) for i in val_idx])
    val_y = np.array([items[i].label for i in val_idx])
    t = fit_temperature(np.stack([np.zeros_like(val_z), val_z], 1), val_y)
    threshold = choose_thresholds(val_y, _sigmoid(val_z, t), target_fpr=settings.target_fpr).threshold_fake
    val_band = choose_abstention_band(val_y, _sigmoid(val_z, t), settings.band_target)
    z = {"clean": score([images.clean(i) for i in test_idx]), "control": score([images.control(i) for i in test_idx])}
    return {"test_idx": test_idx, "y": np.array([items[i].label for i in test_idx]), "z": z, "temperature": t,
            "threshold": threshold, "val_band": val_band, "twins_trained": len(twin_of), "facts": facts}


# --------------------------------------------------------------------------- protocols

def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(set(np.asarray(y).tolist())) == 2 else None


def lofo_split(items: Sequence[ImageItem], family: str, test_reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fam = np.array([j for j, it in enumerate(items) if it.family == family], np.int64)
    test_groups = {items[j].group for j in test_reals} | {items[j].group for j in fam}
    train = np.array([j for j, it in enumerate(items) if it.family != family and it.group not in test_groups])
    return train, np.concatenate([fam, test_reals])


def summarize_family(res: dict[str, Any], items: Sequence[ImageItem]) -> dict[str, Any]:
    y, t = res["y"], res["temperature"]
    p = _sigmoid(res["z"]["clean"], t)
    src = np.array([items[i].source for i in res["test_idx"]])
    wild = (y == 0) & np.array([is_in_the_wild(s) for s in src], bool)
    called = p >= res["threshold"]
    survey = (src == SURVEY_REAL) | np.array([s.endswith("-survey") for s in src])
    val_rates = abstention_rates(y, p, res["val_band"].threshold_real, res["val_band"].threshold_fake)
    return {
        "n_fake": int(y.sum()), "n_real": int((y == 0).sum()),
        "auc": {view: _auc(y, z) for view, z in res["z"].items()},
        "temperature": t, "threshold": res["threshold"],
        "tpr": float(called[y == 1].mean()), "fp": float(called[y == 0].mean()),
        "in_the_wild_fp": float(called[wild].mean()) if wild.any() else None, "in_the_wild_n": int(wild.sum()),
        "ece_before_ts": expected_calibration_error(y, _sigmoid(res["z"]["clean"])),
        "ece_after_ts": expected_calibration_error(y, p),
        "survey": {"auc": _auc(y[survey], p[survey]), "n_fake": int(y[survey].sum()),
                   "n_real": int((y[survey] == 0).sum())},
        "val_band": {**res["val_band"].to_dict(), "on_family": val_rates.to_dict()},
        "twins_trained": res["twins_trained"],
        "per_source_auc": {s: _auc(np.r_[np.zeros((y == 0).sum()), np.ones((src == s).sum())],
                                   np.r_[p[y == 0], p[src == s]]) for s in sorted(set(src[y == 1]))},
    }


def nested_bands(scores: dict[str, tuple[np.ndarray, np.ndarray]], target: float, min_coverage: float
                 ) -> dict[str, Any]:
    """Per family f: the band chosen on the other families' (labels, p) only, and what it does on f."""
    out = {}
    for family, (y, p) in scores.items():
        others = [f for f in scores if f != family]
        oy = np.concatenate([scores[f][0] for f in others])
        op = np.concatenate([scores[f][1] for f in others])
        band = choose_abstention_band(oy, op, target, min_coverage=min_coverage,
                                      source=f"held-out families {', '.join(others)}")
        rates = abstention_rates(y, p, band.threshold_real, band.threshold_fake)
        out[family] = {"band": band.to_dict(), "confidently_wrong": rates.confidently_wrong,
                       "coverage": rates.coverage, "n": rates.n,
                       "met": rates.confidently_wrong <= target and rates.coverage >= min_coverage}
    return out


def release_band(scores: dict[str, tuple[np.ndarray, np.ndarray]], target: float, min_coverage: float,
                 row: str) -> dict[str, Any]:
    y = np.concatenate([v[0] for v in scores.values()])
    p = np.concatenate([v[1] for v in scores.values()])
    source = (f"generators it never saw (leave-one-family-out scores of the {row} row on faces-dev: held-out "
              f"families {', '.join(scores)}; benchmarks/generalisation.py)")
    return choose_abstention_band(y, p, target, min_coverage=min_coverage, source=source).to_dict()


def run_row(name: str, spec: RowSpec, images: Images, settings: GeneralisationSettings) -> dict[str, Any]:
    items = images.items
    start = time.perf_counter()
    test_reals = held_out_reals(items, settings)
    row: dict[str, Any] = {"spec": asdict(spec), "lofo": {}}
    scores, facts, score_seconds, train_rates = {}, None, [], []
    for family in FAMILIES:
        train, test = lofo_split(items, family, test_reals)
        if not any(items[j].family == family for j in test):
            continue
        res = fit_and_score(spec, images, train, test, settings)
        row["lofo"][family] = summarize_family(res, items)
        scores[family] = (res["y"], _sigmoid(res["z"]["clean"], res["temperature"]))
        facts = res["facts"]
        score_seconds += facts.pop("score_seconds")
        train_rates.append(facts["train_images_per_s"])
        logger.info("%s / %s: AUC clean %.3f control %.3f (%.0f s so far)", name, family,
                    row["lofo"][family]["auc"]["clean"] or float("nan"),
                    row["lofo"][family]["auc"]["control"] or float("nan"), time.perf_counter() - start)
    row["facts"] = {k: v for k, v in (facts or {}).items() if k not in ("train_images", "train_seconds",
                                                                          "train_images_per_s")}
    row["nested"] = nested_bands(scores, settings.band_target, settings.min_coverage)
    row["release_band"] = release_band(scores, settings.band_target, settings.min_coverage, name)
    row["pooled"] = _pooled(row["lofo"])
    row["pair_140k"] = _pair_140k(spec, images, settings)
    row["train_images_per_s"] = _timing(train_rates, "x")
    row["score_ms"] = _timing([1000 * s for s in score_seconds], "ms")
    row["seconds"] = time.perf_counter() - start
    return row


def _pooled(lofo: dict[str, Any]) -> dict[str, Any]:
    """Means over families (each family's test set scored by the model that never saw it)."""
    def mean(key: str) -> float | None:
        values = [f[key] for f in lofo.values() if f.get(key) is not None]
        return float(np.mean(values)) if values else None

    wild_n = sum(f["in_the_wild_n"] for f in lofo.values())
    wild = sum((f["in_the_wild_fp"] or 0) * f["in_the_wild_n"] for f in lofo.values())
    return {"ece_before_ts": mean("ece_before_ts"), "ece_after_ts": mean("ece_after_ts"),
            "in_the_wild_fp": wild / wild_n if wild_n else None, "in_the_wild_n": wild_n}


def _pair_140k(spec: RowSpec, images: Images, settings: GeneralisationSettings) -> dict[str, Any]:
    items = images.items
    pair = np.array([j for j, it in enumerate(items) if it.source in PAIR_140K])
    if pair.size < 4 or len({items[j].label for j in pair}) < 2:
        return {"auc": None, "n": int(pair.size)}
    fold = grouped_folds([items[j].group for j in pair], [items[j].label for j in pair], settings.pair_folds,
                         settings.seed)
    ys, zs = {"clean": [], "control": []}, {"clean": [], "control": []}
    for k in range(int(fold.max()) + 1):
        res = fit_and_score(spec, images, pair[fold != k], pair[fold == k], settings)
        for view in zs:
            ys[view].append(res["y"])
            zs[view].append(res["z"][view])   # raw logits: per-fold AUCs pooled by ranks within folds below
    per_fold = [_auc(y, z) for y, z in zip(ys["clean"], zs["clean"])]
    return {"n": int(pair.size), "folds": len(per_fold),
            "auc": float(np.mean([a for a in per_fold if a is not None])),
            "auc_control": float(np.mean([a for a in (_auc(y, z) for y, z in zip(ys["control"], zs["control"]))
                                          if a is not None])),
            "auc_per_fold": per_fold}


def resolve_spec(name: str, rows: dict[str, Any]) -> RowSpec:
    """A ``best_of`` row becomes the better finished one of its candidates (mean control-view LOFO AUC)."""
    spec = ROWS[name]
    if spec.recipe is not None:
        return spec
    done = [n for n in spec.best_of if n in rows]
    if not done:
        raise ValueError(f"row {name} needs one of {spec.best_of} first")
    best = max(done, key=lambda n: np.mean([f["auc"]["control"] or 0 for f in rows[n]["lofo"].values()]))
    return replace(ROWS[best], model=spec.model, input_size=spec.input_size or ROWS[best].input_size,
                   epochs=spec.epochs, best_of=(best,))


def run_generalisation(settings: GeneralisationSettings, *, command: str = "",
                       on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The whole benchmark; ``on_row`` gets the results so far after every row (a long run keeps what finished)."""
    import torch
    from threadpoolctl import threadpool_limits

    from benchmarks.generalisation_report import finish
    from benchmarks.measure import collect_environment

    start = time.perf_counter()
    items = load_manifest(settings.data_dir, limit=settings.limit)
    torch.set_num_threads(settings.threads)
    environment = collect_environment()
    data: dict[str, Any] = {"command": command, "settings": asdict(settings), "environment": environment,
                            "rows": {}, "dropped": {}}
    with threadpool_limits(settings.threads):
        t0 = time.perf_counter()
        crops, data["face_stage"] = build_crops(items, settings)
        data["face_stage"]["seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        twin_paths, data["twins"] = build_twins(items, crops, settings) if any(
            ROWS[r].twins or ROWS[r].best_of for r in settings.rows) else ({}, {"twins": 0})
        data["twins"]["seconds"] = time.perf_counter() - t0
        data["dataset"] = _dataset(items, settings)
        images = Images(items, crops, twin_paths, settings.seed)
        for name in settings.rows:
            elapsed = (time.perf_counter() - start) / 60
            if settings.budget_minutes is not None and elapsed > settings.budget_minutes:
                data["dropped"][name] = f"not started: {elapsed:.0f} min used of the {settings.budget_minutes:g} min budget"
                continue
            try:
                spec = resolve_spec(name, data["rows"])
            except ValueError as error:
                data["dropped"][name] = str(error)
                continue
            logger.info("row %s: %s", name, spec)
            data["rows"][name] = run_row(name, spec, images, settings)
            finish(data, start)
            if on_row is not None:
                on_row(data)
    return finish(data, start)


def _dataset(items: Sequence[ImageItem], settings: GeneralisationSettings) -> dict[str, Any]:
    test_reals = held_out_reals(items, settings)
    return {"images": len(items), "real": sum(1 for i in items if not i.label),
            "fake": sum(i.label for i in items), "held_out_reals": int(test_reals.size),
            "held_out_groups": len({items[i].group for i in test_reals}),
            "families": {f: {s: sum(1 for i in items if i.source == s) for s in srcs} for f, srcs in FAMILIES.items()},
            "pair_140k": {s: sum(1 for i in items if i.source == s) for s in PAIR_140K}}

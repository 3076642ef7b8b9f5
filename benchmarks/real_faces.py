"""The real-faces benchmark: which recipe tells real faces from generated ones on faces-dev, and which generalises.

``make real-benchmark`` (``scripts/real_benchmark.py``). Not run in CI: about 25
minutes on a shared 2-core CPU (17 of them building the feature cache). What it does, in the order the results use it:

1. **Decode once, cache.** Every image of ``faces-dev`` (``manifest.csv``) is
   decoded with the app's safe decoder, searched for faces with the face stage
   (:func:`fakeface.faces.crop_faces`, the app's :class:`FaceCrop`), and cut
   into *regions*: the whole image (the "whole" stage) and the judgeable faces,
   largest first (the "face" stage; the whole image when none is found, as the
   app does). Each region is seen in *views*: ``clean`` and ``control`` (the
   shortcut control: a random 80-100 % crop, a random 0.5-1x rescale and a
   JPEG re-encode at random quality 60-95, applied to real and fake alike, from
   decoded pixels, so container format, size, JPEG tables and metadata no
   longer tell the classes apart). Frozen MobileNetV2-ImageNet features
   (pooled 1280-d, plus pooled intermediate blocks) of every view, and small
   pixel copies for fine-tuning, go to ``.cache/real_faces`` (gitignored).
2. **Linear probes** (UnivFD-style: logistic regression on frozen features),
   with and without the face stage and with and without the controls.
3. **Fine-tuned CNNs** on the cached pixels, short runs (the epochs and input
   size are in the results): MobileNetV2 from ImageNet, MobileNetV2 and
   ResNet50 from scratch.

Every row is scored the same way: grouped splits (no source image, prompt
pair or recurring identity on both sides), temperature and thresholds fitted
on a validation part of the training side (``fit_temperature``,
``choose_thresholds``), an image's score is its most suspicious region (the
app's rule), metrics from scikit-learn. Protocols: pooled grouped 5-fold
cross-validation (per source and per generator), leave one generator family
out (GAN / Stable Diffusion / pixel-space diffusion / FLUX and the closed
services, see ``FAMILIES``; train without it, test on it against held-out
reals), and the format-matched 140K pair alone (the protocols are
:mod:`benchmarks.protocols`, the report :mod:`benchmarks.real_faces_report`). Every
source of the pack must be listed in ``benchmarks/faces_dev_sources.toml`` (``FAMILIES``,
``IN_THE_WILD``, ``ALIGNED_OR_STUDIO``): ``load_manifest`` checks that before anything else runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from benchmarks.measure import collect_environment
from benchmarks.pack import (ALIGNED_OR_STUDIO, DEFAULT_REAL_KIND, FAMILIES, IN_THE_WILD, MIN_FAMILY_FAKES, PAIR_140K,
                             SOURCES, ImageItem, UnknownRealSourceWarning, UnknownSourcesError, UnknownSourceWarning,
                             check_sources, load_manifest, real_kind_of)
from benchmarks.protocols import VIEWS, grouped_folds, lofo, pooled_cv, run_split, summarize
from fakeface.data.images import load_image
from fakeface.data.preprocess import Preprocessing, build_eval_transform, jpeg_roundtrip
from fakeface.faces import FaceCrop, crop_faces

logger = logging.getLogger(__name__)

__all__ = [
    "ALIGNED_OR_STUDIO", "FAMILIES", "IN_THE_WILD", "MIN_FAMILY_FAKES", "TARGETS", "RealBenchmarkSettings", "ImageItem",
    "UnknownRealSourceWarning", "UnknownSourceWarning", "UnknownSourcesError", "check_sources", "load_manifest",
    "control_view", "run_real_benchmark",
]

TARGETS = {"lofo_auc_min": 0.90, "pair_140k_auc": 0.95, "in_the_wild_fp_max": 0.10, "ece_after_ts_max": 0.05}
INPUTS = {"resize": Preprocessing(crop_protocol="resize", num_test_crops=1),        # whole region squashed to 224²
          "native": Preprocessing(crop_protocol="native-crops", num_test_crops=1)}  # centre 224² at native pixels
_CACHE_VERSION = 3


@dataclass(frozen=True)
class RealBenchmarkSettings:
    data_dir: str
    cache_dir: str = ".cache/real_faces"
    seed: int = 0
    max_faces: int = 3                  # regions per image in the face stage (largest judgeable faces)
    probe_c: float = 0.1                # logistic-regression inverse regularisation on standardised features (fixed, not tuned)
    target_fpr: float = 0.05            # threshold_fake: at most this share of validation reals called fake
    folds: int = 5                      # pooled grouped cross-validation
    real_folds: int = 3                 # LOFO: held-out real folds per family
    finetune: bool = True
    finetune_size: int = 112            # fine-tune input side (px); baselines, reduced for the CPU budget
    finetune_epochs: dict[str, int] = field(default_factory=lambda: {
        "mobilenetv2_100-imagenet": 2, "mobilenetv2_100-scratch": 2, "resnet50-scratch": 1})
    finetune_max_train: int = 500       # training regions per fine-tune run (random, seeded)
    # Which fine-tunes also run the 4 LOFO folds (ResNet50 from scratch is left out: ~4 min per run here).
    finetune_lofo: tuple[str, ...] = ("mobilenetv2_100-imagenet", "mobilenetv2_100-scratch")
    limit: int | None = None            # first N manifest rows per source (tests)
    # One thread: on a shared, oversubscribed 2-core machine two OpenMP threads ran MobileNetV2 10-30x slower
    # (1-3 s per image against 0.05-0.1 s, load average 12); set 2 on a quiet machine.
    threads: int = 1



# --------------------------------------------------------------------------- regions and views

def control_view(image: Image.Image, rng: random.Random) -> Image.Image:
    """The shortcut control, same for both classes: random crop, random rescale, JPEG at random quality.

    Works on decoded pixels, so no container, EXIF or ICC survives; the JPEG
    re-encode puts every image, PNG or JPEG, real or fake, under one
    quality distribution.
    """
    w, h = image.size
    cw, ch = max(1, round(w * rng.uniform(0.8, 1.0))), max(1, round(h * rng.uniform(0.8, 1.0)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = image.crop((x, y, x + cw, y + ch))
    s = rng.uniform(0.5, 1.0)
    image = image.resize((max(16, round(cw * s)), max(16, round(ch * s))), Image.Resampling.BICUBIC)
    return jpeg_roundtrip(image, rng.randint(60, 95))


def image_regions(image: Image.Image, face_crop: FaceCrop, max_faces: int) -> tuple[list[Image.Image], dict[str, Any]]:
    """The face stage's regions of one photo (largest judgeable faces; the whole image if none) and what it found."""
    scan = crop_faces(image, face_crop, threads=1)
    faces = [f.image for f in scan.judgeable[:max_faces]]
    info = {"faces_found": len(scan.faces), "faces_judgeable": len(scan.judgeable), "no_face": scan.no_face}
    return (faces or [image]), info


class FeatureExtractor:
    """Frozen MobileNetV2-ImageNet: pooled final features (1280) and pooled outputs of blocks 1-6 (696)."""

    def __init__(self) -> None:
        import torch  # heavy (torch + timm): only the cache build needs it

        from fakeface.modeling.detector import create_detector

        self.torch = torch
        self.model = create_detector("mobilenetv2_100", pretrained=True).eval()
        self.transforms = {name: build_eval_transform(pp) for name, pp in INPUTS.items()}

    def __call__(self, images: Sequence[Image.Image], input_name: str) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        batch = torch.cat([self.transforms[input_name](im) for im in images])  # (N, 3, 224, 224)
        pooled = []
        with torch.inference_mode():
            # timm's forward_features, unrolled to read the blocks on the way (bn1/bn2 include the activation).
            x = self.model.bn1(self.model.conv_stem(batch))
            for i, block in enumerate(self.model.blocks):
                x = block(x)
                if i >= 1:
                    pooled.append(x.mean(dim=(2, 3)))
            final = self.model.forward_head(self.model.bn2(self.model.conv_head(x)), pre_logits=True)
        return final.numpy().astype(np.float32), torch.cat(pooled, 1).numpy().astype(np.float32)


@dataclass
class Cache:
    """Per stage: region -> image index, and per (view, input): features; plus fine-tune pixels."""

    items: list[ImageItem]
    region_image: dict[str, np.ndarray]                  # stage -> (R,) image index of each region
    features: dict[str, np.ndarray]                      # f"{stage}/{view}/{input}/{final|multi}" -> (R, D)
    pixels: dict[str, np.ndarray]                        # f"{view}" -> (R_face, S, S, 3) uint8, face stage
    face_info: list[dict[str, Any]]
    seconds: dict[str, float]


def _cache_key(items: Sequence[ImageItem], settings: RealBenchmarkSettings, face_crop: FaceCrop) -> str:
    text = json.dumps([_CACHE_VERSION, [asdict(i) for i in items], face_crop.to_cfg(), settings.max_faces,
                       settings.seed, settings.finetune_size], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_cache(items: Sequence[ImageItem], settings: RealBenchmarkSettings) -> Cache:
    """Decode each image once, find its faces, extract features of every view; reuse a matching cache on disk."""
    face_crop = FaceCrop()
    folder = Path(settings.cache_dir)
    path = folder / f"cache-{_cache_key(items, settings, face_crop)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: data[k] for k in data.files if k != "meta"}
        logger.info("reusing %s", path)
        return Cache(list(items), {s: arrays[f"regions/{s}"] for s in ("whole", "face")},
                     {k[len("feat/"):]: v for k, v in arrays.items() if k.startswith("feat/")},
                     {k[len("pix/"):]: v for k, v in arrays.items() if k.startswith("pix/")},
                     meta["face_info"], meta["seconds"])
    extractor = FeatureExtractor()
    region_image = {"whole": [], "face": []}
    feats: dict[str, list[np.ndarray]] = {}
    pixels: dict[str, list[np.ndarray]] = {v: [] for v in VIEWS}
    face_info, seconds = [], {"decode": 0.0, "faces": 0.0, "features": 0.0}
    root = Path(settings.data_dir)
    for index, item in enumerate(items):
        t0 = time.perf_counter()
        image = load_image(root / item.file).image
        t1 = time.perf_counter()
        faces, info = image_regions(image, face_crop, settings.max_faces)
        t2 = time.perf_counter()
        face_info.append(info)
        rng = random.Random(f"{settings.seed}:{item.file}")  # same control draw on every run
        for stage, regions in (("whole", [image]), ("face", faces)):
            views = {"clean": regions, "control": [control_view(r, rng) for r in regions]}
            region_image[stage].extend([index] * len(regions))
            for input_name in INPUTS if stage == "face" else ("resize",):
                final, multi = extractor(views["clean"] + views["control"], input_name)  # one batch, both views
                for v, view in enumerate(VIEWS):
                    part = slice(v * len(regions), (v + 1) * len(regions))
                    feats.setdefault(f"{stage}/{view}/{input_name}/final", []).append(final[part])
                    feats.setdefault(f"{stage}/{view}/{input_name}/multi", []).append(multi[part])
            for view, ims in views.items():
                if stage == "face":
                    side = settings.finetune_size + settings.finetune_size // 8  # room for a random crop
                    pixels[view].extend(np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BICUBIC))
                                        for im in ims)
        t3 = time.perf_counter()
        seconds["decode"] += t1 - t0
        seconds["faces"] += t2 - t1
        seconds["features"] += t3 - t2
        if index % 100 == 0:
            logger.info("cached %d/%d images (%.0f s so far)", index, len(items), sum(seconds.values()))
    cache = Cache(list(items), {s: np.asarray(v, np.int64) for s, v in region_image.items()},
                  {k: np.concatenate(v) for k, v in feats.items()},
                  {k: np.stack(v) for k, v in pixels.items()}, face_info, seconds)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"regions/{s}": v for s, v in cache.region_image.items()}
    arrays.update({f"feat/{k}": v for k, v in cache.features.items()})
    arrays.update({f"pix/{k}": v for k, v in cache.pixels.items()})
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, meta=json.dumps({"face_info": face_info, "seconds": seconds}), **arrays)
    os.replace(tmp, path)
    return cache


# --------------------------------------------------------------------------- scorers

Scorer = Callable[[np.ndarray, np.ndarray, Sequence[np.ndarray]], list[np.ndarray]]


def image_max(region_scores: np.ndarray, region_image: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
    """The app's rule: an image's score is its most suspicious region."""
    out = np.full(image_idx.size, -np.inf)
    where = {int(img): j for j, img in enumerate(image_idx)}
    for r, img in enumerate(region_image):
        j = where.get(int(img))
        if j is not None and region_scores[r] > out[j]:
            out[j] = region_scores[r]
    return out


def make_probe_scorer(cache: Cache, stage: str, input_name: str, feat: str, train_view: str,
                      settings: RealBenchmarkSettings) -> Callable[..., dict[str, np.ndarray]]:
    """fit(train images) -> logits (image-level, max over regions) for the given image sets, per test view."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    region_image = cache.region_image[stage]
    labels = np.array([i.label for i in cache.items])

    def features(view: str) -> np.ndarray:
        return cache.features[f"{stage}/{view}/{input_name}/{feat}"]

    def fit_and_score(fit_idx: np.ndarray, score_sets: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        mask = np.isin(region_image, fit_idx)
        x = features(train_view)[mask]
        y = labels[region_image[mask]]
        clf = make_pipeline(StandardScaler(), LogisticRegression(
            C=settings.probe_c, max_iter=400, tol=1e-3, class_weight="balanced"))
        clf.fit(x, y)
        out: dict[str, dict[str, np.ndarray]] = {}
        for view in VIEWS:
            region_scores = clf.decision_function(features(view))
            out[view] = {name: image_max(region_scores, region_image, idx) for name, idx in score_sets.items()}
        return out

    return fit_and_score


# --------------------------------------------------------------------------- fine-tuning

def make_finetune_scorer(cache: Cache, name: str, settings: RealBenchmarkSettings) -> Callable[..., dict]:
    """A short fine-tune on the cached face-stage pixels (control views and clean views mixed, both classes)."""
    import torch  # heavy (torch + timm): only the fine-tune rows need it

    from fakeface.modeling.detector import create_detector

    arch, init = name.rsplit("-", 1)
    region_image = cache.region_image["face"]
    labels = np.array([i.label for i in cache.items])
    size = settings.finetune_size
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)

    def to_tensor(arr: np.ndarray, rng: np.random.Generator | None) -> torch.Tensor:
        side = arr.shape[1]
        if rng is None:  # centre crop
            o = (side - size) // 2
            arr = arr[:, o:o + size, o:o + size]
        else:
            ys, xs = rng.integers(0, side - size + 1, 2)
            arr = arr[:, ys:ys + size, xs:xs + size]
            if rng.random() < 0.5:
                arr = arr[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255)
        return (x - mean) / std

    def fit_and_score(fit_idx: np.ndarray, score_sets: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        torch.manual_seed(settings.seed)
        rng = np.random.default_rng(settings.seed)
        model = create_detector(arch, pretrained=(init == "imagenet"))
        with torch.no_grad():
            for p in model.get_classifier().parameters():
                p.zero_()
        regions = np.flatnonzero(np.isin(region_image, fit_idx))
        if regions.size > settings.finetune_max_train:
            regions = rng.choice(regions, settings.finetune_max_train, replace=False)
        epochs = settings.finetune_epochs.get(name, 2)
        batch = 32
        steps = epochs * math.ceil(regions.size / batch)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3 if init == "imagenet" else 2e-3, weight_decay=0.02)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"], total_steps=steps,
                                                    pct_start=max(0.1, 3 / steps))  # >= 2 warm-up steps on tiny sets
        # Balanced classes per epoch via weights in the loss (faces-dev is about half and half).
        y_all = labels[region_image[regions]]
        weight = torch.tensor([len(y_all) / max(1, 2 * (y_all == c).sum()) for c in (0, 1)], dtype=torch.float32)
        model.train()
        for _ in range(epochs):
            order = rng.permutation(regions)
            for start in range(0, order.size, batch):
                chunk = order[start:start + batch]
                # Half the batch in the control view, half clean: the controls stop format from deciding.
                view = np.where(rng.random(chunk.size) < 0.5, 1, 0)
                arr = np.stack([cache.pixels[VIEWS[v]][r] for r, v in zip(chunk, view)])
                x = to_tensor(arr, rng)
                y = torch.from_numpy(labels[region_image[chunk]])
                loss = torch.nn.functional.cross_entropy(model(x), y, weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        model.eval()
        out: dict[str, dict[str, np.ndarray]] = {}
        wanted = np.flatnonzero(np.isin(region_image, np.concatenate(list(score_sets.values()))))
        for view in VIEWS:
            scores = np.full(region_image.size, -np.inf)
            with torch.inference_mode():
                for start in range(0, wanted.size, 64):
                    chunk = wanted[start:start + 64]
                    logits = model(to_tensor(cache.pixels[view][chunk], None)).numpy()
                    scores[chunk] = logits[:, 1] - logits[:, 0]
            out[view] = {n: image_max(scores, region_image, idx) for n, idx in score_sets.items()}
        return out

    return fit_and_score


def holdout_split(items, settings) -> tuple[np.ndarray, np.ndarray]:
    fold = grouped_folds([i.group for i in items], [i.label for i in items], settings.folds, settings.seed)
    return np.flatnonzero(fold != 0), np.flatnonzero(fold == 0)


# --------------------------------------------------------------------------- the run

PROBES = [  # (stage, input, features, train view)
    (stage, input_name, feat, view)
    for stage in ("whole", "face")
    for input_name in (("resize", "native") if stage == "face" else ("resize",))
    for feat in ("final", "multi")
    for view in VIEWS
]


def probe_name(stage: str, input_name: str, feat: str, view: str) -> str:
    return f"probe/{stage}/{input_name}/{feat}/{'controls' if view == 'control' else 'no-controls'}"


def _probe_rows(cache: Cache, settings: RealBenchmarkSettings) -> dict[str, Any]:
    items = cache.items
    pair = np.array([j for j, it in enumerate(items) if it.source in PAIR_140K])
    rows = {}
    for stage, input_name, feat, view in PROBES:
        name = probe_name(stage, input_name, feat, view)
        t0 = time.perf_counter()
        scorer = make_probe_scorer(cache, stage, input_name, feat, view, settings)
        row = {"kind": "linear probe", "stage": stage, "input": input_name, "features": feat,
               "train_view": view, "pooled": pooled_cv(scorer, items, settings), "lofo": lofo(scorer, items, settings),
               # the fine-tunes' protocol (one held-out real fold), so the default is chosen on equal terms
               "lofo_fold0": _lofo_one_real_fold(scorer, items, settings)}
        if pair.size:
            row["pair_140k"] = pooled_cv(scorer, items, settings, subset=pair)
        row["seconds"] = time.perf_counter() - t0
        rows[name] = row
        logger.info("%s: LOFO AUC (control test) %s in %.0f s", name,
                    {f: round(row["lofo"][f]["control"]["overall"]["auc"] or float("nan"), 3) for f in row["lofo"]},
                    row["seconds"])
    return rows


def _finetune_rows(cache: Cache, settings: RealBenchmarkSettings) -> dict[str, Any]:
    items = cache.items
    rows = {}
    for name in settings.finetune_epochs:
        t0 = time.perf_counter()
        scorer = make_finetune_scorer(cache, name, settings)
        train, test = holdout_split(items, settings)
        res = run_split(scorer, items, train, test, settings)
        row = {"kind": "fine-tune", "stage": "face", "input": f"resize {settings.finetune_size}",
               "epochs": settings.finetune_epochs[name], "max_train_regions": settings.finetune_max_train,
               "train_view": "clean + control (half each)",
               "holdout": {view: summarize(items, test, res[view]) for view in VIEWS}}
        pair = np.array([j for j, it in enumerate(items) if it.source in PAIR_140K])
        if pair.size:  # the format-matched pair alone: train and test inside it (one grouped hold-out)
            fold = grouped_folds([items[j].group for j in pair], [items[j].label for j in pair], settings.folds,
                                 settings.seed)
            res = run_split(scorer, items, pair[fold != 0], pair[fold == 0], settings)
            row["pair_140k"] = {view: summarize(items, pair[fold == 0], res[view]) for view in VIEWS}
        if name in settings.finetune_lofo:
            row["lofo"] = row["lofo_fold0"] = _lofo_one_real_fold(scorer, items, settings)
        row["seconds"] = time.perf_counter() - t0
        rows[f"finetune/{name}"] = row
        logger.info("finetune/%s: holdout AUC %.3f in %.0f s", name, row["holdout"]["clean"]["overall"]["auc"] or float("nan"),
                    row["seconds"])
    return rows


def _lofo_one_real_fold(scorer, items, settings) -> dict[str, Any]:
    """LOFO with only the first of the held-out real folds (the CPU budget: one fine-tune per family)."""
    labels = np.array([i.label for i in items])
    groups = np.array([i.group for i in items])
    real_idx = np.flatnonzero(labels == 0)
    test_reals = real_idx[grouped_folds(groups[real_idx], labels[real_idx], settings.real_folds, settings.seed) == 0]
    out = {}
    for family in FAMILIES:
        fam_idx = np.array([j for j, it in enumerate(items) if it.family == family])
        if fam_idx.size == 0:
            continue
        test_groups = set(groups[test_reals]) | set(groups[fam_idx])
        train = np.array([j for j, it in enumerate(items) if it.family != family and it.group not in test_groups])
        test = np.concatenate([fam_idx, test_reals])
        res = run_split(scorer, items, train, test, settings)
        out[family] = {view: summarize(items, test, res[view]) for view in VIEWS}
    return out


def lofo_score(row: dict[str, Any], view: str = "control", key: str = "lofo") -> tuple[float, float]:
    """(mean, min) LOFO AUC over families on the given test view (``key``: lofo or lofo_fold0)."""
    aucs = [row[key][f][view]["overall"]["auc"] for f in row.get(key, {})]
    aucs = [a for a in aucs if a is not None]
    return (float(np.mean(aucs)), float(np.min(aucs))) if aucs else (float("nan"), float("nan"))


def choose_default(rows: dict[str, Any]) -> str:
    """The released recipe: best mean LOFO AUC on the format-neutral (control) test view, among recipes
    train.py can train into a plain timm detector (final-layer features)."""
    candidates = {n: r for n, r in rows.items()
                  if "lofo_fold0" in r and (r["kind"] == "fine-tune" or r["features"] == "final")}
    return max(candidates, key=lambda n: lofo_score(candidates[n], key="lofo_fold0"))


def run_real_benchmark(settings: RealBenchmarkSettings, *, command: str = "",
                       on_partial: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The whole benchmark; ``on_partial`` gets the results so far after the probes (the fine-tunes take longest).

    The manifest is read and its sources checked first (:func:`load_manifest`), before torch is imported or any
    image decoded: a source the benchmark does not know stops the run at once with a message.
    """
    start = time.perf_counter()
    items = load_manifest(settings.data_dir, limit=settings.limit)
    import torch  # heavy; only to pin the thread count
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(settings.threads)
    with threadpool_limits(settings.threads):  # numpy/scipy BLAS under scikit-learn too
        return _run(settings, items, command, on_partial, start)


def _run(settings: RealBenchmarkSettings, items: list[ImageItem], command: str, on_partial,
         start: float) -> dict[str, Any]:
    environment = collect_environment()  # the inference benchmark's: CPU, flags, load, versions
    t0 = time.perf_counter()
    cache = build_cache(items, settings)
    cache_seconds = time.perf_counter() - t0
    rows = _probe_rows(cache, settings)
    if settings.finetune:
        if on_partial is not None:
            on_partial(_results(settings, command, environment, start, cache, cache_seconds, rows))
        rows.update(_finetune_rows(cache, settings))
    return _results(settings, command, environment, start, cache, cache_seconds, rows)


def _results(settings, command, environment, start, cache: Cache, cache_seconds: float, rows) -> dict[str, Any]:
    items, info = cache.items, cache.face_info
    real_sources = sorted({i.source for i in items if not i.label})
    data = {
        "command": command,
        "settings": asdict(settings),
        "environment": environment,
        "load_average_after": list(os.getloadavg()),
        "wall_seconds": time.perf_counter() - start,
        "cache_seconds": cache_seconds,
        "cache_breakdown_seconds": cache.seconds,
        "dataset": {
            "images": len(items), "real": sum(1 for i in items if not i.label), "fake": sum(i.label for i in items),
            "sources": {s: sum(1 for i in items if i.source == s) for s in sorted({i.source for i in items})},
            "families": {f: list(v) for f, v in FAMILIES.items()},
            "real_kinds": {s: real_kind_of(s) or DEFAULT_REAL_KIND for s in real_sources},
            "unclassified_real_sources": [s for s in real_sources if real_kind_of(s) is None],
            "one_group_sources": [s for s in SOURCES.one_group if any(i.source == s for i in items)],
            "no_face_images": int(sum(1 for x in info if x["no_face"])),
            "no_face_by_source": _count_by_source(items, [x["no_face"] for x in info]),
            "face_regions": int(cache.region_image["face"].size),
        },
        "face_crop": FaceCrop().to_cfg(),
        "targets": TARGETS,
        "rows": rows,
    }
    data["default_recipe"] = choose_default(rows)
    data["verdict"] = judge_targets(data)
    return data


def _count_by_source(items: Sequence[ImageItem], flags: Iterable[bool]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item, flag in zip(items, flags):
        if flag:
            counts[item.source] = counts.get(item.source, 0) + 1
    return counts


def judge_targets(data: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, judged on the chosen default (control test view for LOFO, clean for the rest)."""
    row = data["rows"][data["default_recipe"]]
    lofo_auc = {f: row["lofo"][f]["control"]["overall"]["auc"] for f in row["lofo"]}
    lofo_clean = {f: row["lofo"][f]["clean"]["overall"]["auc"] for f in row["lofo"]}
    main = row.get("pooled") or row.get("holdout")
    pair = (row.get("pair_140k") or {}).get("clean", {}).get("overall", {}).get("auc")
    out = {
        "recipe": data["default_recipe"],
        "lofo_auc_control": lofo_auc, "lofo_auc_clean": lofo_clean,
        "lofo_met": all(a is not None and a >= TARGETS["lofo_auc_min"] for a in lofo_auc.values()),
        "pair_140k_auc": pair, "pair_140k_met": pair is not None and pair >= TARGETS["pair_140k_auc"],
        "in_the_wild_fp": main["clean"]["in_the_wild_fp"],
        "ece_before_ts": main["clean"]["ece_before_ts"], "ece_after_ts": main["clean"]["ece_after_ts"],
    }
    out["in_the_wild_fp_met"] = out["in_the_wild_fp"] is not None and out["in_the_wild_fp"] <= TARGETS["in_the_wild_fp_max"]
    out["ece_met"] = out["ece_after_ts"] <= TARGETS["ece_after_ts_max"]
    return out

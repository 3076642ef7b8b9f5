"""The traces check: can a recipe tell a real face from its own aligned twin? (``scripts/traces_check.py``)

A twin (:mod:`fakeface.data.twins`) is the same picture passed through a generator's decoder (TAEF2) or upsampler
(Real-ESRGAN x4 on a quarter-size copy), written with the real's size, container and JPEG tables. Content, framing,
identity and format are identical within a pair, so the only thing left to learn is the maker's pixel traces:
until a recipe passes this check (test AUC >= 0.95) it cannot read generator traces at all.

Method:

1. Reals from aligned/portrait sources of faces-dev at their native resolution (no face stage: they are face
   crops already; default ffhq-140k 256 px and lfw-krasserm 250 px, a seeded subsample). Each real gets a twin
   from every maker, cached under ``.cache/twins``.
2. Split by real identity (LFW's person name, else the file): a twin always sits in its real's split.
3. Each recipe trains on the train reals + their twins (classes balanced by loss weights) and scores the test
   reals and their twins: AUC per maker and pooled. The CNN rows use the product's own recipe definition
   (``fakeface.training.recipes``: preprocessing, augmentation, optimiser, schedule) through
   ``create_training_model`` / ``build_optimizer`` / ``build_scheduler``, in a short loop without the release
   machinery. The spectral row is a logistic regression on 126 numbers: the log radial power spectrum (42 bins)
   of each colour channel's high-pass residual.
4. Carry-over: the same models (trained on twins only) score unseen generator sources of faces-dev against unseen
   reals (the test reals plus real sources never used for twins), whole images at native resolution.
"""
from __future__ import annotations

import csv
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from benchmarks.recipe_fit import fit_product_recipe
from benchmarks.cli import write_results
from benchmarks.measure import collect_environment
from fakeface.data.images import load_image
from fakeface.data.split import seeded_key
from fakeface.data.twins import Twin, create_twin_maker, make_twin
from fakeface.utils.formatting import json_safe, markdown_table

logger = logging.getLogger(__name__)

__all__ = ["TARGET_AUC", "TracesSettings", "render_traces", "run_traces_check", "spectral_features", "write_traces"]

TARGET_AUC = 0.95
SPECTRAL = "spectral-lr"


@dataclass(frozen=True)
class TracesSettings:
    data_dir: str
    cache_dir: str = ".cache/twins"
    makers: tuple[str, ...] = ("taef2", "esrgan")
    real_sources: tuple[str, ...] = ("ffhq-140k", "lfw-krasserm")
    reals_per_source: int = 90
    test_fraction: float = 0.3
    recipes: tuple[str, ...] = ("finetune", "traces", SPECTRAL)
    epochs: int = 12
    batch_size: int = 16               # train.py's default
    traces_input_size: int = 160      # native crop side of native-crops recipes (the product default is 224)
    unseen_fakes: tuple[str, ...] = ("stylegan1-140k", "stylegan3", "stylegan2-tpdne", "ddpm-ilvr-ffhq-ilvradm",
                                     "sd15-realvis14-rico", "sd21-sdfd", "sd15-facechain", "flux1-schnell-occbias")
    unseen_reals: tuple[str, ...] = ("celeba-hq", "ffhq-1024", "web-portraits-rico")
    unseen_per_source: int = 30
    timing_sample: int = 12           # twins per maker made again in a scratch cache, to time them cached or not
    seed: int = 0
    threads: int = 2


@dataclass
class Item:
    path: str
    label: int                # 0 real, 1 twin/fake
    source: str               # faces-dev source, or the maker for a twin
    group: str = ""
    split: str = ""


# --------------------------------------------------------------------------- data

def read_manifest(data_dir: str) -> dict[str, list[str]]:
    """faces-dev files by source (paths), in manifest order."""
    by_source: dict[str, list[str]] = {}
    with open(Path(data_dir) / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            by_source.setdefault(row["source"], []).append(str(Path(data_dir) / row["file"]))
    return by_source


def _sample(paths: Sequence[str], n: int, seed: int) -> list[str]:
    return sorted(paths, key=lambda p: seeded_key(seed, Path(p).name))[:n]


def identity_of(path: str) -> str:
    """LFW files are ``Person_Name_0001.jpg``: one person is one group; elsewhere the file is."""
    stem = Path(path).stem
    match = re.fullmatch(r"(.+)_\d{4}", stem)
    return match.group(1) if match else stem


def build_pairs(settings: TracesSettings, files: dict[str, list[str]]) -> tuple[list[Item], dict[str, Any]]:
    """Reals + their twins (made or read from the cache), split by identity; and the twin-making timings."""
    # Each maker's own thread default (one: see fakeface.data.twins; two stall on a shared 2-core machine).
    makers = [create_twin_maker(name) for name in settings.makers]
    items: list[Item] = []
    made: dict[str, list[float]] = {m.name: [] for m in makers}
    twins: dict[str, list[Twin]] = {m.name: [] for m in makers}
    reals = []
    for source in settings.real_sources:
        for path in _sample(files[source], settings.reals_per_source, settings.seed):
            group = f"{source}/{identity_of(path)}"
            split = "test" if int(seeded_key(settings.seed, group)[:8], 16) / 16**8 < settings.test_fraction else "train"
            reals.append(Item(path, 0, source, group, split))
    items += reals
    for maker in makers:   # one maker at a time: torch's and ncnn's thread pools slow each other when interleaved
        for real in reals:
            twin = make_twin(real.path, maker, settings.cache_dir, source_id=real.group)
            twins[maker.name].append(twin)
            items.append(Item(twin.path, 1, maker.name, real.group, real.split))
        with tempfile.TemporaryDirectory() as scratch:   # the timing does not depend on what the cache holds
            for real in reals[:settings.timing_sample]:
                start = time.perf_counter()
                make_twin(real.path, maker, scratch)
                made[maker.name].append(time.perf_counter() - start)
    report = {}
    for maker in makers:
        psnr = np.array([t.psnr_db for t in twins[maker.name]])
        seconds = np.array(made[maker.name])
        report[maker.name] = {
            "version": maker.version, "twins": len(psnr), "timed": int(seconds.size),
            "seconds_median": float(np.median(seconds)) if seconds.size else None,
            "seconds_p90": float(np.percentile(seconds, 90)) if seconds.size else None,
            "psnr_median": float(np.median(psnr)), "psnr_p10": float(np.percentile(psnr, 10)),
            "psnr_p90": float(np.percentile(psnr, 90)),
            "same_size_format_quality": all(_same_container(t) for t in twins[maker.name]),
        }
    return items, report


def _same_container(twin: Twin) -> bool:
    real = load_image(twin.real_path)
    return (real.width, real.height, real.format, real.jpeg_quality) == (twin.width, twin.height, twin.format,
                                                                         twin.jpeg_quality)


def unseen_items(settings: TracesSettings, files: dict[str, list[str]], test_reals: Sequence[Item]) -> list[Item]:
    out = [replace(item) for item in test_reals]
    for source in settings.unseen_reals:
        out += [Item(p, 0, source) for p in _sample(files.get(source, []), settings.unseen_per_source, settings.seed)]
    for source in settings.unseen_fakes:
        out += [Item(p, 1, source) for p in _sample(files.get(source, []), settings.unseen_per_source, settings.seed)]
    return out


# --------------------------------------------------------------------------- the spectral baseline

def spectral_features(image: Image.Image, bins: int = 42, crop: int = 224) -> np.ndarray:
    """126 numbers: log radial power spectrum (``bins`` rings) of each RGB channel's high-pass residual.

    The residual (image minus its 3x3 mean) keeps what a decoder or upsampler leaves and drops content; a
    centre crop at native resolution (frequencies in cycles per pixel, so crop sizes agree) under a Hann window.
    """
    from scipy.ndimage import uniform_filter

    a = np.asarray(image.convert("RGB"), np.float32)
    side = min(crop, a.shape[0], a.shape[1])
    y0, x0 = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
    a = a[y0:y0 + side, x0:x0 + side]
    residual = a - uniform_filter(a, size=(3, 3, 1), mode="reflect")
    window = np.outer(np.hanning(side), np.hanning(side))[..., None]
    power = np.abs(np.fft.fft2(residual * window, axes=(0, 1))) ** 2            # (side, side, 3)
    f = np.fft.fftfreq(side)
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)                          # 0 .. 0.707 cycles/pixel
    ring = np.minimum((radius / radius.max() * bins).astype(int), bins - 1).ravel()
    counts = np.bincount(ring, minlength=bins)
    feats = [np.bincount(ring, power[..., c].ravel(), minlength=bins) / np.maximum(counts, 1) for c in range(3)]
    return np.log(np.concatenate(feats) + 1e-6)


def fit_spectral(train: list[Image.Image], labels: np.ndarray, seed: int) -> Callable[[list[Image.Image]], np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced",
                                                               random_state=seed))
    model.fit(np.stack([spectral_features(im) for im in train]), labels)
    return lambda images: model.decision_function(np.stack([spectral_features(im) for im in images]))


# --------------------------------------------------------------------------- CNN recipes

def fit_recipe(recipe: str, train: list[Image.Image], labels: np.ndarray,
               settings: TracesSettings) -> tuple[Callable[[list[Image.Image]], np.ndarray], dict[str, Any]]:
    """Fine-tune MobileNetV2 (offline ImageNet start) with a product recipe; returns a scorer and its facts."""
    score, facts = fit_product_recipe(recipe, train, labels, epochs=settings.epochs, batch_size=settings.batch_size,
                                      seed=settings.seed, threads=settings.threads,
                                      input_size=None if recipe == "finetune" else settings.traces_input_size)
    facts["train_seconds"] = round(facts["train_seconds"], 1)
    return score, {k: facts[k] for k in ("description", "crop_protocol", "input_size", "test_crops", "epochs",
                                         "train_images", "train_seconds", "score_seconds")}


# --------------------------------------------------------------------------- the run

def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None


def _decode(items: Sequence[Item], cache: dict[str, Image.Image]) -> list[Image.Image]:
    for item in items:
        if item.path not in cache:
            cache[item.path] = load_image(item.path).image
    return [cache[item.path] for item in items]


def _score_row(name: str, items: list[Item], unseen: list[Item], settings: TracesSettings,
               images: dict[str, Image.Image]) -> dict[str, Any]:
    train = [i for i in items if i.split == "train"]
    test = [i for i in items if i.split == "test"]
    labels = np.array([i.label for i in train])
    if name == SPECTRAL:
        start = time.perf_counter()
        score = fit_spectral(_decode(train, images), labels, settings.seed)
        facts: dict[str, Any] = {"description": "logistic regression on 126 spectral numbers of the high-pass "
                                 "residual (42 radial bins x RGB, 224 px centre crop)",
                                 "train_images": len(train), "train_seconds": round(time.perf_counter() - start, 1)}
    else:
        score, facts = fit_recipe(name, _decode(train, images), labels, settings)
    scores = score(_decode(test, images))
    y = np.array([i.label for i in test])
    auc = {"pooled": _auc(y, scores)}
    for maker in settings.makers:
        keep = np.array([i.label == 0 or i.source == maker for i in test])
        auc[maker] = _auc(y[keep], scores[keep])
    row = {**facts, "test_reals": int((y == 0).sum()), "test_twins": int(y.sum()), "auc": auc,
           "passes": all(v is not None and v >= TARGET_AUC for v in auc.values())}
    if unseen:
        u_scores = score(_decode(unseen, images))
        u_y = np.array([i.label for i in unseen])
        reals = np.array([i.label == 0 for i in unseen])
        row["unseen"] = {src: {"fakes": int(sum(i.source == src for i in unseen)),
                               "auc": _auc(np.r_[u_y[reals], np.ones(m.sum())], np.r_[u_scores[reals], u_scores[m]])}
                         for src in settings.unseen_fakes
                         for m in [np.array([i.source == src for i in unseen])] if m.any()}
        row["unseen_reals"] = int(reals.sum())
    seconds = row.pop("score_seconds", None)
    if seconds:
        row["score_ms_median"] = round(1000 * float(np.median(seconds)), 1)
        row["score_ms_p90"] = round(1000 * float(np.percentile(seconds, 90)), 1)
    return row


def run_traces_check(settings: TracesSettings, *, command: str = "") -> dict[str, Any]:
    start = time.perf_counter()
    environment = collect_environment()
    files = read_manifest(settings.data_dir)
    items, twins = build_pairs(settings, files)
    logger.info("twins ready: %s", {k: (v["twins"], v["seconds_median"]) for k, v in twins.items()})
    test_reals = [i for i in items if i.split == "test" and i.label == 0]
    unseen = unseen_items(settings, files, test_reals)
    images: dict[str, Image.Image] = {}
    rows: dict[str, Any] = {}
    for name in settings.recipes:
        logger.info("recipe %s", name)
        rows[name] = _score_row(name, items, unseen, settings, images)
        logger.info("recipe %s: AUC %s", name, rows[name]["auc"])
    return json_safe({
        "command": command, "environment": environment, "settings": asdict(settings), "target_auc": TARGET_AUC,
        "data": {"train": sum(i.split == "train" for i in items), "test": sum(i.split == "test" for i in items),
                 "train_groups": len({i.group for i in items if i.split == "train"}),
                 "test_groups": len({i.group for i in items if i.split == "test"})},
        "twins": twins, "recipes": rows, "passed": [n for n, r in rows.items() if r["passes"]],
        "total_seconds": round(time.perf_counter() - start, 1),
        "load_average_end": list(os.getloadavg()),
    })


# --------------------------------------------------------------------------- report

def render_traces(data: dict[str, Any]) -> str:
    env, s = data["environment"], data["settings"]
    makers = s["makers"]
    lines = [
        "# Traces check: a real face against its own aligned twin", "",
        "Generated by `scripts/traces_check.py` (method: `benchmarks/traces.py`). Do not edit by hand.", "",
        f"- command: `{data['command']}`",
        f"- CPU: {env['cpu']} ({env['cpus_available']} cores available), flags: {', '.join(env['cpu_flags'])}",
        f"- load average at start {', '.join(f'{v:.1f}' for v in env['load_average'])}; at end "
        f"{', '.join(f'{v:.1f}' for v in data['load_average_end'])}; total {data['total_seconds'] / 60:.1f} min",
        f"- reals: {', '.join(s['real_sources'])} ({s['reals_per_source']} per source, native resolution), "
        f"twins by {', '.join(makers)}; split by identity: {data['data']['train']} train images "
        f"({data['data']['train_groups']} groups), {data['data']['test']} test ({data['data']['test_groups']} groups)",
        f"- target: test AUC >= {data['target_auc']} on test reals vs their own twins, for every maker", "",
        "## Twins", "",
        markdown_table(["maker", "version", "twins", "timed", "s/twin median", "p90", "PSNR median dB",
                        "p10-p90", "size+format+quality = real"],
                       [[m, t["version"], t["twins"], t["timed"], t["seconds_median"], t["seconds_p90"],
                         t["psnr_median"], f"{t['psnr_p10']:.1f}-{t['psnr_p90']:.1f}",
                         "yes" if t["same_size_format_quality"] else "NO"] for m, t in data["twins"].items()], digits=3),
        "", "## Recipes (trained on train reals + twins)", "",
        markdown_table(["recipe", "input", "AUC pooled", *[f"AUC {m}" for m in makers], "passes", "train s",
                        "ms/image median", "p90"],
                       [[n, f"{r.get('crop_protocol', 'spectrum')} {r.get('input_size', '')}".strip(),
                         r["auc"]["pooled"], *[r["auc"].get(m) for m in makers], "**yes**" if r["passes"] else "no",
                         r["train_seconds"], r.get("score_ms_median"), r.get("score_ms_p90")]
                        for n, r in data["recipes"].items()], digits=3),
        "", *[f"- `{n}`: {r['description']}" for n, r in data["recipes"].items()],
    ]
    unseen = {n: r["unseen"] for n, r in data["recipes"].items() if r.get("unseen")}
    if unseen:
        sources = list(next(iter(unseen.values())))
        first = next(iter(data["recipes"].values()))
        lines += ["", "## Carry-over: models trained on twins only, unseen generators vs unseen reals", "",
                  f"Unseen reals: {first.get('unseen_reals')} (the test reals + {', '.join(s['unseen_reals'])}); "
                  f"up to {s['unseen_per_source']} images per source, whole images at native resolution.", "",
                  markdown_table(["fake source", "fakes", *unseen],
                                 [[src, next(iter(unseen.values()))[src]["fakes"],
                                   *[u[src]["auc"] for u in unseen.values()]] for src in sources], digits=3)]
    passed = data["passed"]
    lines += ["", f"**Passed the traces check: {', '.join(passed) if passed else 'none'}.**", ""]
    return "\n".join(lines)


def write_traces(data: dict[str, Any], results_dir: str | Path = "results") -> tuple[Path, Path]:
    return write_results(data, results_dir, "traces", render_traces)

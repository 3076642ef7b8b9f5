"""The offline training benchmark: both recipes x MobileNetV2 and ResNet50 on the synthetic dataset, on CPU.

It builds the synthetic dataset (:func:`fakeface.data.dataset.build_face_dataset`),
trains each configuration with :func:`fakeface.training.loop.train` (the code
``train.py`` runs) and collects, from each run's own evaluation report: test
ROC-AUC clean, at JPEG q75 and at 0.5x downscale (plus the rest of the
robustness sweep), ECE after temperature scaling and training images/s. The
Markdown is rendered from the JSON only, so nothing in the results file is
typed by hand; the prose that explains a missed target is shown only when the
numbers say it was missed.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fakeface.utils.formatting import format_number, json_safe

__all__ = [
    "OFFLINE_BENCHMARK_ARCHITECTURES", "OFFLINE_BENCHMARK_RECIPES", "ROBUST_TARGETS", "OfflineBenchmarkSettings",
    "auc_standard_error", "render_offline_benchmark", "run_offline_benchmark", "write_offline_benchmark",
]

logger = logging.getLogger(__name__)

OFFLINE_BENCHMARK_ARCHITECTURES = ("mobilenetv2_100", "resnet50")
OFFLINE_BENCHMARK_RECIPES = ("robust", "seed")
# The targets for the robust recipe (test ROC-AUC).
ROBUST_TARGETS = {"clean": 0.99, "jpeg75": 0.95, "downscale0.5": 0.90}


@dataclass
class OfflineBenchmarkSettings:
    images: int = 1200
    input_size: int = 128
    epochs: dict[str, int] = field(default_factory=lambda: {"mobilenetv2_100": 16, "resnet50": 20})
    batch_size: int = 16
    architectures: tuple[str, ...] = OFFLINE_BENCHMARK_ARCHITECTURES
    recipes: tuple[str, ...] = OFFLINE_BENCHMARK_RECIPES
    seed: int = 0
    num_workers: int = 1
    output_dir: str = "runs/offline_benchmark"   # dataset and trained models (not committed)
    default_epochs: int = 3                     # for an architecture missing from ``epochs``


def _result_row(arch: str, recipe: str, result: Any, seconds: float, epochs: int) -> dict[str, Any]:
    report = result.report
    robustness = {r["condition"]: r["roc_auc"] for r in report["robustness"]}
    return {
        "architecture": arch, "recipe": recipe, "epochs": epochs,
        "steps": result.progress.global_step,
        "best_epoch": result.progress.best_epoch + 1,
        "val_auc_best": result.progress.best_auc,
        "auc_clean": report["overall"]["roc_auc"],
        **{f"auc_{condition}": auc for condition, auc in robustness.items()},
        "accuracy": report["overall"]["accuracy"],
        "tpr_at_threshold": report["overall"]["tpr"],
        "fpr_at_threshold": report["overall"]["fpr"],
        "ece": report["overall"]["ece"],
        "ece_uncalibrated_validation": result.calibration["validation_ece_before"],
        "temperature": result.decision.temperature,
        "train_images_per_second": result.throughput.get("images_per_second"),
        "loader_wait_fraction": result.throughput.get("loader_wait_fraction"),
        "eval_images_per_second": report["images_per_second"],
        "wall_seconds": seconds,
        "n_test": report["overall"]["n"],
        "n_test_real": report["overall"].get("n_real"),
        "n_test_fake": report["overall"].get("n_fake"),
    }


def run_offline_benchmark(settings: OfflineBenchmarkSettings, *, command: str) -> dict[str, Any]:
    """Build the data, train every (architecture, recipe), return the JSON-ready results."""
    # torch, accelerate and the training stack: imported only to run, never to re-render (--render-only)
    import torch

    from benchmarks.measure import collect_environment
    from fakeface.data.dataset import ensure_synthetic_dataset, load_face_dataset
    from fakeface.training.loop import RECIPES, TrainingConfig, train

    output = Path(settings.output_dir)
    data_dir = ensure_synthetic_dataset(output / "data", settings.images, settings.seed)
    splits = {name: len(split) for name, split in load_face_dataset(os.fspath(data_dir)).items()}

    environment = collect_environment()
    runs = []
    for arch in settings.architectures:
        for recipe in settings.recipes:
            epochs = settings.epochs.get(arch, settings.default_epochs)
            cfg = TrainingConfig(
                dataset=os.fspath(data_dir), output_dir=os.fspath(output / f"{arch}-{recipe}"), model=arch,
                recipe=recipe, face_crop=False, epochs=epochs, batch_size=settings.batch_size, input_size=settings.input_size,
                seed=settings.seed, num_workers=settings.num_workers, log_with=None, fast_path=False,
            )
            logger.info("=== %s, %s recipe, %d epochs", arch, recipe, epochs)
            load_before = _load_average()
            start = time.perf_counter()
            result = train(cfg)
            row = _result_row(arch, recipe, result, time.perf_counter() - start, epochs)
            row["load_average_before_after"] = [load_before, _load_average()]
            runs.append(row)
            logger.info("=== %s %s: %s", arch, recipe, json.dumps(json_safe(row)))

    return json_safe({
        "command": command,
        "environment": environment,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "settings": asdict(settings),
        "recipes": {name: {"description": RECIPES[name].description,
                           "augmentation": asdict(RECIPES[name].augmentation)} for name in settings.recipes},
        "splits": splits,
        "targets_robust": ROBUST_TARGETS,
        "runs": runs,
    })


def _load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def auc_standard_error(auc: float | None, n_negative: int, n_positive: int) -> float | None:
    """Hanley & McNeil (1982) standard error of a ROC-AUC from its value and the class counts."""
    if auc is None or n_negative < 1 or n_positive < 1:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc))
    return max(0.0, variance / (n_negative * n_positive)) ** 0.5


def _class_counts(row: dict) -> tuple[int, int]:
    real = row.get("n_test_real")
    if real is None:    # results written before the class counts were recorded: the stratified split is balanced
        real = row["n_test"] // 2
    return real, row.get("n_test_fake") or row["n_test"] - real


def _met(row: dict, name: str, target: float) -> bool:
    return (row.get(f"auc_{name}") or 0.0) >= target


def render_offline_benchmark(data: dict[str, Any]) -> str:
    """The Markdown results page, from the JSON alone."""
    lines = (_setup_section(data) + _results_table(data["runs"]) + _target_section(data) + _seed_section(data)
             + _gpu_section(data))
    return "\n".join(lines)


def _setup_section(data: dict[str, Any]) -> list[str]:
    """How the numbers were made: command, machine, load, data, training, recipes."""
    env, settings, rows = data["environment"], data["settings"], data["runs"]
    cores = env.get("cpus_available")
    lines = [
        "# Offline training benchmark (synthetic data, CPU)",
        "",
        "Generated by `scripts/train_benchmark.py` from `offline_benchmark.json`; do not edit by hand. Reproduce with:",
        "",
        "```", data["command"], "```",
        "",
        f"- Machine: {env['cpu']}, {cores} cores available, torch {env['versions']['torch']} with "
        f"{data['torch_threads']} threads, timm {env['versions']['timm']}, no GPU used (training on CPU by design).",
        "- 1-minute load average before → after each run: " + "; ".join(
            f"{r['architecture']} {r['recipe']} {format_number((r.get('load_average_before_after') or [None, None])[0], 1)} → "
            f"{format_number((r.get('load_average_before_after') or [None, None])[1], 1)}" for r in rows)
        + " (a run itself adds about 2–3: its torch threads and its loader worker). Images/s and wall times depend "
          "on what else the cores were doing; AUC and ECE do not.",
        f"- Data: `scripts/build_dataset.py --synthetic {settings['images']} --seed {settings['seed']}` → "
        f"{data['splits'].get('train')} train / {data['splits'].get('validation')} validation / "
        f"{data['splits'].get('test')} test images (procedural \"camera\" reals vs upsampled \"generator\" fakes; "
        "not faces, not a real generator).",
        f"- Training: random initialisation (no pretrained weights offline), input {settings['input_size']} px, batch "
        f"{settings['batch_size']}, epochs {', '.join(f'{a} {e}' for a, e in settings['epochs'].items())}, seed "
        f"{settings['seed']}, fp32. Best epoch on validation ROC-AUC as each recipe defines it below (ties broken by "
        "validation loss); temperature and thresholds fitted on validation; every metric below is on the test split.",
    ]
    for name, recipe in data["recipes"].items():
        aug = recipe["augmentation"]
        extra = ""
        if aug.get("rescale_prob") or aug.get("jpeg_prob") or aug.get("blur_prob"):
            extra = (f" Augmentation probabilities: flip {aug['hflip_prob']}, blur {aug['blur_prob']} "
                     f"(σ {aug['blur_sigma'][0]}–{aug['blur_sigma'][1]}), JPEG {aug['jpeg_prob']} "
                     f"(q {aug['jpeg_quality'][0]}–{aug['jpeg_quality'][1]}), rescale {aug['rescale_prob']} "
                     f"({aug['rescale_range'][0]}–{aug['rescale_range'][1]}×).")
        lines.append(f"- `{name}`: {recipe['description']}.{extra}")
    return lines


def _results_table(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "| architecture | recipe | epochs (best) | test AUC clean | AUC JPEG q75 | AUC 0.5× | AUC JPEG q50 | AUC blur σ1 | "
        "AUC screenshot | ECE (calibrated) | train images/s | loader wait | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['architecture']} | {r['recipe']} | {r['epochs']} ({r['best_epoch']}) | {format_number(r['auc_clean'], 4)} | "
            f"{format_number(r.get('auc_jpeg75'), 4)} | {format_number(r.get('auc_downscale0.5'), 4)} | {format_number(r.get('auc_jpeg50'), 4)} | "
            f"{format_number(r.get('auc_blur'), 4)} | {format_number(r.get('auc_screenshot'), 4)} | {format_number(r['ece'], 4)} | "
            f"{format_number(r['train_images_per_second'], 1)} | {format_number(100 * (r['loader_wait_fraction'] or 0), 0)} % | "
            f"{r['wall_seconds'] / 60:.1f} min |"
        )
    return lines


def _target_section(data: dict[str, Any]) -> list[str]:
    """The robust recipe's AUC targets, met or missed, with the reasons a miss is expected."""
    rows = data["runs"]
    n_test = max((r["n_test"] for r in rows), default=0)
    lines = [
        "",
        f"The test split has {n_test} images, so its AUCs carry sampling error: ± is one standard error "
        "(Hanley & McNeil 1982) below.",
        "",
        "## Targets for the robust recipe",
        "",
    ]
    targets = data["targets_robust"]
    robust_rows = [r for r in rows if r["recipe"] == "robust"]
    for r in robust_rows:
        checks = [f"{name} {format_number(r.get('auc_' + name), 4)} ± {format_number(auc_standard_error(r.get('auc_' + name), *_class_counts(r)), 4)} "
                  f"{'≥' if _met(r, name, t) else '<'} {t} ({'met' if _met(r, name, t) else 'MISSED'})"
                  for name, t in targets.items()]
        lines.append(f"- {r['architecture']}: " + "; ".join(checks) + ".")
    if any(not _met(r, "downscale0.5", targets["downscale0.5"]) for r in robust_rows):
        lines += [
            "",
            "Why 0.5× is the hard case here: the synthetic generator upsamples through two stride-2 transposed "
            "convolutions, so its trace is periodic with periods of 2 and 4 pixels. A 0.5× bicubic downscale (with "
            "Pillow's antialiasing) removes the period-2 part and moves the period-4 part to the new Nyquist "
            "frequency, where the antialiasing filter attenuates it most. Random rescaling during training teaches "
            "the detector what is left; it cannot restore the trace that the downscale removed.",
        ]
        still_rising = [r["architecture"] for r in robust_rows
                        if r["best_epoch"] == r["epochs"] and not _met(r, "downscale0.5", targets["downscale0.5"])]
        if still_rising:
            lines += [
                "",
                f"{', '.join(still_rising)}: the best epoch was the last one, so the model was still improving when "
                "the epoch budget (set for a 2-core CPU) ran out; more epochs would likely raise its 0.5× AUC.",
            ]
    if any(not _met(r, "clean", targets["clean"]) or not _met(r, "jpeg75", targets["jpeg75"]) for r in robust_rows):
        lines += ["", "A clean or JPEG q75 target is missed above: the numbers are reported as measured."]
    return lines


def _seed_section(data: dict[str, Any]) -> list[str]:
    """What the seed recipe loses against the robust one, per architecture."""
    rows = data["runs"]
    lines = ["", "## What the seed recipe loses", ""]
    for arch in dict.fromkeys(r["architecture"] for r in rows):
        by_recipe = {r["recipe"]: r for r in rows if r["architecture"] == arch}
        if {"robust", "seed"} <= set(by_recipe):
            robust, seed = by_recipe["robust"], by_recipe["seed"]
            parts = [f"{label} {format_number(seed.get(key), 4)} vs {format_number(robust.get(key), 4)} "
                     f"({format_number((seed.get(key) or 0) - (robust.get(key) or 0), 4)})"
                     for key, label in (("auc_clean", "AUC clean"), ("auc_jpeg75", "JPEG q75"),
                                        ("auc_downscale0.5", "0.5×"))]
            lines.append(f"- {arch}, seed vs robust: " + "; ".join(parts) + ".")
    if "seed" in data["recipes"]:
        lines += [
            "",
            "The seed recipe squashes each image to the input size, which averages away the high-frequency "
            "upsampling trace the fakes carry, and it trains only a linear head on a frozen backbone. Offline there "
            "are no ImageNet weights, so that backbone is *randomly initialised*: its features are random "
            "projections, a harsher handicap than the original project's frozen ImageNet backbone. Both effects are "
            "in the seed rows; without pretrained weights they cannot be separated.",
        ]
    return lines


def _gpu_section(data: dict[str, Any]) -> list[str]:
    return [
        "",
        "## GPU",
        "",
        "A GPU was visible to this run, but this benchmark trains on CPU by design; see docs/training.md for GPU runs."
        if data["cuda_available"] else
        "No GPU was available when this was produced, so training throughput on a GPU (ResNet50, bf16, "
        "channels_last) was not measured. The command for it is in docs/training.md.",
        "",
    ]


def write_offline_benchmark(data: dict[str, Any], results_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``offline_benchmark.json`` and the Markdown rendered from it; returns both paths."""
    from benchmarks.cli import write_results

    return write_results(data, results_dir, "offline_benchmark", render_offline_benchmark)

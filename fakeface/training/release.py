"""The release a run ends with: calibration on validation, the test report, the folder, its card, the push.

Runs on the main process only, after training. Release folder::

    config.json  model.safetensors  README.md  eval_results.json  plots/*.png  [model.int8.onnx ...]
    [face_detector.onnx  face_detector.LICENSE.txt]  [examples/ (test-split photos, not for synthetic data)]
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fakeface.evaluation.abstention import load_abstention_band
from fakeface.evaluation.calibration import calibrate, calibration_report
from fakeface.evaluation.metrics import decode_split, evaluate_detector
from fakeface.evaluation.plots import save_report_figures
from fakeface.modeling.config import Decision
from fakeface.modeling.detector import load_detector, push_detector, save_detector, set_decision, set_release_facts
from fakeface.modeling.fastpath import export_fast_path  # onnxruntime itself is imported only when exporting
from fakeface.modeling.inference import Detector
from fakeface.training.card import write_model_card
from fakeface.training.checkpoints import BEST_DIR, TrainingProgress, checkpoint_root
from fakeface.training.config import TrainingConfig
from fakeface.training.examples import write_release_examples
from fakeface.training.recipes import Recipe
from fakeface.utils.constants import FAKE, SYNTHETIC_GENERATOR
from fakeface.utils.formatting import json_safe

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"
EVAL_RESULTS_NAME = "eval_results.json"


@dataclass
class TrainingResult:
    """What :func:`train` returns (on every process; release fields only on the main one)."""

    output_dir: Path
    progress: TrainingProgress
    validation: dict[str, Any] | None = None        # last validation metrics (all processes)
    decision: Decision | None = None               # the calibrated decision the release carries
    calibration: dict[str, Any] | None = None      # calibration_report: thresholds' statistics, ECE before/after
    report: dict[str, Any] | None = None            # test report (main process)
    hub_commit: str | None = None
    throughput: dict[str, float] = field(default_factory=dict)
    fast_path: dict[str, Any] | None = None


def write_release(cfg: TrainingConfig, recipe: Recipe, output_dir: Path, result: TrainingResult,
                  train_split: Any, val_split: Any, test_split: Any, data_notes: list[str]) -> None:
    """Best model -> calibration on validation -> test report -> release folder -> fast path -> push."""
    best_dir = checkpoint_root(output_dir) / BEST_DIR
    model = load_detector(best_dir)
    detector = Detector(model)
    batch_size = cfg.eval_batch_size or cfg.batch_size

    val_images, val_labels, _ = decode_split(val_split)
    val_logits = detector.score_batches(val_images, batch_size).logits
    # The validation split holds the training generators: a band measured on held-out families is more honest.
    band = load_abstention_band(cfg.abstention_band) if cfg.abstention_band else None
    decision = calibrate(val_logits, val_labels, target_fpr=cfg.target_fpr,
                         confidently_wrong_target=cfg.confidently_wrong_target, band=band)
    set_decision(model, decision)
    detector = detector.with_decision(decision)
    calibration = calibration_report(val_logits, val_labels, decision)
    scope = training_scope(train_split)
    set_release_facts(model, recipe=recipe.name, trained_on=scope,
                      synthetic_training_data=SYNTHETIC_GENERATOR in scope["fake_generators"])
    result.decision, result.calibration = decision, calibration

    test_decoded = decode_split(test_split)
    report = evaluate_detector(detector, test_split, batch_size=batch_size, robustness=cfg.robustness, decoded=test_decoded)
    report["validation"] = {"history": result.progress.history, "best_epoch": result.progress.best_epoch + 1,
                            "best_step": result.progress.best_step, "best_auc": result.progress.best_auc,
                            "calibration": calibration}
    report["training"] = {"config": cfg.public_dict(), "recipe": asdict(recipe) | {"augmentation": asdict(recipe.augmentation)},
                          "throughput": result.throughput, "notes": data_notes,
                          "num_processes": result.progress.fingerprint.get("num_processes", 1),
                          "splits": {"train": len(train_split), "validation": len(val_split), "test": len(test_split)}}
    result.report = report

    save_detector(model, output_dir)
    examples = write_release_examples(output_dir, test_split, dataset=cfg.dataset if isinstance(cfg.dataset, str) else None)
    if examples:
        logger.info("release carries %d example photos from its test split (examples/)", len(examples))
    plots: dict[str, Path] = {}
    if cfg.plots:
        plots = save_report_figures(report, output_dir / PLOTS_DIR, detector=detector, images=test_decoded[0], seed=cfg.seed)
    fast = None
    if cfg.fast_path:
        fast = export_release_fast_path(model, output_dir, val_images, test_decoded[0], test_decoded[1])
    result.fast_path = fast
    public = {k: v for k, v in report.items() if k != "scores"}
    public["fast_path"] = fast
    (output_dir / EVAL_RESULTS_NAME).write_text(json.dumps(json_safe(public), indent=2) + "\n")
    write_model_card(output_dir, report=public, config=cfg, recipe=recipe,
                     plots={k: p.relative_to(output_dir).as_posix() for k, p in plots.items()})
    if cfg.push_to_hub:
        result.hub_commit = push_detector(output_dir, cfg.push_to_hub, private=cfg.private,
                                          commit_message=f"fakeface {cfg.model} ({recipe.name} recipe)")
        logger.info("pushed the release to %s (commit %s)", cfg.push_to_hub, result.hub_commit[:12])


def training_scope(*splits: Any) -> dict[str, list[str]]:
    """Which generators (fake) and real sources the model saw; goes into its config and card."""
    fakes, reals = set(), set()
    for split in splits:
        if "generator" not in split.column_names:
            continue
        for generator, label in zip(split["generator"], split["label"]):
            if generator is not None:
                (fakes if label == FAKE else reals).add(str(generator))
    return {"fake_generators": sorted(fakes), "real_sources": sorted(reals)}


def export_release_fast_path(model: nn.Module, output_dir: Path, calibration_images: list, holdout_images: list,
                             holdout_labels: np.ndarray) -> dict[str, Any] | None:
    """int8 ONNX beside the safetensors; never fails the run."""
    try:
        return export_fast_path(model, output_dir, calibration_images[:64], holdout_images, holdout_labels)
    except Exception as error:  # an optional artefact: log and publish without it
        logger.warning("fast path export failed, publishing without it: %s: %s", type(error).__name__, error)
        return {"error": f"{type(error).__name__}: {error}"}


def reexport_fast_path(release_dir: str | Path, dataset: str) -> dict[str, Any] | None:
    """Export a saved release's fast path again (a newer exporter, a lost graph), as train.py would: calibrated
    on ``dataset``'s validation split and measured on its test split, cut to faces where the release has a face
    crop; the card's fast-path section and ``eval_results.json`` are brought up to date."""
    import re

    from fakeface.data.dataset import load_face_dataset
    from fakeface.modeling.config import resolve_detector_config
    from fakeface.training.card import fast_path_section
    from fakeface.training.face_data import crop_split_to_faces

    release_dir = Path(release_dir)
    model = load_detector(release_dir)
    splits = load_face_dataset(dataset)
    validation, test = splits["validation"], splits["test"]
    face_crop = resolve_detector_config(model).face_crop
    if face_crop is not None:
        validation, test = (crop_split_to_faces(s, face_crop) for s in (validation, test))
    calibration = decode_split(validation)[0]
    test_images, test_labels, _ = decode_split(test)
    info = export_release_fast_path(model, release_dir, calibration, test_images, test_labels)
    results = release_dir / EVAL_RESULTS_NAME
    if results.is_file():
        report = json.loads(results.read_text())
        report["fast_path"] = info
        results.write_text(json.dumps(json_safe(report), indent=2) + "\n")
    card = release_dir / "README.md"
    if card.is_file():   # the section runs to the next heading of its level, or to the end
        text = re.sub(r"\n## Fast path .*?(?=\n## |\Z)", lambda _: fast_path_section(info).rstrip("\n"),
                      card.read_text(), count=1, flags=re.S)
        card.write_text(text)
    return info

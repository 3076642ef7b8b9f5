"""Validation each epoch and model selection: gathered crop-averaged logits, selection views, the best epoch."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fakeface.evaluation.metrics import compute_metrics
from fakeface.modeling.inference import fake_probability, logits_from_crops
from fakeface.training.checkpoints import TrainingProgress

# What each epoch's entry of the progress history keeps (plus roc_auc_<view> per selection view).
HISTORY_KEYS = ("epoch", "step", "train_loss", "roc_auc", "average_precision", "accuracy", "nll", "ece", "n",
                "rows_unique", "selection_auc")


@torch.no_grad()
def validate(accelerator: Any, model: nn.Module, loader: Any, channels_last: bool) -> dict[str, Any]:
    """Crop-averaged validation logits of the whole split, gathered over processes."""
    model.eval()
    all_logits, all_labels, all_rows = [], [], []
    for batch in loader:
        crops = batch["pixel_values"]                                        # (B, K, C, H, W)
        if channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last) if crops.ndim == 4 else crops
        with accelerator.autocast():
            logits = logits_from_crops(model, crops).float()                 # (B, 2)
        logits, labels, rows = accelerator.gather_for_metrics((logits, batch["labels"], batch["rows"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
        all_rows.append(rows.cpu())
    logits = torch.cat(all_logits).numpy()
    labels = torch.cat(all_labels).numpy()
    rows = torch.cat(all_rows).numpy()
    nll = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item())
    metrics = compute_metrics(labels, fake_probability(logits), 0.5)
    metrics.update(nll=nll, rows_scored=int(rows.size), rows_unique=int(np.unique(rows).size))
    return metrics


def check_every_row_scored(validation: Mapping[str, Any], n_rows: int) -> None:
    if validation["rows_unique"] != n_rows or validation["rows_scored"] != n_rows:
        raise RuntimeError(
            f"validation scored {validation['rows_scored']} rows ({validation['rows_unique']} distinct) "
            f"of {n_rows}: gathering across processes lost or duplicated samples"
        )


def selection_auc(accelerator: Any, model: nn.Module, validation: dict[str, Any], view_loaders: Mapping[str, Any],
                  channels_last: bool) -> dict[str, float]:
    """Add the selection views' AUCs and their mean with the clean AUC (``selection_auc``) to ``validation``."""
    view_aucs = {"clean": validation["roc_auc"]}
    for condition, loader in view_loaders.items():
        view_aucs[condition] = validate(accelerator, model, loader, channels_last)["roc_auc"]
    auc = float(np.mean([0.0 if math.isnan(a) else a for a in view_aucs.values()]))
    validation.update(selection_auc=auc, **{f"roc_auc_{c}": a for c, a in view_aucs.items() if c != "clean"})
    return view_aucs


def is_improvement(validation: Mapping[str, Any], progress: TrainingProgress) -> bool:
    """A higher selection AUC, or the same one at a lower validation NLL."""
    auc = validation["selection_auc"]
    return auc > progress.best_auc + 1e-12 or (abs(auc - progress.best_auc) <= 1e-12 and validation["nll"] < progress.best_nll)

"""Plots of an evaluation: ROC, PR, confusion, reliability, robustness, embeddings, Grad-CAM.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg
canvas, no pyplot state), so they are safe in the app's worker threads and
in headless training runs. Every function returns the Figure; the caller
saves it (:func:`save_figure`) or hands it to ``gr.Plot``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fakeface.utils.constants import FAKE, LABEL_NAMES, REAL
from fakeface.modeling.config import Decision
from fakeface.modeling.explain import gradcam, overlay_heatmap
from fakeface.evaluation.metrics import (
    DEFAULT_ECE_BINS,
    average_precision,
    expected_calibration_error,
    precision_recall_points,
    reliability_bins,
    roc_auc,
    roc_curve_points,
)

logger = logging.getLogger(__name__)

_COLOURS = {REAL: "#1f77b4", FAKE: "#d62728"}


def _figure(width: float = 4.8, height: float = 4.2) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _curve_figure(summary: float, curve: str) -> tuple[Figure, Any]:
    """A figure for a curve summarised by ``summary`` (its AUC or AP): NaN, one class only, is said on it."""
    fig, ax = _figure()
    if np.isnan(summary):
        ax.text(0.5, 0.5, f"{curve} undefined:\nboth classes are needed", ha="center", va="center")
    return fig, ax


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=fig.dpi)
    return path


def roc_figure(labels: Sequence[int], p_fake: Sequence[float], *, title: str = "ROC curve",
               operating_threshold: float | None = None) -> Figure:
    """ROC curve (fake = positive) with its AUC; marks the operating threshold if given."""
    fpr, tpr, thresholds = roc_curve_points(labels, p_fake)
    auc = roc_auc(labels, p_fake)
    fig, ax = _curve_figure(auc, "ROC")
    if not np.isnan(auc):
        ax.plot(fpr, tpr, color=_COLOURS[FAKE], lw=2, label=f"AUC = {auc:.3f}")
        if operating_threshold is not None:
            y, p = np.asarray(labels), np.asarray(p_fake)
            op_fpr = np.mean(p[y == REAL] >= operating_threshold)
            op_tpr = np.mean(p[y == FAKE] >= operating_threshold)
            ax.plot([op_fpr], [op_tpr], "ko", label=f"threshold {operating_threshold:.3f}")
        ax.legend(loc="lower right")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate (reals called fake)",
           ylabel="true-positive rate (fakes caught)", title=title)
    return fig


def pr_figure(labels: Sequence[int], p_fake: Sequence[float], *, title: str = "Precision-recall") -> Figure:
    """Precision-recall curve for the ``fake`` class with its average precision."""
    precision, recall, _ = precision_recall_points(labels, p_fake)
    ap = average_precision(labels, p_fake)
    fig, ax = _curve_figure(ap, "PR curve")
    if not np.isnan(ap):
        ax.step(recall, precision, where="post", color=_COLOURS[FAKE], lw=2, label=f"AP = {ap:.3f}")
        prevalence = float(np.mean(np.asarray(labels) == FAKE))
        ax.axhline(prevalence, ls="--", color="grey", lw=1, label=f"chance ({prevalence:.2f})")
        ax.legend(loc="lower left")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (fakes caught)", ylabel="precision", title=title)
    return fig


def confusion_figure(cm: Sequence[Sequence[int]], *, title: str = "Confusion matrix",
                     names: Sequence[str] = LABEL_NAMES) -> Figure:
    """2x2 confusion matrix, rows = truth, columns = verdict, with counts and row shares."""
    matrix = np.asarray(cm, dtype=np.int64)
    fig, ax = _figure(4.2, 3.8)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{matrix[i, j]}\n({share[i, j]:.0%})", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(names)), [f"called {n}" for n in names])
    ax.set_yticks(range(len(names)), [f"truly {n}" for n in names])
    ax.set_title(title)
    return fig


def reliability_figure(labels: Sequence[int], p_fake: Sequence[float], *, n_bins: int = DEFAULT_ECE_BINS,
                       title: str = "Reliability diagram") -> Figure:
    """Observed fraction of fakes against mean p(fake) per bin, with ECE and bin counts."""
    bins = reliability_bins(labels, p_fake, n_bins)
    ece = expected_calibration_error(labels, p_fake, n_bins)
    fig, ax = _figure()
    centres = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = bins.edges[1] - bins.edges[0]
    filled = bins.counts > 0
    ax.bar(centres[filled], bins.frac_fake[filled], width=width * 0.9, color=_COLOURS[FAKE], alpha=0.7,
           edgecolor="black", label="observed fraction fake")
    ax.plot(bins.mean_p_fake[filled], bins.frac_fake[filled], "k.", label="bin mean p(fake)")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="predicted p(fake)", ylabel="fraction of fakes",
           title=f"{title} (ECE = {ece:.3f})")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def robustness_figure(rows: Sequence[Mapping[str, Any]], *, metric: str = "roc_auc",
                      title: str = "Robustness to post-processing") -> Figure:
    """Bar chart of one metric per robustness condition (rows from ``robustness_sweep``)."""
    fig, ax = _figure(6.4, 3.8)
    names = [str(r["condition"]) for r in rows]
    values = np.array([np.nan if r.get(metric) is None else float(r[metric]) for r in rows])
    bars = ax.bar(range(len(rows)), np.nan_to_num(values), color=[_COLOURS[REAL]] + [_COLOURS[FAKE]] * (len(rows) - 1))
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01,
                "n/a" if np.isnan(value) else f"{value:.3f}", ha="center", va="bottom", fontsize="small")
    ax.axhline(0.5, ls="--", color="grey", lw=1)
    ax.set_xticks(range(len(rows)), names, rotation=20)
    ax.set(ylim=(0, 1.1), ylabel=metric.replace("_", " "), title=title)
    return fig


# --------------------------------------------------------------------------- embeddings

def extract_features(detector: Any, images: Sequence[Any], *, batch_size: int = 16) -> np.ndarray:
    """Penultimate-layer features (pooled, before the classifier), averaged over test crops.

    Uses ``detector.prepare``, i.e. exactly the crops that are scored.
    """
    import torch

    model = detector.model
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            crops = detector.prepare(images[start:start + batch_size])   # (N, K, C, H, W)
            n, k = crops.shape[:2]
            features = model.forward_head(model.forward_features(crops.flatten(0, 1)), pre_logits=True)
            chunks.append(features.view(n, k, -1).mean(dim=1).float().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def project_2d(features: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D projection of ``features``: UMAP if installed, else t-SNE (n >= 30), else PCA."""
    features = np.asarray(features, dtype=np.float64)
    n = features.shape[0]
    if n < 3:
        return np.zeros((n, 2)), "none"
    try:
        import umap  # optional: not in requirements.txt

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(features), "UMAP"
    except ImportError:
        pass
    from sklearn.decomposition import PCA

    reduced = PCA(n_components=min(50, n, features.shape[1]), random_state=seed).fit_transform(features)
    if n >= 30:
        from sklearn.manifold import TSNE

        perplexity = float(min(30, (n - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced), "t-SNE"
    return reduced[:, :2] if reduced.shape[1] >= 2 else np.c_[reduced, np.zeros(n)], "PCA"


def embedding_figure(points: np.ndarray, labels: Sequence[int], predicted: Sequence[int], *,
                     method: str = "", title: str = "Penultimate-layer features") -> Figure:
    """Scatter of 2-D points: colour = true label, marker = verdict (x = wrong)."""
    fig, ax = _figure(5.2, 4.6)
    y, pred = np.asarray(labels), np.asarray(predicted)
    for cls in (REAL, FAKE):
        right = (y == cls) & (pred == y)
        wrong = (y == cls) & (pred != y)
        ax.scatter(points[right, 0], points[right, 1], s=14, c=_COLOURS[cls], alpha=0.7,
                   label=f"{LABEL_NAMES[cls]}, correct")
        if wrong.any():
            ax.scatter(points[wrong, 0], points[wrong, 1], s=40, c=_COLOURS[cls], marker="x",
                       label=f"{LABEL_NAMES[cls]}, called {LABEL_NAMES[1 - cls]}")
    ax.set(title=f"{title} ({method})" if method else title, xticks=[], yticks=[])
    ax.legend(loc="best", fontsize="small")
    return fig


# --------------------------------------------------------------------------- Grad-CAM

def gradcam_grid_figure(detector: Any, images: Sequence[Any], labels: Sequence[int], p_fake: Sequence[float], *,
                        per_group: int = 3, title: str = "Grad-CAM (target: fake)") -> Figure:
    """Grid of Grad-CAM overlays: rows correct real / correct fake / wrong, ``per_group`` each.

    Uses ``fakeface.modeling.explain`` (the app's Grad-CAM).
    """
    y, p = np.asarray(labels), np.asarray(p_fake)
    threshold = detector.decision.threshold_fake
    pred = (p >= threshold).astype(int)
    confidence = np.abs(p - threshold)
    groups = [
        ("real, called real", np.flatnonzero((y == REAL) & (pred == REAL))),
        ("fake, called fake", np.flatnonzero((y == FAKE) & (pred == FAKE))),
        ("wrong verdicts", np.flatnonzero(pred != y)),
    ]
    fig = Figure(figsize=(2.4 * per_group, 2.6 * len(groups)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(groups), per_group, squeeze=False)
    for row, (name, idx) in enumerate(groups):
        chosen = idx[np.argsort(-confidence[idx], kind="stable")][:per_group]  # the clearest cases first
        for col in range(per_group):
            ax = axes[row][col]
            ax.set_axis_off()
            if col >= chosen.size:
                if col == 0:
                    ax.text(0.5, 0.5, f"{name}:\nnone", ha="center", va="center", transform=ax.transAxes)
                continue
            i = int(chosen[col])
            crops = detector.prepare([images[i]])[0]            # (K, C, H, W)
            heatmap = gradcam(detector.model, crops, target=FAKE)
            ax.imshow(overlay_heatmap(images[i], heatmap, detector.preprocessing))
            truth = f"{LABEL_NAMES[y[i]]}, called {LABEL_NAMES[pred[i]]}"
            ax.set_title(f"{truth}\np(fake)={p[i]:.2f}", fontsize="small")
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- all plots of a report

def save_report_figures(report: Mapping[str, Any], output_dir: str | Path, *, detector: Any = None,
                        images: Sequence[Any] | None = None, seed: int = 0) -> dict[str, Path]:
    """Write every plot of an ``evaluate_detector`` report as PNG into ``output_dir``.

    The embedding and Grad-CAM plots need ``detector`` and the decoded
    ``images`` of the report's split; they are skipped without them.
    """
    output_dir = Path(output_dir)
    scores = report["scores"]
    labels, p_fake = np.asarray(scores["labels"]), np.asarray(scores["p_fake"])
    threshold = Decision.from_cfg(report["settings"]).threshold_fake
    written = {
        "roc": save_figure(roc_figure(labels, p_fake, operating_threshold=threshold), output_dir / "roc.png"),
        "pr": save_figure(pr_figure(labels, p_fake), output_dir / "pr.png"),
        "confusion": save_figure(confusion_figure(report["overall"]["confusion_matrix"],
                                                  title=f"Confusion at p(fake) >= {threshold:.3f}"),
                                 output_dir / "confusion.png"),
        "reliability": save_figure(reliability_figure(labels, p_fake), output_dir / "reliability.png"),
    }
    if report.get("robustness"):
        written["robustness"] = save_figure(robustness_figure(report["robustness"]), output_dir / "robustness.png")
    if detector is not None and images is not None and len(images):
        predicted = (p_fake >= threshold).astype(int)
        points, method = project_2d(extract_features(detector, images), seed=seed)
        written["embedding"] = save_figure(embedding_figure(points, labels, predicted, method=method),
                                           output_dir / "embedding.png")
        written["gradcam"] = save_figure(gradcam_grid_figure(detector, images, labels, p_fake),
                                         output_dir / "gradcam.png")
    return written

"""The evaluation protocols the faces-dev benchmarks share: grouped folds (a group, one person or one shoot, never
spans train and test), a calibrated split (temperature and thresholds from a grouped validation part), pooled
grouped cross-validation and leave one generator family out. Scorers plug in as ``fit_and_score`` callables."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from benchmarks.pack import FAMILIES, ImageItem, is_in_the_wild
from fakeface.evaluation.calibration import choose_thresholds, fit_temperature
from fakeface.evaluation.metrics import expected_calibration_error

VIEWS = ("clean", "control")   # every image scored as given, and in the shortcut-control view


# --------------------------------------------------------------------------- splits

def grouped_folds(groups: Sequence[str], labels: Sequence[int], k: int, seed: int) -> np.ndarray:
    """(N,) fold index per image; a group never spans two folds (StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    counts = np.bincount(np.asarray(labels, np.int64))
    k = int(min(k, counts[counts > 0].min()))  # tiny runs (tests): fewer folds than asked
    if k < 2:
        raise ValueError(f"cannot split {len(groups)} images into grouped folds: a class has fewer than 2 images")
    fold = np.full(len(groups), -1, np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, test) in enumerate(splitter.split(np.zeros(len(groups)), labels, groups)):
        fold[test] = i
    return fold


def validation_part(train_idx: np.ndarray, items: Sequence[ImageItem], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training images into fit / validation (about 1/5, grouped) for temperature and thresholds."""
    labels = [items[i].label for i in train_idx]
    fold = grouped_folds([items[i].group for i in train_idx], labels, 5, seed)
    return train_idx[fold != 0], train_idx[fold == 0]


# --------------------------------------------------------------------------- calibrated splits

def _calibrated(val_logit: np.ndarray, val_y: np.ndarray, test_logit: np.ndarray, target_fpr: float) -> dict[str, Any]:
    """Temperature and thresholds from the validation part, applied to the test logits (binary logit z)."""
    two = lambda z: np.stack([np.zeros_like(z), z], 1)  # noqa: E731 - softmax([0, z])[1] = sigmoid(z)
    t = fit_temperature(two(val_logit), val_y)
    p_val = 1 / (1 + np.exp(-val_logit / t))
    th = choose_thresholds(val_y, p_val, target_fpr=target_fpr)
    return {"temperature": t, "threshold": th.threshold_fake,
            "p_raw": 1 / (1 + np.exp(-test_logit)), "p": 1 / (1 + np.exp(-test_logit / t))}


def run_split(fit_and_score, items, train_idx, test_idx, settings) -> dict[str, dict[str, np.ndarray]]:
    """Fit on train minus a grouped validation part; per test view: raw p, calibrated p, called-fake."""
    fit_idx, val_idx = validation_part(train_idx, items, settings.seed)
    scores = fit_and_score(fit_idx, {"val": val_idx, "test": test_idx})
    val_y = np.array([items[i].label for i in val_idx])
    out = {}
    for view, s in scores.items():
        cal = _calibrated(s["val"], val_y, s["test"], settings.target_fpr)
        out[view] = {"p_raw": cal["p_raw"], "p": cal["p"], "fake": cal["p"] >= cal["threshold"],
                     "temperature": np.full(test_idx.size, cal["temperature"])}
    return out


# --------------------------------------------------------------------------- protocols

def _metrics(y: np.ndarray, p: np.ndarray, called: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    both = len(set(y.tolist())) == 2
    return {"n": int(y.size), "n_fake": int(y.sum()),
            "auc": float(roc_auc_score(y, p)) if both else None,
            "ap": float(average_precision_score(y, p)) if both else None,
            "accuracy": float(np.mean(called == (y == 1)))}


def summarize(items: Sequence[ImageItem], idx: np.ndarray, res: dict[str, np.ndarray]) -> dict[str, Any]:
    """Overall, per generator (vs all reals in the set), per real source (false positives), calibration."""
    y = np.array([items[i].label for i in idx])
    src = np.array([items[i].source for i in idx])
    p, called = res["p"], res["fake"]
    reals = y == 0
    wild = reals & np.array([is_in_the_wild(s) for s in src], bool)
    out = {"overall": _metrics(y, p, called),
           "ece_before_ts": expected_calibration_error(y, res["p_raw"]),
           "ece_after_ts": expected_calibration_error(y, p),
           "in_the_wild_fp": float(called[wild].mean()) if wild.any() else None,
           "per_generator": {}, "per_real_source": {}}
    for s in sorted(set(src[~reals])):
        m = (src == s) | reals
        out["per_generator"][s] = {**_metrics(y[m], p[m], called[m]),
                                   "tpr": float(called[src == s].mean())}
    for s in sorted(set(src[reals])):
        out["per_real_source"][s] = {"n": int((src == s).sum()), "fp": float(called[src == s].mean())}
    return out


def _concat(parts: list[tuple[np.ndarray, dict[str, np.ndarray]]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    idx = np.concatenate([i for i, _ in parts])
    keys = parts[0][1].keys()
    return idx, {k: np.concatenate([r[k] for _, r in parts]) for k in keys}


def pooled_cv(fit_and_score, items, settings, subset: np.ndarray | None = None) -> dict[str, Any]:
    """Grouped k-fold over ``subset`` (default: all): every image scored once by a model that never saw its group."""
    subset = np.arange(len(items)) if subset is None else subset
    fold = grouped_folds([items[i].group for i in subset], [items[i].label for i in subset], settings.folds, settings.seed)
    per_view: dict[str, list] = {v: [] for v in VIEWS}
    for k in range(int(fold.max()) + 1):
        res = run_split(fit_and_score, items, subset[fold != k], subset[fold == k], settings)
        for view in VIEWS:
            per_view[view].append((subset[fold == k], res[view]))
    return {view: summarize(items, *_concat(parts)) for view, parts in per_view.items()}


def lofo(fit_and_score, items, settings, real_folds: int | None = None) -> dict[str, Any]:
    """Leave one family out: train without the family (and without the held-out reals' groups), test on them."""
    real_folds = real_folds or settings.real_folds
    labels = np.array([i.label for i in items])
    groups = np.array([i.group for i in items])
    real_idx = np.flatnonzero(labels == 0)
    rfold = grouped_folds(groups[real_idx], labels[real_idx], real_folds, settings.seed)
    out: dict[str, Any] = {}
    for family in FAMILIES:
        fam_idx = np.array([j for j, it in enumerate(items) if it.family == family])
        if fam_idx.size == 0:
            continue
        per_view: dict[str, list] = {v: [] for v in VIEWS}
        fam_scores: dict[str, list] = {v: [] for v in VIEWS}
        for r in range(int(rfold.max()) + 1):
            test_reals = real_idx[rfold == r]
            test_groups = set(groups[test_reals]) | set(groups[fam_idx])
            train = np.array([j for j, it in enumerate(items) if it.family != family and it.group not in test_groups])
            test = np.concatenate([fam_idx, test_reals])
            res = run_split(fit_and_score, items, train, test, settings)
            for view in VIEWS:
                n = fam_idx.size
                per_view[view].append((test_reals, {k: v[n:] for k, v in res[view].items()}))
                fam_scores[view].append({k: v[:n] for k, v in res[view].items()})
        out[family] = {}
        for view in VIEWS:
            # Each fake scored by every real fold's model: average p (and majority vote for the call).
            fake = {k: np.mean([s[k] for s in fam_scores[view]], 0) for k in ("p_raw", "p", "temperature")}
            fake["fake"] = np.mean([s["fake"] for s in fam_scores[view]], 0) >= 0.5
            idx, res = _concat([(fam_idx, fake)] + per_view[view])
            out[family][view] = summarize(items, idx, res)
    return out

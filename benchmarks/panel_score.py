"""Scoring the panel benchmark: each expert alone and the nested fusion, per held-out family (see benchmarks.panel).

Everything here works on out-of-family margins already computed, so it is cheap and exactly repeatable: a
family's fusion, temperature and band never see that family's images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from benchmarks.pack import PAIR_140K, ImageItem, is_in_the_wild
from benchmarks.protocols import grouped_folds
from fakeface.evaluation.abstention import abstention_rates, choose_confident_band
from fakeface.evaluation.calibration import fit_temperature
from fakeface.evaluation.metrics import expected_calibration_error
from fakeface.modeling.panel import fit_fusion

__all__ = ["EXPERTS", "SCORERS", "evaluate_panel", "format_key"]

EXPERTS = ("content", "trace")
SCORERS = (*EXPERTS, "fusion")
MIN_SUBSET = 5          # a format-matched subset needs this many fakes and reals for an AUC
SURVEY_REAL = "laion-survey"


@dataclass
class FamilyTable:
    """One held-out family's test rows (its fakes and the test reals) with every expert's margins."""
    idx: np.ndarray
    y: np.ndarray
    z: dict[str, np.ndarray]      # view -> (n, len(EXPERTS)) margins


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(set(np.asarray(y).tolist())) == 2 else None


def _sigmoid(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(z, float) / t))


def format_key(fact: dict[str, Any]) -> str:
    """Container, size class (short side) and JPEG quality class: fakes and reals alike in all three."""
    side = min(fact["width"], fact["height"])
    size = "<192" if side < 192 else "192-383" if side < 384 else "384-767" if side < 768 else ">=768"
    q = fact.get("jpeg_quality")
    quality = "lossless" if q is None else "q<75" if q < 75 else "q75-89" if q < 90 else "q90+"
    return f"{fact['format']} {size} {quality}"


def _tables(content: dict[str, dict[str, Any]], scored: np.ndarray, trace_z: dict[str, np.ndarray]
            ) -> dict[str, FamilyTable]:
    where = {int(i): k for k, i in enumerate(scored)}
    out = {}
    for family, c in content.items():
        pos = np.array([where[int(i)] for i in c["idx"]])
        out[family] = FamilyTable(np.asarray(c["idx"]), np.asarray(c["y"]),
                                  {v: np.column_stack([c["z"][v], trace_z[v][pos]]) for v in ("clean", "control")})
    return out


def _halves(items: Sequence[ImageItem], test_reals: np.ndarray, seed: int) -> dict[int, int]:
    """Test real index -> 0 or 1: two grouped halves, for cross-fitting the fusion on the reals."""
    fold = grouped_folds([items[i].group for i in test_reals], [0] * len(test_reals), 2, seed)
    return {int(i): int(f) for i, f in zip(test_reals, fold)}


class NestedFusion:
    """Fused margins of a family's rows from fusions that never saw it (nor the families in ``exclude``)."""

    def __init__(self, tables: dict[str, FamilyTable], halves: dict[int, int]):
        self.tables, self.halves = tables, halves
        self.weights: dict[str, list[list[float]]] = {}

    def _fit(self, families: Sequence[str], held_half: int):
        xs, ys = [], []
        for h in families:
            t = self.tables[h]
            keep = (t.y == 1) | np.array([self.halves.get(int(i), -1) != held_half for i in t.idx])
            xs.append(t.z["clean"][keep])
            ys.append(t.y[keep])
        return fit_fusion(np.concatenate(xs), np.concatenate(ys), EXPERTS)

    def margins(self, family: str, exclude: frozenset[str] = frozenset(), view: str = "clean") -> np.ndarray:
        t = self.tables[family]
        fit_on = [h for h in self.tables if h != family and h not in exclude]
        out = np.zeros(len(t.y))
        for half in (0, 1):
            fusion = self._fit(fit_on, half)
            if not exclude and view == "clean":
                self.weights.setdefault(family, []).append(list(fusion.weights))
            m = fusion.margin(t.z[view])
            mine = np.array([self.halves.get(int(i), -1) == half for i in t.idx]) & (t.y == 0)
            out[mine] = m[mine]
            out[t.y == 1] += m[t.y == 1] / 2          # fakes: the mean of both fusions
        return out


def _decision_from(others: dict[str, tuple[np.ndarray, np.ndarray]], target: float, min_coverage: float,
                   source: str):
    y = np.concatenate([v[0] for v in others.values()])
    z = np.concatenate([v[1] for v in others.values()])
    t = fit_temperature(np.stack([np.zeros_like(z), z], 1), y)
    band = choose_confident_band(y, _sigmoid(z, t), 1 - target, min_coverage=min_coverage, source=source)
    return t, band


def _subsets(items, formats, idx, y, s) -> list[dict[str, Any]]:
    keys = np.array([format_key(formats[int(i)]) for i in idx])
    out = []
    for key in sorted(set(keys[y == 1])):
        m = keys == key
        if (y[m] == 1).sum() >= MIN_SUBSET and (y[m] == 0).sum() >= MIN_SUBSET:
            out.append({"key": key, "n_fake": int((y[m] == 1).sum()), "n_real": int((y[m] == 0).sum()),
                        "auc": _auc(y[m], s[m])})
    return out


def _summary(items, formats, t: FamilyTable, z: dict[str, np.ndarray], temp: float, band, settings
             ) -> dict[str, Any]:
    y, src = t.y, np.array([items[int(i)].source for i in t.idx])
    p = _sigmoid(z["clean"], temp)
    rates = abstention_rates(y, p, band.threshold_real, band.threshold_fake)
    wild = (y == 0) & np.array([is_in_the_wild(s) for s in src])
    survey = np.array([s.endswith("-survey") for s in src])
    pair = np.isin(src, PAIR_140K)
    return {
        "auc": {v: _auc(y, zz) for v, zz in z.items()},
        "format_matched": _subsets(items, formats, t.idx, y, z["clean"]),
        "temperature": temp, "band": band.to_dict(),
        "confidently_wrong": rates.confidently_wrong, "coverage": rates.coverage,
        "right_when_confident": None if rates.coverage == 0 else 1 - rates.confidently_wrong / rates.coverage,
        "met": bool(rates.confidently_wrong <= settings.band_target * rates.coverage
                    and rates.coverage >= settings.min_coverage),
        "ece_before_ts": expected_calibration_error(y, _sigmoid(z["clean"])),
        "ece_after_ts": expected_calibration_error(y, p),
        "in_the_wild_fp": float((p[wild] >= band.threshold_fake).mean()) if wild.any() else None,
        "in_the_wild_n": int(wild.sum()),
        "survey_auc": _auc(y[survey | (src == SURVEY_REAL)], p[survey | (src == SURVEY_REAL)]),
        "pair_140k_auc": _auc(y[pair], p[pair]) if pair.any() else None,
        "per_source_auc": {s: _auc(np.r_[np.zeros((y == 0).sum()), np.ones((src == s).sum())],
                                   np.r_[p[y == 0], p[src == s]]) for s in sorted(set(src[y == 1]))},
        "n_fake": int(y.sum()), "n_real": int((y == 0).sum()),
    }


def evaluate_panel(items: Sequence[ImageItem], formats: list[dict[str, Any]], test_reals: np.ndarray,
                   scored: np.ndarray, trace_z: dict[str, np.ndarray], content: dict[str, dict[str, Any]],
                   settings: Any) -> dict[str, Any]:
    tables = _tables(content, scored, trace_z)
    nested = NestedFusion(tables, _halves(items, test_reals, settings.seed))
    families = list(tables)
    # Each scorer's out-of-family margins per family; the fusion's inner scores exclude the judged family too.
    outer = {"fusion": {f: {v: nested.margins(f, view=v) for v in ("clean", "control")} for f in families}}
    for k, name in enumerate(EXPERTS):
        outer[name] = {f: {v: tables[f].z[v][:, k] for v in ("clean", "control")} for f in families}
    results: dict[str, dict[str, Any]] = {s: {} for s in SCORERS}
    for f in families:
        for scorer in SCORERS:
            if scorer == "fusion":
                others = {g: (tables[g].y, nested.margins(g, exclude=frozenset({f}))) for g in families if g != f}
            else:
                others = {g: (tables[g].y, outer[scorer][g]["clean"]) for g in families if g != f}
            temp, band = _decision_from(others, settings.band_target, settings.min_coverage,
                                        f"held-out families {', '.join(others)}")
            results[scorer][f] = _summary(items, formats, tables[f], outer[scorer][f], temp, band, settings)
    return {"families": families, "results": results, "fusion_weights_by_family": nested.weights,
            "release": _release(tables, outer, nested, settings),
            "test_reals": int(len(test_reals)), "scored_images": int(len(scored))}


def _release(tables: dict[str, FamilyTable], outer: dict[str, Any], nested: NestedFusion, settings: Any
             ) -> dict[str, Any]:
    """What a release ships: each expert's temperature, the fusion on all out-of-family rows, and the fused
    temperature and band chosen on the nested (never-seen-family) fused scores, pooled."""
    fams = list(tables)
    x = np.concatenate([tables[f].z["clean"] for f in fams])
    y = np.concatenate([tables[f].y for f in fams])
    source = ("generators it never saw (leave-one-family-out scores on faces-dev, families "
              f"{', '.join(fams)}; benchmarks/panel.py)")
    fusion = fit_fusion(x, y, EXPERTS, source=f"out-of-family expert scores on faces-dev ({', '.join(fams)})")
    temps = {name: fit_temperature(np.stack([np.zeros(len(y)), x[:, k]], 1), y) for k, name in enumerate(EXPERTS)}
    pooled = {f: (tables[f].y, outer["fusion"][f]["clean"]) for f in fams}
    temp, band = _decision_from(pooled, settings.band_target, settings.min_coverage, source)
    return {"fusion": fusion.to_cfg(), "expert_temperatures": temps, "temperature": temp, "band": band.to_dict()}

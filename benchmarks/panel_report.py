"""The panel benchmark's verdict and Markdown: the rule that picks the released default, the targets, the tables."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from benchmarks.cli import write_results
from benchmarks.panel_score import EXPERTS, SCORERS
from fakeface.utils.fileio import write_atomic
from fakeface.utils.formatting import json_safe, markdown_table

__all__ = ["RULE", "TARGETS", "choose_default", "render_panel", "release_entry", "write_panel_results"]

TARGETS = {"lofo_auc_clean": 0.90, "lofo_auc_control": 0.80, "format_matched_auc": 0.90,
           "right_when_confident": 0.95, "coverage": 0.50, "ece_after_ts": 0.05, "in_the_wild_fp": 0.10}
RULE = ("The released default is the fusion when its mean clean leave-one-family-out AUC over the families is at "
        "least the best single expert's; otherwise the best single expert alone (a one-expert panel). Stated before "
        "the numbers; the AUC decides because a band can only be as good as the ranking under it.")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return float(np.mean(values)) if values else None


def means(data: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    out = {}
    for scorer in SCORERS:
        fam = data["results"][scorer].values()
        out[scorer] = {"auc_clean": _mean(f["auc"]["clean"] for f in fam),
                       "auc_control": _mean(f["auc"]["control"] for f in fam),
                       "right_when_confident": _mean(f["right_when_confident"] for f in fam),
                       "coverage": _mean(f["coverage"] for f in fam),
                       "ece_after_ts": _mean(f["ece_after_ts"] for f in fam),
                       "in_the_wild_fp": _mean(f["in_the_wild_fp"] for f in fam)}
    return out


def choose_default(data: Mapping[str, Any]) -> str:
    m = means(data)
    best_single = max(EXPERTS, key=lambda e: m[e]["auc_clean"] or 0)
    return "fusion" if (m["fusion"]["auc_clean"] or 0) >= (m[best_single]["auc_clean"] or 0) else best_single


def _verdicts(data: Mapping[str, Any], scorer: str) -> list[str]:
    """Each target, met or missed by how much, for one scorer."""
    lines = []
    for family, r in data["results"][scorer].items():
        for view, target in (("clean", TARGETS["lofo_auc_clean"]), ("control", TARGETS["lofo_auc_control"])):
            auc = r["auc"][view]
            if auc is None or auc < target:
                lines.append(f"{family}: {view} AUC {_f(auc)} < {target} (missed by {_f(target - (auc or 0))})")
        for subset in r["format_matched"]:
            if subset["auc"] is not None and subset["auc"] < TARGETS["format_matched_auc"]:
                lines.append(f"{family}: format-matched {subset['key']} AUC {_f(subset['auc'])} < 0.9 "
                             f"({subset['n_fake']} fakes / {subset['n_real']} reals)")
        right, cov = r["right_when_confident"], r["coverage"]
        if right is None or right < TARGETS["right_when_confident"] or cov < TARGETS["coverage"]:
            lines.append(f"{family}: confident verdicts right {_pct(right)} at coverage {_pct(cov)} "
                         f"(targets >= 95 % at >= 50 %)")
    return lines


def _f(v: Any, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _family_table(data: Mapping[str, Any], scorer: str) -> str:
    rows = []
    for family, r in data["results"][scorer].items():
        subsets = [s["auc"] for s in r["format_matched"] if s["auc"] is not None]
        rows.append([family, r["n_fake"], r["n_real"], _f(r["auc"]["clean"]), _f(r["auc"]["control"]),
                     _f(min(subsets)) if subsets else "—", len(subsets), _pct(r["right_when_confident"]),
                     _pct(r["coverage"]), _f(r["ece_after_ts"]), _pct(r["in_the_wild_fp"]),
                     _f(r["survey_auc"]), _f(r["pair_140k_auc"])])
    return markdown_table(["held-out family", "fakes", "reals", "AUC clean", "AUC control", "min format-matched AUC",
                           "subsets", "right when confident", "coverage", "ECE after T", "in-the-wild FP",
                           "survey AUC", "140K AUC"], rows)


def release_entry(data: Mapping[str, Any]) -> dict[str, Any]:
    """What ``scripts/build_panel.py`` reads: the default, the fusion, each expert's temperature, the band."""
    release = dict(data["release"])
    return {"default": data["default"], **release,
            "trace_expert": {k: v for k, v in data["trace_expert"].items() if k != "twin_makers"},
            "measured_by": "benchmarks/panel.py (results/panel.md)"}


def render_panel(data: Mapping[str, Any]) -> str:
    env = data.get("environment", {})
    m = means(data)
    out = ["# Panel benchmark: each expert alone and their fusion, on generator families none of them saw", "",
           f"Command: `{data.get('command', '')}`. CPU: {env.get('cpu', env.get('processor', '?'))}; "
           f"flags {env.get('cpu_flags', '?')}; {data.get('seconds', 0) / 60:.1f} min.", "",
           "Protocol: benchmarks/panel.py's docstring. Test reals: grouped fold 0 of the reals "
           f"({data['test_reals']} images), never trained on by any expert; a family's fusion, temperature and "
           "band never see that family.", "", "## Rule, stated before the numbers", "", RULE, "",
           f"**Chosen default: {data['default']}**", "", "## Means over held-out families", ""]
    out.append(markdown_table(["scorer", "AUC clean", "AUC control", "right when confident", "coverage",
                               "ECE after T", "in-the-wild FP"],
                              [[s, _f(v["auc_clean"]), _f(v["auc_control"]), _pct(v["right_when_confident"]),
                                _pct(v["coverage"]), _f(v["ece_after_ts"]), _pct(v["in_the_wild_fp"])]
                               for s, v in m.items()]))
    for scorer in SCORERS:
        out += ["", f"## {scorer}", "", _family_table(data, scorer), "", "Targets missed:", ""]
        out += [f"- {line}" for line in _verdicts(data, scorer)] or ["- none"]
    out += ["", "## Fusion weights per held-out family (standardised margins; two halves of the test reals)", ""]
    out.append(markdown_table(["held-out family", *[f"w {e}" for e in EXPERTS]],
                              [[f, *[" / ".join(f"{w[k]:.2f}" for w in ws) for k in range(len(EXPERTS))]]
                               for f, ws in data["fusion_weights_by_family"].items()]))
    out += ["", "## Per-source AUC of the fusion (each source's fakes against the test reals)", ""]
    out.append(markdown_table(["family", "source", "AUC content", "AUC trace", "AUC fusion"],
                              [[f, s, _f(data["results"]["content"][f]["per_source_auc"][s]),
                                _f(data["results"]["trace"][f]["per_source_auc"][s]), _f(a)]
                               for f, r in data["results"]["fusion"].items() for s, a in r["per_source_auc"].items()]))
    t = data.get("timing", {})
    out += ["", "## Cost per image (this run, eager torch fp32)", "",
            f"Trace expert: median {t.get('trace_ms_per_image', {}).get('median')} ms, p90 "
            f"{t.get('trace_ms_per_image', {}).get('p90')} ms; content: median "
            f"{t.get('content_ms_per_image', {}).get('median')} ms.", ""]
    trace = data["trace_expert"]
    out += ["## Trace expert", "", f"{trace.get('pairs')} reals with {trace.get('twins')} twins "
            f"({', '.join(k for k, v in (trace.get('twin_makers') or {}).items() if v.get('available'))}"
            f"), {trace.get('epochs')} epochs, {trace.get('crop')} px native crops, stem stride "
            f"{trace.get('stem_stride')}, {trace.get('train_seconds')} s.", ""]
    return "\n".join(out) + "\n"


def write_panel_results(data: dict[str, Any], results_dir: str | Path) -> tuple[Path, Path]:
    data["default"] = choose_default(json_safe(data))   # in place: run_or_render prints the same data
    data = json_safe(data)
    paths = write_results(data, results_dir, "panel", render_panel)
    write_atomic(Path(results_dir) / "panel_release.json",
                 (json.dumps(json_safe(release_entry(data)), indent=2) + "\n").encode())
    return paths

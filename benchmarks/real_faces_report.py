"""The real-faces benchmark's report: ``results/real_faces.md`` from its JSON, and the summary the model card
reads (:data:`fakeface.training.card.REAL_FACES_SUMMARY`). The run itself is :mod:`benchmarks.real_faces`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from benchmarks.pack import MIN_FAMILY_FAKES, is_in_the_wild
from benchmarks.real_faces import TARGETS, lofo_score
from fakeface.evaluation.metrics import json_safe
from fakeface.training.card import REAL_FACES_SUMMARY, format_number, markdown_table
from fakeface.utils.fileio import write_atomic


def _f(value: Any, digits: int = 3) -> str:
    return format_number(value, digits)


def render_real_benchmark(data: dict[str, Any]) -> str:
    env, ds, verdict = data["environment"], data["dataset"], data["verdict"]
    rows = data["rows"]
    families = list(ds["families"])  # the run's families (results written under an older grouping keep theirs)
    lines = [
        "# Real faces benchmark (faces-dev)", "",
        f"Command: `{data['command']}`. Wall time {data['wall_seconds'] / 60:.1f} min"
        f"{'' if data['cache_seconds'] > 60 else ' with the feature cache reused'}; the cache build took "
        f"{sum(data['cache_breakdown_seconds'].values()) / 60:.1f} min (decode {data['cache_breakdown_seconds']['decode']:.0f} s, "
        f"face stage {data['cache_breakdown_seconds']['faces']:.0f} s, features {data['cache_breakdown_seconds']['features']:.0f} s). "
        f"CPU: {env.get('cpu')}, flags {', '.join(env.get('cpu_flags') or [])}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in env.get('load_average') or [])}, at end "
        f"{', '.join(f'{x:.2f}' for x in data['load_average_after'])} (a shared 2-core machine).", "",
        f"Data: {ds['images']} images ({ds['real']} real, {ds['fake']} fake) from `{data['settings']['data_dir']}`; "
        f"face stage: {ds['face_regions']} face regions (at most {data['settings']['max_faces']} judgeable faces "
        f"per image, largest first); {ds['no_face_images']} images with no face found are scored whole "
        f"({', '.join(f'{k} {v}' for k, v in sorted(ds['no_face_by_source'].items())) or 'none'}). "
        f"Face crop: `{json.dumps(data.get('face_crop'))}`.", "",
        "## Targets (judged on the chosen default recipe)", "",
        markdown_table(["target", "goal", "measured", "met"], [
            ["leave-one-family-out AUC, every family (format-neutral test view)", f">= {TARGETS['lofo_auc_min']}",
             ", ".join(f"{k} {_f(v)}" for k, v in verdict["lofo_auc_control"].items()), _yes(verdict["lofo_met"])],
            ["140K pair alone (trained and tested on it), AUC", f">= {TARGETS['pair_140k_auc']}",
             _f(verdict["pair_140k_auc"]), _yes(verdict["pair_140k_met"])],
            ["false positives on in-the-wild reals at the model's threshold", f"<= {TARGETS['in_the_wild_fp_max']}",
             _f(verdict["in_the_wild_fp"]), _yes(verdict["in_the_wild_fp_met"])],
            ["ECE after temperature scaling", f"<= {TARGETS['ece_after_ts_max']}",
             f"{_f(verdict['ece_before_ts'])} -> {_f(verdict['ece_after_ts'])}", _yes(verdict["ece_met"])],
        ]), "",
        f"Default recipe: **{verdict['recipe']}** (best mean leave-one-family-out AUC on the format-neutral test "
        "view, real fold 0 protocol, among recipes a plain timm detector can carry).", "",
        "## Leave one generator family out", "",
        "Train without the family (and without the held-out reals' groups), test on the family's fakes against "
        "held-out reals. `clean`: the test images as they are; `control`: the test images through the same "
        "shortcut control (crop, rescale, JPEG 60-95), so format cannot help. AUC per family.", "",
        markdown_table(
            ["recipe", *[f"{f} clean" for f in families], *[f"{f} control" for f in families], "mean control",
             "min control", "mean control, real fold 0 only"],
            [[n, *[_lofo(r, f, "clean") for f in families], *[_lofo(r, f, "control") for f in families],
              _f(lofo_score(r)[0]), _f(lofo_score(r)[1]), _f(lofo_score(r, key="lofo_fold0")[0])]
             for n, r in rows.items() if "lofo" in r]), "",
        "Probes: every family tested against all reals, each scored by the model that held out its real fold "
        f"({data['settings']['real_folds']} folds). Fine-tunes: one held-out real fold (the CPU budget). The last "
        "column puts every row on the fine-tunes' protocol; the default is chosen on it.", "",
        "## Pooled grouped 5-fold cross-validation (probes) / grouped hold-out (fine-tunes)", "",
        "Every image scored once by a model that never saw its group; AUC and AP over the whole pack, accuracy and "
        "false positives at the model's threshold. The 140K column: trained and tested (grouped 5-fold) on the "
        "format-matched pair stylegan1-140k / ffhq-140k alone.", "",
        markdown_table(
            ["recipe", "test view", "AUC", "AP", "accuracy", "in-the-wild FP", "ECE before TS", "ECE after TS",
             "140K pair AUC (alone)", "s"],
            [[n, view, _f(m["overall"]["auc"]), _f(m["overall"]["ap"]), _f(m["overall"]["accuracy"]),
              _f(m["in_the_wild_fp"]), _f(m["ece_before_ts"]), _f(m["ece_after_ts"]),
              _f(((r.get("pair_140k") or {}).get(view) or {}).get("overall", {}).get("auc")), f"{r['seconds']:.0f}"]
             for n, r in rows.items() for view, m in (r.get("pooled") or r["holdout"]).items()]), "",
    ]
    lines += _per_source_section(data["default_recipe"], rows[data["default_recipe"]], ds)
    lines += _notes(data)
    return "\n".join(lines) + "\n"


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _lofo(row: dict[str, Any], family: str, view: str) -> str:
    return _f(row["lofo"].get(family, {}).get(view, {}).get("overall", {}).get("auc"))


def _per_source_section(name: str, row: dict[str, Any], ds: dict[str, Any]) -> list[str]:
    main = row.get("pooled") or row["holdout"]
    kinds = ds.get("real_kinds") or {}  # absent in results written before real sources had kinds

    def wild(source: str) -> bool:
        return kinds[source] == "in-the-wild" if source in kinds else is_in_the_wild(source)

    m = main["clean"]
    return [
        f"## Per generator and per real source: {name} (clean test view)", "",
        "Per generator: AUC and AP of that generator's fakes against all reals; TPR = share of its fakes "
        "called fake at the model's threshold (fitted on validation at a 5 % target FPR).", "",
        markdown_table(["generator", "fakes", "AUC", "AP", "TPR", "AUC control view"],
                       [[g, v["n_fake"], _f(v["auc"]), _f(v["ap"]), _f(v["tpr"]),
                         _f(main["control"]["per_generator"].get(g, {}).get("auc"))]
                        for g, v in m["per_generator"].items()]), "",
        markdown_table(["real source", "images", "false positives", "FP control view", "in the wild"],
                       [[s, v["n"], _f(v["fp"]), _f(main["control"]["per_real_source"].get(s, {}).get("fp")),
                         "yes" if wild(s) else "no"] for s, v in m["per_real_source"].items()]), "",
    ]


def _notes(data: dict[str, Any]) -> list[str]:
    s = data["settings"]
    return [
        "## Setup", "",
        f"- Probes: standardised features, logistic regression (C = {s['probe_c']}, balanced classes, fixed a priori, "
        "not tuned on the pack), trained on the regions of the training images, each labelled by its image; `final` = "
        "MobileNetV2's pooled 1280-d features (what a timm detector's linear head sees), `multi` = the pooled outputs of "
        "blocks 1-6 instead (696-d, lower-level; a plain timm classifier cannot carry that head). `resize`: region "
        "squashed to 224²; `native`: the centre 224² at native resolution (upscaled only if smaller).",
        f"- Fine-tunes: face-stage regions resized to {s['finetune_size'] + s['finetune_size'] // 8}² and randomly "
        f"cropped to {s['finetune_size']}², flips, half of each batch in the control view; AdamW, one-cycle; at most "
        f"{s['finetune_max_train']} training regions; epochs {s['finetune_epochs']}. These are short baselines "
        "cut to the CPU budget, not tuned recipes; their LOFO uses one held-out real fold per family and their 140K "
        "figure one grouped hold-out fifth of the pair.",
        f"- Thresholds: `choose_thresholds` at target FPR {s['target_fpr']} and `fit_temperature` on a grouped fifth "
        "of the training side; ECE (15 bins) on the test side before and after that temperature.",
        _groups_note(data["dataset"]),
        _family_sizes_note(data["dataset"]),
        "",
    ]


def _groups_note(ds: dict[str, Any]) -> str:
    if "one_group_sources" not in ds:  # results written before faces-dev's third part: that run's rules
        return ("- Groups: sd15-facechain, celebrity-photomaker and people-photos-humanlib are one group each "
                "(recurring identities); each survey prompt (its laion photo and its six fakes) is one group; every "
                "other image is its own.")
    return (f"- Groups: {', '.join(ds['one_group_sources'])} are one group each (recurring identities); LFW photos "
            "one group per person; ILVR samples one group per reference photo (the Obama reference joins "
            "celebrity-facerec's group); each survey prompt (its laion photo and its six fakes) is one group; every "
            "other image is its own.")


def _family_sizes_note(ds: dict[str, Any]) -> str:
    sizes = {f: sum(ds["sources"].get(s, 0) for s in sources) for f, sources in ds["families"].items()}
    small = [f for f, n in sizes.items() if n < MIN_FAMILY_FAKES]
    return (f"- Fakes per family: {', '.join(f'{f} {n}' for f, n in sizes.items())}. "
            + (f"Under {MIN_FAMILY_FAKES} fakes ({', '.join(small)}) an AUC is anecdotal: a few images move it."
               if small else f"Every family has at least {MIN_FAMILY_FAKES}."))


def write_real_benchmark(data: dict[str, Any], results_dir: str | os.PathLike = "results") -> tuple[Path, Path]:
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "real_faces.json", folder / "real_faces.md"
    write_atomic(json_path, (json.dumps(json_safe(data), indent=1) + "\n").encode())
    write_atomic(md_path, render_real_benchmark(data).encode())
    write_card_summary(data)
    return json_path, md_path


def write_card_summary(data: Mapping[str, Any], path: Path = Path(str(REAL_FACES_SUMMARY))) -> Path:
    """The default recipe's real-face figures, shipped as package data for every release's model card."""
    verdict = data["verdict"]
    summary = {
        "recipe": data["default_recipe"], "command": data.get("command"), "images": data["dataset"]["images"],
        "cpu": data["environment"]["cpu"], "targets": data["targets"],
        **{key: verdict[key] for key in ("lofo_auc_control", "pair_140k_auc", "in_the_wild_fp", "ece_before_ts",
                                         "ece_after_ts")},
    }
    write_atomic(path, (json.dumps(json_safe(summary), indent=1) + "\n").encode())
    return path

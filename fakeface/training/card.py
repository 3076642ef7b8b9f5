"""The release's README.md: ``model_card.md`` (a Jinja template) filled with a run's real numbers.

Rendering goes through ``huggingface_hub.ModelCard.from_template``, so the
YAML header (``library_name: timm``, ``pipeline_tag``, datasets, license and a
``model-index`` of the measured metrics) is written by the Hub's own client
and validated by it. Nothing local leaks into the card: datasets given as
folders appear by name only, and no token or path is ever a template value.
"""
from __future__ import annotations

import importlib.resources
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from fakeface.data.preprocess import Preprocessing
from fakeface.modeling.config import FAKEFACE_KEY, VALIDATION_SOURCE, Decision, resolve_detector_config
from fakeface.modeling.detector import read_detector_config
from fakeface.utils.constants import ATTRIBUTE_COLUMNS, LABEL_NAMES, SYNTHETIC_GENERATOR
from fakeface.utils.formatting import format_number, markdown_table  # noqa: F401 - also imported from here
from fakeface.utils.hub import parse_source

# Package data, so an installed fakeface renders cards too; the repository's
# top-level model_card.md is a symlink to this file.
TEMPLATE = importlib.resources.files("fakeface.training") / "templates" / "model_card.md"
# Written by the real-faces benchmark (benchmarks/real_faces.py) from results/real_faces.json: how the
# default recipe generalised on faces-dev, stated in every card so no release overclaims.
REAL_FACES_SUMMARY = importlib.resources.files("fakeface.training") / "templates" / "real_faces_summary.json"
CARD_NAME = "README.md"
LICENSE = "apache-2.0"
PLACEHOLDER_REPO = "ORG/NAME"

# (report key, column title) of the metric columns in every table.
_METRIC_COLUMNS = (
    ("roc_auc", "ROC-AUC"), ("average_precision", "AP"), ("accuracy", "accuracy"), ("f1", "F1"),
    ("tpr", "fakes caught"), ("fpr", "reals called fake"), ("ece", "ECE"),
)
# Metrics published in the model-index (type, display name).
_INDEX_METRICS = (("roc_auc", "ROC-AUC"), ("average_precision", "Average precision"),
                  ("accuracy", "Accuracy"), ("f1", "F1"), ("ece", "Expected calibration error"))


def describe_dataset(dataset: Any) -> tuple[str, str | None]:
    """(publishable name, Hub id or None) of a dataset source: a local folder appears by name, never by path."""
    if not isinstance(dataset, (str, os.PathLike)):
        return "in-memory dataset", None
    try:
        source = parse_source(dataset, what="dataset")
    except ValueError:
        return Path(os.fspath(dataset)).name or "unnamed dataset", None
    if source.kind == "local":
        return f"local folder '{Path(source.location).name}'", None
    return source.location, source.location


def _metric_row(name: str, metrics: Mapping[str, Any]) -> list[Any]:
    return [name, metrics.get("n_group", metrics.get("n"))] + [metrics.get(key) for key, _ in _METRIC_COLUMNS]


def _metric_headers(first: str) -> list[str]:
    return [first, "n"] + [title for _, title in _METRIC_COLUMNS]


def build_card_tables(report: Mapping[str, Any]) -> dict[str, str]:
    """The evaluation tables of an ``evaluate_detector`` report, as Markdown."""
    tables = {
        "overall_table": markdown_table(
            _metric_headers("threshold"),
            [_metric_row(f"calibrated ({format_number(report['overall']['threshold'], 3)})", report["overall"]),
             _metric_row("0.5", report.get("overall_at_0.5") or {})],
        ),
        "generator_table": markdown_table(
            _metric_headers("generator / source"),
            [_metric_row(name, m) for name, m in (report.get("per_generator") or {}).items()],
        ) if report.get("per_generator") else "_The dataset has no generator column._",
        "robustness_table": markdown_table(
            ["condition", "description", "n", "ROC-AUC", "AP", "accuracy", "fakes caught", "reals called fake", "ECE"],
            [[r["condition"], r["description"], r.get("n"), r.get("roc_auc"), r.get("average_precision"),
              r.get("accuracy"), r.get("tpr"), r.get("fpr"), r.get("ece")] for r in report.get("robustness") or []],
        ) if report.get("robustness") else "_Not run._",
    }
    attribute_parts = []
    for attribute in ATTRIBUTE_COLUMNS:
        groups = (report.get("per_attribute") or {}).get(attribute)
        if groups:
            attribute_parts.append(f"**{attribute}**\n\n" + markdown_table(
                _metric_headers(attribute), [_metric_row(v, m) for v, m in groups.items()]))
    tables["attribute_tables"] = "\n\n".join(attribute_parts) or "_The dataset has no attribute annotations._"
    return tables


def build_card_data(*, model_name: str, report: Mapping[str, Any], dataset_id: str | None,
                    dataset_name: str, tags: Sequence[str] = ()) -> Any:
    """YAML metadata with a model-index of the measured test metrics (clean and per robustness condition)."""
    from huggingface_hub import EvalResult, ModelCardData

    dataset_type = dataset_id or dataset_name
    common = dict(task_type="image-classification", task_name="Real vs AI-generated face detection",
                  dataset_type=dataset_type, dataset_name=dataset_name, dataset_split="test")
    results = []
    for key, title in _INDEX_METRICS:
        value = report["overall"].get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            results.append(EvalResult(metric_type=key, metric_name=title, metric_value=round(float(value), 6), **common))
    for row in report.get("robustness") or []:
        value = row.get("roc_auc")
        if row["condition"] != "clean" and isinstance(value, (int, float)) and math.isfinite(value):
            results.append(EvalResult(metric_type="roc_auc", metric_name=f"ROC-AUC ({row['description']})",
                                      metric_config=row["condition"], metric_value=round(float(value), 6), **common))
    return ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        license=LICENSE,
        datasets=[dataset_id] if dataset_id else None,
        tags=["image-classification", "timm", "fakeface", "deepfake-detection", *tags],
        model_name=model_name,
        eval_results=results or None,
    )


def _join(names: Sequence[str]) -> str:
    names = [f"`{n}`" for n in names]
    if not names:
        return "unrecorded sources"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def render_model_card(*, report: Mapping[str, Any], config: Any, recipe: Any, release_config: Mapping[str, Any],
                      plots: Mapping[str, str] | None = None, template_path: str | Path | None = None) -> str:
    """The README.md text of a release (see ``model_card.md`` for the layout).

    ``release_config`` is the release's ``config.json``: its decision and preprocessing
    are resolved by :func:`resolve_detector_config`, the training facts read from its block.
    """
    from huggingface_hub import ModelCard

    detector_config = resolve_detector_config(release_config)
    facts = release_config.get(FAKEFACE_KEY) or {}   # release facts: trained_on, init, ...
    scope = facts.get("trained_on") or {}
    fakes = scope.get("fake_generators") or []
    synthetic = SYNTHETIC_GENERATOR in fakes or bool(facts.get("synthetic_training_data"))
    dataset_name, dataset_id = describe_dataset(config.dataset)
    repo_id = config.push_to_hub or PLACEHOLDER_REPO
    model_name = repo_id.split("/")[-1] if config.push_to_hub else f"fakeface-{config.model}-{recipe.name}"
    values = dict(
        model_name=model_name, repo_id=repo_id, architecture=config.model,
        recipe_name=recipe.name, recipe_description=recipe.description, synthetic=synthetic,
        dataset_name=dataset_name, plots=dict(plots or {}), labels=", ".join(LABEL_NAMES),
        **_data_section(report, scope),
        **_decision_section(report, detector_config.decision, config),
        **_training_section(report, config, recipe, detector_config.preprocessing, facts),
        fast_path_section=fast_path_section(report.get("fast_path")),
        real_faces_section=real_faces_section(facts.get("recipe") or recipe.name, config.model),
        notes_section=_notes_section((report.get("training") or {}).get("notes")),
        **build_card_tables(report),
    )
    card_data = build_card_data(model_name=model_name, report=report, dataset_id=dataset_id,
                                dataset_name=dataset_name, tags=["synthetic-data"] if synthetic else ())
    template = Path(template_path).read_text(encoding="utf-8") if template_path else TEMPLATE.read_text(encoding="utf-8")
    return str(ModelCard.from_template(card_data, template_str=template, **values))


def _data_section(report: Mapping[str, Any], scope: Mapping[str, Any]) -> dict[str, Any]:
    """What the model was trained and tested on."""
    overall, splits = report["overall"], (report.get("training") or {}).get("splits") or {}
    return dict(
        fake_generators=_join(scope.get("fake_generators") or []), real_sources=_join(scope.get("real_sources") or []),
        n_test=overall.get("n"), n_test_real=overall.get("n_real"), n_test_fake=overall.get("n_fake"),
        n_train=splits.get("train"), n_validation=splits.get("validation"),
    )


def _decision_section(report: Mapping[str, Any], decision: Decision, config: Any) -> dict[str, Any]:
    """The calibrated decision and what calibration measured on validation (at the final band when recorded)."""
    calibration = (report.get("validation") or {}).get("calibration") or {}
    # "abstention": the final band's rates; older reports only have the target-FPR choice's.
    rates = calibration.get("abstention") or calibration.get("thresholds") or {}
    return dict(
        threshold_fake=format_number(decision.threshold_fake, 4),
        target_fpr_pct=f"{100 * float(decision.target_fpr or config.target_fpr):g} %",
        verdict_summary=", ".join(f"{v} {k}" for k, v in (report.get("verdicts") or {}).items()),
        abstention_text=abstention_text(decision),
        calibration_table=markdown_table(["setting", "value"], [
            ["temperature", decision.temperature],
            ["threshold_fake (p ≥ → fake)", decision.threshold_fake],
            ["threshold_real (p < → real)", decision.threshold_real],
            ["target false-positive rate", decision.target_fpr],
            ["validation FPR at threshold_fake", rates.get("false_positive_rate", rates.get("fpr_at_threshold"))],
            ["validation share of fakes caught", rates.get("fakes_caught", rates.get("tpr_at_threshold"))],
            ["validation share uncertain", rates.get("uncertain_fraction")],
            ["validation ECE before → after", f"{format_number(calibration.get('validation_ece_before'))} → "
                                              f"{format_number(calibration.get('validation_ece_after'))}"],
        ]),
    )


def _pct(value: float) -> str:
    return f"{100 * float(value):.1f} %"


def abstention_text(decision: Decision) -> str:
    """The card's plain-words account of the uncertain band: where it was chosen, its confident errors, its coverage."""
    lo, hi = format_number(decision.threshold_real, 3), format_number(decision.threshold_fake, 3)
    parts = [f"For p(fake) from {lo} up to {hi} the model answers `uncertain` instead of guessing; below {lo} it says "
             f"`real`, from {hi} up `fake`, so a verdict never contradicts p(fake) 0.5."]
    if decision.band_source is None or decision.confidently_wrong is None or decision.coverage is None:
        parts.append("How often this band's confident verdicts are wrong was not measured for this release "
                     "(it was calibrated before that measurement existed).")
    else:
        target = decision.band_target
        parts.append(
            f"The band was chosen on {decision.band_source}"
            + (f" for at most {_pct(target)} confidently wrong" if target is not None else "") + ". "
            f"There, **{_pct(decision.confidently_wrong)} of the images got a confident wrong verdict** (fakes called "
            f"real plus reals called fake, out of all images) and **{_pct(decision.coverage)} got a confident verdict "
            f"at all** (coverage); the other {_pct(1 - decision.coverage)} were `uncertain`.")
        if target is not None and decision.confidently_wrong > target + 1e-12:
            parts.append(f"**The target was missed:** no band brought confident mistakes down to {_pct(target)}.")
        if decision.band_source == VALIDATION_SOURCE:
            parts.append("The validation split holds the generators seen in training, so on generators it never saw "
                         "expect more confident mistakes than this.")
    if decision.threshold_note:
        parts.append(f"Note: {decision.threshold_note}.")
    return " ".join(parts)


def _training_section(report: Mapping[str, Any], config: Any, recipe: Any, pp: Preprocessing,
                      facts: Mapping[str, Any]) -> dict[str, Any]:
    """How the run went: initialisation, schedule, per-epoch validation, the chosen epoch, speed."""
    training, validation = report.get("training") or {}, report.get("validation") or {}
    history = validation.get("history") or []
    if facts.get("init") not in (None, "random"):
        init = f"pretrained initialisation ({facts['init']})"
    elif config.pretrained or config.pretrained_path:
        init = "ImageNet-pretrained initialisation"
    else:
        init = "trained from random initialisation (no pretrained weights)"
    return dict(
        validation_table=markdown_table(
            ["epoch", "step", "val ROC-AUC", "selection AUC", "val AP", "val accuracy", "val NLL", "val ECE"],
            [[h.get("epoch", 0) + 1, h.get("step"), h.get("roc_auc"), h.get("selection_auc", h.get("roc_auc")),
              h.get("average_precision"), h.get("accuracy"), h.get("nll"), h.get("ece")] for h in history],
        ) if history else "",
        input_size=config.resolved_input_size(), crop_protocol=pp.crop_protocol, num_test_crops=pp.num_test_crops,
        standard_crop="squash resize" if pp.crop_protocol == "resize" else "centre crop",
        init=init, epochs=config.epochs, steps=history[-1]["step"] if history else 0,
        batch_size=config.batch_size, lr=format_number(config.lr or recipe.lr, 6),
        mixed_precision=config.mixed_precision, seed=config.seed,
        best_epoch=validation.get("best_epoch"), best_auc=format_number(validation.get("best_auc")),
        selected_on=", ".join(getattr(recipe, "select_on", ("clean",))),
        images_per_second=format_number((training.get("throughput") or {}).get("images_per_second"), 1),
    )


def fast_path_section(fast: Any) -> str:
    if not isinstance(fast, Mapping) or "error" in fast:
        return ""
    rows = [[k, v] for k, v in fast.items() if not isinstance(v, (dict, list))]
    if fast.get("precision") == "fp32":
        tried = "; ".join(f"input conv {t.get('input_conv')}: AUC drop {format_number(t.get('auc_drop'), 4)}"
                          for t in fast.get("attempts") or [] if t.get("input_conv") != "graph")
        intro = ("The exported fp32 ONNX graph ships beside the safetensors: it serves without torch, and scores "
                 "as the torch model does. int8 was not shipped because it " +
                 (f"lost more AUC than the budget ({tried})" if tried else "could not be measured (no labels)")
                 + ". Measured on the test split against the torch model:")
        return f"\n## Fast path (fp32 ONNX)\n\n{intro}\n\n" + markdown_table(["measure", "value"], rows) + "\n"
    return ("\n## Fast path (int8 ONNX)\n\nAn int8 ONNX export ships beside the safetensors for fast CPU "
            "serving; its accuracy cost, measured on the test split against the fp32 model:\n\n"
            + markdown_table(["measure", "value"], rows) + "\n")


def real_faces_section(recipe_name: str, architecture: str, summary_path: Any = REAL_FACES_SUMMARY) -> str:
    """What the real-faces benchmark measured for the default recipe, and whether this release is that recipe."""
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    targets, lofo = summary["targets"], summary["lofo_auc_control"]
    same = summary["recipe"].split("/")[0] == recipe_name and architecture in summary["recipe"]
    rows = [
        ["leave-one-family-out AUC (" + ", ".join(lofo) + ")", " / ".join(format_number(v, 2) for v in lofo.values()),
         f">= {targets['lofo_auc_min']}"],
        ["StyleGAN1 vs FFHQ, format-matched 140K pair, AUC", format_number(summary["pair_140k_auc"], 2),
         f">= {targets['pair_140k_auc']}"],
        ["false positives on in-the-wild real photos", format_number(summary["in_the_wild_fp"], 3),
         f"<= {targets['in_the_wild_fp_max']}"],
        ["ECE before -> after temperature scaling",
         f"{format_number(summary['ece_before_ts'], 3)} -> {format_number(summary['ece_after_ts'], 3)}",
         f"<= {targets['ece_after_ts_max']}"],
    ]
    for family, entry in (summary.get("confidently_wrong") or {}).items():
        rows.append([f"confidently wrong with {family} held out (coverage)",
                     f"{format_number(entry['rate'], 3)} ({format_number(entry['coverage'], 2)})", "<= 0.05 (>= 0.5)"])
    which = ("This release was trained with that recipe." if same else
             f"This release (`{recipe_name}`, `{architecture}`) is not that recipe; its real-face behaviour is unmeasured.")
    return ("\n## On real faces (the faces-dev benchmark)\n\n"
            f"The default recipe `{summary['recipe']}` was measured on {summary['images']} real and generated faces "
            "(faces-dev), each generator family held out of training in turn and tested on photos through a "
            "format-neutral control (`make real-benchmark`, "
            f"{summary.get('benchmark', 'results/real_faces.md')}). " + which + "\n\n"
            + markdown_table(["measure", "measured", "target"], rows)
            + "\n\nConfidently wrong: the share of a held-out family's test faces given a confident wrong verdict, "
            "with the uncertain band chosen on the other families only; coverage: the share given a confident "
            "verdict at all. It does not yet generalise to generator families it has not seen: treat a verdict as "
            "one piece of evidence, not proof.\n")


def _notes_section(notes: Sequence[str] | None) -> str:
    notes = list(notes or [])
    return ("\n**Notes.**\n\n" + "\n".join(f"- {n}" for n in notes) + "\n") if notes else ""


def write_model_card(output_dir: str | Path, *, report: Mapping[str, Any], config: Any, recipe: Any,
                     plots: Mapping[str, str] | None = None, template_path: str | Path | None = None) -> Path:
    """Render the card from the saved release's own settings and write ``output_dir/README.md``."""
    text = render_model_card(report=report, config=config, recipe=recipe,
                             release_config=read_detector_config(output_dir), plots=plots, template_path=template_path)
    path = Path(output_dir) / CARD_NAME
    path.write_text(text, encoding="utf-8")
    return path

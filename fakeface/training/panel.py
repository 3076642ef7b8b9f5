"""Turn a trained content release into a panel release: add the trace expert, the fitted fusion and the decision
the panel benchmark measured on generator families none of the experts saw.

``scripts/build_panel.py`` is the entry point; ``make release`` runs it after ``train.py`` and the panel
benchmark. The fusion's weights, each expert's temperature and the uncertain band come from
``results/panel_release.json`` (written by ``scripts/panel_benchmark.py`` from out-of-family scores), never from
the release's own validation split, which holds the generators the content expert trained on.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

from fakeface.evaluation.abstention import AbstentionBand
from fakeface.modeling.config import FAKEFACE_KEY, Decision
from fakeface.modeling.panel import EXPERTS_DIR, EXPERT_KINDS, ExpertSpec, Fusion, PanelSpec, write_panel

logger = logging.getLogger(__name__)

__all__ = ["PanelEntryError", "build_panel_release", "build_validation_panel", "pair_images", "panel_card_section", "read_panel_entry"]

_SKIP = shutil.ignore_patterns("checkpoints", "state", ".*")


class PanelEntryError(ValueError):
    """``panel_release.json`` is missing, unreadable or names a default this builder cannot make."""

    def __init__(self, path: str, problem: str, fix: str):
        super().__init__(f"{path}: {problem}. {fix}")
        self.path, self.problem, self.fix = path, problem, fix


def read_panel_entry(path: str | Path) -> dict[str, Any]:
    try:
        entry = json.loads(Path(path).read_text())
        Fusion.from_cfg(entry["fusion"])
        AbstentionBand.from_dict(entry["band"])
        float(entry["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PanelEntryError(str(path), f"not a panel entry ({type(error).__name__}: {error})",
                              "Run scripts/panel_benchmark.py, which writes it") from error
    return entry


def _decision(entry: Mapping[str, Any]) -> Decision:
    band = AbstentionBand.from_dict(entry["band"])
    return Decision(temperature=float(entry["temperature"]), calibrated=True, **band.decision_fields())


def build_panel_release(content_dir: str | Path, trace_dir: str | Path | Any, entry_path: str | Path | dict,
                        output_dir: str | Path, *, fast_path_images: tuple[list, list, Any] | None = None) -> Path:
    """Copy the content release to ``output_dir`` and make it a panel (content + trace, fitted fusion).

    ``fast_path_images`` (calibration images, held-out images, their labels): also export the trace expert's int8
    graph, which serves only where its AUC cost on those images is within budget and its reference check passes.
    """
    from fakeface.modeling.detector import load_detector

    entry = dict(entry_path) if isinstance(entry_path, dict) else read_panel_entry(entry_path)
    content_dir, output_dir = Path(content_dir), Path(output_dir)
    if output_dir.resolve() != content_dir.resolve():
        if output_dir.exists():
            shutil.rmtree(output_dir)
        shutil.copytree(content_dir, output_dir, ignore=_SKIP)
    trace_model = load_detector(trace_dir) if isinstance(trace_dir, (str, Path)) else trace_dir
    temps = entry["expert_temperatures"]
    content_facts = json.loads((content_dir / "config.json").read_text()).get(FAKEFACE_KEY, {})
    spec = PanelSpec(
        experts=(ExpertSpec("content", "content", None, float(temps["content"]),
                            facts={"recipe": content_facts.get("recipe"), "trained_on": content_facts.get("trained_on")}),
                 ExpertSpec("trace", "trace", f"{EXPERTS_DIR}/trace", float(temps["trace"]),
                            facts=dict(entry.get("trace_expert") or {}))),
        fusion=Fusion.from_cfg(entry["fusion"]))
    write_panel(output_dir, spec, {"trace": trace_model}, _decision(entry))
    if fast_path_images is not None:
        from fakeface.training.release import export_release_fast_path

        report = export_release_fast_path(trace_model, output_dir / f"{EXPERTS_DIR}/trace", *fast_path_images)
        logger.info("trace expert int8 graph: %s", {k: (report or {}).get(k) for k in ("within_budget", "auc_drop")})
    card = output_dir / "README.md"
    if card.is_file():
        card.write_text(card.read_text() + "\n" + panel_card_section(
            spec, None if isinstance(entry_path, dict) else entry_path))
    logger.info("panel release written to %s (fusion weights %s)", output_dir, spec.fusion.weights)
    return output_dir


def panel_card_section(spec: PanelSpec, entry_path: str | Path | None) -> str:
    """The model card's panel section: every expert, what it sees and cannot see, and the measured figures."""
    results = None if entry_path is None else Path(entry_path).with_name("panel.json")
    data = json.loads(results.read_text()) if results is not None and results.is_file() else None
    lines = ["## A panel of experts", "",
             "This release judges each face with several experts and one fitted fusion "
             "(fakeface.modeling.panel); the app, the API, batch CSVs and scans show each expert's p(fake) and the "
             "sentence on which evidence decided the verdict.", ""]
    for expert, weight in zip(spec.experts, spec.fusion.weights):
        words = EXPERT_KINDS[expert.kind]
        lines += [f"- **{expert.name}** ({expert.kind}; fusion weight {weight:.2f} on its standardised margin): "
                  f"reads {words['sees']}. Cannot see: {words['misses']}."]
    lines += ["", f"Fusion fitted on {spec.fusion.source}. The uncertain band and temperature were chosen on "
              "fused scores of held-out generator families (results/panel.md).", ""]
    if data is None:
        return "\n".join(lines + ["No per-family figures: this panel was not fitted by the panel benchmark "
                                   "(results/panel.json). Its fusion and band come from the source named above.", ""])
    lines += ["| held-out family | " + " | ".join(f"AUC {s}" for s in ("content", "trace", "fusion"))
              + " | fusion right when confident | coverage |", "|---" * 6 + "|"]
    for family, r in data["results"]["fusion"].items():
        aucs = [data["results"][s][family]["auc"]["clean"] for s in ("content", "trace", "fusion")]
        right = r.get("right_when_confident")
        lines.append(f"| {family} | " + " | ".join("—" if a is None else f"{a:.3f}" for a in aucs)
                     + f" | {'—' if right is None else f'{100 * right:.1f} %'} | {100 * r['coverage']:.1f} % |")
    return "\n".join(lines + [""])


def pair_images(windows_dir: str | Path, n: int = 96, seed: int = 0) -> tuple[list, list, Any] | None:
    """Real face windows and their re-upsampled twins, for the trace expert's int8 calibration (the first 32
    pairs) and its AUC check (the rest); None when the folder has too few windows."""
    import random

    import numpy as np
    from PIL import Image

    from fakeface.data.twins import RESAMPLE_KERNELS, ResampleMaker

    files = sorted(p for p in Path(windows_dir).glob("*") if p.suffix in (".png", ".jpg"))
    random.Random(seed).shuffle(files)
    if len(files) < 48:
        logger.warning("%s has %d windows (< 48): no int8 graph for the trace expert", windows_dir, len(files))
        return None
    reals = []
    for path in files[:n]:
        with Image.open(path) as image:
            reals.append(image.convert("RGB"))
    makers = [ResampleMaker(k) for k in RESAMPLE_KERNELS]
    twins = [makers[k % len(makers)].make(r) for k, r in enumerate(reals)]
    calibration = reals[:32] + twins[:32]
    holdout = reals[32:] + twins[32:]
    return calibration, holdout, np.array([0] * (len(reals) - 32) + [1] * (len(twins) - 32))


def _windows(images: list, side: int = 256) -> list:
    out = []
    for image in images:
        w, h = image.size
        s = min(side, w, h)
        out.append(image.convert("RGB").crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)))
    return out


def build_validation_panel(content_dir: str | Path, dataset: str, output_dir: str | Path, *,
                           settings: Any = None) -> Path:
    """A panel fitted on the dataset's own validation split, for data without generator families to hold out (the
    demo's synthetic set, a user's folders): the trace expert trains on the train split's reals and their
    re-upsampled twins; the fusion, the temperatures and the band (confident verdicts right >= 95 %) are fitted on
    validation scores, and the release says so (generators seen in training: expect worse on new ones)."""
    import numpy as np

    from fakeface.data.dataset import load_face_dataset
    from fakeface.data.twins import RESAMPLE_KERNELS, ResampleMaker
    from fakeface.evaluation.abstention import choose_confident_band
    from fakeface.evaluation.calibration import fit_temperature
    from fakeface.evaluation.metrics import decode_split
    from fakeface.modeling.config import VALIDATION_SOURCE
    from fakeface.modeling.detector import load_detector
    from fakeface.modeling.inference import Detector
    from fakeface.modeling.panel import fit_fusion
    from fakeface.modeling.config import resolve_detector_config
    from fakeface.training.face_data import crop_split_to_faces
    from fakeface.training.traces import TracePair, TraceSettings, train_trace_expert

    settings = settings or TraceSettings(epochs=2)
    splits = load_face_dataset(dataset)
    content = load_detector(content_dir)
    face_crop = resolve_detector_config(content).face_crop
    if face_crop is not None:   # fitted on what the app scores: each photo's face crop (the whole photo if none)
        splits = {name: crop_split_to_faces(splits[name], face_crop) for name in ("train", "validation")}
    images, labels, _ = decode_split(splits["train"])
    makers = [ResampleMaker(k) for k in RESAMPLE_KERNELS]
    pairs = [TracePair(w, [m.make(w) for m in makers]) for w in _windows([im for im, y in zip(images, labels) if y == 0])]
    trace_model, facts = train_trace_expert(pairs, settings, log=logger.info)
    val_images, y, _ = decode_split(splits["validation"])
    margins = np.column_stack([np.diff(Detector(m).score_batches(val_images).logits, axis=1)[:, 0]
                               for m in (content, trace_model)])
    fusion = fit_fusion(margins, y, ("content", "trace"), source=VALIDATION_SOURCE)
    fused = fusion.margin(margins)
    temperature = fit_temperature(np.stack([np.zeros_like(fused), fused], 1), y)
    band = choose_confident_band(y, 1 / (1 + np.exp(-fused / temperature)), 0.95, source=VALIDATION_SOURCE)
    entry = {"fusion": fusion.to_cfg(), "temperature": temperature, "band": band.to_dict(), "trace_expert": facts,
             "expert_temperatures": {name: fit_temperature(np.stack([np.zeros(len(y)), margins[:, k]], 1), y)
                                     for k, name in enumerate(("content", "trace"))}}
    # The trace expert's graph: calibrated on train photos, its AUC cost measured on the validation split it was
    # fitted on (what it will score), so the demo's panel also serves without torch.
    return build_panel_release(content_dir, trace_model, entry, output_dir,
                               fast_path_images=(images[:64], val_images, np.asarray(y)))

"""A panel of experts in one release, fused into one verdict, and the sentence that says which evidence spoke.

A release's own timm model is its **content** expert (face content, as trained on real and generated faces). A
panel release also carries **trace** experts in ``experts/<name>/`` (each a release folder of its own: weights,
preprocessing, version), trained on real faces and their self-made twins only, so they read the pixel traces of
decoders and upsamplers rather than the content of the generated faces they saw. The ``panel`` entry of the
release's ``fakeface`` block lists the experts and the :class:`Fusion`: a monotone logistic regression on their
logit margins (non-negative weights: an expert that says "more fake" can never push the verdict towards real),
fitted on out-of-family scores by the panel benchmark. The release's decision (temperature, uncertain band)
applies to the fused margin.

:func:`release_scorer` is the one function that turns a loaded release into what scores photos (app, batch,
scans, evaluation): the panel when the release has one, else its single model; both answer
``score(images) -> Scores`` and ``logits(images)``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fakeface.modeling.config import FAKEFACE_KEY, Decision, resolve_detector_config

__all__ = [
    "EXPERT_KINDS", "PANEL_KEY", "ExpertSpec", "Fusion", "PanelError", "PanelScorer", "PanelSpec",
    "evidence_sentence", "fit_fusion", "panel_spec", "release_scorer", "write_panel",
]

PANEL_KEY = "panel"
EXPERTS_DIR = "experts"

# What each kind of expert reads, in the words the verdict's sentence and the model card use.
EXPERT_KINDS: dict[str, dict[str, str]] = {
    "content": {
        "sees": "face content (shape, skin, hair, lighting) as learned from real and generated faces",
        "misses": "generators whose faces look unlike those it was trained on; it reads little outside its sources",
        "fake": "face content unlike the real faces it learned",
        "real": "face content like the real faces it learned",
    },
    "trace": {
        "sees": "pixel traces of decoders and upsamplers (latent-diffusion VAEs, GAN and re-upsampling kernels), "
                "learned from real faces and their self-made twins only",
        "misses": "GAN faces and closed services whose last layers leave no decoder-like trace; traces fade under "
                  "heavy recompression and resizing",
        "fake": "pixel traces like a generator's decoder or upsampler",
        "real": "pixels without a decoder's or upsampler's traces",
    },
}


class PanelError(ValueError):
    """A panel entry that cannot be used: an expert's folder missing, or a fusion that does not fit the experts."""

    def __init__(self, problem: str, fix: str, expert: str | None = None):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix, self.expert = problem, fix, expert


@dataclass(frozen=True)
class ExpertSpec:
    """One expert of the panel: its name, kind, where its weights are, and its own calibration."""

    name: str
    kind: str                      # "content" | "trace"
    folder: str | None = None      # relative to the release; None: the release's own model
    temperature: float = 1.0       # p(fake) of this expert alone = sigmoid(margin / temperature)
    version: str = "1"
    facts: dict[str, Any] = field(default_factory=dict)   # how it was trained (recipe, data, epochs)

    def __post_init__(self) -> None:
        if self.kind not in EXPERT_KINDS:
            raise ValueError(f"expert kind must be one of {tuple(EXPERT_KINDS)}, got {self.kind!r}")
        if not self.temperature > 0:
            raise ValueError(f"expert temperature must be > 0, got {self.temperature}")

    @property
    def words(self) -> Mapping[str, str]:
        return EXPERT_KINDS[self.kind]

    def p_fake(self, margin: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.asarray(margin, np.float64) / self.temperature))


@dataclass(frozen=True)
class Fusion:
    """fused margin = intercept + sum_e weight_e * margin_e / scale_e, every weight >= 0 (monotone)."""

    experts: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    scales: tuple[float, ...]
    source: str = ""               # where it was fitted, in words

    def __post_init__(self) -> None:
        if not len(self.experts) == len(self.weights) == len(self.scales):
            raise ValueError("fusion experts, weights and scales must have the same length")
        if any(w < 0 for w in self.weights) or any(s <= 0 for s in self.scales):
            raise ValueError("fusion weights must be >= 0 and scales > 0 (a monotone fusion)")

    def contributions(self, margins: np.ndarray) -> np.ndarray:
        """(N, E) expert margins -> (N, E) terms of the fused margin."""
        return np.asarray(margins, np.float64) / np.asarray(self.scales) * np.asarray(self.weights)

    def margin(self, margins: np.ndarray) -> np.ndarray:
        return self.intercept + self.contributions(margins).sum(axis=1)

    def to_cfg(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_cfg(cls, block: Mapping[str, Any]) -> "Fusion":
        return cls(tuple(block["experts"]), tuple(float(w) for w in block["weights"]), float(block["intercept"]),
                   tuple(float(s) for s in block["scales"]), str(block.get("source", "")))


def fit_fusion(margins: np.ndarray, y: np.ndarray, experts: Sequence[str], *, l2: float = 1.0,
               source: str = "") -> Fusion:
    """Logistic regression on standardised margins with non-negative weights (L-BFGS-B), classes balanced.

    Scales are the margins' standard deviations, so ``l2`` treats every expert alike whatever its logit range.
    """
    from scipy.optimize import minimize

    z = np.asarray(margins, np.float64)
    y = np.asarray(y, np.float64)
    scales = np.maximum(z.std(axis=0), 1e-6)
    x = z / scales
    w_class = np.where(y == 1, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        t = theta[0] + x @ theta[1:]
        p = 1 / (1 + np.exp(-t))
        nll = w_class * (np.logaddexp(0, t) - y * t)
        grad_t = w_class * (p - y)
        n = len(y)
        value = nll.sum() / n + 0.5 * l2 * (theta[1:] ** 2).sum() / n
        grad = np.r_[grad_t.sum(), x.T @ grad_t + l2 * theta[1:]] / n
        return float(value), grad

    bounds = [(None, None)] + [(0.0, None)] * x.shape[1]
    result = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    theta = result.x
    return Fusion(tuple(experts), tuple(float(v) for v in theta[1:]), float(theta[0]),
                  tuple(float(s) for s in scales), source)


@dataclass(frozen=True)
class PanelSpec:
    experts: tuple[ExpertSpec, ...]
    fusion: Fusion

    def __post_init__(self) -> None:
        names = [e.name for e in self.experts]
        if tuple(names) != self.fusion.experts:
            raise ValueError(f"the fusion's experts {self.fusion.experts} are not the panel's {tuple(names)}")
        if [e.folder for e in self.experts].count(None) != 1:
            raise ValueError("exactly one expert is the release's own model (folder None)")

    def to_cfg(self) -> dict[str, Any]:
        return {"experts": [asdict(e) for e in self.experts], "fusion": self.fusion.to_cfg()}

    @classmethod
    def from_cfg(cls, block: Mapping[str, Any]) -> "PanelSpec":
        experts = tuple(ExpertSpec(**{k: v for k, v in e.items() if k in ExpertSpec.__dataclass_fields__})
                        for e in block["experts"])
        return cls(experts, Fusion.from_cfg(block["fusion"]))


def panel_spec(model_or_cfg: Any) -> PanelSpec | None:
    """The release's panel, or None for a single-model release."""
    if isinstance(model_or_cfg, Mapping):
        block = model_or_cfg.get(FAKEFACE_KEY) or {}
    else:
        block = (getattr(model_or_cfg, "pretrained_cfg", None) or {}).get(FAKEFACE_KEY) or {}
    raw = block.get(PANEL_KEY)
    return None if not raw else PanelSpec.from_cfg(raw)


# --------------------------------------------------------------------------- the sentence

def evidence_sentence(spec: PanelSpec, margins: np.ndarray, verdict: str) -> str:
    """One plain sentence on what decided one verdict, from one row of expert margins."""
    terms = spec.fusion.contributions(np.asarray(margins, np.float64)[None])[0]
    p = {e.name: float(e.p_fake(m)) for e, m in zip(spec.experts, margins)}

    def named(e: ExpertSpec, side: str) -> str:
        return f"{e.words[side]} ({e.name} expert, p(fake) {p[e.name]:.2f})"

    if verdict in ("fake", "real"):
        pick = int(np.argmax(terms)) if verdict == "fake" else int(np.argmin(terms))
        return f"Decided by {named(spec.experts[pick], verdict)}."
    fake_side = [e for e in spec.experts if p[e.name] >= 0.5]
    real_side = [e for e in spec.experts if p[e.name] < 0.5]
    if fake_side and real_side:
        return (f"The experts disagree: {'; '.join(named(e, 'fake') for e in fake_side)}, but "
                f"{'; '.join(named(e, 'real') for e in real_side)}.")
    return "No expert's evidence was strong enough for a confident verdict."


# --------------------------------------------------------------------------- scoring

class PanelScorer:
    """Every expert scores the same crops; the fusion and the release's decision give one verdict per crop."""

    def __init__(self, spec: PanelSpec, scorers: Mapping[str, Any], decision: Decision):
        missing = [e.name for e in spec.experts if e.name not in scorers]
        if missing:
            raise PanelError(f"no scorer for experts {missing}", "load every expert of the panel")
        self.spec, self.scorers, self.decision = spec, dict(scorers), decision

    @property
    def runtime(self) -> str:
        return "panel: " + ", ".join(f"{e.name} {getattr(self.scorers[e.name], 'runtime', 'torch-fp32')}"
                                     for e in self.spec.experts)

    def margins(self, images: Sequence[Any]) -> np.ndarray:
        """(N, E) logit margins (fake minus real), each expert with its own preprocessing."""
        cols = []
        for e in self.spec.experts:
            logits = np.asarray(self.scorers[e.name].logits(images), np.float64)
            cols.append(logits[:, 1] - logits[:, 0])
        return np.stack(cols, axis=1) if cols else np.zeros((len(images), 0))

    def logits(self, images: Sequence[Any]) -> np.ndarray:
        fused = self.spec.fusion.margin(self.margins(images))
        return np.stack([np.zeros_like(fused), fused], axis=1).astype(np.float32)

    def score(self, images: Sequence[Any]):
        from fakeface.modeling.inference import Scores

        margins = self.margins(images)
        fused = self.spec.fusion.margin(margins)
        logits = np.stack([np.zeros_like(fused), fused], axis=1)
        p_fake = self.decision.p_fake(logits)
        verdicts = [self.decision.verdict(float(p)) for p in p_fake]
        experts = {e.name: e.p_fake(margins[:, k]).astype(np.float32) for k, e in enumerate(self.spec.experts)}
        evidence = [evidence_sentence(self.spec, margins[i], v) for i, v in enumerate(verdicts)]
        return Scores(logits.astype(np.float32), p_fake, verdicts, experts=experts, evidence=evidence)


def _release_folder(model: Any) -> Path | None:
    files = getattr(model, "fakeface_files", None)
    return None if files is None else Path(files.folder)


def release_scorer(model: Any, own_scorer: Any = None, *, use_fast_path: bool = True) -> Any:
    """What scores photos for a loaded release: its panel, or its own model (``own_scorer``, default torch).

    A panel's experts are served from their ONNX graphs where those pass their load-time checks, without
    building their torch models (nor importing torch) when the graph vouches for the expert's files
    (:func:`fakeface.modeling.fastpath.load_fast_path_unbuilt`), else in torch fp32. Raises
    :class:`PanelError` when a panel expert's folder is missing or unloadable.
    """
    from fakeface.modeling.inference import Detector

    own = own_scorer if own_scorer is not None else Detector(model)
    spec = panel_spec(model)
    if spec is None:
        return own
    folder = _release_folder(model)
    scorers: dict[str, Any] = {}
    for expert in spec.experts:
        if expert.folder is None:
            scorers[expert.name] = own
            continue
        where = None if folder is None else folder / expert.folder
        if where is None or not (where / "config.json").is_file():
            raise PanelError(f"the panel's {expert.name} expert is missing ({expert.folder} not in the release)",
                             "re-download the whole release (experts/ included) or re-build the panel",
                             expert.name)
        scorers[expert.name] = _expert_scorer(expert, where, use_fast_path)
    return PanelScorer(spec, scorers, resolve_detector_config(model).decision)


def _expert_scorer(expert: ExpertSpec, where: Path, use_fast_path: bool) -> Any:
    """One expert folder's scorer: its vouched-for graph without torch, else its model and the graph checked
    against it, else the model in torch fp32."""
    from fakeface.modeling.detector import DetectorLoadError, fetch_detector_files, load_detector
    from fakeface.modeling.fastpath import load_fast_path, load_fast_path_unbuilt
    from fakeface.modeling.inference import Detector

    try:
        files = fetch_detector_files(str(where))
        unbuilt = load_fast_path_unbuilt(files) if use_fast_path else None   # never raises
        if unbuilt is not None:
            return unbuilt.detector
        expert_model = load_detector(where, files=files)
    except DetectorLoadError as error:
        raise PanelError(f"the panel's {expert.name} expert cannot be loaded ({error.problem})", error.fix,
                         expert.name) from error
    fast = load_fast_path(expert_model) if use_fast_path else None   # never raises; a refusal serves fp32
    return fast.detector if fast is not None and fast.detector is not None else Detector(expert_model)


def write_panel(release_dir: str | os.PathLike, spec: PanelSpec, experts: Mapping[str, Any],
                decision: Decision) -> Path:
    """Add trace experts (``name -> timm model``) and the panel entry and fused decision to a saved release."""
    from fakeface.modeling.detector import save_detector
    from fakeface.utils.fileio import write_atomic

    from fakeface.modeling.fastpath import revouch_release_files

    release_dir = Path(release_dir)
    for expert in spec.experts:
        if expert.folder is not None:
            save_detector(experts[expert.name], release_dir / expert.folder)
    config_path = release_dir / "config.json"
    config = json.loads(config_path.read_text())
    block = dict(config.get(FAKEFACE_KEY) or {})
    block.update(decision.to_cfg())
    block[PANEL_KEY] = spec.to_cfg()
    config[FAKEFACE_KEY] = block
    # Only the decision and the panel entry change: the content graph still holds these weights and this
    # preprocessing, so its vouch (fastpath.json's file hashes) is carried over to the new config.json.
    with revouch_release_files(release_dir):
        write_atomic(config_path, (json.dumps(config, indent=2) + "\n").encode())
    return release_dir

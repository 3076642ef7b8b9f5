"""The app's logic without the UI: models loaded once, file bytes in, a verdict dict out.

Nothing here imports gradio, so everything the Space does can be tested and
reused (e.g. by a batch script) without a web server:

* :class:`ModelRegistry` / :func:`load_models` load every configured detector
  once (``FAKEFACE_MODEL``: Hub ids or folders). They never raise: a model
  that cannot be loaded becomes a :class:`LoadFailure` saying what is wrong
  and how to fix it, and the Hub-down notice of a cached copy is kept.
* :func:`analyze_bytes` turns one uploaded file into the full result: each
  model's calibrated p(fake) and verdict, image facts and warnings,
  provenance, a robustness re-check and the Grad-CAM overlay. Scoring goes
  through each model's ``scorer`` (the int8 fast path when the release has
  a valid one, else :class:`fakeface.modeling.inference.Detector`), Grad-CAM always
  through the torch model.
* batch rows and their CSV, the rate limit that protects the Space's own
  OpenAI key, and the dataset browser's sampling and evaluation.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from fakeface.utils.constants import (
    ATTRIBUTE_COLUMNS, ENV_DATASET, ENV_MODEL, ENV_OPENAI_KEY, LABEL_NAMES, MAX_UPLOAD_BYTES,
    SYNTHETIC_GENERATOR,
)
from fakeface.data.images import DecodedImage, ImageDecodeError, load_image

logger = logging.getLogger(__name__)

__all__ = [
    "AppError", "LoadFailure", "LoadedModel", "ModelRegistry", "RateLimitExceeded", "RateLimiter",
    "analyze_bytes", "analyze_files", "assess_image", "load_models", "parse_model_sources", "write_rows_csv",
]

ENV_DEMO_BANNER = "FAKEFACE_DEMO_BANNER"
ENV_FAST_PATH = "FAKEFACE_FAST_PATH"              # "0" serves fp32 even when a release has an int8 graph
ENV_GENERATE_PER_SESSION = "FAKEFACE_GENERATE_PER_SESSION"
ENV_GENERATE_GLOBAL = "FAKEFACE_GENERATE_GLOBAL"
ENV_GENERATE_WINDOW = "FAKEFACE_GENERATE_WINDOW_S"
ENV_GENERATE_TIMEOUT = "FAKEFACE_GENERATE_TIMEOUT_S"

MAX_BATCH_FILES = 100
# The input is "far from training data" when: its short side is below the
# model's crop (it must be enlarged), its aspect ratio is beyond this, or its
# JPEG quality (estimated from the quantization tables) is below this.
NON_SQUARE_RATIO = 1.3
LOW_JPEG_QUALITY = 70
LOW_CROP_COVERAGE = 0.5
# Robustness check: the primary model re-scores these copies (names from
# fakeface.evaluation.metrics.ROBUSTNESS_CONDITIONS) and the verdict is unstable when
# any copy's verdict differs from the original's.
ROBUSTNESS_CHECKS = (("jpeg75", "JPEG re-encoded at quality 75"), ("downscale0.5", "downscaled to half size"))


class AppError(Exception):
    """A problem the user can act on; ``str()`` is the message to show (never secrets or server paths)."""


# --------------------------------------------------------------------------- models

def parse_model_sources(text: str | Sequence[str] | None) -> list[str]:
    """``FAKEFACE_MODEL`` -> sources: comma-, semicolon- or whitespace-separated, duplicates dropped."""
    if text is None:
        return []
    items = re.split(r"[,;\s]+", text) if isinstance(text, str) else [str(t).strip() for t in text]
    return list(dict.fromkeys(item for item in items if item))


@dataclass
class LoadedModel:
    """A detector ready to serve, and where it came from."""

    source: str
    detector: Any                    # fakeface.modeling.inference.Detector (torch: Grad-CAM)
    scorer: Any                      # .score(images) / .logits(images), as Detector: the fast path or ``detector``
    revision: str | None = None
    notice: str | None = None        # e.g. "Hub unreachable; serving the cached revision ..."
    folder: Path | None = None

    @property
    def preprocessing(self):
        return self.detector.preprocessing

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.detector.settings)

    @property
    def architecture(self) -> str:
        cfg = getattr(self.detector.model, "pretrained_cfg", {}) or {}
        return str(cfg.get("architecture") or type(self.detector.model).__name__)

    @property
    def runtime(self) -> str:
        return getattr(self.scorer, "runtime", "torch-fp32")

    @property
    def name(self) -> str:
        """Short display name: ``mobilenetv2_100 · org/name@abc1234`` or ``... · folder``."""
        where = self.source.removeprefix("hf-hub:")
        if self.folder is not None and self.revision is None:
            where = Path(self.source.removeprefix("local-dir:")).name or where
        rev = f"@{self.revision[:7]}" if self.revision else ""
        return f"{self.architecture} · {where}{rev}"

    @property
    def synthetic(self) -> bool:
        """True when the model's own config says it was trained on the offline synthetic data."""
        s = self.settings
        scope = s.get("trained_on") or {}
        return bool(s.get("synthetic_training_data")) or SYNTHETIC_GENERATOR in (scope.get("fake_generators") or [])

    @property
    def public_source(self) -> str:
        """Where the model is from, safe to show: the Hub id, or only a local folder's name."""
        if self.revision is None and self.folder is not None:
            return f"local folder '{Path(self.source.removeprefix('local-dir:')).name}'"
        return self.source.removeprefix("hf-hub:")

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the model (no local paths)."""
        s, pp = self.settings, self.preprocessing
        return {
            "name": self.name, "source": self.public_source, "revision": self.revision, "architecture": self.architecture,
            "runtime": self.runtime, "input_size": list(pp.input_size), "crop_protocol": pp.crop_protocol,
            "test_crops": pp.crops_per_image, "temperature": s.get("temperature"),
            "threshold_fake": s.get("threshold_fake"), "threshold_real": s.get("threshold_real"),
            "target_fpr": s.get("target_fpr"), "calibrated": bool(s.get("calibrated")),
            "trained_on": s.get("trained_on"), "synthetic_training_data": self.synthetic, "notice": self.notice,
        }


@dataclass
class LoadFailure:
    """A configured model that could not be loaded: what is wrong and how to fix it."""

    source: str
    problem: str
    fix: str

    @property
    def message(self) -> str:
        return f"Model {self.source!r} could not be loaded: {self.problem}. {self.fix}"

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "problem": self.problem, "fix": self.fix}


def _fix_for(source: str, problem: str) -> str:
    lowered = problem.lower()
    if "not found on the hub" in lowered or "private" in lowered or "gated" in lowered:
        return (f"Check the id in {ENV_MODEL}; for a private or gated repo, add an HF_TOKEN secret with read "
                "access to the Space.")
    if "could not be reached" in lowered:
        return f"Check the network, or set {ENV_MODEL} to a local folder with a trained model."
    if "does not exist" in lowered and "revision" in lowered:
        return f"Use an existing branch, tag or commit after '@' in {ENV_MODEL}."
    if "does not exist" in lowered or "is missing" in lowered:
        return (f"Point {ENV_MODEL} at a folder written by train.py (config.json + model.safetensors); "
                "`make demo` trains a small one.")
    if "corrupt" in lowered or "truncated" in lowered or "does not match" in lowered:
        return "Re-download or re-train the model; the weights file is damaged or belongs to another architecture."
    return f"Check {ENV_MODEL} (Hub ids like org/name, or folders, separated by commas)."


def load_model(source: str, *, token: str | None = None, use_fast_path: bool = True) -> LoadedModel | LoadFailure:
    """Load one detector (and its int8 fast path when valid); never raises."""
    from fakeface.modeling.inference import Detector
    from fakeface.modeling.detector import DetectorLoadError, load_detector

    try:
        model = load_detector(source, token=token)
    except DetectorLoadError as error:
        problem, _, advice = str(error).partition("; ")
        if advice.startswith(("check", "point", "use", "re-download", "accept", "train")):
            return LoadFailure(source, problem, advice[0].upper() + advice[1:].rstrip(".") + ".")
        return LoadFailure(source, str(error), _fix_for(source, str(error)))
    except Exception as error:  # noqa: BLE001 - start-up must survive anything a model folder holds
        logger.exception("unexpected error loading model %s", source)
        problem = f"unexpected {type(error).__name__} while loading"
        return LoadFailure(source, problem, _fix_for(source, problem))
    detector = Detector(model)
    scorer = detector
    if use_fast_path:
        try:
            from fakeface.modeling.fastpath import load_fast_detector

            scorer = load_fast_detector(model) or detector
        except Exception as error:  # noqa: BLE001 - the fast path is an optimisation, never a failure
            logger.warning("fast path of %s not used (%s); serving fp32", source, type(error).__name__)
    files = getattr(model, "fakeface_files", None)
    revision = getattr(files, "revision", None)
    folder = Path(files.folder) if files is not None else None
    return LoadedModel(source, detector, scorer, revision=revision, notice=getattr(files, "notice", None), folder=folder)


def load_models(sources: Sequence[str], *, token: str | None = None,
                use_fast_path: bool = True) -> list[LoadedModel | LoadFailure]:
    """Load each source once, in order; failures are returned, never raised.

    No sources at all gives one :class:`LoadFailure` explaining how to configure one.
    """
    if not sources:
        return [LoadFailure(
            "(none)", f"no model is configured ({ENV_MODEL} is empty)",
            f"Set {ENV_MODEL} to a Hub model id (org/name) or a folder written by train.py; "
            "`make demo` trains a small demo model and starts the app with it.",
        )]
    return [load_model(source, token=token, use_fast_path=use_fast_path) for source in sources]


class ModelRegistry:
    """The configured models, loaded once (at start-up in the background, or on first use)."""

    def __init__(self, sources: Sequence[str], *, token: str | None = None, use_fast_path: bool = True,
                 dataset: str | None = None, demo_banner: bool = False):
        self.sources = list(sources)
        self.dataset = dataset
        self.demo_banner = demo_banner
        self._token = token
        self._use_fast_path = use_fast_path
        self._lock = threading.Lock()
        self._results: list[LoadedModel | LoadFailure] | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ModelRegistry":
        """Configuration from Space variables: FAKEFACE_MODEL, FAKEFACE_DATASET, FAKEFACE_DEMO_BANNER."""
        env = os.environ if environ is None else environ
        return cls(
            parse_model_sources(env.get(ENV_MODEL)),
            use_fast_path=env.get(ENV_FAST_PATH, "1").strip().lower() not in ("0", "false", "no", "off"),
            dataset=(env.get(ENV_DATASET) or "").strip() or None,
            demo_banner=env.get(ENV_DEMO_BANNER, "").strip().lower() in ("1", "true", "yes", "on"),
        )

    @classmethod
    def from_models(cls, models: Sequence[LoadedModel | LoadFailure], *, dataset: str | None = None,
                    demo_banner: bool = False) -> "ModelRegistry":
        """A registry over already loaded models (tests, notebooks)."""
        registry = cls([m.source for m in models], dataset=dataset, demo_banner=demo_banner)
        registry._results = list(models)
        return registry

    def start_loading(self) -> None:
        """Load in a background thread so the server comes up at once; :meth:`load` waits for it."""
        with self._lock:
            if self._results is not None or self._thread is not None:
                return
            self._thread = threading.Thread(target=self.load, name="fakeface-model-loader", daemon=True)
            self._thread.start()

    def load(self) -> list[LoadedModel | LoadFailure]:
        """Every configured model, loaded on the first call (thread-safe; later calls are free)."""
        with self._lock:
            if self._results is None:
                started = time.perf_counter()
                self._results = load_models(self.sources, token=self._token, use_fast_path=self._use_fast_path)
                for result in self._results:
                    if isinstance(result, LoadFailure):
                        logger.warning("%s", result.message)
                    else:
                        logger.info("loaded %s (%s)%s", result.name, result.runtime,
                                    f": {result.notice}" if result.notice else "")
                logger.info("models ready in %.1f s", time.perf_counter() - started)
            return list(self._results)

    @property
    def models(self) -> list[LoadedModel]:
        return [r for r in self.load() if isinstance(r, LoadedModel)]

    @property
    def failures(self) -> list[LoadFailure]:
        return [r for r in self.load() if isinstance(r, LoadFailure)]

    def require_models(self) -> list[LoadedModel]:
        """The loaded models, or an :class:`AppError` saying why there are none and how to fix it."""
        models = self.models
        if not models:
            reasons = " ".join(f.message for f in self.failures) or "No model is loaded."
            raise AppError(f"No detector is available. {reasons}")
        return models

    @property
    def show_synthetic_banner(self) -> bool:
        """The demo banner: asked for by FAKEFACE_DEMO_BANNER, or implied by a model trained on synthetic data."""
        return self.demo_banner or any(m.synthetic for m in self.models)

    def status(self) -> dict[str, Any]:
        """JSON-ready state of every configured model (the app's status panel and ``/status`` API)."""
        return {
            "models": [m.describe() for m in self.models],
            "failures": [f.describe() for f in self.failures],
            "dataset": self.dataset,
            "synthetic_demo": self.show_synthetic_banner,
        }


# --------------------------------------------------------------------------- one image

def describe_image(decoded: DecodedImage, n_bytes: int) -> dict[str, Any]:
    """Image facts for the UI: format, size, file size, JPEG quality, decode notes."""
    return {
        "format": decoded.format, "width": decoded.width, "height": decoded.height, "bytes": n_bytes,
        "megapixels": round(decoded.width * decoded.height / 1e6, 2), "mode": decoded.original_mode,
        "jpeg_quality": decoded.jpeg_quality, "notes": list(decoded.notes),
    }


def assess_image(decoded: DecodedImage, model: LoadedModel) -> list[str]:
    """Warnings when the input is far from what the model was trained on (tiny, not square, compressed)."""
    pp = model.preprocessing
    crop_h, crop_w = pp.crop_size
    width, height = decoded.width, decoded.height
    warnings = []
    if min(width, height) < min(crop_h, crop_w):
        warnings.append(
            f"Small image ({width}×{height}): the model looks at {crop_w}×{crop_h} px crops, so it was enlarged; "
            "enlarging smooths away the fine detail the detector relies on."
        )
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > NON_SQUARE_RATIO:
        warnings.append(
            f"Not square (aspect ratio {ratio:.1f}:1): the model was trained on square face images; "
            + ("its crops may miss the face." if pp.crop_protocol == "native-crops" else "squashing it distorts the face.")
        )
    if decoded.jpeg_quality is not None and decoded.jpeg_quality < LOW_JPEG_QUALITY:
        warnings.append(
            f"Heavily compressed JPEG (quality ≈ {decoded.jpeg_quality}): compression erases the traces "
            "generators leave, so the verdict is less reliable."
        )
    return warnings


def describe_coverage(decoded: DecodedImage, model: LoadedModel) -> str | None:
    """A note when the model's native-resolution crops see only part of the image (by design, not a fault)."""
    from fakeface.modeling.explain import crop_coverage

    pp = model.preprocessing
    coverage = crop_coverage(decoded.image, pp)
    if coverage >= LOW_CROP_COVERAGE:
        return None
    crop_h, crop_w = pp.crop_size
    return (f"The model inspects {pp.crops_per_image} crop(s) of {crop_w}×{crop_h} px at full resolution "
            f"(never downscaling, which would erase generator traces), covering {coverage:.0%} of this image.")


def _model_row(model: LoadedModel, p_fake: float, verdict: str) -> dict[str, Any]:
    s = model.settings
    return {
        "model": model.name, "architecture": model.architecture, "source": model.public_source, "revision": model.revision,
        "runtime": model.runtime, "p_fake": round(float(p_fake), 6), "verdict": verdict,
        "threshold_fake": s.get("threshold_fake"), "threshold_real": s.get("threshold_real"),
        "temperature": s.get("temperature"), "calibrated": bool(s.get("calibrated")),
        "synthetic_training_data": model.synthetic,
    }


def check_robustness(model: LoadedModel, image: Image.Image, clean_verdict: str, clean_p: float) -> dict[str, Any]:
    """Re-score JPEG q75 and half-size copies; ``stable`` is False when a copy gets another verdict."""
    from fakeface.evaluation.metrics import apply_condition

    copies = [apply_condition(image, name) for name, _ in ROBUSTNESS_CHECKS]
    scores = model.scorer.score(copies)
    checks = [
        {"check": name, "description": text, "p_fake": round(float(p), 6), "verdict": v,
         "delta": round(float(p) - clean_p, 6)}
        for (name, text), p, v in zip(ROBUSTNESS_CHECKS, scores.p_fake, scores.verdicts)
    ]
    changed = [c for c in checks if c["verdict"] != clean_verdict]
    stable = not changed
    if stable:
        summary = f"Stable: the verdict stays '{clean_verdict}' after JPEG q75 re-encoding and halving the size."
    else:
        summary = "Unstable: the verdict changes when the image is " + " or ".join(
            f"{c['description']} ('{c['verdict']}')" for c in changed
        ) + "; treat the verdict with caution."
    return {"stable": stable, "checks": checks, "summary": summary}


def _display_name(filename: str | os.PathLike | None) -> str:
    # Only the base name: uploads live in server temp folders that are nobody's business.
    return Path(os.fspath(filename)).name if filename else "upload"


def analyze_bytes(
    data: bytes,
    filename: str | None,
    models: Sequence[LoadedModel],
    *,
    explain: bool = True,
    robustness: bool = True,
    provenance: bool = True,
) -> dict[str, Any]:
    """The full analysis of one uploaded file (its original bytes).

    Returns a dict: ``verdict``/``p_fake``/``model`` of the primary (first)
    model, ``models`` (every model's score side by side, with its thresholds),
    ``agreement``, ``image`` facts, ``warnings`` (input far from the
    training data), ``notes`` (e.g. crop coverage), ``provenance``,
    ``robustness`` and ``gradcam`` (a PIL image, or None; the only value that
    is not JSON). Raises :class:`ImageDecodeError` (a ValueError with a
    user-facing reason) when the bytes are not a usable image, and
    :class:`AppError` when no model is given.
    """
    if not models:
        raise AppError("No detector is loaded; see the status panel for how to configure one.")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    decoded = load_image(data, max_bytes=MAX_UPLOAD_BYTES)
    timings["decode_ms"] = (time.perf_counter() - started) * 1e3
    image = decoded.image
    primary = models[0]

    t = time.perf_counter()
    rows = []
    for model in models:
        scores = model.scorer.score([image])
        rows.append(_model_row(model, float(scores.p_fake[0]), scores.verdicts[0]))
    timings["score_ms"] = (time.perf_counter() - t) * 1e3
    verdicts = {r["verdict"] for r in rows}

    result: dict[str, Any] = {
        "file": _display_name(filename),
        "verdict": rows[0]["verdict"],
        "p_fake": rows[0]["p_fake"],
        "model": primary.name,
        "threshold_fake": rows[0]["threshold_fake"],
        "threshold_real": rows[0]["threshold_real"],
        "models": rows,
        "agreement": len(verdicts) == 1,
        "image": describe_image(decoded, len(data)),
        "warnings": assess_image(decoded, primary),
        "notes": [n for n in [describe_coverage(decoded, primary)] if n],
        "synthetic_model": primary.synthetic,
        "robustness": None,
        "provenance": None,
        "gradcam": None,
    }
    if robustness:
        t = time.perf_counter()
        result["robustness"] = check_robustness(primary, image, rows[0]["verdict"], rows[0]["p_fake"])
        timings["robustness_ms"] = (time.perf_counter() - t) * 1e3
    if provenance:
        from fakeface.serving.provenance import read_provenance

        t = time.perf_counter()
        result["provenance"] = read_provenance(data, image_format=decoded.format)
        timings["provenance_ms"] = (time.perf_counter() - t) * 1e3
    if explain:
        from fakeface.modeling.explain import explain_image

        t = time.perf_counter()
        _, result["gradcam"] = explain_image(primary.detector, image)
        timings["gradcam_ms"] = (time.perf_counter() - t) * 1e3
    timings["total_ms"] = (time.perf_counter() - started) * 1e3
    result["timings_ms"] = {k: round(v, 1) for k, v in timings.items()}
    return result


def read_upload(path: str | os.PathLike) -> bytes:
    """The bytes of an uploaded file, refusing anything over the upload limit before reading it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise AppError("The uploaded file could not be read; please upload it again.") from None
    if size > MAX_UPLOAD_BYTES:
        raise AppError(f"The file is too large: {size / 2**20:.1f} MiB, limit {MAX_UPLOAD_BYTES / 2**20:.0f} MiB.")
    return path.read_bytes()


# --------------------------------------------------------------------------- batch

BATCH_COLUMNS = ("file", "verdict", "p_fake", "model", "agreement", "format", "width", "height",
                 "jpeg_quality", "c2pa", "warnings", "error")


def batch_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """One flat table row from :func:`analyze_bytes`' result (plus one p_fake column per extra model)."""
    image = result.get("image") or {}
    prov = result.get("provenance") or {}
    row = {
        "file": result["file"], "verdict": result["verdict"], "p_fake": round(result["p_fake"], 4),
        "model": result["model"], "agreement": "yes" if result["agreement"] else "no",
        "format": image.get("format"), "width": image.get("width"), "height": image.get("height"),
        "jpeg_quality": image.get("jpeg_quality"), "c2pa": (prov.get("c2pa") or {}).get("status", ""),
        "warnings": " | ".join(result.get("warnings") or []), "error": "",
    }
    for extra in result["models"][1:]:
        row[f"p_fake [{extra['model']}]"] = round(extra["p_fake"], 4)
    return row


def analyze_files(
    files: Sequence[str | os.PathLike],
    models: Sequence[LoadedModel],
    *,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Score many uploaded files: one row each; a bad file gets an ``error`` and the rest go on."""
    if not models:
        raise AppError("No detector is loaded; see the status panel for how to configure one.")
    if len(files) > MAX_BATCH_FILES:
        raise AppError(f"Too many files: {len(files)}; at most {MAX_BATCH_FILES} per batch.")
    rows = []
    for index, path in enumerate(files):
        name = _display_name(path)
        if progress is not None:
            progress(index, len(files), name)
        try:
            result = analyze_bytes(read_upload(path), name, models, explain=False, robustness=False)
            rows.append(batch_row(result))
        except (ImageDecodeError, AppError) as error:
            rows.append({"file": name, "verdict": "error", "error": str(error)})
        except Exception as error:  # noqa: BLE001 - one bad file must not lose the batch
            logger.exception("batch: unexpected failure on one file")
            rows.append({"file": name, "verdict": "error", "error": f"unexpected {type(error).__name__}"})
    return rows


def batch_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table's columns: the fixed ones, then any per-model columns in first-seen order."""
    extra = [k for row in rows for k in row if k not in BATCH_COLUMNS]
    return list(BATCH_COLUMNS[:4]) + list(dict.fromkeys(extra)) + list(BATCH_COLUMNS[4:])


def _csv_safe(value: Any) -> Any:
    # A cell starting with = + - @ is run as a formula by spreadsheet apps;
    # file names and warnings come from users (CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def write_rows_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write batch rows as CSV (UTF-8, header row, formula-like cells neutralised)."""
    path = Path(path)
    columns = batch_columns(rows)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _csv_safe(row.get(c)) for c in columns})
    return path


# --------------------------------------------------------------------------- rate limit

class RateLimitExceeded(AppError):
    """Too many generations with the Space's key; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimiter:
    """Sliding-window limits per session and overall (protects the Space owner's OpenAI key).

    Each :meth:`acquire` counts an attempt, successful or not: a failing
    request costs the Space nothing, but retry storms are still abuse.
    """

    def __init__(self, per_session: int = 3, global_limit: int = 30, window_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.per_session, self.global_limit, self.window_s = per_session, global_limit, window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RateLimiter":
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            try:
                return float(env.get(name, default))
            except ValueError:
                logger.warning("%s is not a number; using %s", name, default)
                return default

        return cls(int(number(ENV_GENERATE_PER_SESSION, 3)), int(number(ENV_GENERATE_GLOBAL, 30)),
                   number(ENV_GENERATE_WINDOW, 3600.0))

    def _expire(self, stamps: deque[float], now: float) -> None:
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()

    def acquire(self, session_id: str) -> None:
        """Count one attempt for ``session_id`` or raise :class:`RateLimitExceeded`."""
        now = self._clock()
        with self._lock:
            stamps = self._sessions.setdefault(session_id or "anonymous", deque())
            self._expire(stamps, now)
            self._expire(self._all, now)
            for who, queue, limit in (("this session", stamps, self.per_session), ("this Space", self._all, self.global_limit)):
                if len(queue) >= limit:
                    wait = queue[0] + self.window_s - now
                    raise RateLimitExceeded(
                        f"The Space's OpenAI key allows {limit} generation(s) per {_duration(self.window_s)} for "
                        f"{who}; try again in {_duration(wait)}, or enter your own OpenAI key.", retry_after=wait,
                    )
            stamps.append(now)
            self._all.append(now)
            # Forget idle sessions so the table cannot grow without bound.
            if len(self._sessions) > 10_000:
                for key in [k for k, q in self._sessions.items() if not q]:
                    del self._sessions[key]


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- generation

@dataclass
class GenerationRequest:
    """What the Generate tab asks for. ``user_key`` is used for this request only and never kept."""

    prompt: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    size: str = "1024x1024"
    quality: str = "medium"
    user_key: str | None = field(default=None, repr=False)


def generate_and_analyze(request: GenerationRequest, models: Sequence[LoadedModel], *, session_id: str,
                         limiter: RateLimiter, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Generate one face with OpenAI, then analyse it exactly like an upload.

    The user's own key is used when given (no Space rate limit: their
    account pays); otherwise the Space's ``OPENAI_API_KEY`` under
    ``limiter``. Every failure raises :class:`AppError` or a
    ``fakeface.generation.runner.GenerationError`` whose message is user-facing and
    key-free. The result is :func:`analyze_bytes`' dict plus ``generated``
    (model, prompt, revised prompt) and ``image_bytes``/``image_format``.
    """
    from fakeface.utils.constants import DEFAULT_IMAGE_MODEL
    from fakeface.generation.runner import generate_face

    env = os.environ if environ is None else environ
    user_key = (request.user_key or "").strip() or None
    key = user_key
    if key is None:
        key = (env.get(ENV_OPENAI_KEY) or "").strip() or None
        if key is None:
            raise AppError("This Space has no OpenAI key configured: enter your own OpenAI API key to generate.")
        limiter.acquire(session_id)
    prompt: str | dict[str, str] | None = (request.prompt or "").strip() or None
    if prompt is None:
        chosen = {k: v for k, v in (request.attributes or {}).items() if v}
        if not chosen:
            raise AppError("Describe the face: write a prompt or pick at least one attribute.")
        prompt = chosen
    options: dict[str, Any] = {}
    timeout = (env.get(ENV_GENERATE_TIMEOUT) or "").strip()
    if timeout:
        try:
            options["timeout"] = float(timeout)
        except ValueError:
            logger.warning("%s is not a number; using the default timeout", ENV_GENERATE_TIMEOUT)
    try:
        generated = generate_face(prompt, api_key=key, model=request.model or DEFAULT_IMAGE_MODEL,
                                  size=request.size, quality=request.quality, **options)
    except ValueError as error:
        raise AppError(str(error)) from None
    result = analyze_bytes(generated.data, f"generated{generated.extension}", models)
    result["generated"] = {"model": generated.model, "prompt": generated.prompt,
                           "revised_prompt": generated.revised_prompt, "size": generated.size,
                           "quality": generated.quality, "attributes": dict(generated.attributes),
                           "format": generated.format, "key": "yours" if user_key else "the Space's"}
    result["image_bytes"] = generated.data
    result["image_format"] = generated.format
    return result


# --------------------------------------------------------------------------- dataset browser

class DatasetCache:
    """Loaded datasets by source, so switching tabs or filters does not reload them.

    Hub ids are always accepted. Local folders only when listed in
    ``allowed_folders`` (the configured ``FAKEFACE_DATASET``): a public Space
    must not let visitors probe its file system through this box.
    """

    def __init__(self, allowed_folders: Iterable[str] = (), max_entries: int = 2):
        self._lock = threading.Lock()
        self._entries: dict[str, Any] = {}
        self._max = max_entries
        self._allowed = {self._folder_key(f) for f in allowed_folders if f}

    @staticmethod
    def _folder_key(source: str) -> str | None:
        from fakeface.data.dataset import resolve_dataset_source

        try:
            src = resolve_dataset_source(source)
        except ValueError:
            return None
        return str(Path(src.location).expanduser().resolve()) if src.kind == "local" else None

    def load(self, source: str) -> Any:
        """``fakeface.data.dataset.load_face_dataset(source)``, cached; every failure becomes an :class:`AppError`."""
        from fakeface.data.dataset import load_face_dataset, resolve_dataset_source

        source = (source or "").strip()
        if not source:
            raise AppError(f"Enter a dataset: a Hub id (org/name); {ENV_DATASET} sets the default.")
        with self._lock:
            if source in self._entries:
                return self._entries[source]
        try:
            src = resolve_dataset_source(source)
        except ValueError as error:
            raise AppError(f"{_first_line(error)}.") from None
        if src.kind == "local" and self._folder_key(source) not in self._allowed:
            raise AppError("Only Hub datasets (org/name) can be loaded here; local folders are limited to the "
                           f"one configured in {ENV_DATASET}.")
        try:
            with _quiet_datasets():
                data = load_face_dataset(source)
        except (ValueError, OSError, RuntimeError) as error:
            raise AppError(f"The dataset {src.display} could not be loaded: {_first_line(error)}") from None
        if not hasattr(data, "keys"):
            data = {"train": data}
        with self._lock:
            self._entries[source] = data
            while len(self._entries) > self._max:
                self._entries.pop(next(iter(self._entries)))
        return data


@contextlib.contextmanager
def _quiet_datasets():
    """No per-split progress bars in the server log while a dataset loads (the UI has its own)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def summarize_dataset(data: Mapping[str, Any]) -> dict[str, Any]:
    """Splits with counts per label and generator, and the attribute values present."""
    splits = {}
    attributes: dict[str, set] = {}
    generators: set[str] = set()
    for name in data.keys():
        split = data[name]
        labels = split["label"]
        counts = {LABEL_NAMES[i]: int(sum(1 for v in labels if v == i)) for i in range(len(LABEL_NAMES))}
        gens = split["generator"] if "generator" in split.column_names else []
        generators.update(g for g in gens if g)
        splits[name] = {"rows": len(split), **counts,
                        "generators": {g: int(sum(1 for x in gens if x == g)) for g in sorted(set(gens) - {None})}}
        for column in ATTRIBUTE_COLUMNS:
            values = {str(v) for v in split[column] if v is not None} if column in split.column_names else set()
            if values:
                attributes.setdefault(column, set()).update(values)
    return {"splits": splits, "generators": sorted(generators),
            "attributes": {k: sorted(v) for k, v in attributes.items()}}


def filter_indices(split: Any, *, label: str | None = None, generator: str | None = None,
                   attributes: Mapping[str, str | None] | None = None) -> list[int]:
    """Row indices of ``split`` matching the filters (None or "" or "any" means no filter)."""
    def active(value: str | None) -> bool:
        return bool(value) and value != "any"

    columns: dict[str, list] = {}
    if active(label):
        columns["label"] = [LABEL_NAMES[v] for v in split["label"]]
    if active(generator) and "generator" in split.column_names:
        columns["generator"] = split["generator"]
    for key, value in (attributes or {}).items():
        if active(value) and key in split.column_names:
            columns[key] = [None if v is None else str(v) for v in split[key]]
    wanted = {"label": label, "generator": generator, **dict(attributes or {})}
    return [i for i in range(len(split)) if all(columns[k][i] == wanted[k] for k in columns)]


def sample_gallery(split: Any, indices: Sequence[int], *, n: int = 24, seed: int = 0,
                   thumb_size: int = 256) -> list[tuple[Image.Image, str]]:
    """Up to ``n`` decoded thumbnails with captions: label · generator · attributes."""
    from datasets import Image as ImageFeature

    chosen = sorted(random.Random(seed).sample(list(indices), min(n, len(indices))))
    if not chosen:
        return []
    rows = split.select(chosen).cast_column("image", ImageFeature(decode=False))
    gallery = []
    for row in rows:
        data = row["image"].get("bytes") or row["image"].get("path")
        try:
            image = load_image(data).image
        except ImageDecodeError as error:
            logger.warning("dataset row not shown: %s", error)
            continue
        image.thumbnail((thumb_size, thumb_size))
        parts = [LABEL_NAMES[row["label"]], row.get("generator") or "?"]
        parts += [f"{k}: {row[k]}" for k in ATTRIBUTE_COLUMNS if row.get(k) not in (None, "")]
        gallery.append((image, " · ".join(str(p) for p in parts)))
    return gallery


def evaluate_sample(model: LoadedModel, split: Any, *, n: int = 200, seed: int = 0, batch_size: int = 16,
                    progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Score a random sample of a split and compute metrics at the model's own threshold.

    Images are decoded and scored a batch at a time, so memory stays bounded
    whatever the sample size. Returns the metrics dict of
    :func:`fakeface.evaluation.metrics.compute_metrics` plus ``labels``/``p_fake``
    (for the ROC curve) and ``verdicts`` counts.
    """
    from fakeface.evaluation.metrics import compute_metrics, decode_split, verdict_counts

    size = len(split)
    if size == 0:
        raise AppError("The split is empty.")
    chosen = sorted(random.Random(seed).sample(range(size), min(int(n), size)))
    logits, labels = [], []
    for start in range(0, len(chosen), batch_size):
        if progress:
            progress(start / len(chosen), f"scoring {start}/{len(chosen)}")
        images, batch_labels, _ = decode_split(split.select(chosen[start:start + batch_size]))
        if images:
            logits.append(model.scorer.logits(images))
            labels.append(batch_labels)
    if not logits:
        raise AppError("None of the sampled images could be decoded.")
    scores = model.detector.scores_from_logits(np.concatenate(logits))
    labels_all = np.concatenate(labels)
    threshold = float(model.settings["threshold_fake"])
    metrics = compute_metrics(labels_all, scores.p_fake, threshold)
    metrics["verdicts"] = verdict_counts(scores.verdicts)
    metrics["labels"] = labels_all.tolist()
    metrics["p_fake"] = [float(p) for p in scores.p_fake]
    metrics["model"] = model.name
    if progress:
        progress(1.0, "done")
    return metrics


# --------------------------------------------------------------------------- about

def describe_release(model: LoadedModel) -> dict[str, Any]:
    """The model card summary: training data, measured test metrics, scope, revisions, card text."""
    summary: dict[str, Any] = {"model": model.describe(), "metrics": None, "dataset": None,
                               "dataset_revision": None, "card": None, "n_test": None}
    folder = model.folder
    if folder is None:
        return summary
    results_path = folder / "eval_results.json"
    if results_path.is_file():
        try:
            report = json.loads(results_path.read_text())
            summary["metrics"] = report.get("overall")
            summary["n_test"] = (report.get("overall") or {}).get("n")
            config = (report.get("training") or {}).get("config") or {}
            summary["dataset"] = config.get("dataset")
            summary["dataset_revision"] = config.get("dataset_revision")
            summary["verdicts"] = report.get("verdicts")
        except (OSError, ValueError) as error:
            logger.warning("eval_results.json of %s unreadable: %s", model.name, error)
    card_path = folder / "README.md"
    if card_path.is_file():
        text = card_path.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            end = text.find("\n---", 3)
            text = text[end + 4:] if end != -1 else text
        # Plots are relative files of the release; the app cannot serve them inline.
        summary["card"] = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text).strip()
    return summary


"""The configured detectors, loaded once: :class:`ModelRegistry`, :func:`load_models`.

Loading never raises: a model that cannot be loaded becomes a
:class:`LoadFailure` carrying the loader's fields (what went wrong, its kind,
how to fix it), and the Hub-down notice of a cached copy is kept. Nothing
here reads an error's text to decide anything.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fakeface.faces import FaceDetectorUnavailable, prepare_face_session, resolve_face_graph
from fakeface.modeling.config import FAKEFACE_KEY, Decision, resolve_detector_config
from fakeface.modeling.detector import DetectorLoadError, fetch_detector_files, load_detector
from fakeface.modeling.fastpath import FastPathLoad, FastPathRefusal, load_fast_path, load_fast_path_unbuilt
from fakeface.modeling.inference import Detector
from fakeface.modeling.panel import PanelError, panel_spec, release_scorer
from fakeface.serving.errors import AppError
from fakeface.utils.constants import SYNTHETIC_GENERATOR
from fakeface.utils.hub import ErrorKind, SourceError, parse_source
from fakeface.utils.settings import ENV, Settings

logger = logging.getLogger(__name__)

__all__ = [
    "LoadFailure", "LoadedModel", "ModelRegistry", "decision_of", "describe_fast_path", "load_model", "load_models",
]

ENV_MODEL = ENV["models"]
# The loader's errors say how to fix them in general; here they are worded for
# a Space, where the fix is a variable or a secret. Chosen by the error's kind.
_FIX_BY_KIND = {
    ErrorKind.BAD_SOURCE: f"Check {ENV_MODEL} (Hub ids like org/name, or folders, separated by commas).",
    ErrorKind.PRIVATE: "Add an HF_TOKEN secret with read access to the Space, and accept the model's terms on "
                       "the Hub if it is gated.",
    ErrorKind.UNREACHABLE: f"Check the network, or set {ENV_MODEL} to a local folder with a trained model.",
    ErrorKind.BAD_CONFIG: f"Point {ENV_MODEL} at a folder written by train.py (config.json + model.safetensors); "
                          "`make demo` trains a small one.",
    ErrorKind.MISSING_WEIGHTS: f"Point {ENV_MODEL} at a folder written by train.py (config.json + "
                               "model.safetensors); `make demo` trains a small one.",
    ErrorKind.CORRUPT_WEIGHTS: "Re-download or re-train the model; the weights file is damaged or belongs to "
                               "another architecture.",
}
_FIX_MISSING_REPO = (f"Check the id in {ENV_MODEL}; for a private or gated repo, add an HF_TOKEN secret with read "
                     "access to the Space.")
_FIX_MISSING_REVISION = f"Use an existing branch, tag or commit after '@' in {ENV_MODEL}."
_GENERIC_FIX = _FIX_BY_KIND[ErrorKind.BAD_SOURCE]


def _fix_for(source: str, error: SourceError) -> str:
    if error.kind is ErrorKind.NOT_FOUND:
        try:
            on_hub = parse_source(source).kind == "hub"
        except ValueError:
            on_hub = False
        if not on_hub:
            return _FIX_BY_KIND[ErrorKind.BAD_CONFIG]
        return _FIX_MISSING_REVISION if error.revision else _FIX_MISSING_REPO
    return _FIX_BY_KIND.get(error.kind) or error.fix


def decision_of(detector: Any) -> Decision:
    """The detector's frozen decision settings (``Detector.decision`` once modeling has it, else resolved)."""
    decision = getattr(detector, "decision", None)
    return decision if isinstance(decision, Decision) else resolve_detector_config(detector.model).decision


@dataclass
class LoadedModel:
    """A detector ready to serve, and where it came from."""

    source: str
    detector: Any                    # fakeface.modeling.inference.Detector (torch: Grad-CAM; built on first use
                                     # when the int8 graph was loaded first, see load_model)
    scorer: Any                      # .score(images) / .logits(images), as Detector: the fast path or ``detector``
    revision: str | None = None
    notice: str | None = None        # e.g. "Hub unreachable; serving the cached revision ..."
    folder: Path | None = None
    fast_path: FastPathLoad | None = None   # what load_fast_path found (None: the fast path was not asked for)

    @property
    def preprocessing(self):
        return self.detector.preprocessing

    @property
    def decision(self) -> Decision:
        return decision_of(self.detector)

    @property
    def release(self) -> Any:
        """The release's config as a loaded model carries it (``pretrained_cfg``, face graph): the detector's
        ``release``, which reading does not build a torch model the int8 graph has not needed yet."""
        release = getattr(self.detector, "release", None)
        return self.detector.model if release is None else release

    @property
    def training_scope(self) -> dict[str, Any]:
        """What the release says it was trained on (its config's ``trained_on`` block), {} when silent."""
        block = (getattr(self.release, "pretrained_cfg", None) or {}).get(FAKEFACE_KEY) or {}
        scope = dict(block.get("trained_on") or {})
        if block.get("synthetic_training_data"):
            scope.setdefault("synthetic", True)
        return scope

    @property
    def architecture(self) -> str:
        cfg = getattr(self.release, "pretrained_cfg", {}) or {}
        return str(cfg.get("architecture") or type(self.release).__name__)

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
        scope = self.training_scope
        return bool(scope.get("synthetic")) or SYNTHETIC_GENERATOR in (scope.get("fake_generators") or [])

    @property
    def public_source(self) -> str:
        """Where the model is from, safe to show: the Hub id, or only a local folder's name."""
        if self.revision is None and self.folder is not None:
            return f"local folder '{Path(self.source.removeprefix('local-dir:')).name}'"
        return self.source.removeprefix("hf-hub:")

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the model (no local paths)."""
        pp, d = self.preprocessing, self.decision
        block = (getattr(self.release, "pretrained_cfg", None) or {}).get(FAKEFACE_KEY) or {}
        return {
            "name": self.name, "source": self.public_source, "revision": self.revision, "architecture": self.architecture,
            "runtime": self.runtime, "input_size": list(pp.input_size), "crop_protocol": pp.crop_protocol,
            "test_crops": pp.crops_per_image, "temperature": d.temperature, "threshold_fake": d.threshold_fake,
            "threshold_real": d.threshold_real, "target_fpr": d.target_fpr, "calibrated": d.calibrated,
            "band_source": d.band_source, "band_target": d.band_target, "confidently_wrong": d.confidently_wrong,
            "coverage": d.coverage, "threshold_note": d.threshold_note,
            "trained_on": block.get("trained_on"), "synthetic_training_data": self.synthetic, "notice": self.notice,
            "fast_path": describe_fast_path(self.fast_path, folder=self.folder),
            "face_stage": describe_face_stage(self.release),
            "panel": describe_panel(self.release),
        }


def describe_panel(model: Any) -> dict[str, Any] | None:
    """The release's experts and fusion weights (None: a single-model release)."""
    spec = panel_spec(model)
    if spec is None:
        return None
    return {"experts": [{"name": e.name, "kind": e.kind, "sees": e.words["sees"], "misses": e.words["misses"],
                         "weight": w, "version": e.version}
                        for e, w in zip(spec.experts, spec.fusion.weights)],
            "fusion_source": spec.fusion.source}


def describe_face_stage(model: Any) -> dict[str, Any]:
    """Whether photos are judged face by face, with which detector graph, and if not, why and how to fix it."""
    face_crop = resolve_detector_config(model).face_crop
    if face_crop is None:
        return {"used": False, "available": False, "origin": None, "sha256": None,
                "problem": "this model has no face stage (its config has no face crop): whole images are scored",
                "fix": None}
    graph = getattr(model, "fakeface_face_graph", None)
    if graph is None:        # built in memory, not loaded from a folder: the installed package's graph, if any
        try:
            graph = resolve_face_graph(None, None)
        except FaceDetectorUnavailable as error:
            graph = error
    if isinstance(graph, FaceDetectorUnavailable):
        return {"used": True, "available": False, "origin": None, "sha256": None,
                "problem": f"{graph.reason}: photos are scored whole", "fix": graph.fix}
    return {"used": True, "fix": None, **graph.describe()}


def describe_fast_path(loaded: FastPathLoad | None, *, folder: Path | None = None) -> dict[str, Any]:
    """Whether the release's graph (int8 or fp32) is served and, when not, why (the refusal's code, problem, fix
    and numbers).

    A runtime's error text quoted in ``problem`` can name the release's local
    folder: it is shown by name only, as everywhere in the status.
    """
    if loaded is None:
        return {"served": False, "code": "disabled", "problem": f"the fast path is turned off ({ENV['fast_path']})",
                "fix": None, "check": None}
    refusal: FastPathRefusal | None = loaded.refusal
    check = loaded.check
    problem = None if refusal is None else refusal.problem
    if problem is not None and folder is not None:
        problem = problem.replace(str(folder), folder.name)
    return {
        "served": loaded.detector is not None,
        "code": None if refusal is None else refusal.code.value,
        "problem": problem,
        "fix": None if refusal is None else refusal.fix,
        "check": None if check is None else {
            "images": check.images, "max_abs_dp": check.max_abs_dp, "export_max_abs_dp": check.export_max_abs_dp,
            "tolerance": check.tolerance, "drift": check.drift, "drift_tolerance": check.drift_tolerance,
            "passed": check.passed, "cpu_flags": list(check.cpu_flags)},
    }


@dataclass(frozen=True)
class LoadFailure:
    """A configured model that could not be loaded: what is wrong (``problem``), its ``kind``, the ``fix``."""

    source: str
    problem: str
    fix: str
    kind: str = "error"

    @classmethod
    def from_error(cls, source: str, error: SourceError) -> "LoadFailure":
        """From a loader error's fields (``kind``, ``problem``, ``revision``); its text is never parsed."""
        return cls(source, error.problem, _fix_for(source, error), error.kind.value)

    @property
    def message(self) -> str:
        return f"Model {self.source!r} could not be loaded: {self.problem}. {self.fix}"

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "problem": self.problem, "fix": self.fix, "kind": self.kind}


NO_MODEL_CONFIGURED = LoadFailure(
    "(none)", f"no model is configured ({ENV_MODEL} is empty)",
    f"Set {ENV_MODEL} to a Hub model id (org/name) or a folder written by train.py; "
    "`make demo` trains a small demo model and starts the app with it.", kind="not_configured",
)




def load_model(source: str, *, token: str | None = None, use_fast_path: bool = True) -> LoadedModel | LoadFailure:
    """Load one detector (and its ONNX fast path, int8 or fp32, when valid); never raises.

    A release whose int8 graph passes its checks on the release's files alone (:func:`load_fast_path_unbuilt`)
    serves verdicts at once; its torch model (Grad-CAM) is built on first use. Otherwise the torch model is
    loaded first and :func:`load_fast_path` checks the graph against it. The face detector's session is made
    here too, not in the first request.
    """
    try:
        files = fetch_detector_files(source, token=token)
        unbuilt = load_fast_path_unbuilt(files) if use_fast_path else None
        model = unbuilt.detector.release if unbuilt is not None else load_detector(source, token=token, files=files)
    except DetectorLoadError as error:
        return LoadFailure.from_error(source, error)
    except Exception as error:  # noqa: BLE001 - start-up must survive anything a model folder holds
        logger.exception("unexpected error loading model %s", source)
        return LoadFailure(source, f"unexpected {type(error).__name__} while loading", _GENERIC_FIX, "unexpected")
    if unbuilt is not None:
        detector, fast = unbuilt.detector, unbuilt
    else:
        detector = Detector(model)
        # load_fast_path never raises: a refused graph comes back with its typed reason, kept for the status.
        fast = load_fast_path(model) if use_fast_path else None
    own = fast.detector if fast is not None and fast.detector is not None else detector
    try:  # a panel release scores through every expert and its fusion; else its own model scores
        scorer = release_scorer(model, own, use_fast_path=use_fast_path)
    except PanelError as error:
        return LoadFailure(source, error.problem, error.fix, "bad_panel")
    _prepare_face_stage(detector)
    return LoadedModel(source, detector, scorer, revision=files.revision, notice=files.notice,
                       folder=Path(files.folder), fast_path=fast)


def _prepare_face_stage(detector: Detector) -> None:
    """The face detector's session, made while the page loads; a failure here is left to the first request,
    which reports it as it always has (photos scored whole, with the reason)."""
    face_crop = detector.face_crop
    if face_crop is None:
        return
    try:
        prepare_face_session(face_crop)
    except Exception as error:  # noqa: BLE001 - never fails the load
        logger.info("face detector session not made at load (%s); the first photo will try again",
                    type(error).__name__)


def load_models(sources: Sequence[str], *, token: str | None = None,
                use_fast_path: bool = True) -> list[LoadedModel | LoadFailure]:
    """Load each source once, in order; failures are returned, never raised.

    No sources at all gives one :class:`LoadFailure` explaining how to configure one.
    """
    if not sources:
        return [NO_MODEL_CONFIGURED]
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
    def from_settings(cls, settings: Settings) -> "ModelRegistry":
        return cls(settings.models, use_fast_path=settings.fast_path, dataset=settings.dataset,
                   demo_banner=settings.demo_banner)

    @classmethod
    def from_env(cls, environ=None) -> "ModelRegistry":
        """Configuration from Space variables (FAKEFACE_MODEL, FAKEFACE_DATASET, ...) via :class:`Settings`."""
        return cls.from_settings(Settings.from_env(environ))

    @classmethod
    def from_models(cls, models: Sequence[LoadedModel | LoadFailure], *, dataset: str | None = None,
                    demo_banner: bool = False) -> "ModelRegistry":
        """A registry over already loaded models (tests, notebooks)."""
        registry = cls([m.source for m in models], dataset=dataset, demo_banner=demo_banner)
        registry._results = list(models)
        return registry

    @property
    def loaded(self) -> bool:
        """True once every configured model has been loaded (or has failed to)."""
        return self._results is not None

    @property
    def loading_started(self) -> bool:
        """True once :meth:`start_loading` or :meth:`load` has been called."""
        return self._results is not None or self._thread is not None

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
            raise AppError("No detector is available.", reasons, kind="no_model")
        return models

    def model_by_name(self, name: str | None) -> LoadedModel:
        """The loaded model called ``name``, else the primary one."""
        loaded = self.require_models()
        return next((m for m in loaded if m.name == name), loaded[0])

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

"""Serving the release's graph (int8, or fp32 where int8 missed its budget): the ONNX Runtime session,
:class:`FastDetector`, and loading a release's fast path after every check, or the typed reason to serve
the torch model."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from fakeface.modeling.config import resolve_detector_config
from fakeface.modeling.detector import DetectorFiles, ReleaseConfig, load_detector
from fakeface.modeling.fastpath._common import (
    FAST_GRAPH_NAMES, FAST_INFO_NAME, FAST_PATH_FORMAT, FAST_REFERENCE_NAME, VNNI_FLAGS,
    FastPathUnavailable, compute_weights_fingerprint, cpu_instruction_sets, graph_precision, import_onnxruntime,
    release_files_sha256,
)
from fakeface.modeling.fastpath.reference import (
    REFERENCE_DRIFT_DP, REFERENCE_TOLERANCE_DP, ReferenceCheck, check_reference_inputs,
)
from fakeface.modeling.inference import Detector
from fakeface.utils.formatting import json_safe
from fakeface.utils.settings import ENV, Settings

if TYPE_CHECKING:   # serving the graph needs no torch; the torch model comes with Grad-CAM
    from torch import nn

logger = logging.getLogger(__name__)

ENV_THREADS = ENV["threads"]


def resolve_num_threads() -> int:
    """Threads for inference: ``$FAKEFACE_THREADS`` via :class:`Settings` (a bad value raises its
    :class:`~fakeface.utils.settings.SettingsError`), else min(2, CPUs available to this process)."""
    return Settings.from_env().resolve_threads()


def create_session(path: str | os.PathLike, *, threads: int | None = None):
    """An ONNX Runtime CPU session with this project's thread settings.

    ``allow_spinning=0`` stops idle worker threads from busy-waiting, which
    otherwise steals the 2 cores from decoding and the web server; no CPU memory arena (see below).
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or resolve_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No CPU memory arena: under the load test's detect mix (batches of every size) the arena kept growing,
    # about 35 KB per request over 1600 requests; without it the server's memory stayed within 1450-1530 MiB,
    # and a call took the same time (1.96 against 1.97 ms per face, fp32 content graph; docs/performance.md).
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


class FastDetector(Detector):
    """A :class:`Detector` whose logits come from the int8 ONNX graph.

    Everything else (preprocessing, crop list, temperature, thresholds,
    verdicts) is inherited, and ``self.model`` is still the torch model, for
    Grad-CAM. Made from a :class:`~fakeface.modeling.detector.ReleaseConfig`
    instead of a model (:func:`load_fast_path_unbuilt`), it scores without
    torch, and ``self.model`` builds the torch model on first use.
    """

    def __init__(self, model: nn.Module | ReleaseConfig, onnx_path: str | os.PathLike, *, threads: int | None = None,
                 info: dict[str, Any] | None = None):
        super().__init__(model)
        self.onnx_path = Path(onnx_path)
        self.info = dict(info or {})
        self.precision = graph_precision(self.info)
        self.runtime = f"onnxruntime-{self.precision}"
        self.reference_check: ReferenceCheck | None = None   # set by load_fast_path after checking on this CPU
        self.session = create_session(self.onnx_path, threads=threads)
        expected = [None, self.preprocessing.crops_per_image, *self.preprocessing.input_size]
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 5 or [d if isinstance(d, int) else None for d in shape][1:] != expected[1:]:
            raise ValueError(f"{self.onnx_path.name} takes input {shape}, but the model's preprocessing makes {expected}")
        self._input_name = self.session.get_inputs()[0].name

    @property
    def model(self) -> nn.Module:
        """The torch model (Grad-CAM); from a ReleaseConfig, built on first use from the same files, and refused
        unless its weights are the ones the graph was exported from."""
        held = self._model
        return held.build(self._check_weights) if isinstance(held, ReleaseConfig) else held

    @model.setter
    def model(self, value: nn.Module | ReleaseConfig) -> None:
        self._model = value

    @property
    def release(self) -> nn.Module | ReleaseConfig:
        return self._model

    def _check_weights(self, model: nn.Module) -> None:
        if compute_weights_fingerprint(model) != (self.info.get("source") or {}).get("weights_sha256"):
            raise RuntimeError(f"{Path(self.onnx_path).parent.name}: model.safetensors changed after its int8 graph "
                               "was loaded; restart the app to load the release again")

    def _check_fresh(self) -> None:
        held = self._model
        if isinstance(held, ReleaseConfig) and not held.built:
            return   # no model yet: the config this detector read is the only one, nothing can have changed it
        super()._check_fresh()

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.run(self.prepare_arrays(images))

    def run(self, crops: np.ndarray) -> np.ndarray:
        """The int8 graph on prepared crops: (N, K, C, H, W) float32 -> crop-averaged logits (N, 2) float32."""
        return self.session.run(None, {self._input_name: crops})[0].astype(np.float32)


def graph_path(folder: str | os.PathLike, info: dict[str, Any] | None) -> Path:
    """The graph a ``fastpath.json`` describes, in ``folder``; ``ValueError`` for an unknown precision."""
    return Path(folder) / FAST_GRAPH_NAMES[graph_precision(info)]


def read_fast_path_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """``fastpath.json`` of a release folder, or None when absent or unreadable."""
    path = Path(folder) / FAST_INFO_NAME
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return info if isinstance(info, dict) else None


class RefusalCode(str, Enum):
    """Why a release's int8 graph is not served (the app serves fp32 instead)."""

    NOT_FROM_FOLDER = "not_from_folder"
    ABSENT = "absent"
    INFO_UNREADABLE = "info_unreadable"
    GRAPH_MISSING = "graph_missing"
    UNKNOWN_FORMAT = "unknown_format"
    OVER_BUDGET = "over_budget"
    UNMEASURED = "unmeasured"
    OTHER_PREPROCESSING = "other_preprocessing"
    OTHER_WEIGHTS = "other_weights"
    RUNTIME_MISSING = "runtime_missing"
    GRAPH_UNLOADABLE = "graph_unloadable"
    CAN_SATURATE = "can_saturate"
    REFERENCE_MISSING = "reference_missing"
    REFERENCE_UNREADABLE = "reference_unreadable"
    REFERENCE_MISMATCH = "reference_mismatch"


_REEXPORT = ("Re-export the fast path (train.py does it when it writes a release; or call "
             "fakeface.modeling.fastpath.export_fast_path on the release folder).")


@dataclass(frozen=True)
class FastPathRefusal:
    """A typed reason for serving fp32: what is wrong, how to fix it, and the measurement when there is one."""

    code: RefusalCode
    problem: str
    fix: str = _REEXPORT
    check: ReferenceCheck | None = None

    @property
    def message(self) -> str:
        return f"ONNX fast path not used: {self.problem}. {self.fix}"


@dataclass(frozen=True)
class FastPathLoad:
    """What :func:`load_fast_path` found: the int8 detector, or the reason it is not served."""

    detector: FastDetector | None
    refusal: FastPathRefusal | None = None
    check: ReferenceCheck | None = None     # the reference check on this CPU, when it ran

    @property
    def runtime(self) -> str:
        return self.detector.runtime if self.detector is not None else "torch-fp32"


def load_fast_path(folder_or_model: str | os.PathLike | nn.Module | Detector, *,
                   threads: int | None = None) -> FastPathLoad:
    """The int8 detector of a release after every check, or the typed reason to serve fp32; never raises.

    Accepts a release folder, a model from :func:`fakeface.modeling.detector.load_detector`
    (its folder is ``model.fakeface_files.folder``) or a ``Detector``. The
    int8 graph is refused when its files are absent, unreadable or made from
    other weights or preprocessing, when onnxruntime is missing, when the
    export's AUC drop was over budget or never measured, when it could
    saturate on this CPU, and when its reference inputs, scored here, differ
    from their fp32 outputs by more than the stated tolerance.
    """
    from torch import nn

    model = folder_or_model.model if isinstance(folder_or_model, Detector) else folder_or_model
    if isinstance(model, nn.Module):
        files = getattr(model, "fakeface_files", None)
        if files is None:
            logger.info("fast path: the model was not loaded from a folder; serving fp32")
            return FastPathLoad(None, FastPathRefusal(RefusalCode.NOT_FROM_FOLDER,
                                                      "the model was not loaded from a release folder",
                                                      "Load the model with load_detector(folder or Hub id)."))
        folder = Path(files.folder)
    else:
        folder, model = Path(model), None
    if not (folder / FAST_INFO_NAME).exists() and not any((folder / n).exists() for n in FAST_GRAPH_NAMES.values()):
        logger.info("no fast path in %s; serving fp32", folder)
        return FastPathLoad(None, FastPathRefusal(RefusalCode.ABSENT, "the release has no int8 graph"))
    result = _load_checked(folder, model, threads)
    if result.refusal is not None:
        logger.warning("fast path of %s not used: %s; serving fp32", folder, result.refusal.problem)
    return result


def load_fast_path_unbuilt(files: DetectorFiles, *, threads: int | None = None) -> FastPathLoad | None:
    """A release's int8 detector checked without building its torch model (nor importing torch), or None.

    :func:`load_fast_path`'s checks, with "exported from these weights and this preprocessing" proven by the
    files: ``fastpath.json`` records the sha256 of ``config.json`` and ``model.safetensors`` as the export
    found them (only when they loaded to exactly the exported model and the config alone fixes the
    preprocessing), and the same files load to the same model. The detector's ``model`` (Grad-CAM) is
    built on first use. None whenever anything is missing, differs or fails: the caller then loads the
    model and calls :func:`load_fast_path`, whose refusals are the ones reported. Never raises.
    """
    folder = Path(files.folder)
    try:
        info = read_fast_path_info(folder)
        if _check_files(folder, info) is not None or _check_saturation(info) is not None:
            return None
        recorded = (info.get("source") or {}).get("files_sha256")
        if not recorded or recorded != release_files_sha256(folder):
            return None
        release = ReleaseConfig(files)
        preprocessing = resolve_detector_config(release).preprocessing
        if json_safe(preprocessing.as_dict()) != (info.get("source") or {}).get("preprocessing"):
            return None
        loaded = _check_reference_here(FastDetector(release, graph_path(folder, info), threads=threads, info=info),
                                       folder, info)
    except Exception as error:  # noqa: BLE001 - the full load decides and reports
        logger.info("fast path of %s not checked before its model (%s); loading the model first", folder,
                    type(error).__name__)
        return None
    return loaded if loaded.detector is not None else None


def _load_checked(folder: Path, model: nn.Module | None, threads: int | None) -> FastPathLoad:
    """The checks in order, cheapest first: the files, the source, the graph, then the reference inputs here."""
    info = read_fast_path_info(folder)
    refusal = _check_files(folder, info)
    if refusal is not None:
        return FastPathLoad(None, refusal)
    if model is None:
        try:
            model = load_detector(folder)
        except Exception as error:  # noqa: BLE001 - the caller reports the model's own load errors
            return FastPathLoad(None, FastPathRefusal(
                RefusalCode.OTHER_WEIGHTS, f"the release's weights cannot be loaded ({type(error).__name__})"))
    refusal = _check_source(model, info) or _check_saturation(info)
    if refusal is not None:
        return FastPathLoad(None, refusal)
    try:
        fast = FastDetector(model, graph_path(folder, info), threads=threads, info=info)
    except FastPathUnavailable as error:
        return FastPathLoad(None, FastPathRefusal(RefusalCode.RUNTIME_MISSING, str(error),
                                                  "Install the pinned onnxruntime (requirements.txt)."))
    except Exception as error:  # corrupt or truncated file, incompatible opset: all mean "serve fp32"
        return FastPathLoad(None, FastPathRefusal(
            RefusalCode.GRAPH_UNLOADABLE,
            f"{graph_path(folder, info).name} cannot be loaded ({type(error).__name__}: {str(error)[:200]})"))
    return _check_reference_here(fast, folder, info)


def _check_files(folder: Path, info: dict[str, Any] | None) -> FastPathRefusal | None:
    """``fastpath.json`` readable, the graph present, a format this version reads, within the AUC budget."""
    if info is None:
        return FastPathRefusal(RefusalCode.INFO_UNREADABLE, f"{FAST_INFO_NAME} is missing or unreadable")
    try:
        graph = graph_path(folder, info)
    except ValueError as error:
        return FastPathRefusal(RefusalCode.UNKNOWN_FORMAT, f"{FAST_INFO_NAME}: {error}")
    if not graph.is_file():
        return FastPathRefusal(RefusalCode.GRAPH_MISSING, f"{graph.name} is missing")
    if info.get("format") != FAST_PATH_FORMAT:
        return FastPathRefusal(RefusalCode.UNKNOWN_FORMAT,
                               f"{FAST_INFO_NAME} has format {info.get('format')!r}, this version reads "
                               f"{FAST_PATH_FORMAT} (format 1 graphs can saturate on AVX2 CPUs)")
    if info.get("within_budget") is None:
        return FastPathRefusal(RefusalCode.UNMEASURED, "its accuracy was never measured against fp32",
                               "Export with labelled holdout images (the test split) so the AUC drop is measured.")
    if info.get("within_budget") is not True:
        return FastPathRefusal(RefusalCode.OVER_BUDGET,
                               f"it loses {info.get('auc_drop')} AUC against fp32 (budget {info.get('budget_auc')})",
                               "Serve fp32, or re-export with more calibration images.")
    return None


def _check_source(model: nn.Module, info: dict[str, Any]) -> FastPathRefusal | None:
    """The graph was exported from this preprocessing and these very weights."""
    source = info.get("source") or {}
    if json_safe(Detector(model).preprocessing.as_dict()) != source.get("preprocessing"):
        return FastPathRefusal(RefusalCode.OTHER_PREPROCESSING,
                               "it was exported for a different preprocessing than config.json describes")
    if source.get("weights_sha256") != compute_weights_fingerprint(model):
        return FastPathRefusal(RefusalCode.OTHER_WEIGHTS,
                               "it was exported from different weights than model.safetensors")
    return None


def _check_saturation(info: dict[str, Any]) -> FastPathRefusal | None:
    """A graph whose int16 pair sums could saturate is served only where VNNI accumulates in int32."""
    here = cpu_instruction_sets()
    if (info.get("saturation") or {}).get("ok") is not True and not any(flag in here for flag in VNNI_FLAGS):
        return FastPathRefusal(RefusalCode.CAN_SATURATE,
                               f"its int8 weights can saturate this CPU's int16 sums (no VNNI; flags "
                               f"{', '.join(here) or '?'})")
    return None


def _check_reference_here(fast: FastDetector, folder: Path, info: dict[str, Any]) -> FastPathLoad:
    """Re-score the shipped reference crops on this CPU; the detector is served only when they agree."""
    reference_path = folder / FAST_REFERENCE_NAME
    if not reference_path.is_file():
        return FastPathLoad(None, FastPathRefusal(RefusalCode.REFERENCE_MISSING,
                                                  f"{FAST_REFERENCE_NAME} (its reference inputs) is missing"))
    reference = info.get("reference") or {}
    tolerance = float(reference.get("tolerance_abs_dp", REFERENCE_TOLERANCE_DP))
    try:
        check = check_reference_inputs(fast, reference_path, tolerance,
                                       float(reference.get("tolerance_drift_dp", REFERENCE_DRIFT_DP)),
                                       info.get("max_abs_dp") if "tolerance_drift_dp" in reference else None)
    except Exception as error:  # noqa: BLE001 - truncated, wrong arrays, wrong shapes: all mean "serve fp32"
        return FastPathLoad(None, FastPathRefusal(
            RefusalCode.REFERENCE_UNREADABLE,
            f"{FAST_REFERENCE_NAME} cannot be read ({type(error).__name__}: {str(error)[:200]})"))
    if not check.passed:
        refusal = FastPathRefusal(
            RefusalCode.REFERENCE_MISMATCH,
            f"on this CPU ({', '.join(check.cpu_flags) or 'flags unknown'}) its reference inputs differ "
            f"from fp32 by up to {check.max_abs_dp:.3f} in p(fake) (tolerance {check.tolerance:.3f}; "
            f"{check.export_max_abs_dp:.3f} where it was exported, so it computes {check.drift:.3f} away from "
            f"there, tolerance {check.drift_tolerance:.3f})",
            "Serve fp32 on this machine, and report the CPU: the int8 graph is not faithful here.", check)
        return FastPathLoad(None, refusal, check)
    fast.reference_check = check
    return FastPathLoad(fast, None, check)


def load_fast_detector(folder_or_model: str | os.PathLike | nn.Module | Detector, *,
                       threads: int | None = None) -> FastDetector | None:
    """The int8 detector of a release, or None (serve fp32; the reason is logged).

    :func:`load_fast_path` gives the same with the reason as data.
    """
    return load_fast_path(folder_or_model, threads=threads).detector

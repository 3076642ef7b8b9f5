"""The fast CPU serving path: a statically quantized int8 ONNX export of a detector.

A release folder may carry, beside ``model.safetensors``::

    model.int8.onnx   crops (N, K, C, H, W) float32 -> crop-averaged logits (N, 2)
    fastpath.json     how it was made and what it costs in accuracy

The graph takes exactly what :meth:`fakeface.modeling.inference.Detector.prepare`
produces and wraps :func:`fakeface.modeling.inference.logits_from_crops`, so the
preprocessing and the crop averaging keep their single definitions.
:class:`FastDetector` subclasses ``Detector`` and replaces only ``logits``:
temperature, thresholds and verdicts stay where they are, and the torch model
stays loaded for Grad-CAM.

Why static int8 (QDQ, per-channel weights, uint8 activations): measured on
the 2-core AVX-512 VNNI machine this project targets, ONNX Runtime int8 runs
ResNet50 about 5x and MobileNetV2 about 6x faster than eager timm fp32, which
is already near the machine's fp32 floor (see ``docs/performance.md``). The
accuracy cost is measured on held-out images at export time; a fast path
whose AUC drop exceeds the budget is never loaded (the app serves fp32).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from fakeface.modeling.inference import Detector, logits_from_crops

logger = logging.getLogger(__name__)

FAST_MODEL_NAME = "model.int8.onnx"
FAST_INFO_NAME = "fastpath.json"
FAST_PATH_FORMAT = 1
ENV_THREADS = "FAKEFACE_THREADS"
DEFAULT_OPSET = 18
DEFAULT_BUDGET_AUC = 0.005
QUANTIZATION_METHOD = "onnxruntime static int8, QDQ, per-channel weights (s8), uint8 activations, MinMax calibration"
INPUT_NAME = "crops"
OUTPUT_NAME = "logits"
_CALIBRATION_BATCH = 8


class FastPathUnavailable(RuntimeError):
    """The fast path cannot be built here (e.g. onnxruntime or onnx is not installed)."""


# --------------------------------------------------------------------------- runtime settings

def resolve_num_threads() -> int:
    """Threads for inference: ``$FAKEFACE_THREADS``, else min(2, CPUs available to this process).

    A free Space has 2 vCPUs; more threads than cores only adds contention.
    """
    text = os.environ.get(ENV_THREADS, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{ENV_THREADS} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise ValueError(f"{ENV_THREADS} must be a positive integer, got {value}")
        return value
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(2, available))


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise FastPathUnavailable(
            "onnxruntime is not installed; install the pinned version from requirements.txt for the int8 fast path"
        ) from error
    return onnxruntime


def create_session(path: str | os.PathLike, *, threads: int | None = None):
    """An ONNX Runtime CPU session with this project's thread settings.

    ``allow_spinning=0`` stops idle worker threads from busy-waiting, which
    otherwise steals the 2 cores from decoding and the web server.
    """
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or resolve_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- identity

def compute_weights_fingerprint(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, values).

    Recorded at export and checked at load, so an ONNX file left over from
    other weights (retrained, or a partly updated repo) is never served.
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# --------------------------------------------------------------------------- export

class _CropAveragingModel(nn.Module):
    """The exported graph: :func:`logits_from_crops` around the detector."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return logits_from_crops(self.model, crops)


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The exporter's optimizer logs every rewrite at INFO; training logs at INFO."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "onnxruntime")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET) -> str:
    """Export the fp32 graph: crops (N, K, C, H, W) -> crop-averaged logits (N, 2).

    N is dynamic; K, C, H, W are fixed by the model's preprocessing.
    Returns which exporter succeeded ("dynamo" or "torchscript").
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail with our message, not torch's)
    except ImportError as error:
        raise FastPathUnavailable("onnx is not installed; it is needed to export the fast path") from error
    detector = Detector(model)
    pp = detector.preprocessing
    example = torch.zeros((2, pp.crops_per_image, *pp.input_size), dtype=torch.float32)
    wrapper = _CropAveragingModel(model).eval()
    path = Path(path)
    # The dynamo exporter (torch 2.14's default, needs onnxscript) first; the
    # TorchScript exporter only if it fails on some architecture.
    with _quiet_exporter_logs():
        return _export_onnx(wrapper, example, path, opset)


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path, opset: int) -> str:
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes={"crops": {0: batch}}, verbose=False,
        )
        program.save(os.fspath(path))
        exporter = "dynamo"
    except Exception as error:  # exporter limitations differ by architecture
        logger.info("dynamo ONNX export failed (%s: %s); using the TorchScript exporter", type(error).__name__, error)
        torch.onnx.export(
            wrapper, (example,), os.fspath(path), dynamo=False, opset_version=min(opset, 17),
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}},
        )
        exporter = "torchscript"
    return exporter


class _CropsReader:
    """Calibration data: ``Detector.prepare`` outputs, a few images per batch."""

    def __init__(self, detector: Detector, images: Sequence[Image.Image], batch_size: int = _CALIBRATION_BATCH):
        self._batches: Iterator[list[Image.Image]] = (
            list(images[i:i + batch_size]) for i in range(0, len(images), batch_size)
        )
        self._detector = detector

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        return {INPUT_NAME: self._detector.prepare(batch).numpy()}


def quantize_onnx(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, detector: Detector,
                  calibration_images: Sequence[Image.Image], *, quant_format: str = "QDQ",
                  keep_stem_fp32: bool = True) -> Path:
    """Static int8 quantization of an exported graph, calibrated on ``calibration_images``.

    ``quant_format`` "QDQ" (what releases ship) or "QOperator" (kept so the
    benchmark can show the choice was measured). ``keep_stem_fp32`` leaves
    the convolution(s) on the input in fp32 (see :func:`find_input_convs`).
    """
    _import_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_CropsReader, CalibrationDataReader):
        pass

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    prepared = fp32_path.with_name(fp32_path.stem + ".pre.onnx")
    with _quiet_exporter_logs():
        # Shape inference + graph cleanup first, as onnxruntime recommends for static quantization.
        quant_pre_process(os.fspath(fp32_path), os.fspath(prepared), skip_symbolic_shape=False)
        quantize_static(
            os.fspath(prepared), os.fspath(int8_path), Reader(detector, calibration_images),
            quant_format=QuantFormat[quant_format], per_channel=True, reduce_range=False,
            # u8 activations x s8 weights is the VNNI fast path on x86.
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=find_input_convs(prepared) if keep_stem_fp32 else None,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    return int8_path


def find_input_convs(path: str | os.PathLike) -> list[str]:
    """Names of the Conv nodes that read the graph input (through shape-only ops such as Reshape).

    They may have to stay fp32: quantizing the normalised pixels to 8 bits
    with one scale for all three channels is coarser than the pixels
    themselves, and rounds away exactly the pixel-level traces a generator
    leaves. Measured on the synthetic test split: a trained MobileNetV2 lost
    0.0056 AUC with its input convolution in int8 and none with it in fp32;
    a ResNet50 lost nothing either way, and its 7x7 stem in fp32 costs about
    a quarter of its int8 time. Hence export_fast_path tries all-int8 first.
    """
    import onnx

    graph = onnx.load(os.fspath(path), load_external_data=False).graph
    passthrough = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast", "Transpose"}
    reached = {i.name for i in graph.input}
    names = []
    for node in graph.node:  # ONNX nodes are stored in topological order
        if not any(name in reached for name in node.input):
            continue
        if node.op_type == "Conv":
            names.append(node.name)
        elif node.op_type in passthrough:
            reached.update(node.output)
    return names


def compare_detectors(reference: Detector, candidate: Detector, images: Sequence[Image.Image],
                      labels: Sequence[int] | None = None, *, batch_size: int = 16,
                      reference_scores: tuple[Any, float] | None = None) -> dict[str, Any]:
    """How far ``candidate`` is from ``reference`` on ``images``: AUC, |Δp|, verdict agreement, speed.

    ``reference_scores`` = (Scores, seconds) from an earlier call reuses the
    reference's scoring (see :func:`score_timed`).
    """
    from fakeface.evaluation.metrics import roc_auc

    ref, ref_seconds = reference_scores or score_timed(reference, images, batch_size)
    start = time.perf_counter()
    new = candidate.score_batches(images, batch_size)
    new_seconds = time.perf_counter() - start
    diff = np.abs(ref.p_fake - new.p_fake)
    result: dict[str, Any] = {
        "images": len(images),
        "max_abs_dp": float(diff.max()) if len(diff) else 0.0,
        "mean_abs_dp": float(diff.mean()) if len(diff) else 0.0,
        "verdict_agreement": float(np.mean([a == b for a, b in zip(ref.verdicts, new.verdicts)])) if len(diff) else 1.0,
        "ms_per_image_fp32": 1000 * ref_seconds / max(1, len(images)),
        "ms_per_image_int8": 1000 * new_seconds / max(1, len(images)),
    }
    if labels is not None:
        labels = np.asarray(labels)
        result["auc_fp32"] = roc_auc(labels, ref.p_fake)
        result["auc_int8"] = roc_auc(labels, new.p_fake)
        result["auc_drop"] = result["auc_fp32"] - result["auc_int8"]
    return result


def score_timed(detector: Detector, images: Sequence[Image.Image], batch_size: int = 16) -> tuple[Any, float]:
    """(Scores, seconds) of ``detector.score_batches``."""
    start = time.perf_counter()
    scores = detector.score_batches(images, batch_size)
    return scores, time.perf_counter() - start


def _write_atomic(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(data)
        tmp = Path(handle.name)
    os.replace(tmp, path)


def export_fast_path(
    model: nn.Module,
    release_dir: str | os.PathLike,
    calibration_images: Sequence[Image.Image],
    holdout_images: Sequence[Image.Image] | None = None,
    holdout_labels: Sequence[int] | None = None,
    budget_auc: float = DEFAULT_BUDGET_AUC,
    *,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Write ``model.int8.onnx`` + ``fastpath.json`` into ``release_dir`` and return the report.

    ``calibration_images`` (decoded validation images; a few dozen suffice)
    set the activation ranges. The accuracy cost is measured against the fp32
    model on ``holdout_images`` (the test split); with ``holdout_labels`` the
    AUC drop decides ``within_budget`` (drop <= ``budget_auc``), and which
    graph ships: every layer int8 when that is within budget, else the one
    with the input convolution in fp32 (``input_conv`` in the report). Without
    labels the AUC cannot be measured and ``within_budget`` is None, which
    :func:`load_fast_detector` treats as "not proven": the app serves fp32.
    """
    if not calibration_images:
        raise ValueError("export_fast_path needs at least one calibration image (decoded validation images)")
    if holdout_labels is not None and (holdout_images is None or len(holdout_labels) != len(holdout_images)):
        raise ValueError("holdout_labels must have one label per holdout image")
    release_dir = Path(release_dir)
    release_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    ort = _import_onnxruntime()
    reference = Detector(model)
    started = time.perf_counter()
    measured_on = "holdout" if holdout_images is not None else "calibration"
    images = list(holdout_images) if holdout_images is not None else list(calibration_images)
    with tempfile.TemporaryDirectory(dir=release_dir, prefix=".fastpath-") as tmp:
        fp32_path = Path(tmp) / "model.fp32.onnx"
        exporter = export_onnx(model, fp32_path, opset=opset)
        reference_scores = score_timed(reference, images)
        attempts: list[dict[str, Any]] = []
        # Fastest first: every layer int8. If that loses more AUC than the
        # budget, keep the input convolution fp32 (see find_input_convs).
        # Without labels nothing can be proven, so only the safer graph is made.
        for keep_stem_fp32 in ((False, True) if holdout_labels is not None else (True,)):
            int8_tmp = Path(tmp) / f"input-conv-{'fp32' if keep_stem_fp32 else 'int8'}.onnx"
            quantize_onnx(fp32_path, int8_tmp, reference, list(calibration_images), keep_stem_fp32=keep_stem_fp32)
            comparison = compare_detectors(reference, FastDetector(model, int8_tmp), images, holdout_labels,
                                           reference_scores=reference_scores)
            auc_drop = comparison.get("auc_drop")
            within_budget = None if auc_drop is None or np.isnan(auc_drop) else bool(auc_drop <= budget_auc)
            attempts.append({"input_conv": "fp32" if keep_stem_fp32 else "int8", "within_budget": within_budget,
                             **{k: comparison.get(k) for k in ("auc_drop", "max_abs_dp", "mean_abs_dp")}})
            if within_budget:
                break
        export_seconds = time.perf_counter() - started
        info: dict[str, Any] = {
            "format": FAST_PATH_FORMAT,
            "file": FAST_MODEL_NAME,
            "method": QUANTIZATION_METHOD,
            "exporter": exporter,
            "opset": opset,
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "calibration_images": len(calibration_images),
            "input_conv": attempts[-1]["input_conv"],
            "measured_on": measured_on,
            **comparison,
            "budget_auc": budget_auc,
            "within_budget": within_budget,
            "export_seconds": round(export_seconds, 2),
            "size_mb": round(int8_tmp.stat().st_size / 2**20, 2),
            # Nested (kept out of the card's table): the graphs tried, and what the shipped one was made from.
            "attempts": attempts,
            "source": {
                "weights_sha256": compute_weights_fingerprint(model),
                "preprocessing": reference.preprocessing.as_dict(),
                "input": INPUT_NAME,
                "output": OUTPUT_NAME,
            },
        }
        # The JSON is written last: a folder with an ONNX file but no JSON
        # (interrupted export) is never loaded.
        (release_dir / FAST_INFO_NAME).unlink(missing_ok=True)
        os.replace(int8_tmp, release_dir / FAST_MODEL_NAME)
    _write_atomic(release_dir / FAST_INFO_NAME, (json.dumps(_json_ready(info), indent=2) + "\n").encode())
    if within_budget is False:
        logger.warning("int8 fast path loses %.4f AUC (budget %.4f): the app will serve fp32", auc_drop, budget_auc)
    return info


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value


# --------------------------------------------------------------------------- serving

class FastDetector(Detector):
    """A :class:`Detector` whose logits come from the int8 ONNX graph.

    Everything else (preprocessing, crop list, temperature, thresholds,
    verdicts) is inherited, and ``self.model`` is still the torch model, for
    Grad-CAM.
    """

    runtime = "onnxruntime-int8"

    def __init__(self, model: nn.Module, onnx_path: str | os.PathLike, *, threads: int | None = None,
                 info: dict[str, Any] | None = None):
        super().__init__(model)
        self.onnx_path = Path(onnx_path)
        self.info = dict(info or {})
        self.session = create_session(self.onnx_path, threads=threads)
        expected = [None, self.preprocessing.crops_per_image, *self.preprocessing.input_size]
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 5 or [d if isinstance(d, int) else None for d in shape][1:] != expected[1:]:
            raise ValueError(f"{self.onnx_path.name} takes input {shape}, but the model's preprocessing makes {expected}")
        self._input_name = self.session.get_inputs()[0].name

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        crops = self.prepare(images).numpy()          # (N, K, C, H, W) float32
        return self.session.run(None, {self._input_name: crops})[0].astype(np.float32)


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


def load_fast_detector(folder_or_model: str | os.PathLike | nn.Module | Detector, *,
                       threads: int | None = None) -> FastDetector | None:
    """The int8 detector of a release, or None (with the reason logged) when it must not be used.

    Accepts a release folder, a model from :func:`fakeface.modeling.detector.load_detector`
    (its folder is ``model.fakeface_files.folder``) or a ``Detector``. None
    means: serve fp32. That is the case when the files are absent, unreadable
    or made from other weights or preprocessing, when onnxruntime is missing,
    and when the export's measured AUC drop was over budget or never measured.
    """
    from fakeface.modeling.detector import load_detector

    model = folder_or_model.model if isinstance(folder_or_model, Detector) else folder_or_model
    if isinstance(model, nn.Module):
        files = getattr(model, "fakeface_files", None)
        if files is None:
            logger.info("fast path: the model was not loaded from a folder; serving fp32")
            return None
        folder = Path(files.folder)
    else:
        folder, model = Path(model), None

    def refuse(reason: str) -> None:
        logger.warning("fast path of %s not used: %s; serving fp32", folder, reason)

    info = read_fast_path_info(folder)
    onnx_path = folder / FAST_MODEL_NAME
    if info is None:
        if onnx_path.exists():
            refuse(f"{FAST_INFO_NAME} is missing or unreadable")
        else:
            logger.info("no fast path in %s; serving fp32", folder)
        return None
    if not onnx_path.is_file():
        return refuse(f"{FAST_MODEL_NAME} is missing")
    if info.get("format") != FAST_PATH_FORMAT:
        return refuse(f"unknown {FAST_INFO_NAME} format {info.get('format')!r}")
    if info.get("within_budget") is not True:
        why = ("its accuracy was never measured against fp32" if info.get("within_budget") is None else
               f"it loses {info.get('auc_drop')} AUC against fp32 (budget {info.get('budget_auc')})")
        return refuse(why)
    if model is None:
        model = load_detector(folder)
    source = info.get("source") or {}
    detector_pp = Detector(model).preprocessing.as_dict()
    if _json_ready(detector_pp) != source.get("preprocessing"):
        return refuse("it was exported for a different preprocessing than config.json describes")
    if source.get("weights_sha256") != compute_weights_fingerprint(model):
        return refuse("it was exported from different weights than model.safetensors")
    try:
        return FastDetector(model, onnx_path, threads=threads, info=info)
    except FastPathUnavailable as error:
        return refuse(str(error))
    except Exception as error:  # corrupt or truncated file, incompatible opset: all mean "serve fp32"
        return refuse(f"{FAST_MODEL_NAME} cannot be loaded ({type(error).__name__}: {str(error)[:200]})")


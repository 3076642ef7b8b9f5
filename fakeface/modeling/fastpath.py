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

The same verdict on every CPU: weights are quantized to 7 bits
(``reduce_range``). On x86 without VNNI, ONNX Runtime's u8 x s8 kernels add
pairs of products in a saturating int16 (``vpmaddubsw``); 8-bit weights
overflowed it on an AVX2-only EPYC (mean |Δp| 0.053, max 0.31 against fp32),
7-bit weights cannot (:func:`check_no_saturation` proves it from the graph).
Measured here on a trained MobileNetV2 (``results/int8_settings.md``, same
export flow, 600 held-out images, 2-core Xeon at load 2.5-3.1): 8-bit u8s8 AUC drop
0.0006, mean/max |Δp| 0.0101/0.095; 7-bit u8s8 0.0019, 0.0102/0.105 at the
same speed (0.99x); s8s8 activations 0.0006, 0.0101/0.092 but 0.58x the speed,
with 8-bit weights still. Hence 7-bit u8s8 (AUC drop within the 0.005 budget).
Each release also carries reference inputs
(``fastpath_reference.npz``) that :func:`load_fast_path` re-scores on the
serving CPU before the graph is used.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from fakeface.modeling.detector import load_detector
from fakeface.modeling.inference import Detector, logits_from_crops
from fakeface.utils.fileio import write_atomic
from fakeface.utils.formatting import json_safe
from fakeface.utils.settings import ENV, Settings

logger = logging.getLogger(__name__)

FAST_MODEL_NAME = "model.int8.onnx"
FAST_INFO_NAME = "fastpath.json"
FAST_REFERENCE_NAME = "fastpath_reference.npz"
# 2: 7-bit weights (cannot saturate on AVX2), reference inputs checked at load.
FAST_PATH_FORMAT = 2
ENV_THREADS = ENV["threads"]
DEFAULT_OPSET = 18
DEFAULT_BUDGET_AUC = 0.005
QUANTIZATION_METHOD = ("onnxruntime static int8, QDQ, per-channel 7-bit weights (s8, reduce_range), uint8 activations, "
                       "MinMax calibration")
# Reference inputs shipped in the release and re-scored at load on the serving CPU:
# up to this many images, fewer when their crops would pass REFERENCE_MAX_BYTES.
REFERENCE_IMAGES = 8
REFERENCE_MAX_BYTES = 4 * 2**20
# The stated tolerance: on every reference image, the int8 p(fake) on the serving
# CPU must be within this of the fp32 p(fake) stored with it: the max |Δp| that
# docs/performance.md states for the int8 path. (Saturation on AVX2 moved p by
# up to 0.31; 7-bit weights moved a trained MobileNetV2's worst image by 0.07.)
REFERENCE_TOLERANCE_DP = 0.15
# Instruction sets recorded beside measurements (and used to decide whether a
# graph that could saturate is safe here: VNNI accumulates in int32).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx_vnni_int8", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
INPUT_NAME = "crops"
OUTPUT_NAME = "logits"
_CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class QuantizationSettings:
    """The integer types of a static int8 export (onnxruntime ``QuantType`` names).

    ``reduce_range`` quantizes weights to 7 bits ([-64, 64]). x86 CPUs without
    VNNI multiply u8 activations by s8 weights with ``vpmaddubsw``, which adds
    two products into a saturating int16: 2 * 255 * 127 = 64770 overflows
    32767, 2 * 255 * 64 = 32640 cannot. See :func:`check_no_saturation`.
    """

    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    reduce_range: bool = True

    def __post_init__(self) -> None:
        for name in ("activation_type", "weight_type"):
            if getattr(self, name) not in ("QUInt8", "QInt8"):
                raise ValueError(f"{name} must be 'QUInt8' or 'QInt8', got {getattr(self, name)!r}")


DEFAULT_QUANTIZATION = QuantizationSettings()


class FastPathUnavailable(RuntimeError):
    """The fast path cannot be built here (e.g. onnxruntime or onnx is not installed)."""


# --------------------------------------------------------------------------- runtime settings

def resolve_num_threads() -> int:
    """Threads for inference: ``$FAKEFACE_THREADS`` via :class:`Settings` (a bad value raises its
    :class:`~fakeface.utils.settings.SettingsError`), else min(2, CPUs available to this process)."""
    return Settings.from_env().resolve_threads()


def cpu_instruction_sets(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> tuple[str, ...]:
    """The x86 instruction sets of :data:`CPU_FLAGS` this CPU has (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return tuple(f for f in CPU_FLAGS if f in flags)


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
                  keep_stem_fp32: bool = True, settings: QuantizationSettings | None = None) -> Path:
    """Static int8 quantization of an exported graph, calibrated on ``calibration_images``.

    ``quant_format`` "QDQ" (what releases ship) or "QOperator" (kept so the
    benchmark can show the choice was measured). ``keep_stem_fp32`` leaves
    the convolution(s) on the input in fp32 (see :func:`find_input_convs`).
    ``settings`` default to :data:`DEFAULT_QUANTIZATION` (cannot saturate on AVX2).
    """
    _import_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_CropsReader, CalibrationDataReader):
        pass

    settings = settings or DEFAULT_QUANTIZATION
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    prepared = fp32_path.with_name(fp32_path.stem + ".pre.onnx")
    with _quiet_exporter_logs():
        # Shape inference + graph cleanup first, as onnxruntime recommends for static quantization.
        quant_pre_process(os.fspath(fp32_path), os.fspath(prepared), skip_symbolic_shape=False)
        quantize_static(
            os.fspath(prepared), os.fspath(int8_path), Reader(detector, calibration_images),
            quant_format=QuantFormat[quant_format], per_channel=True, reduce_range=settings.reduce_range,
            activation_type=QuantType[settings.activation_type], weight_type=QuantType[settings.weight_type],
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


# vpmaddubsw (x86 without VNNI) adds two u8 x s8 products into a saturating int16.
_INT16_MAX = 32767
_U8_MAX = 255
_GEMM_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
# QOperator graphs carry the weight as an input of the integer op itself: op -> index of the weight.
_INTEGER_OPS = {"QLinearConv": 3, "QLinearMatMul": 3, "ConvInteger": 1, "MatMulInteger": 1}


@dataclass(frozen=True)
class SaturationCheck:
    """Whether an int8 graph can overflow the int16 pair sums of ``vpmaddubsw`` (x86 without VNNI).

    ``worst_pair_sum`` = 2 * 255 * the largest |weight - zero point| of any
    quantized Conv/Gemm/MatMul. The activation operand is taken at its u8
    maximum whatever its type: onnxruntime runs s8 activations through the
    same u8 kernels by flipping their sign bit. It is an upper bound, so a graph
    that passes cannot saturate on any CPU; ``layers`` says how many were checked.
    """

    ok: bool
    worst_pair_sum: int
    layers: int
    worst_layer: str | None
    limit: int = _INT16_MAX


def check_no_saturation(path: str | os.PathLike) -> SaturationCheck:
    """Read the quantized weights out of an int8 ONNX graph and bound its int16 pair sums."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(os.fspath(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    def int_weight(name: str, zero_point: str | None, axis: int) -> np.ndarray | None:
        init = initializers.get(name)
        if init is None or init.data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            return None
        values = numpy_helper.to_array(init).astype(np.int32)
        if zero_point and zero_point in initializers:
            zp = numpy_helper.to_array(initializers[zero_point]).astype(np.int32)
            if zp.size > 1:  # per channel, along ``axis``
                values = np.moveaxis(np.moveaxis(values, axis, -1) - zp.reshape(-1), -1, axis)
            else:
                values = values - int(zp.reshape(-1)[0])
        return values

    worst, worst_layer, layers = 0, None, 0
    for node in graph.node:
        weight = None
        if node.op_type in _GEMM_OPS and len(node.input) > 1:
            source = producers.get(node.input[1])
            if source is not None and source.op_type == "DequantizeLinear":
                axis = next((a.i for a in source.attribute if a.name == "axis"), 1)
                weight = int_weight(source.input[0], source.input[2] if len(source.input) > 2 else None, axis)
        elif node.op_type in _INTEGER_OPS:
            index = _INTEGER_OPS[node.op_type]
            zp_index = index + 2 if node.op_type.startswith("QLinear") else 3
            weight = int_weight(node.input[index], node.input[zp_index] if len(node.input) > zp_index else None, 0)
        if weight is None or not weight.size:
            continue
        layers += 1
        pair_sum = 2 * _U8_MAX * int(np.abs(weight).max())
        if pair_sum > worst:
            worst, worst_layer = pair_sum, node.name
    return SaturationCheck(ok=worst <= _INT16_MAX, worst_pair_sum=worst, layers=layers, worst_layer=worst_layer)


def _roc_auc(labels: np.ndarray, p_fake: np.ndarray) -> float:
    """ROC-AUC (fake positive); NaN with one class only, which the export reads as "not measured"."""
    return float(roc_auc_score(labels, p_fake)) if len(np.unique(labels)) == 2 else float("nan")


def compare_detectors(reference: Detector, candidate: Detector, images: Sequence[Image.Image],
                      labels: Sequence[int] | None = None, *, batch_size: int = 16,
                      reference_scores: tuple[Any, float] | None = None) -> dict[str, Any]:
    """How far ``candidate`` is from ``reference`` on ``images``: AUC, |Δp|, verdict agreement, speed.

    ``reference_scores`` = (Scores, seconds) from an earlier call reuses the
    reference's scoring (see :func:`score_timed`).
    """
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
        result["auc_fp32"] = _roc_auc(labels, ref.p_fake)
        result["auc_int8"] = _roc_auc(labels, new.p_fake)
        result["auc_drop"] = result["auc_fp32"] - result["auc_int8"]
    return result


def score_timed(detector: Detector, images: Sequence[Image.Image], batch_size: int = 16) -> tuple[Any, float]:
    """(Scores, seconds) of ``detector.score_batches``."""
    start = time.perf_counter()
    scores = detector.score_batches(images, batch_size)
    return scores, time.perf_counter() - start


def _crops_from_pixels(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, K, C, H, W) crops -> the normalised float32 graph input, the same at export and at load."""
    m = np.asarray(mean, np.float32).reshape(1, 1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 1, 3, 1, 1)
    return ((pixels.astype(np.float32) / np.float32(255.0)) - m) / s


def write_reference_inputs(path: str | os.PathLike, model: nn.Module, fast: "FastDetector",
                           images: Sequence[Image.Image]) -> dict[str, Any]:
    """Save a few images' crops with their fp32 and (this CPU's) int8 logits; returns the JSON summary.

    The crops are stored as the uint8 pixels they are cut from (the eval
    transform only normalises them), a quarter of float32's size, and both
    logits are computed from exactly what the load-time check will feed.
    """
    pp = fast.preprocessing
    per_image = pp.crops_per_image * int(np.prod(pp.input_size))
    count = max(1, min(REFERENCE_IMAGES, len(images), REFERENCE_MAX_BYTES // per_image))
    crops = fast.prepare(list(images[:count])).numpy()                    # (N, K, C, H, W) float32
    std = np.asarray(pp.std, np.float32).reshape(1, 1, 3, 1, 1)
    mean = np.asarray(pp.mean, np.float32).reshape(1, 1, 3, 1, 1)
    pixels = np.clip(np.rint((crops.astype(np.float64) * std + mean) * 255.0), 0, 255).astype(np.uint8)
    inputs = _crops_from_pixels(pixels, pp.mean, pp.std)
    with torch.inference_mode():
        logits_fp32 = logits_from_crops(model.eval(), torch.from_numpy(inputs)).float().numpy()
    logits_int8 = fast.session.run(None, {fast._input_name: inputs})[0].astype(np.float32)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, pixels=pixels, logits_fp32=logits_fp32, logits_int8=logits_int8)
    return {"file": FAST_REFERENCE_NAME, "images": count, "tolerance_abs_dp": REFERENCE_TOLERANCE_DP,
            "bytes": Path(path).stat().st_size}


@dataclass(frozen=True)
class ReferenceCheck:
    """The shipped reference inputs re-scored by the int8 graph on this CPU.

    ``max_abs_dp``: the largest |p_int8 - p_fp32| here, which must stay within
    ``tolerance``; ``export_max_abs_dp``: the same where the release was
    exported (so a user can see whether this CPU computes differently).
    """

    images: int
    max_abs_dp: float
    export_max_abs_dp: float
    tolerance: float
    cpu_flags: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_dp <= self.tolerance)


def check_reference_inputs(fast: "FastDetector", path: str | os.PathLike,
                           tolerance: float = REFERENCE_TOLERANCE_DP) -> ReferenceCheck:
    """Score the release's reference crops with ``fast`` here and compare with the stored logits.

    Raises ``OSError``/``ValueError``/``KeyError`` for a file that cannot be read.
    """
    with np.load(path, allow_pickle=False) as data:
        pixels, logits_fp32, logits_int8 = data["pixels"], data["logits_fp32"], data["logits_int8"]
    pp = fast.preprocessing
    expected = (pp.crops_per_image, *pp.input_size)
    if pixels.dtype != np.uint8 or pixels.ndim != 5 or tuple(pixels.shape[1:]) != expected:
        raise ValueError(f"reference crops have shape {pixels.shape} ({pixels.dtype}), expected (N, {expected})")
    if logits_fp32.shape != (len(pixels), 2) or logits_int8.shape != logits_fp32.shape:
        raise ValueError(f"reference logits have shapes {logits_fp32.shape}/{logits_int8.shape}")
    here = fast.session.run(None, {fast._input_name: _crops_from_pixels(pixels, pp.mean, pp.std)})[0]
    p32, p8_then, p8_here = (fast.scores_from_logits(np.asarray(x, np.float32)).p_fake
                             for x in (logits_fp32, logits_int8, here))
    return ReferenceCheck(images=len(pixels), max_abs_dp=float(np.abs(p8_here - p32).max()),
                          export_max_abs_dp=float(np.abs(p8_then - p32).max()), tolerance=float(tolerance),
                          cpu_flags=cpu_instruction_sets())


def export_fast_path(
    model: nn.Module,
    release_dir: str | os.PathLike,
    calibration_images: Sequence[Image.Image],
    holdout_images: Sequence[Image.Image] | None = None,
    holdout_labels: Sequence[int] | None = None,
    budget_auc: float = DEFAULT_BUDGET_AUC,
    *,
    opset: int = DEFAULT_OPSET,
    quantization: QuantizationSettings = DEFAULT_QUANTIZATION,
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
            quantize_onnx(fp32_path, int8_tmp, reference, list(calibration_images), keep_stem_fp32=keep_stem_fp32,
                          settings=quantization)
            comparison = compare_detectors(reference, FastDetector(model, int8_tmp), images, holdout_labels,
                                           reference_scores=reference_scores)
            auc_drop = comparison.get("auc_drop")
            within_budget = None if auc_drop is None or np.isnan(auc_drop) else bool(auc_drop <= budget_auc)
            attempts.append({"input_conv": "fp32" if keep_stem_fp32 else "int8", "within_budget": within_budget,
                             **{k: comparison.get(k) for k in ("auc_drop", "max_abs_dp", "mean_abs_dp")}})
            if within_budget:
                break
        saturation = check_no_saturation(int8_tmp)
        reference_tmp = Path(tmp) / FAST_REFERENCE_NAME
        reference_info = write_reference_inputs(reference_tmp, model, FastDetector(model, int8_tmp), images)
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
            "quantization": asdict(quantization),
            "saturation": asdict(saturation),
            "reference": reference_info,
            "exported_on_cpu": list(cpu_instruction_sets()),
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
        os.replace(reference_tmp, release_dir / FAST_REFERENCE_NAME)
    write_atomic(release_dir / FAST_INFO_NAME, (json.dumps(json_safe(info), indent=2) + "\n").encode())
    if within_budget is False:
        logger.warning("int8 fast path loses %.4f AUC (budget %.4f): the app will serve fp32", auc_drop, budget_auc)
    return info


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
        self.reference_check: ReferenceCheck | None = None   # set by load_fast_path after checking on this CPU
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
        return f"int8 fast path not used: {self.problem}. {self.fix}"


@dataclass(frozen=True)
class FastPathLoad:
    """What :func:`load_fast_path` found: the int8 detector, or the reason it is not served."""

    detector: FastDetector | None
    refusal: FastPathRefusal | None = None
    check: ReferenceCheck | None = None     # the reference check on this CPU, when it ran

    @property
    def runtime(self) -> str:
        return FastDetector.runtime if self.detector is not None else "torch-fp32"


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
    if not (folder / FAST_INFO_NAME).exists() and not (folder / FAST_MODEL_NAME).exists():
        logger.info("no fast path in %s; serving fp32", folder)
        return FastPathLoad(None, FastPathRefusal(RefusalCode.ABSENT, "the release has no int8 graph"))
    result = _load_checked(folder, model, threads)
    if result.refusal is not None:
        logger.warning("fast path of %s not used: %s; serving fp32", folder, result.refusal.problem)
    return result


def _load_checked(folder: Path, model: nn.Module | None, threads: int | None) -> FastPathLoad:
    def refuse(code: RefusalCode, problem: str, fix: str = _REEXPORT, check: ReferenceCheck | None = None):
        return FastPathLoad(None, FastPathRefusal(code, problem, fix, check), check)

    info = read_fast_path_info(folder)
    onnx_path = folder / FAST_MODEL_NAME
    if info is None:
        return refuse(RefusalCode.INFO_UNREADABLE, f"{FAST_INFO_NAME} is missing or unreadable")
    if not onnx_path.is_file():
        return refuse(RefusalCode.GRAPH_MISSING, f"{FAST_MODEL_NAME} is missing")
    if info.get("format") != FAST_PATH_FORMAT:
        return refuse(RefusalCode.UNKNOWN_FORMAT,
                      f"{FAST_INFO_NAME} has format {info.get('format')!r}, this version reads {FAST_PATH_FORMAT} "
                      "(format 1 graphs can saturate on AVX2 CPUs)")
    if info.get("within_budget") is not True:
        if info.get("within_budget") is None:
            return refuse(RefusalCode.UNMEASURED, "its accuracy was never measured against fp32",
                          "Export with labelled holdout images (the test split) so the AUC drop is measured.")
        return refuse(RefusalCode.OVER_BUDGET,
                      f"it loses {info.get('auc_drop')} AUC against fp32 (budget {info.get('budget_auc')})",
                      "Serve fp32, or re-export with more calibration images.")
    if model is None:
        try:
            model = load_detector(folder)
        except Exception as error:  # noqa: BLE001 - the caller reports the model's own load errors
            return refuse(RefusalCode.OTHER_WEIGHTS, f"the release's weights cannot be loaded ({type(error).__name__})")
    source = info.get("source") or {}
    if json_safe(Detector(model).preprocessing.as_dict()) != source.get("preprocessing"):
        return refuse(RefusalCode.OTHER_PREPROCESSING,
                      "it was exported for a different preprocessing than config.json describes")
    if source.get("weights_sha256") != compute_weights_fingerprint(model):
        return refuse(RefusalCode.OTHER_WEIGHTS, "it was exported from different weights than model.safetensors")
    saturation = info.get("saturation") or {}
    here = cpu_instruction_sets()
    if saturation.get("ok") is not True and not any(flag in here for flag in _VNNI_FLAGS):
        return refuse(RefusalCode.CAN_SATURATE,
                      f"its int8 weights can saturate this CPU's int16 sums (no VNNI; flags {', '.join(here) or '?'})")
    try:
        fast = FastDetector(model, onnx_path, threads=threads, info=info)
    except FastPathUnavailable as error:
        return refuse(RefusalCode.RUNTIME_MISSING, str(error), "Install the pinned onnxruntime (requirements.txt).")
    except Exception as error:  # corrupt or truncated file, incompatible opset: all mean "serve fp32"
        return refuse(RefusalCode.GRAPH_UNLOADABLE,
                      f"{FAST_MODEL_NAME} cannot be loaded ({type(error).__name__}: {str(error)[:200]})")
    reference_path = folder / FAST_REFERENCE_NAME
    if not reference_path.is_file():
        return refuse(RefusalCode.REFERENCE_MISSING, f"{FAST_REFERENCE_NAME} (its reference inputs) is missing")
    try:
        check = check_reference_inputs(fast, reference_path, float((info.get("reference") or {}).get(
            "tolerance_abs_dp", REFERENCE_TOLERANCE_DP)))
    except Exception as error:  # noqa: BLE001 - truncated, wrong arrays, wrong shapes: all mean "serve fp32"
        return refuse(RefusalCode.REFERENCE_UNREADABLE,
                      f"{FAST_REFERENCE_NAME} cannot be read ({type(error).__name__}: {str(error)[:200]})")
    if not check.passed:
        return refuse(RefusalCode.REFERENCE_MISMATCH,
                      f"on this CPU ({', '.join(check.cpu_flags) or 'flags unknown'}) its reference inputs differ "
                      f"from fp32 by up to {check.max_abs_dp:.3f} in p(fake) (tolerance {check.tolerance:.3f}; "
                      f"{check.export_max_abs_dp:.3f} where it was exported)",
                      "Serve fp32 on this machine, and report the CPU: the int8 graph is not faithful here.", check)
    fast.reference_check = check
    return FastPathLoad(fast, None, check)


def load_fast_detector(folder_or_model: str | os.PathLike | nn.Module | Detector, *,
                       threads: int | None = None) -> FastDetector | None:
    """The int8 detector of a release, or None (serve fp32; the reason is logged).

    :func:`load_fast_path` gives the same with the reason as data.
    """
    return load_fast_path(folder_or_model, threads=threads).detector

"""Exporting a detector's fast path: the fp32 ONNX graph, its int8 quantization within the AUC
budget, the reference inputs and ``fastpath.json``, written into the release folder."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from fakeface.data.preprocess import resolve_preprocessing
from fakeface.modeling.detector import DetectorLoadError, load_detector, read_detector_config
from fakeface.modeling.fastpath._common import (
    FAST_GRAPH_NAMES, FAST_INFO_NAME, FAST_PATH_FORMAT, FAST_REFERENCE_NAME, INPUT_NAME, OUTPUT_NAME,
    FastPathUnavailable, compute_weights_fingerprint, cpu_instruction_sets, import_onnxruntime, quiet_exporter_logs,
    release_files_sha256,
)
from fakeface.modeling.fastpath.comparison import compare_detectors, score_timed
from fakeface.modeling.fastpath.quantization import (
    DEFAULT_QUANTIZATION, QUANTIZATION_METHOD, QuantizationSettings, check_no_saturation, quantize_onnx,
)
from fakeface.modeling.fastpath.reference import (
    FP32_GRAPH_TOLERANCE_DP, REFERENCE_TOLERANCE_DP, write_reference_inputs,
)
from fakeface.modeling.fastpath.serving import FastDetector
from fakeface.modeling.inference import Detector, logits_from_crops
from fakeface.utils.fileio import write_atomic
from fakeface.utils.formatting import json_safe

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
DEFAULT_BUDGET_AUC = 0.005
FP32_GRAPH_METHOD = "onnxruntime fp32 (the exported graph, unquantized)"


class _CropAveragingModel(nn.Module):
    """The exported graph: :func:`logits_from_crops` around the detector."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return logits_from_crops(self.model, crops)


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
    with quiet_exporter_logs():
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
    """Write the release's graph + ``fastpath.json`` into ``release_dir`` and return the report.

    ``calibration_images`` (decoded validation images; a few dozen suffice)
    set the activation ranges. The accuracy cost is measured against the fp32
    model on ``holdout_images`` (the test split); with ``holdout_labels`` the
    AUC drop decides which graph ships: every layer int8 when that is within
    ``budget_auc``, else int8 with the input convolution in fp32
    (``input_conv`` in the report), else the fp32 graph itself
    (``model.fp32.onnx``, ``precision`` "fp32"), which scores as the torch
    model does and still serves without torch. Without labels int8 cannot be
    proven, so the fp32 graph ships.
    """
    if not calibration_images:
        raise ValueError("export_fast_path needs at least one calibration image (decoded validation images)")
    if holdout_labels is not None and (holdout_images is None or len(holdout_labels) != len(holdout_images)):
        raise ValueError("holdout_labels must have one label per holdout image")
    release_dir = Path(release_dir)
    release_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    ort = import_onnxruntime()
    started = time.perf_counter()
    images = list(holdout_images) if holdout_images is not None else list(calibration_images)
    with tempfile.TemporaryDirectory(dir=release_dir, prefix=".fastpath-") as tmp:
        fp32_path = Path(tmp) / "model.fp32.onnx"
        exporter = export_onnx(model, fp32_path, opset=opset)
        quantized = _choose_graph(model, fp32_path, calibration_images, images, holdout_labels, budget_auc,
                                  quantization)
        int8 = quantized.precision == "int8"
        reference_path = Path(tmp) / FAST_REFERENCE_NAME
        reference_info = write_reference_inputs(
            reference_path, model, FastDetector(model, quantized.path, info={"precision": quantized.precision}),
            images, tolerance=REFERENCE_TOLERANCE_DP if int8 else FP32_GRAPH_TOLERANCE_DP)
        described = _describe_graph(model, quantized, quantization, reference_info, release_dir)
        info: dict[str, Any] = {
            "format": FAST_PATH_FORMAT,
            "file": FAST_GRAPH_NAMES[quantized.precision],
            "precision": quantized.precision,
            "method": QUANTIZATION_METHOD if int8 else FP32_GRAPH_METHOD,
            "exporter": exporter,
            "opset": opset,
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "calibration_images": len(calibration_images),
            "input_conv": quantized.attempts[-1]["input_conv"] if int8 else None,
            "measured_on": "holdout" if holdout_images is not None else "calibration",
            **quantized.comparison,
            "budget_auc": budget_auc,
            "within_budget": quantized.within_budget,
            "export_seconds": round(time.perf_counter() - started, 2),
            "size_mb": round(quantized.path.stat().st_size / 2**20, 2),
            **described,
        }
        _install(release_dir, quantized.path, reference_path, info)
    if not int8:
        logger.warning("int8 graph %s: the release ships its fp32 graph", "; ".join(
            f"input conv {a['input_conv']} loses {a['auc_drop']:.4f} AUC (budget {budget_auc:.4f})"
            for a in quantized.attempts if a["input_conv"] != "graph") or "not measured (no labelled holdout)")
    return info


@dataclass(frozen=True)
class _Quantized:
    """The graph that ships (in the temporary folder), its precision and how it compared with torch fp32."""

    path: Path
    comparison: dict[str, Any]
    attempts: list[dict[str, Any]]
    within_budget: bool | None
    precision: str = "int8"


def _choose_graph(model: nn.Module, fp32_path: Path, calibration_images: Sequence[Image.Image],
                  images: list[Image.Image], labels: Sequence[int] | None, budget_auc: float,
                  quantization: QuantizationSettings) -> _Quantized:
    """Fastest first: every layer int8; if that loses more AUC than the budget, the input convolution
    fp32 (see :func:`find_input_convs`); if that does too, or without labels (nothing can be proven), the
    fp32 graph, which must match torch to float rounding."""
    reference = Detector(model)
    reference_scores = score_timed(reference, images)
    attempts: list[dict[str, Any]] = []

    def attempt(path: Path, name: str, precision: str) -> tuple[dict[str, Any], bool | None]:
        comparison = compare_detectors(reference, FastDetector(model, path, info={"precision": precision}),
                                       images, labels, reference_scores=reference_scores)
        auc_drop = comparison.get("auc_drop")
        within = None if auc_drop is None or np.isnan(auc_drop) else bool(auc_drop <= budget_auc)
        if precision == "fp32":   # exact up to rounding, with or without labels to prove the AUC
            within = bool(comparison["max_abs_dp"] <= FP32_GRAPH_TOLERANCE_DP and within is not False)
        attempts.append({"input_conv": name, "within_budget": within,
                         **{k: comparison.get(k) for k in ("auc_drop", "max_abs_dp", "mean_abs_dp")}})
        return comparison, within

    for keep_stem_fp32 in ((False, True) if labels is not None else ()):
        int8_path = fp32_path.with_name(f"input-conv-{'fp32' if keep_stem_fp32 else 'int8'}.onnx")
        quantize_onnx(fp32_path, int8_path, reference, list(calibration_images), keep_stem_fp32=keep_stem_fp32,
                      settings=quantization)
        comparison, within = attempt(int8_path, "fp32" if keep_stem_fp32 else "int8", "int8")
        if within:
            return _Quantized(int8_path, comparison, attempts, within)
    comparison, within = attempt(fp32_path, "graph", "fp32")
    return _Quantized(fp32_path, comparison, attempts, within, precision="fp32")


def saved_files_sha256(model: nn.Module, release_dir: Path) -> dict[str, str] | None:
    """:func:`release_files_sha256` of ``release_dir`` when its files load to exactly ``model`` (the weights
    fingerprint) and config.json alone fixes its preprocessing (no architecture default fills a gap); else None,
    and a server loads the torch model before it trusts the graph."""
    hashes = release_files_sha256(release_dir)
    if hashes is None:
        return None
    try:
        saved = load_detector(release_dir)
        config = read_detector_config(release_dir)
    except DetectorLoadError:
        return None
    preprocessing = Detector(model).preprocessing
    if (compute_weights_fingerprint(saved) != compute_weights_fingerprint(model)
            or resolve_preprocessing(config) != preprocessing or Detector(saved).preprocessing != preprocessing):
        return None
    return hashes


def _describe_graph(model: nn.Module, quantized: _Quantized, quantization: QuantizationSettings,
                    reference_info: dict[str, Any], release_dir: Path) -> dict[str, Any]:
    """The nested part of ``fastpath.json`` (kept out of the card's table): the graphs tried, and
    what the shipped one was made from."""
    return {
        "attempts": quantized.attempts,
        "quantization": asdict(quantization) if quantized.precision == "int8" else None,
        "saturation": asdict(check_no_saturation(quantized.path)),
        "reference": reference_info,
        "exported_on_cpu": list(cpu_instruction_sets()),
        "source": {
            "weights_sha256": compute_weights_fingerprint(model),
            "preprocessing": Detector(model).preprocessing.as_dict(),
            "files_sha256": saved_files_sha256(model, release_dir),
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
        },
    }


def _install(release_dir: Path, int8_path: Path, reference_path: Path, info: dict[str, Any]) -> None:
    """Move the files into the release. The JSON is written last: a folder with an ONNX file but no
    JSON (interrupted export) is never loaded."""
    (release_dir / FAST_INFO_NAME).unlink(missing_ok=True)
    for name in FAST_GRAPH_NAMES.values():   # a re-export may change the precision: no stale graph stays
        (release_dir / name).unlink(missing_ok=True)
    os.replace(int8_path, release_dir / FAST_GRAPH_NAMES[info["precision"]])
    os.replace(reference_path, release_dir / FAST_REFERENCE_NAME)
    write_atomic(release_dir / FAST_INFO_NAME, (json.dumps(json_safe(info), indent=2) + "\n").encode())

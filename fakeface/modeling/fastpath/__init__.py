"""The fast CPU serving path: a statically quantized int8 ONNX export of a detector.

A release folder may carry, beside ``model.safetensors``::

    model.int8.onnx   crops (N, K, C, H, W) float32 -> crop-averaged logits (N, 2)
                      (or model.fp32.onnx, the unquantized graph, where int8 missed its AUC budget)
    fastpath.json     how it was made and what it costs in accuracy

The graph takes exactly what :meth:`fakeface.modeling.inference.Detector.prepare`
produces and wraps :func:`fakeface.modeling.inference.logits_from_crops`, so the
preprocessing and the crop averaging keep their single definitions.
:class:`FastDetector` subclasses ``Detector`` and replaces only ``logits``:
temperature, thresholds and verdicts stay where they are, and the torch model
serves Grad-CAM. A release whose ``fastpath.json`` records the sha256 of its
``config.json`` and ``model.safetensors`` (an export does, when those files load
to the exported model) is served by :func:`load_fast_path_unbuilt` before its
torch model exists: the same files prove the same weights and preprocessing, so
the app's first verdict needs neither torch nor timm, and the model is built
(and its fingerprint checked) on first use.

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

Modules, by job: ``export`` (the fp32 ONNX graph and :func:`export_fast_path`,
which writes the release's files), ``quantization`` (int8 settings,
:func:`quantize_onnx`, :func:`check_no_saturation`), ``comparison`` (int8
against fp32: AUC, |Δp|, verdicts), ``reference`` (the load-time reference
check), ``serving`` (:class:`FastDetector`, :func:`load_fast_path`, threads,
``fastpath.json``). This module is the front door: import from it. Serving a
graph needs neither torch nor scikit-learn, so ``export``'s names (torch's
exporter) load on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fakeface.modeling.fastpath._common import (
    CPU_FLAGS, FAST_FP32_NAME, FAST_GRAPH_NAMES, FAST_INFO_NAME, FAST_MODEL_NAME, FAST_PATH_FORMAT,
    FAST_REFERENCE_NAME, INPUT_NAME, OUTPUT_NAME, FastPathUnavailable, compute_weights_fingerprint,
    cpu_instruction_sets, graph_precision, release_files_sha256, revouch_release_files,
)
from fakeface.modeling.fastpath.comparison import compare_detectors, score_timed
from fakeface.modeling.fastpath.quantization import (
    DEFAULT_QUANTIZATION, QUANTIZATION_METHOD, QuantizationSettings, SaturationCheck, check_no_saturation,
    find_input_convs, quantize_onnx,
)
from fakeface.modeling.fastpath.reference import (
    FP32_GRAPH_TOLERANCE_DP, REFERENCE_DRIFT_DP, REFERENCE_IMAGES, REFERENCE_MAX_BYTES, REFERENCE_TOLERANCE_DP,
    ReferenceCheck, check_reference_inputs, write_reference_inputs,
)
from fakeface.modeling.fastpath.serving import (
    ENV_THREADS, FastDetector, FastPathLoad, FastPathRefusal, RefusalCode, create_session, graph_path,
    load_fast_detector, load_fast_path, load_fast_path_unbuilt, read_fast_path_info, resolve_num_threads,
)

if TYPE_CHECKING:
    from fakeface.modeling.fastpath.export import DEFAULT_BUDGET_AUC, DEFAULT_OPSET, export_fast_path, export_onnx

_LAZY = {name: "fakeface.modeling.fastpath.export"
         for name in ("DEFAULT_BUDGET_AUC", "DEFAULT_OPSET", "export_fast_path", "export_onnx")}

__all__ = [
    "CPU_FLAGS", "DEFAULT_BUDGET_AUC", "DEFAULT_OPSET", "DEFAULT_QUANTIZATION", "ENV_THREADS", "FAST_FP32_NAME",
    "FAST_GRAPH_NAMES", "FAST_INFO_NAME", "FP32_GRAPH_TOLERANCE_DP", "REFERENCE_DRIFT_DP", "graph_path",
    "graph_precision",
    "FAST_MODEL_NAME", "FAST_PATH_FORMAT", "FAST_REFERENCE_NAME", "INPUT_NAME", "OUTPUT_NAME", "QUANTIZATION_METHOD",
    "REFERENCE_IMAGES", "REFERENCE_MAX_BYTES", "REFERENCE_TOLERANCE_DP", "FastDetector", "FastPathLoad",
    "FastPathRefusal", "FastPathUnavailable", "QuantizationSettings", "ReferenceCheck", "RefusalCode",
    "SaturationCheck", "check_no_saturation", "check_reference_inputs", "compare_detectors",
    "compute_weights_fingerprint", "cpu_instruction_sets", "create_session", "export_fast_path", "export_onnx",
    "find_input_convs", "load_fast_detector", "load_fast_path", "load_fast_path_unbuilt", "quantize_onnx",
    "read_fast_path_info", "release_files_sha256", "revouch_release_files", "resolve_num_threads", "score_timed", "write_reference_inputs",
]


def __getattr__(name: str) -> Any:
    """The exporter's names, imported on first use (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

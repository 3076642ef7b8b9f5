"""The load-time reference check: a few crops shipped in ``fastpath_reference.npz`` with their fp32
and graph (int8, or the fp32 graph) logits, re-scored on the serving CPU before the graph is used."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
from PIL import Image

from fakeface.data.preprocess import Preprocessing
from fakeface.modeling.fastpath._common import FAST_REFERENCE_NAME, cpu_instruction_sets
from fakeface.modeling.inference import Scores, logits_from_crops

if TYPE_CHECKING:   # torch is needed to write reference inputs (export), not to check them (serving)
    import torch
    from torch import nn

# Reference inputs shipped in the release and re-scored at load on the serving CPU:
# up to this many images, fewer when their crops would pass REFERENCE_MAX_BYTES.
REFERENCE_IMAGES = 8
REFERENCE_MAX_BYTES = 4 * 2**20
# The stated tolerance: on every reference image, the int8 p(fake) on the serving
# CPU must be within this of the fp32 p(fake) stored with it: the max |Δp| that
# docs/performance.md states for the int8 path. (Saturation on AVX2 moved p by
# up to 0.31; 7-bit weights moved a trained MobileNetV2's worst image by 0.07.)
REFERENCE_TOLERANCE_DP = 0.15
# The same for an fp32 graph, which differs from torch by float rounding only.
FP32_GRAPH_TOLERANCE_DP = 0.01
# Or: this CPU computes the graph as the export CPU did, within this. The export measured that graph's AUC
# against fp32 on held-out images and found it within budget, so the same arithmetic here is the same
# accuracy, however far a reference image moved (a small model trained and exported on an EPYC moved one
# by 0.187 and failed the absolute bound on the very CPU that exported it). A CPU whose kernels compute
# otherwise (saturating int16 sums) moves the logits far more than this.
REFERENCE_DRIFT_DP = 0.02


class Int8Graph(Protocol):
    """What the check asks of the detector it checks (``serving.FastDetector``, which imports this module, so
    this one names only the methods it calls): its preprocessing, its crops, the graph's logits and the scores."""

    preprocessing: Preprocessing

    def prepare(self, images: Sequence[Image.Image]) -> torch.Tensor: ...

    def run(self, crops: np.ndarray) -> np.ndarray: ...

    def scores_from_logits(self, logits: np.ndarray) -> Scores: ...


def _crops_from_pixels(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, K, C, H, W) crops -> the normalised float32 graph input, the same at export and at load."""
    m = np.asarray(mean, np.float32).reshape(1, 1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 1, 3, 1, 1)
    return ((pixels.astype(np.float32) / np.float32(255.0)) - m) / s


def write_reference_inputs(path: str | os.PathLike, model: nn.Module, fast: Int8Graph,
                           images: Sequence[Image.Image], *,
                           tolerance: float = REFERENCE_TOLERANCE_DP) -> dict[str, Any]:
    """Save a few images' crops with their fp32 and (this CPU's) int8 logits; returns the JSON summary.

    The crops are stored as the uint8 pixels they are cut from (the eval
    transform only normalises them), a quarter of float32's size, and both
    logits are computed from exactly what the load-time check will feed.
    """
    import torch

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
    logits_int8 = fast.run(inputs)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, pixels=pixels, logits_fp32=logits_fp32, logits_int8=logits_int8)
    return {"file": FAST_REFERENCE_NAME, "images": count, "tolerance_abs_dp": tolerance,
            "tolerance_drift_dp": REFERENCE_DRIFT_DP,
            "bytes": Path(path).stat().st_size}


@dataclass(frozen=True)
class ReferenceCheck:
    """The shipped reference inputs re-scored by the graph on this CPU.

    ``max_abs_dp``: the largest |p_graph - p_fp32| here; ``export_max_abs_dp``:
    the same where the release was exported; ``drift``: the largest
    |p_graph here - p_graph there|. It passes when the graph is within
    ``tolerance`` of fp32 here, or computes as it did where its AUC was
    measured (``drift`` within ``drift_tolerance``) and the shipped file agrees
    with that measurement (``export_max_abs_dp`` within ``drift_tolerance`` of
    ``measured_max_abs_dp``, the export's max |Δp| over its held-out images,
    of which the reference images are the first).
    """

    images: int
    max_abs_dp: float
    export_max_abs_dp: float
    tolerance: float
    cpu_flags: tuple[str, ...]
    drift: float = 0.0
    drift_tolerance: float = REFERENCE_DRIFT_DP
    measured_max_abs_dp: float | None = None

    @property
    def passed(self) -> bool:
        same_as_measured = (self.measured_max_abs_dp is not None and self.drift <= self.drift_tolerance
                            and self.export_max_abs_dp <= self.measured_max_abs_dp + self.drift_tolerance)
        return bool(self.max_abs_dp <= self.tolerance or same_as_measured)


def check_reference_inputs(fast: Int8Graph, path: str | os.PathLike, tolerance: float = REFERENCE_TOLERANCE_DP,
                           drift_tolerance: float = REFERENCE_DRIFT_DP,
                           measured_max_abs_dp: float | None = None) -> ReferenceCheck:
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
    here = fast.run(_crops_from_pixels(pixels, pp.mean, pp.std))
    p32, p8_then, p8_here = (fast.scores_from_logits(np.asarray(x, np.float32)).p_fake
                             for x in (logits_fp32, logits_int8, here))
    return ReferenceCheck(images=len(pixels), max_abs_dp=float(np.abs(p8_here - p32).max()),
                          export_max_abs_dp=float(np.abs(p8_then - p32).max()), tolerance=float(tolerance),
                          cpu_flags=cpu_instruction_sets(), drift=float(np.abs(p8_here - p8_then).max()),
                          drift_tolerance=float(drift_tolerance), measured_max_abs_dp=(
                              None if measured_max_abs_dp is None else float(measured_max_abs_dp)))

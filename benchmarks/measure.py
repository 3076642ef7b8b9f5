"""Measurement shared by the benchmarks: interleaved timing, the machine's description, synthetic inputs and the
small trained releases several benchmarks measure. No benchmark-specific logic lives here."""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


# --------------------------------------------------------------------------- timing

@dataclass
class Timing:
    samples_ms: list[float]

    def as_dict(self, batch: int) -> dict[str, float]:
        samples = np.asarray(self.samples_ms)
        median = float(np.median(samples))
        return {"median_ms": median, "p90_ms": float(np.percentile(samples, 90)), "min_ms": float(samples.min()),
                "calls": int(samples.size), "images_per_s": 1000.0 * batch / median if median > 0 else float("nan")}


def time_interleaved(variants: Mapping[str, Callable[[], Any]], *, rounds: int, min_round_seconds: float,
                     warmup_calls: int = 2) -> dict[str, Timing]:
    """Time each callable in interleaved rounds; round r starts at variant r (mod n).

    Each variant gets enough calls per round to fill ``min_round_seconds``
    (at least one), estimated from its warm-up calls.
    """
    names = list(variants)
    calls: dict[str, int] = {}
    for name in names:
        start = time.perf_counter()
        for _ in range(max(1, warmup_calls)):
            variants[name]()
        per_call = (time.perf_counter() - start) / max(1, warmup_calls)
        calls[name] = max(1, min(200, math.ceil(min_round_seconds / per_call))) if per_call > 0 else 1
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = variants[name]
            for _ in range(calls[name]):
                start = time.perf_counter()
                fn()
                samples[name].append(1000.0 * (time.perf_counter() - start))
    return {name: Timing(samples[name]) for name in names}


# --------------------------------------------------------------------------- environment

def collect_environment() -> dict[str, Any]:
    """CPU, cores, load and library versions, as the results file records them."""
    import importlib.metadata as md

    cpu, flags = platform.processor() or "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    versions = {}
    for name in ("torch", "timm", "onnxruntime", "onnx", "onnxscript", "numpy", "pillow", "gradio"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    import torch

    return {
        "cpu": cpu,
        "cpu_flags": [f for f in _CPU_FLAGS if f in flags],
        "logical_cpus": os.cpu_count(),
        "cpus_available": affinity,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "torch_parallel": torch.__config__.parallel_info().splitlines()[:6],
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "FAKEFACE_THREADS", "OMP_WAIT_POLICY")},
    }


def measure_matmul_ceiling(threads: int, *, n: int = 1024, rounds: int = 7) -> dict[str, float]:
    """Best-of-rounds GEMM throughput: fp32 (torch) and u8 x s8 -> s32 (ONNX Runtime MatMulInteger)."""
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from fakeface.modeling.fastpath import create_session

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "gemm_int8",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])], [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm_int8.onnx"
        onnx.save(model, path)
        session = create_session(path, threads=threads)
    activations = rng.integers(0, 256, (n, n), dtype=np.uint8)
    timings = time_interleaved(
        {"fp32": lambda: torch.mm(a, b), "int8": lambda: session.run(None, {"A": activations})},
        rounds=rounds, min_round_seconds=0.05, warmup_calls=2,
    )
    ops = 2.0 * n ** 3
    return {"threads": threads, "n": n,
            "fp32_gflops": ops / (min(timings["fp32"].samples_ms) / 1000) / 1e9,
            "int8_gops": ops / (min(timings["int8"].samples_ms) / 1000) / 1e9}


def count_forward_flops(model: Any, input_size: Sequence[int]) -> float:
    """FLOPs (2 x multiply-adds) of one forward pass of one input, by torch's flop counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_size))
    return float(counter.get_total_flops())


# --------------------------------------------------------------------------- inputs

def create_benchmark_images(size: int, count: int, seed: int = 0) -> list[Any]:
    """Deterministic face-sized test images: smooth shading, blobs and sensor-like noise.

    Their PNG files compress like photographs (about 1.6 MB at 1024²), which
    is what decode time depends on; the content is irrelevant to speed.
    """
    from PIL import Image

    images = []
    for index in range(count):
        rng = np.random.default_rng(seed + index)
        yy, xx = np.mgrid[0:size, 0:size] / size
        pixels = np.zeros((size, size, 3), np.float32)
        for c in range(3):
            pixels[..., c] = 120 + 60 * np.sin(3 * xx + c + index) + 40 * np.cos(4 * yy - c)
        for _ in range(12):
            cx, cy = rng.uniform(0.2, 0.8, 2)
            radius = rng.uniform(0.05, 0.25)
            mask = np.exp(-3 * ((xx - cx) ** 2 + (yy - cy) ** 2) / radius ** 2)
            pixels += mask[..., None] * rng.uniform(-60, 60, 3)
        pixels += rng.normal(0, 3, pixels.shape)
        images.append(Image.fromarray(pixels.clip(0, 255).astype(np.uint8)))
    return images


def encode_images(images: Sequence[Any], image_format: str) -> list[bytes]:
    out = []
    for image in images:
        buffer = io.BytesIO()
        if image_format == "JPEG":
            image.save(buffer, format="JPEG", quality=90)
        else:
            image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


# --------------------------------------------------------------------------- trained releases

TRAINED_EPOCHS = {"mobilenetv2_100": 4, "resnet50": 3}


def prepare_trained_releases(
    work_dir: str | os.PathLike,
    architectures: Sequence[str],
    *,
    images: int = 600,
    input_size: int = 128,
    seed: int = 0,
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Small trained releases for the accuracy and cold-start sections, all offline and cached.

    Builds the synthetic dataset (``images``, ``seed``) and a second,
    independent one (``seed + 1``, every split held out) in ``work_dir``,
    then trains each architecture with ``fakeface.training.loop.train`` (the
    robust recipe, ``TRAINED_EPOCHS``) whose release step exports the int8
    fast path on the test split. Anything already complete in ``work_dir``
    is reused. Returns (``--models``, ``--dataset`` values).
    """
    from fakeface.data.dataset import ensure_synthetic_dataset
    from fakeface.training.loop import TrainingConfig, train

    work = Path(work_dir)
    data = ensure_synthetic_dataset(work / "data", images, seed)
    holdout = ensure_synthetic_dataset(work / "holdout", images, seed + 1)
    models = {}
    for arch in architectures:
        release = work / arch
        if not ((release / "model.safetensors").is_file() and (release / "fastpath.json").is_file()):
            logger.info("training %s on %s (input %d, %d epochs)", arch, data, input_size, TRAINED_EPOCHS.get(arch, 3))
            train(TrainingConfig(dataset=os.fspath(data), output_dir=os.fspath(release), model=arch,
                                 recipe="robust", face_crop=False,  # the synthetic set's recipe; no faces in it
                                 epochs=TRAINED_EPOCHS.get(arch, 3), input_size=input_size, seed=seed,
                                 log_with=None, plots=False, fast_path=True))
        models[arch] = os.fspath(release)
    return models, (os.fspath(data), f"{holdout}:all")


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars as Python numbers, floats rounded (non-finite as null), paths as names."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, Path):
        return value.name
    return value

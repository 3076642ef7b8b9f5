"""CPU inference benchmark: the plain timm baseline beside the app's serving paths, in one process.

Every comparison is made *within one run*, in interleaved rounds on the same
inputs (round r runs the variants in an order rotated by r), so a machine
shared with other work slows all variants alike and the ratios hold even when
the absolute times drift. Reported per variant: median and p90 latency,
images/s, and the speed-up against the baseline measured beside it.

Sections of the result:

``environment``  CPU model and flags, cores, load, library versions.
``ceiling``      fp32 (torch GEMM) and int8 (ONNX Runtime MatMulInteger) matrix
                 multiply throughput, and each model's FLOPs, hence its floor.
``forward``      tensor -> logits for B 224² crops: timm eager fp32 (baseline),
                 torch channels_last, torch bf16, ONNX Runtime fp32, int8
                 QOperator, int8 QDQ (the fast path), per architecture,
                 threads and batch.
``end_to_end``   file bytes -> verdicts: the baseline (PIL + timm's standard
                 eval transform + eager fp32), the app's fp32 path and its
                 int8 fast path (``fakeface.data.images.load_image`` + the
                 detector's own crops, calibration and thresholds).
``decode``       decode (+ preprocess) of 1024² PNG and JPEG files.
``cold_start``   process start -> first verdict, weights on local disk.
``accuracy``     int8 against fp32 on a labelled test split (AUC, |Δp|, verdicts).
``targets``      the issue's targets next to what was reached.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from benchmarks.inference_cold_start import benchmark_cold_start
from benchmarks.measure import (Timing, collect_environment, count_forward_flops, create_benchmark_images,
                                encode_images, json_ready, measure_matmul_ceiling, time_interleaved)

logger = logging.getLogger(__name__)

DEFAULT_ARCHITECTURES = ("resnet50", "mobilenetv2_100")
BASELINE = "timm eager fp32 (baseline)"
FAST_ALL = "onnxruntime int8 QDQ, all layers"
FAST_STEM = "onnxruntime int8 QDQ, input conv fp32"
SERVING_FP32 = "app path, torch fp32"
SERVING_FAST = "app path, int8 fast path"
SERVING_FULL = "app full analysis, int8 (+ Grad-CAM, robustness re-check, provenance)"
BATCHED_FAST = "int8, all files in one score() call"
# The targets (2 threads, batch 1, same-run ratios).
TARGETS = {
    "forward_ms": {"resnet50": 12.0, "mobilenetv2_100": 3.0},
    "forward_speedup": 4.5,
    "end_to_end_png_ms": {"mobilenetv2_100": 45.0},
    "auc_drop": 0.005,
    "cold_start_s": 8.0,
}


@dataclass
class BenchmarkConfig:
    """What to measure. ``quick`` shrinks everything to a smoke run (tests)."""

    architectures: tuple[str, ...] = DEFAULT_ARCHITECTURES
    threads: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1, 8)
    rounds: int = 7
    min_round_seconds: float = 0.25   # per variant per round
    warmup_calls: int = 2
    image_size: int = 1024
    input_size: int = 224
    num_test_crops: int = 5           # the app's default native-crops protocol
    models: dict[str, str] = field(default_factory=dict)   # architecture -> trained release folder
    datasets: tuple[str, ...] = ()    # "DIR_OR_ID[:SPLIT|all]" labelled sets re-measuring accuracy (default split test)
    accuracy_max_images: int | None = None
    cold_start_runs: int = 3
    extra_variants: bool = True       # bf16 and QOperator beside the main ones
    work_dir: str | None = None
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> "BenchmarkConfig":
        """A smoke run: one tiny architecture, small inputs, one round."""
        values: dict[str, Any] = dict(
            architectures=("mobilenetv2_050",), threads=(1,), batches=(1, 2), rounds=2, min_round_seconds=0.0,
            warmup_calls=1, image_size=128, input_size=64, cold_start_runs=1, extra_variants=False, quick=True,
        )
        values.update(overrides)
        return cls(**values)


# --------------------------------------------------------------------------- rows

def _rows(group: dict[str, Any], timings: Mapping[str, Timing], batch: int, baseline: str | None) -> list[dict]:
    rows = []
    base = timings[baseline].as_dict(batch) if baseline in timings else None
    for name, timing in timings.items():
        stats = timing.as_dict(batch)
        # speedup: medians (what the issue asks); speedup_min: fastest calls,
        # which other work on a shared machine disturbs least.
        rows.append({**group, "variant": name, **stats,
                     "speedup": (base["median_ms"] / stats["median_ms"]) if base else None,
                     "speedup_min": (base["min_ms"] / stats["min_ms"]) if base else None})
    return rows


APP_DECODER = "fakeface.data.images.load_image"


def _decode(data: bytes) -> Any:
    """The app's safe decoder."""
    from fakeface.data.images import load_image

    return load_image(data).image


# --------------------------------------------------------------------------- models

@dataclass
class Variants:
    """The models of one architecture, built once, shared by all sections."""

    architecture: str
    baseline: Any                 # timm.create_model(...) eager fp32
    baseline_transform: Any       # timm's standard eval transform
    detector: Any                 # fakeface Detector (torch fp32), the app's fallback
    fast: Any                     # FastDetector (int8) with the app's crops
    crop_sessions: dict           # (kind, threads) -> ORT session on (B, 1, C, H, W)
    folder: Path                  # the speed detector's folder (random weights)
    release: Path | None          # a trained release: cold start and accuracy
    input_conv: str               # "int8" | "fp32": the graph the release ships (fp32 without a release)
    flops: float
    notes: list[str] = field(default_factory=list)
    fast_by_threads: dict = field(default_factory=dict)   # threads -> FastDetector


def _build_variants(arch: str, config: BenchmarkConfig, work: Path, calibration_images: list) -> Variants:
    """Speed is measured on random weights at the benchmark's input size (speed does not depend
    on the weights); a trained release, when given, is what cold start and accuracy use."""
    import timm

    from fakeface.modeling.fastpath import FastDetector, create_session, export_onnx, load_fast_detector, quantize_onnx
    from fakeface.modeling.inference import Detector
    from fakeface.modeling.detector import create_detector, load_detector, save_detector
    from fakeface.data.preprocess import Preprocessing

    notes: list[str] = []
    baseline = timm.create_model(arch, pretrained=False, num_classes=2).eval()
    data_config = timm.data.resolve_data_config({"input_size": (3, config.input_size, config.input_size)},
                                                model=baseline)
    baseline_transform = timm.data.create_transform(**data_config, is_training=False)

    release = Path(config.models[arch]) if arch in config.models else None
    input_conv = "fp32"   # the safer graph, unless the release proved all-int8 within budget
    if release is not None:
        shipped = load_fast_detector(release)
        if shipped is None:
            raise RuntimeError(f"{release} has no usable fast path (see the log); re-export it with export_fast_path")
        input_conv = shipped.info.get("input_conv", "fp32")

    folder = work / f"{arch}-random"
    pp = Preprocessing(input_size=(3, config.input_size, config.input_size), num_test_crops=config.num_test_crops)
    save_detector(create_detector(arch, preprocessing=pp), folder)
    model = load_detector(folder)
    onnx_fp32, onnx_int8 = work / f"{arch}-serving.fp32.onnx", work / f"{arch}-serving.int8.onnx"
    export_onnx(model, onnx_fp32)
    quantize_onnx(onnx_fp32, onnx_int8, Detector(model), calibration_images, keep_stem_fp32=input_conv == "fp32")
    fast = FastDetector(model, onnx_int8)
    detector = Detector(model)

    # Graphs on single crops (K = 1) for the forward comparison with the baseline.
    single = create_detector(arch, preprocessing=Preprocessing(input_size=(3, config.input_size, config.input_size),
                                                                num_test_crops=1))
    single.load_state_dict(model.state_dict())
    single_detector = Detector(single)
    paths = {"fp32": work / f"{arch}-crop.fp32.onnx", "int8-stem-fp32": work / f"{arch}-crop.int8-stem-fp32.onnx",
             "int8-all": work / f"{arch}-crop.int8-all.onnx", "int8-qoperator": work / f"{arch}-crop.int8-qop.onnx"}
    export_onnx(single, paths["fp32"])
    quantize_onnx(paths["fp32"], paths["int8-stem-fp32"], single_detector, calibration_images, keep_stem_fp32=True)
    quantize_onnx(paths["fp32"], paths["int8-all"], single_detector, calibration_images, keep_stem_fp32=False)
    if config.extra_variants:
        quantize_onnx(paths["fp32"], paths["int8-qoperator"], single_detector, calibration_images,
                      quant_format="QOperator", keep_stem_fp32=input_conv == "fp32")
    sessions = {}
    for threads in config.threads:
        for kind, path in paths.items():
            if path.exists():
                sessions[(kind, threads)] = create_session(path, threads=threads)
    flops = count_forward_flops(baseline, (3, config.input_size, config.input_size))
    return Variants(arch, baseline, baseline_transform, detector, fast, sessions, folder, release, input_conv, flops,
                     notes)


# --------------------------------------------------------------------------- sections

def _set_threads(threads: int) -> None:
    """torch's threads; ONNX Runtime sessions get theirs when created (one session per thread count)."""
    import torch

    torch.set_num_threads(threads)


def _fast_for_threads(variants: Variants, threads: int) -> Any:
    from fakeface.modeling.fastpath import FastDetector

    if threads not in variants.fast_by_threads:
        variants.fast_by_threads[threads] = FastDetector(variants.detector.model, variants.fast.onnx_path,
                                                         threads=threads, info=variants.fast.info)
    return variants.fast_by_threads[threads]


def benchmark_forward(variants: Variants, config: BenchmarkConfig) -> list[dict]:
    """Tensor -> logits for B crops of 224² (or the configured size)."""
    import copy

    import torch

    rows = []
    c, h, w = 3, config.input_size, config.input_size
    cl_model = copy.deepcopy(variants.baseline).to(memory_format=torch.channels_last)
    for threads in config.threads:
        _set_threads(threads)
        for batch in config.batches:
            x = torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(batch))
            x_np = x.numpy()[:, None]   # (B, 1, C, H, W): the graphs take the detector's crop layout
            x_cl = x.contiguous(memory_format=torch.channels_last)

            def eager(model=variants.baseline, x=x):
                with torch.inference_mode():
                    return model(x)

            def eager_cl(model=cl_model, x=x_cl):
                with torch.inference_mode():
                    return model(x)

            runs: dict[str, Callable[[], Any]] = {BASELINE: eager, "torch fp32 channels_last": eager_cl}
            if config.extra_variants:
                def eager_bf16(model=cl_model, x=x_cl):
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                        return model(x)
                runs["torch bf16 autocast channels_last"] = eager_bf16
            for kind, label in (("fp32", "onnxruntime fp32"), ("int8-qoperator", "onnxruntime int8 QOperator"),
                                ("int8-all", FAST_ALL), ("int8-stem-fp32", FAST_STEM)):
                session = variants.crop_sessions.get((kind, threads))
                if session is not None:
                    runs[label] = (lambda s=session, x=x_np: s.run(None, {s.get_inputs()[0].name: x}))
            timings = time_interleaved(runs, rounds=config.rounds, min_round_seconds=config.min_round_seconds,
                                       warmup_calls=config.warmup_calls)
            rows += _rows({"architecture": variants.architecture, "threads": threads, "batch": batch},
                          timings, batch, BASELINE)
    shipped = FAST_ALL if variants.input_conv == "int8" else FAST_STEM
    for row in rows:
        row["fast_path"] = row["variant"] == shipped   # the graph a release of this architecture ships
    return rows


def _app_models(variants: Variants, threads: int) -> tuple[Any, Any]:
    """The app's fp32 and int8 ``LoadedModel`` of this release, loaded as the app loads them.

    With random weights the release's fast path is (rightly) refused by the
    loader, so the int8 model is the app's own ``LoadedModel`` with the
    FastDetector exported here as its scorer: the same object the loader
    would have put there.
    """
    from dataclasses import replace

    from fakeface.serving.models import load_model

    key = ("app", threads)
    if key not in variants.fast_by_threads:
        loaded = load_model(os.fspath(variants.folder), use_fast_path=False)
        if not hasattr(loaded, "scorer"):
            raise RuntimeError(f"the app could not load {variants.folder}: {getattr(loaded, 'message', loaded)}")
        variants.fast_by_threads[key] = (loaded, replace(loaded, scorer=_fast_for_threads(variants, threads)))
    return variants.fast_by_threads[key]


def benchmark_end_to_end(variants: Variants, config: BenchmarkConfig, files: Mapping[str, list[bytes]]) -> list[dict]:
    """File bytes -> verdicts: the baseline beside the app's fp32 and int8 paths.

    The app's path is ``fakeface.serving.analysis.analyze_bytes`` with only the
    verdict asked for (no Grad-CAM, robustness re-check or provenance), one
    call per file as the app's batch tab makes them. Extra rows: the app's
    full single-image analysis, and batched scoring of all files in one call.
    """
    import torch
    from PIL import Image

    from fakeface.modeling.detector import label_names
    from fakeface.serving.analysis import analyze_bytes

    names = label_names(variants.detector.model)

    def baseline(batch: list[bytes]) -> list[str]:
        tensors = []
        for data in batch:
            with Image.open(io.BytesIO(data)) as image:
                tensors.append(variants.baseline_transform(image.convert("RGB")))
        with torch.inference_mode():
            p = torch.softmax(variants.baseline(torch.stack(tensors)), dim=-1)
        return [names[i] for i in p.argmax(dim=-1).tolist()]

    def library(detector, batch: list[bytes]) -> list[str]:
        return detector.score([_decode(data) for data in batch]).verdicts

    def app(loaded, batch: list[bytes], **analysis) -> list[str]:
        options = dict(explain=False, robustness=False, provenance=False) | analysis
        return [analyze_bytes(data, "upload", [loaded], **options)["verdict"] for data in batch]

    rows = []
    for image_format, blobs in files.items():
        for threads in config.threads:
            _set_threads(threads)
            fast = _fast_for_threads(variants, threads)
            models = _app_models(variants, threads)
            for batch_size in config.batches:
                batch = list(blobs[:batch_size])
                runs: dict[str, Callable[[], Any]] = {
                    BASELINE: lambda b=batch: baseline(b),
                    SERVING_FP32: lambda b=batch, m=models[0]: app(m, b),
                    SERVING_FAST: lambda b=batch, m=models[1]: app(m, b),
                }
                if batch_size == 1:
                    runs[SERVING_FULL] = lambda b=batch, m=models[1]: app(
                        m, b, explain=True, robustness=True, provenance=True)
                if batch_size > 1:
                    runs[BATCHED_FAST] = lambda b=batch, f=fast: library(f, b)
                timings = time_interleaved(runs, rounds=config.rounds, min_round_seconds=config.min_round_seconds,
                                           warmup_calls=config.warmup_calls)
                rows += _rows({"architecture": variants.architecture, "format": image_format, "threads": threads,
                               "batch": batch_size, "crops_per_image": variants.detector.preprocessing.crops_per_image,
                               "app_path": "fakeface.serving.analysis.analyze_bytes"},
                              timings, batch_size, BASELINE)
    return rows


def benchmark_decode(variants: Variants, config: BenchmarkConfig, files: Mapping[str, list[bytes]]) -> list[dict]:
    """Decode (+ preprocess) of one file, at the largest thread count."""
    from PIL import Image

    threads = max(config.threads)
    _set_threads(threads)
    detector = variants.detector
    draft_side = config.input_size * 2

    def pil(data: bytes):
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")

    def draft(data: bytes):
        from fakeface.data.images import load_image

        return load_image(data, draft_size=(draft_side, draft_side)).image

    rows = []
    for image_format, blobs in files.items():
        data = blobs[0]
        runs = {
            "PIL decode": lambda d=data: pil(d),
            f"app decode ({APP_DECODER})": lambda d=data: _decode(d),
            "baseline: PIL decode + timm eval transform": lambda d=data: variants.baseline_transform(pil(d)),
            "app: decode + detector crops (prepare)": lambda d=data: detector.prepare([_decode(d)]),
        }
        if image_format == "JPEG":
            runs[f"app decode with JPEG draft to >= {draft_side}² (NOT used: changes the pixels)"] = (
                lambda d=data: draft(d))
        timings = time_interleaved(runs, rounds=config.rounds, min_round_seconds=config.min_round_seconds,
                                   warmup_calls=config.warmup_calls)
        rows += _rows({"format": image_format, "bytes": len(data), "threads": threads,
                       "size": f"{config.image_size}x{config.image_size}"}, timings, 1, "PIL decode")
    return rows


def benchmark_accuracy(variants: Variants, config: BenchmarkConfig) -> list[dict]:
    """int8 against fp32 for a trained release: its own record, and re-measured on each ``config.datasets``."""
    if variants.release is None:
        return []
    from fakeface.modeling.fastpath import compare_detectors, load_fast_detector, read_fast_path_info

    fast = load_fast_detector(variants.release)
    info = {k: v for k, v in (read_fast_path_info(variants.release) or {}).items() if not isinstance(v, dict)}
    rows = [{**info, "architecture": variants.architecture, "input_size": fast.preprocessing.input_size[-1],
             "measured_on": f"the release's fastpath.json (export time, its {info.get('measured_on')} images)"}]
    if config.datasets:
        from fakeface.data.dataset import load_face_dataset
        from fakeface.evaluation.metrics import decode_split
        from fakeface.modeling.inference import Detector

        reference = Detector(fast.model)
        for spec in config.datasets:
            source, _, split = spec.partition(":")
            split = split or "test"
            data = load_face_dataset(source)
            names = list(data) if split == "all" else [split]
            images, labels = [], []
            for name in names:
                decoded, y, _ = decode_split(data[name], max_images=config.accuracy_max_images)
                images += decoded
                labels += list(y)
            rows.append({"architecture": variants.architecture,
                         "measured_on": f"{Path(source).name} [{'+'.join(names)}] (re-measured now)",
                         "input_size": fast.preprocessing.input_size[-1],
                         **compare_detectors(reference, fast, images, labels)})
    return rows


# --------------------------------------------------------------------------- run

def run_benchmark(config: BenchmarkConfig) -> dict[str, Any]:
    """Run every section and return the results (JSON-ready)."""
    import torch

    started = time.time()
    environment = collect_environment()
    logger.info("benchmark on %s (%s cores available)", environment["cpu"], environment["cpus_available"])
    work_ctx = tempfile.TemporaryDirectory(prefix="fakeface-benchmark-") if config.work_dir is None else None
    work = Path(work_ctx.name if work_ctx else config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"config": {k: v for k, v in asdict(config).items() if k != "work_dir"},
                               "environment": environment, "notes": []}
    try:
        images = create_benchmark_images(config.image_size, max(config.batches))
        files = {"PNG": encode_images(images, "PNG"), "JPEG": encode_images(images, "JPEG")}
        png_path = work / "cold_start.png"
        png_path.write_bytes(files["PNG"][0])
        results["inputs"] = {"size": config.image_size, "count": len(images),
                             "png_bytes": [len(b) for b in files["PNG"]], "jpeg_bytes": [len(b) for b in files["JPEG"]],
                             "decoder": APP_DECODER}
        calibration = create_benchmark_images(max(config.input_size + 32, config.image_size // 2), 4, seed=100)

        results["ceiling"] = [measure_matmul_ceiling(t, n=256 if config.quick else 1024) for t in config.threads]
        sections: dict[str, list] = {"forward": [], "end_to_end": [], "decode": [], "cold_start": []}
        accuracy: list[dict] = []
        flops: dict[str, float] = {}
        for arch in config.architectures:
            logger.info("%s: building variants", arch)
            variants = _build_variants(arch, config, work, calibration)
            results["notes"] += variants.notes
            flops[arch] = variants.flops
            _note_load(results, f"{arch} forward")
            logger.info("%s: forward", arch)
            sections["forward"] += benchmark_forward(variants, config)
            _note_load(results, f"{arch} end to end")
            logger.info("%s: end to end", arch)
            sections["end_to_end"] += benchmark_end_to_end(variants, config, files)
            if not sections["decode"]:
                sections["decode"] = benchmark_decode(variants, config, files)
            _note_load(results, f"{arch} cold start")
            logger.info("%s: cold start", arch)
            sections["cold_start"] += benchmark_cold_start(variants, config, png_path)
            accuracy += benchmark_accuracy(variants, config)
            del variants
        results.update(sections)
        results["accuracy"] = accuracy
        results["flops"] = {arch: {"gflops": f / 1e9, **_floors(f, results["ceiling"])} for arch, f in flops.items()}
        results["targets"] = evaluate_targets(results)
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()
        torch.set_num_threads(max(config.threads))
    environment["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["seconds"] = round(time.time() - started, 1)
    return json_ready(results)


def _note_load(results: dict, section: str) -> None:
    if hasattr(os, "getloadavg"):
        results.setdefault("section_load", {})[section] = os.getloadavg()[0]


def _floors(flops: float, ceilings: list[dict]) -> dict[str, float]:
    out = {}
    for c in ceilings:
        out[f"fp32_floor_ms_{c['threads']}t"] = 1000 * flops / (c["fp32_gflops"] * 1e9)
        out[f"int8_floor_ms_{c['threads']}t"] = 1000 * flops / (c["int8_gops"] * 1e9)
    return out


def _find(rows: list[dict], **match: Any) -> dict | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def evaluate_targets(results: Mapping[str, Any]) -> list[dict]:
    """The issue's targets beside the measured values (2 threads, batch 1)."""
    threads = 2 if 2 in results["config"]["threads"] else max(results["config"]["threads"])
    out = []
    for arch, limit in TARGETS["forward_ms"].items():
        row = _find(results["forward"], architecture=arch, threads=threads, batch=1, fast_path=True)
        if row:
            out.append({"target": f"forward {arch} int8 ({row['variant'].split(', ')[-1]}), {threads} threads, batch 1",
                        "limit": f"<= {limit} ms",
                        "measured": f"{row['median_ms']:.2f} ms", "met": row["median_ms"] <= limit})
            out.append({"target": f"forward {arch} speed-up vs baseline", "limit": f">= {TARGETS['forward_speedup']}x",
                        "measured": f"{row['speedup']:.2f}x", "met": row["speedup"] >= TARGETS["forward_speedup"]})
    for arch, limit in TARGETS["end_to_end_png_ms"].items():
        row = _find(results["end_to_end"], architecture=arch, format="PNG", threads=threads, batch=1,
                    variant=SERVING_FAST)
        if row:
            out.append({"target": f"end to end {arch}, 1024² PNG bytes -> verdict", "limit": f"<= {limit} ms",
                        "measured": f"{row['median_ms']:.1f} ms ({row['crops_per_image']} crops)",
                        "met": row["median_ms"] <= limit})
    for acc in results.get("accuracy") or []:
        drop = acc.get("auc_drop")
        if drop is not None:
            out.append({"target": f"AUC loss int8 vs fp32, {acc['architecture']}, {acc['measured_on']}",
                        "limit": f"<= {TARGETS['auc_drop']}",
                        "measured": f"{drop:.4f} (fp32 {acc['auc_fp32']:.4f}, int8 {acc['auc_int8']:.4f}, "
                                    f"{acc['images']} images)",
                        "met": drop <= TARGETS["auc_drop"]})
    for row in results.get("cold_start") or []:
        if row["mode"].startswith("int8"):
            out.append({"target": f"cold start {row['architecture']} ({row['mode']}), process start -> first verdict",
                        "limit": f"<= {TARGETS['cold_start_s']} s", "measured": f"{row['to_first_verdict_s']:.2f} s",
                        "met": row["to_first_verdict_s"] <= TARGETS["cold_start_s"]})
    return out

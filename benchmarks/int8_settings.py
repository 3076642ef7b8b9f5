"""Which int8 settings ship: the same export flow with each candidate, measured in one run.

    python -m benchmarks.int8_settings [--work-dir DIR]   # -> results/int8_settings.{json,md}

Candidates (onnxruntime ``quantize_static``, QDQ, per-channel symmetric weights):

``u8s8``          u8 activations, 8-bit s8 weights: what releases shipped before.
                  Can saturate on AVX2 without VNNI (``vpmaddubsw`` adds two
                  u8*s8 products into an int16: 2*255*127 > 32767).
``u8s8-reduced``  the same with 7-bit weights ([-64, 64]): 2*255*64 = 32640 fits.
``s8s8``          signed activations and weights (onnxruntime's "S8S8").

For each: AUC drop, mean/max |Δp| against fp32 on a trained MobileNetV2's test
split (``export_fast_path``'s own report), whether the graph can saturate
(:func:`fakeface.modeling.fastpath.check_no_saturation`, CPU-independent), and
int8 latency at batch 1 on this CPU, the candidates timed in interleaved
rounds so a busy machine slows all alike. Only the ratio to ``u8s8`` measured
beside it is meant to carry over; the CPU flags say which kernels ran.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.measure import collect_environment, prepare_trained_releases, time_interleaved

CANDIDATES = {
    "u8s8": dict(activation_type="QUInt8", weight_type="QInt8", reduce_range=False),
    "u8s8-reduced": dict(activation_type="QUInt8", weight_type="QInt8", reduce_range=True),
    "s8s8": dict(activation_type="QInt8", weight_type="QInt8", reduce_range=False),
}
ARCH = "mobilenetv2_100"


def measure(work: Path, *, rounds: int = 7, threads: int = 1) -> dict[str, Any]:
    from fakeface.data.dataset import load_face_dataset
    from fakeface.evaluation.metrics import decode_split
    from fakeface.modeling.detector import load_detector
    from fakeface.modeling.fastpath import (
        FAST_MODEL_NAME, FastDetector, QuantizationSettings, check_no_saturation, export_fast_path,
    )

    environment = collect_environment()
    models, (data_dir, holdout_spec) = prepare_trained_releases(work, [ARCH])
    calibration, _, _ = decode_split(load_face_dataset(data_dir)["validation"], max_images=64)
    # The independent synthetic set (another seed, every split): more images than the 60 of the test split.
    holdout_data = load_face_dataset(holdout_spec.rsplit(":", 1)[0])
    holdout, labels = [], []
    for split in holdout_data.values():
        images, y, _ = decode_split(split)
        holdout += images
        labels += list(y)
    rows, detectors = [], {}
    for name, values in CANDIDATES.items():
        folder = work / f"candidate-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for file in ("config.json", "model.safetensors"):
            shutil.copy2(Path(models[ARCH]) / file, folder / file)
        model = load_detector(folder)
        info = export_fast_path(model, folder, calibration, holdout, labels,
                                quantization=QuantizationSettings(**values))
        saturation = check_no_saturation(folder / FAST_MODEL_NAME)
        rows.append({"candidate": name, **values, "input_conv": info["input_conv"], "auc_fp32": info["auc_fp32"],
                     "auc_int8": info["auc_int8"], "auc_drop": info["auc_drop"], "mean_abs_dp": info["mean_abs_dp"],
                     "max_abs_dp": info["max_abs_dp"], "verdict_agreement": info["verdict_agreement"],
                     "can_saturate_on_avx2": not saturation.ok, "worst_pair_sum": saturation.worst_pair_sum})
        detectors[name] = FastDetector(model, folder / FAST_MODEL_NAME, threads=threads)
    batch = [holdout[:1]]
    crops = {name: det.prepare(batch[0]).numpy() for name, det in detectors.items()}
    timings = time_interleaved(
        {name: (lambda d=det, c=crops[name]: d.session.run(None, {d._input_name: c})) for name, det in detectors.items()},
        rounds=rounds, min_round_seconds=0.5)
    base = np.median(timings["u8s8"].samples_ms)
    for row in rows:
        t = timings[row["candidate"]].as_dict(1)
        row.update(median_ms=t["median_ms"], p90_ms=t["p90_ms"], speed_vs_u8s8=base / t["median_ms"])
    environment["load_average_after"] = list(os.getloadavg())
    return {"architecture": ARCH, "input_size": detectors["u8s8"].preprocessing.input_size[-1],
            "threads": threads, "test_images": len(holdout), "calibration_images": len(calibration),
            "environment": environment, "candidates": rows}


def render_markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "# int8 settings: accuracy, saturation and speed",
        "",
        f"{results['architecture']} at {results['input_size']} px, trained on the synthetic set; "
        f"{results['test_images']} held-out images (an independent synthetic set), {results['calibration_images']} calibration images; "
        f"batch 1, {results['threads']} thread(s).",
        f"CPU: {env['cpu']}, flags: {', '.join(env['cpu_flags'])}; load average "
        f"{env['load_average'][0]:.2f} before, {env['load_average_after'][0]:.2f} after (shared machine).",
        "",
        "| candidate | AUC drop | mean abs dp | max abs dp | can saturate on AVX2 | worst pair sum | median ms | p90 ms "
        "| speed vs u8s8 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["candidates"]:
        lines.append(f"| {r['candidate']} | {r['auc_drop']:.4f} | {r['mean_abs_dp']:.4f} | {r['max_abs_dp']:.4f} "
                     f"| {'yes' if r['can_saturate_on_avx2'] else 'no'} | {r['worst_pair_sum']} "
                     f"| {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['speed_vs_u8s8']:.2f}x |")
    lines += ["", "Worst pair sum: 2 x 255 x the largest |int8 weight| of any quantized Conv/Gemm/MatMul; "
              "AVX2 without VNNI saturates above 32767.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default=None, help="reuse trained releases here (default: a temporary folder)")
    parser.add_argument("--output", default="results/int8_settings", help="path prefix of the .json and .md")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fakeface-int8-") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = measure(work, rounds=args.rounds)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output + ".json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    Path(args.output + ".md").write_text(render_markdown(results))
    print(render_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

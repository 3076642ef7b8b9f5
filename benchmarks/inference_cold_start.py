"""The inference benchmark's cold-start section: process start -> first verdict in a fresh interpreter, per mode
(int8, fp32, int8 after importing gradio as the Space does), through the app's own ``fakeface.serving``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # the benchmark's own types; importing the module here would be circular
    from benchmarks.inference import BenchmarkConfig, Variants


_COLD_START_CHILD = r"""
import json, sys, time
folder, image_path, mode, onnx_path = sys.argv[1:5]
t0 = time.time()
if mode.endswith("+gradio"):
    import gradio  # the Space's process imports it before the first request can arrive
from fakeface.serving.analysis import analyze_bytes
from fakeface.serving.models import load_model
t_import = time.time()
fast = not mode.startswith("fp32")
loaded = load_model(folder, use_fast_path=fast)
detector = loaded.scorer
if fast and onnx_path != "-":   # random weights: the loader refuses their fast path; attach the exported one
    from dataclasses import replace
    from fakeface.modeling.fastpath import FastDetector
    detector = FastDetector(detector.model, onnx_path)
    loaded = replace(loaded, scorer=detector)
runtime = getattr(detector, "runtime", "torch-fp32")
assert runtime.startswith("onnxruntime-") == fast, f"{mode} asked, {runtime} loaded"
t_load = time.time()
with open(image_path, "rb") as handle:
    data = handle.read()
verdict = analyze_bytes(data, "upload.png", [loaded], explain=False, robustness=False, provenance=False)["verdict"]
t_verdict = time.time()
print(json.dumps({"verdict_at": t_verdict, "import_s": t_import - t0, "load_s": t_load - t_import,
                  "first_verdict_s": t_verdict - t_load, "verdict": verdict, "runtime": runtime,
                  "path": "fakeface.serving"}))
"""
COLD_START_MODES = ("int8", "fp32", "int8+gradio")


def benchmark_cold_start(variants: Variants, config: BenchmarkConfig, png_path: Path) -> list[dict]:
    """Process start -> first verdict, in a fresh interpreter, weights already on local disk.

    Modes: the int8 fast path, fp32, and int8 after importing gradio as the
    Space's process does, all through the app's own ``fakeface.serving``.
    """
    rows = []
    repo_root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))}
    # A trained release goes through the app's loader unaided; random weights
    # get the graph exported here attached (their fast path is never trusted).
    folder = variants.release or variants.folder
    onnx_arg = "-" if variants.release else os.fspath(variants.fast.onnx_path)
    for mode in COLD_START_MODES if not config.quick else COLD_START_MODES[:2]:
        runs = []
        for _ in range(max(1, config.cold_start_runs)):
            started = time.time()
            done = subprocess.run(
                [sys.executable, "-c", _COLD_START_CHILD, os.fspath(folder), os.fspath(png_path), mode, onnx_arg],
                capture_output=True, text=True, env=env, timeout=300,
            )
            if done.returncode != 0:
                raise RuntimeError(f"cold-start child failed: {done.stderr.strip().splitlines()[-1:]}")
            child = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append({"to_first_verdict_s": child["verdict_at"] - started, **child})
        median = sorted(runs, key=lambda r: r["to_first_verdict_s"])[len(runs) // 2]
        rows.append({"architecture": variants.architecture, "mode": mode, "runs": len(runs), "path": median["path"],
                     "weights": "trained release" if variants.release else "random",
                     "to_first_verdict_s": median["to_first_verdict_s"], "import_s": median["import_s"],
                     "load_s": median["load_s"], "first_verdict_s": median["first_verdict_s"],
                     "interpreter_start_s": median["to_first_verdict_s"] - median["import_s"] - median["load_s"]
                     - median["first_verdict_s"], "all_runs_s": [r["to_first_verdict_s"] for r in runs]})
    return rows

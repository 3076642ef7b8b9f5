"""The benchmark: a tiny smoke run through the CLI, the timing harness and the targets logic (not timings)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.inference import (
    BASELINE, BATCHED_FAST, FAST_ALL, FAST_STEM, SERVING_FAST, SERVING_FP32, TARGETS, evaluate_targets,
)
from benchmarks.inference_report import render_benchmark_markdown
from benchmarks.measure import time_interleaved
from tests.test_fastpath import ARCH, build_trained_release

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`scripts/benchmark.py --quick` on a tiny trained release, in a subprocess like a user runs it."""
    tmp = tmp_path_factory.mktemp("bench")
    folder, info = build_trained_release(tmp / "release")
    dataset = tmp / "dataset"
    built = subprocess.run([sys.executable, "scripts/build_dataset.py", "--synthetic", "16", "--synthetic-size", "64",
                            "--output-dir", str(dataset), "--seed", "1", "--no-progress"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    output = tmp / "out" / "benchmark"
    done = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--quick", "--architectures", ARCH, "--models", f"{ARCH}={folder}",
         "--dataset", f"{dataset}:all", "--threads", "1", "--batches", "1,2", "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(output.with_suffix(".json").read_text()), output.with_suffix(".md").read_text(), done.stdout, info


@pytest.mark.slow
def test_quick_run_reports_every_section(quick_run):
    results, markdown, stdout, info = quick_run
    assert '"cpu_flags"' in stdout  # the environment is printed first
    for section in ("environment", "ceiling", "forward", "end_to_end", "decode", "cold_start", "accuracy", "targets"):
        assert results[section], section
    assert results["command"].startswith("python scripts/benchmark.py --quick")
    forward = {(r["batch"], r["variant"]): r for r in results["forward"]}
    for batch in (1, 2):
        for variant in (BASELINE, FAST_ALL, FAST_STEM, "onnxruntime fp32", "torch fp32 channels_last"):
            row = forward[(batch, variant)]
            assert 0 < row["median_ms"] <= row["p90_ms"] and row["calls"] >= 2
            assert row["images_per_s"] == pytest.approx(1000 * batch / row["median_ms"], rel=1e-3)
        assert forward[(batch, BASELINE)]["speedup"] == 1.0
        (fast,) = [r for r in results["forward"] if r["batch"] == batch and r["fast_path"]]
        assert fast["variant"] == (FAST_ALL if info["input_conv"] == "int8" else FAST_STEM)
        assert fast["speedup"] == pytest.approx(forward[(batch, BASELINE)]["median_ms"] / fast["median_ms"], rel=1e-2)
    for batch in (1, 2):
        variants = {r["variant"] for r in results["end_to_end"] if r["batch"] == batch}
        assert {BASELINE, SERVING_FP32, SERVING_FAST} <= variants
        assert (BATCHED_FAST in variants) == (batch > 1)
    assert {r["format"] for r in results["end_to_end"]} == {"PNG", "JPEG"}
    assert all(r["crops_per_image"] == 5 for r in results["end_to_end"])
    assert results["ceiling"][0]["fp32_gflops"] > 0 and results["ceiling"][0]["int8_gops"] > 0
    assert results["flops"][ARCH]["gflops"] > 0


@pytest.mark.slow
def test_quick_run_serves_the_release_fast_path_and_reports_its_accuracy(quick_run):
    results, markdown, _, info = quick_run
    recorded, remeasured = results["accuracy"]
    assert recorded["architecture"] == ARCH and recorded["measured_on"].startswith("the release's fastpath.json")
    assert recorded["auc_drop"] == pytest.approx(info["auc_drop"], abs=1e-4)
    assert recorded["input_size"] == 32
    assert remeasured["images"] == 16 and "re-measured" in remeasured["measured_on"]
    assert 0 <= remeasured["max_abs_dp"] <= 1 and remeasured["auc_fp32"] is not None
    cold = {r["mode"]: r for r in results["cold_start"]}
    assert set(cold) == {"int8", "fp32"}
    for row in cold.values():
        assert row["weights"] == "trained release"
        assert row["to_first_verdict_s"] >= row["import_s"] + row["load_s"] + row["first_verdict_s"] - 0.01
    targets = {t["target"]: t for t in results["targets"]}
    assert any(name.startswith("AUC loss") for name in targets)
    assert any(name.startswith("cold start") for name in targets)


@pytest.mark.slow
def test_markdown_has_the_tables_with_the_measured_numbers(quick_run):
    results, markdown, _, _ = quick_run
    for heading in ("## Targets", "## Matrix-multiply ceiling", "## Forward pass", "## End to end", "## Decode",
                    "## Cold start", "## Accuracy"):
        assert heading in markdown
    assert markdown == render_benchmark_markdown(results, command=results["command"])
    row = next(r for r in results["forward"] if r["fast_path"])
    assert f"| {row['variant']} **(fast path)** | {row['median_ms']:.2f} |" in markdown


def test_interleaved_rounds_rotate_the_order_and_fill_the_round():
    order = []
    variants = {name: (lambda n=name: order.append(n)) for name in "abc"}
    timings = time_interleaved(variants, rounds=3, min_round_seconds=0.0, warmup_calls=1)
    assert order[:3] == ["a", "b", "c"]              # warm-up
    assert order[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(t.samples_ms) == 3 for t in timings.values())
    calls = []
    slow = time_interleaved({"sleep": lambda: (calls.append(1), time.sleep(0.005))}, rounds=2,
                            min_round_seconds=0.05, warmup_calls=1)
    per_round = len(slow["sleep"].samples_ms) / 2
    # Calls per round come from the warm-up call's time: at most 10 sleeps of >= 5 ms fill 50 ms; on a busy
    # machine one slow warm-up can leave a single call, so only the upper bound is exact.
    assert per_round == int(per_round) and 1 <= per_round <= 10
    assert len(calls) == 1 + 2 * per_round
    stats = slow["sleep"].as_dict(batch=4)
    assert stats["median_ms"] >= 5 and stats["images_per_s"] == pytest.approx(4000 / stats["median_ms"])


def test_targets_are_judged_against_the_issue_limits():
    def fwd(arch, ms, speedup):
        return {"architecture": arch, "threads": 2, "batch": 1, "variant": FAST_ALL, "fast_path": True,
                "median_ms": ms, "speedup": speedup}

    limit = TARGETS["forward_ms"]["resnet50"]
    results = {
        "config": {"threads": [1, 2]},
        "forward": [fwd("resnet50", limit + 0.5, 5.0), fwd("mobilenetv2_100", 2.0, 4.4)],
        "end_to_end": [{"architecture": "mobilenetv2_100", "format": "PNG", "threads": 2, "batch": 1,
                        "variant": SERVING_FAST, "median_ms": 30.0, "crops_per_image": 5}],
        "accuracy": [{"architecture": "resnet50", "measured_on": "test", "auc_drop": 0.0051, "auc_fp32": 0.99,
                      "auc_int8": 0.9849, "images": 60}],
        "cold_start": [{"architecture": "resnet50", "mode": "int8", "to_first_verdict_s": 7.9}],
    }
    met = {t["target"]: t["met"] for t in evaluate_targets(results)}
    assert met == {
        "forward resnet50 int8 (all layers), 2 threads, batch 1": False,
        "forward resnet50 speed-up vs baseline": True,
        "forward mobilenetv2_100 int8 (all layers), 2 threads, batch 1": True,
        "forward mobilenetv2_100 speed-up vs baseline": False,
        "end to end mobilenetv2_100, 1024² PNG bytes -> verdict": True,
        "AUC loss int8 vs fp32, resnet50, test": False,
        "cold start resnet50 (int8), process start -> first verdict": True,
    }


def test_cli_rejects_bad_arguments(tmp_path):
    for args, message in ((["--threads", "0"], "positive"), (["--models", "resnet50"], "ARCH=FOLDER"),
                          (["--models", f"resnet50={tmp_path / 'nope'}"], "not a folder")):
        done = subprocess.run([sys.executable, "scripts/benchmark.py", *args], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr

"""A 1024² photo's bytes to a verdict through the app's path, with and without the face stage.

Run with ``python scripts/photo_verdict_benchmark.py --model RELEASE`` (writes
``results/photo_verdict.{json,md}``). The release must have a face crop in its
config (every ``train.py`` release has one by default; ``make demo-model`` makes one).

Measured: ``fakeface.serving.analysis.analyze_bytes`` with the evidence off
(verdict only: decode, face stage, crops, model, decision), as the app's
``/verdict`` and ``/detect`` run it, on the release as shipped (int8 when its
fast path loads) against the same release with the face stage switched off
(the whole image scored: the baseline, in the same interleaved run). Photos:
the six 1024² FFHQ PNGs in ``../shared/data/seed-ffhq`` (one face each) and a
faceless 1024² noise PNG (the face stage's worst case: it also searches the
photo turned by 90 and 270 degrees). Issue 15's target: <= 45 ms for a 1024²
PNG with the face stage, MobileNetV2 int8, 2 threads.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from benchmarks.face_stage import cpu_ms_per_call
from benchmarks.measure import collect_environment, time_interleaved
from fakeface.modeling.config import FACE_CROP_KEY, FAKEFACE_KEY
from fakeface.modeling.panel import PANEL_KEY, panel_spec
from fakeface.serving.analysis import analyze_bytes
from fakeface.serving.models import LoadedModel, load_model
from fakeface.utils.fileio import write_atomic
from fakeface.utils.formatting import format_number, json_safe, markdown_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SEED_DIR = REPO.parent / "shared" / "data" / "seed-ffhq"
TARGET_MS = 45.0
WITH_FACES, WHOLE_IMAGE = "with the face stage", "whole image (baseline)"
CONTENT_ONLY = "content expert alone (face stage)"
PANEL_TARGET_MS = 150.0   # issue 23: a fused verdict of every expert


@dataclass(frozen=True)
class PhotoVerdictConfig:
    model: str
    seed_dir: str = str(DEFAULT_SEED_DIR)
    rounds: int = 7
    min_round_seconds: float = 0.5


def _variant(release: Path, work: Path, name: str, *, face_stage: bool = True, panel: bool = True) -> Path:
    """A copy of the release without its face crop and/or its panel entry (weights and fast path unchanged)."""
    copy = work / name
    shutil.copytree(release, copy, ignore=shutil.ignore_patterns("checkpoints", "runs", "plots"))
    config_path = copy / "config.json"
    config = json.loads(config_path.read_text())
    if not face_stage:
        config.get(FAKEFACE_KEY, {}).pop(FACE_CROP_KEY, None)
    if not panel:
        config.get(FAKEFACE_KEY, {}).pop(PANEL_KEY, None)
    config_path.write_text(json.dumps(config, indent=2))
    return copy


def _load(source: Path) -> LoadedModel:
    model = load_model(os.fspath(source))
    if not isinstance(model, LoadedModel):
        raise SystemExit(f"could not load {source}: {model.message}")
    return model


def _photos(seed_dir: Path) -> dict[str, bytes]:
    photos = {path.name: path.read_bytes() for path in sorted(seed_dir.glob("*.png"))}
    if not photos:
        raise SystemExit(f"no PNG photos in {seed_dir} (the seed-ffhq pack in ../shared/data)")
    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    photos["noise (no face)"] = buffer.getvalue()
    return photos


def run_photo_verdict_benchmark(config: PhotoVerdictConfig) -> dict[str, Any]:
    release = Path(config.model)
    environment = collect_environment()
    with tempfile.TemporaryDirectory() as tmp:
        models = {WITH_FACES: _load(release), WHOLE_IMAGE: _load(_variant(release, Path(tmp), "whole", face_stage=False))}
        if panel_spec(models[WITH_FACES].detector.model) is not None:   # each expert's share: the content one alone
            models[CONTENT_ONLY] = _load(_variant(release, Path(tmp), "content", panel=False))
        if models[WITH_FACES].detector.face_crop is None:
            raise SystemExit(f"{release} has no face crop in its config: nothing to measure")
        rows = []
        for name, data in _photos(Path(config.seed_dir)).items():
            variants = {label: (lambda m=m, data=data: analyze_bytes(
                data, "photo.png", [m], explain=False, robustness=False, provenance=False)["verdict"])
                for label, m in models.items()}
            timings = time_interleaved(variants, rounds=config.rounds, min_round_seconds=config.min_round_seconds)
            base = timings[WHOLE_IMAGE].as_dict(1)["median_ms"]
            for label, timing in timings.items():
                stats = timing.as_dict(1)
                # The content expert alone is timed, not judged: it runs under the panel's fused decision.
                result = variants[label]() if label != CONTENT_ONLY else "(timing only)"
                rows.append({"photo": name, "variant": label, "median_ms": stats["median_ms"], "p90_ms": stats["p90_ms"],
                             "min_ms": stats["min_ms"], "calls": stats["calls"],
                             "ratio_to_whole_image": stats["median_ms"] / base, "cpu_ms": cpu_ms_per_call(variants[label], 5),
                             "verdict": result})
        runtime = models[WITH_FACES].runtime
    face_rows = [r for r in rows if r["variant"] == WITH_FACES and not r["photo"].startswith("noise")]
    median_faces = float(np.median([r["median_ms"] for r in face_rows]))
    panel = any(r["variant"] == CONTENT_ONLY for r in rows)
    single = ([r["median_ms"] for r in rows if r["variant"] == CONTENT_ONLY and not r["photo"].startswith("noise")]
              if panel else [r["median_ms"] for r in face_rows])
    single_ms = float(np.median(single))
    goal = PANEL_TARGET_MS if panel else TARGET_MS
    return json_safe({
        "setup": {"model": os.fspath(release), "runtime": runtime, "rounds": config.rounds,
                  "path": "fakeface.serving.analysis.analyze_bytes(explain=False, robustness=False, provenance=False)"},
        "environment": environment, "load_average_end": list(os.getloadavg()),
        "rows": rows,
        "target": {"what": ("1024² FFHQ PNG -> fused verdict of every expert with the face stage, median over the six "
                            "photos" if panel else "1024² FFHQ PNG -> verdict with the face stage, median over the six "
                            "photos"),
                   "goal_ms": goal, "measured_ms": median_faces, "met": median_faces <= goal},
        "single_expert": {"what": "the content expert alone with the face stage", "goal_ms": TARGET_MS,
                          "measured_ms": single_ms, "met": single_ms <= TARGET_MS},
        "experts_share_ms": ({"content (with decode and face stage)": single_ms,
                              "the other experts and the fusion": median_faces - single_ms} if panel else None),
    })


def render_markdown(results: Mapping[str, Any], *, command: str | None = None) -> str:
    env, setup, target = results["environment"], results["setup"], results["target"]
    rows = [[r["photo"], r["variant"], format_number(r["median_ms"], 1), format_number(r["p90_ms"], 1),
             format_number(r["min_ms"], 1), format_number(r["cpu_ms"], 1),
             f"{r['ratio_to_whole_image']:.2f}x", r["verdict"]] for r in results["rows"]]
    lines = [
        "# A 1024² photo to a verdict, with and without the face stage", "",
        f"Command: `{command or 'python scripts/photo_verdict_benchmark.py'}`. Path: `{setup['path']}`; release "
        f"`{setup['model']}` served as {setup['runtime']}; {setup['rounds']} interleaved rounds.",
        f"CPU: {env['cpu']}, flags {', '.join(env['cpu_flags'])}; {env['cpus_available']} CPUs; load average "
        f"{', '.join(f'{v:.2f}' for v in env['load_average'])} at the start, "
        f"{', '.join(f'{v:.2f}' for v in results['load_average_end'])} at the end.", "",
        f"**Target** ({target['what']}): <= {target['goal_ms']:.0f} ms; measured {target['measured_ms']:.1f} ms: "
        f"**{'met' if target['met'] else 'missed'}**. Single expert (<= {results['single_expert']['goal_ms']:.0f} ms): "
        f"{results['single_expert']['measured_ms']:.1f} ms, **{'met' if results['single_expert']['met'] else 'missed'}**.",
        "" if not results.get("experts_share_ms") else "Share of the fused verdict (median ms): " + "; ".join(
            f"{k} {v:.1f}" for k, v in results["experts_share_ms"].items()) + ".", "",
        markdown_table(["photo", "variant", "median ms", "p90 ms", "min ms", "CPU ms", "vs whole image", "verdict"],
                       rows),
        "",
        "The baseline is the same release with the face crop removed from its config, so the whole photo is scored "
        "(the crop protocol's fixed crops). CPU ms is the process CPU time per call (both threads), which a busy "
        "machine inflates less than wall time.",
    ]
    return "\n".join(lines) + "\n"


def write_results(results: Mapping[str, Any], results_dir: Path, *, command: str | None = None) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(results_dir / "photo_verdict.json", (json.dumps(results, indent=2) + "\n").encode())
    write_atomic(results_dir / "photo_verdict.md", render_markdown(results, command=command).encode())

"""The face-stage benchmark: single-face recall, group photos, sideways photos and time per 1024² photo.

    python scripts/face_stage_benchmark.py [--detect-sizes 192,256,320,416,512,640] [--threads 2]
    python scripts/face_stage_benchmark.py --render-only      # re-render the Markdown from the JSON
    python scripts/face_stage_benchmark.py --speed-only       # re-time on a quieter moment, keep the recall

Writes ``results/face_stage.json`` and ``results/face_stage.md`` (see :mod:`benchmarks.face_stage`).
Needs the faces-dev pack in ../shared/data next to the repository.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.cli import command_line, comma_separated
from benchmarks.face_stage import (
    FaceStageBenchmarkConfig, remeasure_speed, render_from_json, run_face_stage_benchmark, write_results,
)


def build_parser() -> argparse.ArgumentParser:
    defaults = FaceStageBenchmarkConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=defaults.data_dir, help="folder holding faces-dev/")
    p.add_argument("--detect-sizes", type=comma_separated(int, "256,320"), default=defaults.detect_sizes)
    p.add_argument("--threads", type=int, default=defaults.threads)
    p.add_argument("--rounds", type=int, default=defaults.rounds, help="interleaved timing rounds")
    p.add_argument("--max-images", type=int, default=None, help="cap on single-face images (default: all)")
    p.add_argument("--turned-sample", type=int, default=defaults.turned_sample)
    p.add_argument("--results-dir", default="results")
    p.add_argument("--render-only", action="store_true", help="only re-render face_stage.md from face_stage.json")
    p.add_argument("--speed-only", action="store_true",
                   help="re-time the speed section only, keeping the recall sections of face_stage.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results_dir = Path(args.results_dir)
    json_path, md_path = results_dir / "face_stage.json", results_dir / "face_stage.md"
    command = command_line("scripts/face_stage_benchmark.py", argv)
    if args.render_only:
        render_from_json(json_path, md_path, command=command)
        return 0
    config = FaceStageBenchmarkConfig(data_dir=args.data_dir, detect_sizes=args.detect_sizes, threads=args.threads,
                                      rounds=args.rounds, max_images=args.max_images, turned_sample=args.turned_sample)
    results = remeasure_speed(json_path, config) if args.speed_only else run_face_stage_benchmark(config)
    results_dir.mkdir(parents=True, exist_ok=True)
    write_results(results, json_path, md_path, command=command)
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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

from benchmarks.cli import command_line, comma_separated, settings_from, settings_parser
from benchmarks.face_stage import (
    FaceStageBenchmarkConfig, remeasure_speed, render_from_json, run_face_stage_benchmark, write_results,
)


def build_parser() -> argparse.ArgumentParser:
    return settings_parser(__doc__, FaceStageBenchmarkConfig(), """
        data_dir: folder holding faces-dev/
        detect_sizes, threads
        rounds: interleaved timing rounds
        max_images: cap on single-face images (default: all)
        turned_sample, results_dir
        render_only: only re-render face_stage.md from face_stage.json
        speed_only: re-time the speed section only, keeping the recall sections of face_stage.json
        """, types={"detect_sizes": comma_separated(int, "256,320"), "max_images": int})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results_dir = Path(args.results_dir)
    json_path, md_path = results_dir / "face_stage.json", results_dir / "face_stage.md"
    command = command_line("scripts/face_stage_benchmark.py", argv)
    if args.render_only:
        render_from_json(json_path, md_path, command=command)
        return 0
    config = settings_from(FaceStageBenchmarkConfig, args)
    results = remeasure_speed(json_path, config) if args.speed_only else run_face_stage_benchmark(config)
    results_dir.mkdir(parents=True, exist_ok=True)
    write_results(results, json_path, md_path, command=command)
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

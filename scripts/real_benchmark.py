"""The real-faces benchmark on faces-dev: linear probes and short fine-tunes, LOFO, shortcut controls, calibration.

    python scripts/real_benchmark.py [--data-dir ../shared/data/faces-dev] [--no-finetune]
    python scripts/real_benchmark.py --render-only      # re-render the Markdown from the JSON

Writes ``results/real_faces.json`` and ``results/real_faces.md`` (see :mod:`benchmarks.real_faces`).
Not run in CI: about 25 minutes on a busy 2-core CPU, 17 of them building the feature cache in
``.cache/real_faces`` (reused by later runs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.cli import command_line, run_or_render, setup_logging
from benchmarks.real_faces import (
    RealBenchmarkSettings, UnknownSourcesError, render_real_benchmark, run_real_benchmark, write_real_benchmark,
)

REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    d = RealBenchmarkSettings(data_dir="")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "faces-dev"), help="faces-dev folder")
    p.add_argument("--cache-dir", default=d.cache_dir)
    p.add_argument("--results-dir", default="results")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-faces", type=int, default=d.max_faces)
    p.add_argument("--probe-c", type=float, default=d.probe_c)
    p.add_argument("--finetune-size", type=int, default=d.finetune_size)
    p.add_argument("--finetune-max-train", type=int, default=d.finetune_max_train)
    p.add_argument("--threads", type=int, default=d.threads, help="torch/BLAS threads (1 on a busy shared machine)")
    p.add_argument("--no-finetune", action="store_true", help="linear probes only (minutes instead of an hour)")
    p.add_argument("--limit", type=int, default=None, help="first N images per source (quick runs)")
    p.add_argument("--render-only", action="store_true", help="re-render real_faces.md from real_faces.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    settings = RealBenchmarkSettings(
        data_dir=args.data_dir, cache_dir=args.cache_dir, seed=args.seed, max_faces=args.max_faces,
        probe_c=args.probe_c, finetune=not args.no_finetune, finetune_size=args.finetune_size,
        finetune_max_train=args.finetune_max_train, limit=args.limit, threads=args.threads,
    )
    command = command_line("scripts/real_benchmark.py", argv)
    try:
        return run_or_render(
            args.results_dir, "real_faces", render_only=args.render_only,
            run=lambda: run_real_benchmark(  # the probes' results are written before the fine-tunes start
                settings, command=command, on_partial=lambda partial: write_real_benchmark(partial, args.results_dir)),
            write=write_real_benchmark, render=render_real_benchmark)
    except UnknownSourcesError as error:  # raised from the manifest alone, before any image is read
        print(f"scripts/real_benchmark.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The real-faces benchmark on faces-dev: linear probes and short fine-tunes, LOFO, shortcut controls, calibration.

    python scripts/real_benchmark.py [--data-dir ../shared/data/faces-dev] [--no-finetune]
    python scripts/real_benchmark.py --render-only      # re-render the Markdown from the JSON

Writes ``results/real_faces.json`` and ``results/real_faces.md`` (see :mod:`benchmarks.real_faces`).
Not run in CI: about 25 minutes on a busy 2-core CPU, 17 of them building the feature cache in
``.cache/real_faces`` (reused by later runs).
"""
from __future__ import annotations

import argparse
import functools
import sys

from benchmarks.cli import FACES_DEV, run_benchmark, settings_from, settings_parser
from benchmarks.real_faces import RealBenchmarkSettings, UnknownSourcesError, run_real_benchmark
from benchmarks.real_faces_report import render_real_benchmark, write_real_benchmark


def build_parser() -> argparse.ArgumentParser:
    return settings_parser(__doc__, RealBenchmarkSettings(data_dir=FACES_DEV), """
        data_dir: faces-dev folder
        cache_dir, results_dir, seed, max_faces, probe_c, finetune_size, finetune_max_train
        threads: torch/BLAS threads (1 on a busy shared machine)
        no_finetune: linear probes only (minutes instead of an hour)
        limit: first N images per source (quick runs)
        render_only: re-render real_faces.md from real_faces.json
        """, types={"limit": int})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The probes' results are written before the fine-tunes start.
    on_partial = functools.partial(write_real_benchmark, results_dir=args.results_dir)
    try:
        return run_benchmark(args, argv, "scripts/real_benchmark.py", "real_faces",
                             settings_from(RealBenchmarkSettings, args, finetune=not args.no_finetune),
                             functools.partial(run_real_benchmark, on_partial=on_partial),
                             write=write_real_benchmark, render=render_real_benchmark)
    except UnknownSourcesError as error:  # raised from the manifest alone, before any image is read
        print(f"scripts/real_benchmark.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

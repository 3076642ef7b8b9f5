"""A 1024² photo to a verdict through the app's path, with and without the face stage.

    python scripts/photo_verdict_benchmark.py --model demo_model     # any release with a face crop

Writes ``results/photo_verdict.json`` and ``results/photo_verdict.md`` (see :mod:`benchmarks.photo_verdict`).
Needs ../shared/data/seed-ffhq next to the repository.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.cli import command_line
from benchmarks.photo_verdict import PhotoVerdictConfig, render_markdown, run_photo_verdict_benchmark, write_results


def main(argv: list[str] | None = None) -> int:
    defaults = PhotoVerdictConfig(model="")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="release folder with a face crop in its config")
    p.add_argument("--seed-dir", default=defaults.seed_dir, help="folder of 1024² face PNGs")
    p.add_argument("--rounds", type=int, default=defaults.rounds)
    p.add_argument("--results-dir", default="results")
    args = p.parse_args(argv)
    command = command_line("scripts/photo_verdict_benchmark.py", argv)
    results = run_photo_verdict_benchmark(PhotoVerdictConfig(model=args.model, seed_dir=args.seed_dir,
                                                             rounds=args.rounds))
    write_results(results, Path(args.results_dir), command=command)
    print(render_markdown(results, command=command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

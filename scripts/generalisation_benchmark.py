"""The generalisation benchmark that decides the released default: leave one generator family out on faces-dev,
nested abstention bands, the 140K pair, in-the-wild false positives, calibration; one row per recipe/backbone.

    python scripts/generalisation_benchmark.py [--data-dir ../shared/data/faces-dev] [--rows finetune,traces]
    python scripts/generalisation_benchmark.py --limit 6 --epochs 1 --results-dir /tmp/smoke   # smoke run
    python scripts/generalisation_benchmark.py --render-only   # re-render results/generalisation.md from the JSON

Writes ``results/generalisation.json`` and ``.md`` (after every finished row) and ``results/abstention_band.json``
for the chosen row (method: :mod:`benchmarks.generalisation`). Face crops and twins are cached in
``.cache/generalisation`` and ``.cache/twins``; about an hour on a shared 2-core CPU with the defaults.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.cli import command_line, comma_separated, run_or_render, setup_logging
from benchmarks.generalisation import ROWS, GeneralisationSettings, run_generalisation
from benchmarks.generalisation_report import render_generalisation, write_generalisation

REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    d = GeneralisationSettings(data_dir="")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "faces-dev"), help="faces-dev folder")
    p.add_argument("--cache-dir", default=d.cache_dir, help="face crops and twin windows")
    p.add_argument("--twin-cache", default=d.twin_cache)
    p.add_argument("--results-dir", default="results")
    p.add_argument("--rows", type=comma_separated(str, ",".join(ROWS)), default=d.rows, help=f"of {', '.join(ROWS)}")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--traces-size", type=int, default=d.traces_size, help="native crop side of the traces rows")
    p.add_argument("--twins", type=int, default=d.twins, help="TAEF2 twins of training reals (0: none)")
    p.add_argument("--limit", type=int, default=None, help="first N images per source (smoke runs)")
    p.add_argument("--budget-minutes", type=float, default=None, help="rows not started by then are dropped")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--render-only", action="store_true", help="re-render generalisation.md from its JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        print(f"unknown rows {unknown}; choose from {', '.join(ROWS)}", file=sys.stderr)
        return 2
    setup_logging()
    settings = GeneralisationSettings(
        data_dir=args.data_dir, cache_dir=args.cache_dir, twin_cache=args.twin_cache, rows=args.rows,
        epochs=args.epochs, traces_size=args.traces_size, twins=args.twins, limit=args.limit,
        budget_minutes=args.budget_minutes, seed=args.seed, threads=args.threads)
    command = command_line("scripts/generalisation_benchmark.py", argv)
    return run_or_render(args.results_dir, "generalisation", render_only=args.render_only,
                         run=lambda: run_generalisation(settings, command=command,
                                                        on_row=lambda d: write_generalisation(d, args.results_dir)),
                         write=write_generalisation, render=render_generalisation)


if __name__ == "__main__":
    sys.exit(main())

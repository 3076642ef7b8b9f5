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
import functools
import sys

from benchmarks.cli import FACES_DEV, run_benchmark, settings_from, settings_parser
from benchmarks.generalisation import ROWS, GeneralisationSettings, run_generalisation
from benchmarks.generalisation_report import render_generalisation, write_generalisation


def build_parser() -> argparse.ArgumentParser:
    return settings_parser(__doc__, GeneralisationSettings(data_dir=FACES_DEV), f"""
        data_dir: faces-dev folder
        cache_dir: face crops and twin windows
        twin_cache, results_dir
        rows: of {', '.join(ROWS)}
        epochs
        traces_size: native crop side of the traces rows
        twins: TAEF2 twins of training reals (0: none)
        limit: first N images per source (smoke runs)
        budget_minutes: rows not started by then are dropped
        seed, threads
        render_only: re-render generalisation.md from its JSON
        """, types={"limit": int, "budget_minutes": float})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        print(f"unknown rows {unknown}; choose from {', '.join(ROWS)}", file=sys.stderr)
        return 2
    on_row = functools.partial(write_generalisation, results_dir=args.results_dir)   # the JSON after every row
    return run_benchmark(args, argv, "scripts/generalisation_benchmark.py", "generalisation",
                         settings_from(GeneralisationSettings, args),
                         functools.partial(run_generalisation, on_row=on_row),
                         write=write_generalisation, render=render_generalisation)


if __name__ == "__main__":
    sys.exit(main())

"""Decode benchmark: Pillow against the project's load path (libspng for PNG) on the 1024² FFHQ PNGs.

    python scripts/decode_benchmark.py              # well under a minute
    python scripts/decode_benchmark.py --render-only

Writes ``results/decode.json`` and ``results/decode.md`` (see :mod:`benchmarks.decode`).
Needs ../shared/data/seed-ffhq next to the repository.
"""
from __future__ import annotations

import argparse
import sys

from benchmarks.cli import command_line, run_or_render, write_results
from benchmarks.decode import DecodeBenchmarkConfig, render_decode, run_decode_benchmark


def main(argv: list[str] | None = None) -> int:
    defaults = DecodeBenchmarkConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seed-dir", default=defaults.seed_dir, help="folder of 1024² face PNGs")
    p.add_argument("--rounds", type=int, default=defaults.rounds)
    p.add_argument("--min-round-seconds", type=float, default=defaults.min_round_seconds)
    p.add_argument("--results-dir", default="results")
    p.add_argument("--render-only", action="store_true", help="re-render decode.md from its JSON")
    args = p.parse_args(argv)
    # The Markdown names the command that measured, also when it is only re-rendered from the JSON.
    given = sys.argv[1:] if argv is None else list(argv)
    command = command_line("scripts/decode_benchmark.py", [a for a in given if a != "--render-only"])
    config = DecodeBenchmarkConfig(seed_dir=args.seed_dir, rounds=args.rounds,
                                   min_round_seconds=args.min_round_seconds)
    render = lambda data: render_decode(data, command=command)   # noqa: E731 - one-line adapter
    return run_or_render(args.results_dir, "decode", render_only=args.render_only,
                         run=lambda: run_decode_benchmark(config),
                         write=lambda data, folder: write_results(data, folder, "decode", render), render=render)


if __name__ == "__main__":
    sys.exit(main())

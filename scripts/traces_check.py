"""The traces check: train each recipe on real faces + their aligned twins (TAEF2, Real-ESRGAN), test on held-out
reals vs their own twins (target AUC >= 0.95), then score unseen generators of faces-dev with the same models.

    python scripts/traces_check.py [--data-dir ../shared/data/faces-dev] [--recipes finetune,traces,spectral-lr]
    python scripts/traces_check.py --render-only      # re-render results/traces.md from the JSON

Writes ``results/traces.json`` and ``results/traces.md`` (method: :mod:`benchmarks.traces`). Twins are cached in
``.cache/twins`` (360 twins: about 13 minutes the first time on a busy 2-core CPU); the recipes about 8 minutes
at load 1-3, 20 when other jobs share the cores.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.cli import command_line, comma_separated, run_or_render, setup_logging
from benchmarks.traces import TracesSettings, render_traces, run_traces_check, write_traces

REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    d = TracesSettings(data_dir="")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "faces-dev"), help="faces-dev folder")
    p.add_argument("--cache-dir", default=d.cache_dir, help="twin cache")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--makers", type=comma_separated(str, "taef2,esrgan"), default=d.makers)
    p.add_argument("--real-sources", type=comma_separated(str, "ffhq-140k,lfw-krasserm"), default=d.real_sources)
    p.add_argument("--reals-per-source", type=int, default=d.reals_per_source)
    p.add_argument("--recipes", type=comma_separated(str, "finetune,traces,spectral-lr"), default=d.recipes)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--traces-input-size", type=int, default=d.traces_input_size,
                   help="native crop side for native-crops recipes")
    p.add_argument("--unseen-fakes", type=comma_separated(str, "stylegan3,sd21-sdfd"), default=d.unseen_fakes,
                   help="faces-dev fake sources scored by the twin-trained models (empty: skip)")
    p.add_argument("--unseen-reals", type=comma_separated(str, "celeba-hq"), default=d.unseen_reals)
    p.add_argument("--unseen-per-source", type=int, default=d.unseen_per_source)
    p.add_argument("--timing-sample", type=int, default=d.timing_sample, help="twins per maker timed in a scratch cache")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads for training and scoring (the twin makers use one)")
    p.add_argument("--render-only", action="store_true", help="re-render traces.md from traces.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    settings = TracesSettings(
        data_dir=args.data_dir, cache_dir=args.cache_dir, makers=args.makers, real_sources=args.real_sources,
        reals_per_source=args.reals_per_source, recipes=args.recipes, epochs=args.epochs, batch_size=args.batch_size,
        traces_input_size=args.traces_input_size, unseen_fakes=args.unseen_fakes, unseen_reals=args.unseen_reals,
        unseen_per_source=args.unseen_per_source, timing_sample=args.timing_sample, seed=args.seed, threads=args.threads)
    command = command_line("scripts/traces_check.py", argv)
    return run_or_render(args.results_dir, "traces", render_only=args.render_only,
                         run=lambda: run_traces_check(settings, command=command),
                         write=write_traces, render=render_traces)


if __name__ == "__main__":
    sys.exit(main())

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

from benchmarks.cli import FACES_DEV, comma_separated, run_benchmark, settings_from, settings_parser
from benchmarks.traces import TracesSettings, render_traces, run_traces_check, write_traces


def build_parser() -> argparse.ArgumentParser:
    return settings_parser(__doc__, TracesSettings(data_dir=FACES_DEV), """
        data_dir: faces-dev folder
        cache_dir: twin cache
        results_dir, makers, real_sources, reals_per_source, recipes, epochs, batch_size
        traces_input_size: native crop side for native-crops recipes
        unseen_fakes: faces-dev fake sources scored by the twin-trained models (empty: skip)
        unseen_reals, unseen_per_source
        timing_sample: twins per maker timed in a scratch cache
        seed
        threads: torch threads for training and scoring (the twin makers use one)
        render_only: re-render traces.md from traces.json
        """, types={"unseen_fakes": comma_separated(str, "stylegan3,sd21-sdfd"),
                    "unseen_reals": comma_separated(str, "celeba-hq")})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_benchmark(args, argv, "scripts/traces_check.py", "traces", settings_from(TracesSettings, args),
                         run_traces_check, write=write_traces, render=render_traces)


if __name__ == "__main__":
    sys.exit(main())

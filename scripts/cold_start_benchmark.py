"""Cold start benchmark: ``python app.py`` to the first verdict, in the Space's requirements.txt-only venv.

    python scripts/cold_start_benchmark.py                          # this tree, warm and cold page cache
    python scripts/cold_start_benchmark.py --checkouts before=/tmp/old-tree,after=.   # side by side
    python scripts/cold_start_benchmark.py --nice 0,-10     # also as if the machine were idle (root)
    python scripts/cold_start_benchmark.py --render-only

Builds (or reuses) the venv in .cache/space-venv and a small release trained by train.py in
.cache/cold-start; writes ``results/cold_start.json`` and ``results/cold_start.md`` (see
:mod:`benchmarks.cold_start`). Needs ../shared/data/faces-dev next to the repository (the group photo).
"""
from __future__ import annotations

import sys

from benchmarks.cli import run_benchmark, settings_from, settings_parser, write_results
from benchmarks.cold_start import ColdStartConfig, render_cold_start, run_cold_start_benchmark

OPTIONS = """
checkouts: LABEL=FOLDER,... checkouts measured in interleaved rounds (each needs app.py)
rounds: runs per checkout, page-cache state and priority
nice: the app's priorities, e.g. 0,-10 (below 0 needs root; the other jobs then yield the cores to it)
release: a release folder (default: train the small one, cached in the workdir)
image: the photo of the first verdict
workdir: where the release, logs and runs go
warm_only: skip the cold page-cache runs
results_dir
render_only: re-render cold_start.md from its JSON
"""


def main(argv: list[str] | None = None) -> int:
    defaults = ColdStartConfig()
    args = settings_parser(__doc__, defaults, OPTIONS, types={"release": str}).parse_args(argv)
    settings = settings_from(ColdStartConfig, args, cold=not args.warm_only) if not args.render_only else defaults
    name, script = "cold_start", "scripts/cold_start_benchmark.py"
    render = lambda data: render_cold_start(data)   # noqa: E731 - the command is recorded in the JSON
    return run_benchmark(args, argv, script, name, settings, run_cold_start_benchmark,
                         write=lambda data, folder: write_results(data, folder, name, render), render=render)


if __name__ == "__main__":
    sys.exit(main())

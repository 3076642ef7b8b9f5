"""Panel benchmark: each expert alone and their fitted fusion on generator families none of them saw.

Writes results/panel.json, results/panel.md and results/panel_release.json (what scripts/build_panel.py puts in
a release). About half an hour on 2 cores on a cold cache (twins, five content fine-tunes); see benchmarks/panel.py.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from benchmarks.cli import command_line, run_or_render, setup_logging
from benchmarks.panel import PanelSettings, run_panel
from benchmarks.panel_report import render_panel, write_panel_results

REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    d = PanelSettings(data_dir="")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "faces-dev"), help="faces-dev folder")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--content-epochs", type=int, default=d.content_epochs)
    p.add_argument("--trace-epochs", type=int, default=d.trace.epochs)
    p.add_argument("--trace-crop", type=int, default=d.trace.crop, help="trace expert's native crop side (px)")
    p.add_argument("--limit", type=int, default=None, help="first N images per source (smoke runs)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--render-only", action="store_true", help="re-render panel.md from its JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    d = PanelSettings(data_dir=args.data_dir)
    settings = replace(d, content_epochs=args.content_epochs, limit=args.limit, seed=args.seed, threads=args.threads,
                       trace=replace(d.trace, epochs=args.trace_epochs, crop=args.trace_crop, seed=args.seed,
                                     threads=args.threads))
    command = command_line("scripts/panel_benchmark.py", argv)
    return run_or_render(args.results_dir, "panel", render_only=args.render_only,
                         run=lambda: run_panel(settings, command=command), write=write_panel_results,
                         render=render_panel)


if __name__ == "__main__":
    sys.exit(main())

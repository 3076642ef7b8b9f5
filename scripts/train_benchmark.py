"""The offline benchmark: both recipes x MobileNetV2 and ResNet50 on the synthetic dataset, on CPU.

    python scripts/train_benchmark.py [--images 1200] [--input-size 128] [--output-dir runs/offline_benchmark]
    python scripts/train_benchmark.py --render-only      # re-render the Markdown from the JSON

Writes ``results/offline_benchmark.json`` and ``results/offline_benchmark.md``
(see :mod:`benchmarks.offline`).
"""
from __future__ import annotations

import argparse
import sys

from benchmarks.cli import command_line, comma_separated, run_or_render, setup_logging
from benchmarks.offline import (
    OFFLINE_BENCHMARK_ARCHITECTURES, OFFLINE_BENCHMARK_RECIPES, OfflineBenchmarkSettings, render_offline_benchmark,
    run_offline_benchmark, write_offline_benchmark,
)


def _epochs(text: str) -> dict[str, int]:
    try:
        return {arch.strip(): int(n) for arch, n in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ARCH=EPOCHS,..., got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    defaults = OfflineBenchmarkSettings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", type=int, default=defaults.images, help="synthetic images in the whole dataset (all splits)")
    p.add_argument("--input-size", type=int, default=defaults.input_size, help="crop side (robust) / resize side (seed)")
    p.add_argument("--epochs", type=_epochs, default=defaults.epochs, help="ARCH=E,... epochs per architecture")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--architectures", type=comma_separated(str, "a,b"), default=OFFLINE_BENCHMARK_ARCHITECTURES)
    p.add_argument("--recipes", type=comma_separated(str, "a,b"), default=OFFLINE_BENCHMARK_RECIPES)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--num-workers", type=int, default=defaults.num_workers)
    p.add_argument("--output-dir", default=defaults.output_dir, help="dataset and trained models (not committed)")
    p.add_argument("--results-dir", default="results", help="where the JSON and Markdown results go")
    p.add_argument("--render-only", action="store_true",
                   help="only re-render offline_benchmark.md from an existing offline_benchmark.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    settings = OfflineBenchmarkSettings(
        images=args.images, input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size,
        architectures=args.architectures, recipes=args.recipes, seed=args.seed, num_workers=args.num_workers,
        output_dir=args.output_dir,
    )
    command = command_line("scripts/train_benchmark.py", argv)
    return run_or_render(args.results_dir, "offline_benchmark", render_only=args.render_only,
                         run=lambda: run_offline_benchmark(settings, command=command),
                         write=write_offline_benchmark, render=render_offline_benchmark)


if __name__ == "__main__":
    sys.exit(main())

"""The offline benchmark: both recipes x MobileNetV2 and ResNet50 on the synthetic dataset, on CPU.

    python scripts/train_benchmark.py [--images 1200] [--input-size 128] [--output-dir runs/offline_benchmark]
    python scripts/train_benchmark.py --render-only      # re-render the Markdown from the JSON

Writes ``results/offline_benchmark.json`` and ``results/offline_benchmark.md``
(see :mod:`benchmarks.offline`).
"""
from __future__ import annotations

import argparse
import sys

from benchmarks.cli import comma_separated, run_benchmark, settings_from, settings_parser
from benchmarks.offline import (
    OfflineBenchmarkSettings, render_offline_benchmark, run_offline_benchmark, write_offline_benchmark,
)


def _epochs(text: str) -> dict[str, int]:
    try:
        return {arch.strip(): int(n) for arch, n in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ARCH=EPOCHS,..., got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    lists = comma_separated(str, "a,b")
    return settings_parser(__doc__, OfflineBenchmarkSettings(), """
        images: synthetic images in the whole dataset (all splits)
        input_size: crop side (robust) / resize side (seed)
        epochs: ARCH=E,... epochs per architecture
        batch_size, architectures, recipes, seed, num_workers
        output_dir: dataset and trained models (not committed)
        results_dir: where the JSON and Markdown results go
        render_only: only re-render offline_benchmark.md from an existing offline_benchmark.json
        """, types={"epochs": _epochs, "architectures": lists, "recipes": lists})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_benchmark(args, argv, "scripts/train_benchmark.py", "offline_benchmark",
                         settings_from(OfflineBenchmarkSettings, args), run_offline_benchmark,
                         write=write_offline_benchmark, render=render_offline_benchmark)


if __name__ == "__main__":
    sys.exit(main())

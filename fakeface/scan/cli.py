"""Score every image of a folder, a dataset folder or a Hub dataset into one table (parquet + CSV).

    fakeface-scan SOURCE --model ID_OR_DIR --output-dir DIR           # one process
    torchrun --nproc_per_node 2 -m fakeface.scan.cli SOURCE ...        # two processes, one machine
    accelerate launch --num_machines M --machine_rank R ... -m fakeface.scan.cli SOURCE ...   # several machines

Run the same command again to resume: what committed parts hold is skipped.
See docs/scan.md.

Nothing here imports torch before :func:`main` has pinned this process's
threads (:func:`fakeface.scan.workers.pin_threads`): OpenMP and MKL size
their pools from the environment when torch loads.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from fakeface.scan.workers import pin_threads, threads_per_process


def build_parser() -> argparse.ArgumentParser:
    from fakeface.data.dataset import DEFAULT_MAX_FILE_BYTES   # imports torch: after pin_threads

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="a folder (any files, recursive), a dataset folder, or a Hub dataset id org/name")
    p.add_argument("--model", required=True, help="model folder or Hub id (org/name[@rev])")
    p.add_argument("--output-dir", required=True, help="where parts, scan.parquet, scan.csv and summary.json go")
    p.add_argument("--split", default=None, help="dataset split (default: every split)")
    p.add_argument("--image-column", default="image", help="dataset column holding the images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--part-rows", type=int, default=256, help="rows per committed part (the most a kill can lose)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per process (default: this machine's cores / its scan processes)")
    p.add_argument("--prefetch", type=int, default=None, metavar="N",
                   help="files read and decoded ahead of scoring, on a second thread (default: --batch-size; 0: none)")
    p.add_argument("--no-fast-path", action="store_true", help="score with fp32 even when the int8 graph is valid")
    p.add_argument("--no-faces", action="store_true", help="score whole images even when the model has a face crop")
    p.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES)
    p.add_argument("--limit", type=int, default=None, metavar="N", help="score at most N new images per process")
    p.add_argument("--no-progress", action="store_true")
    return p


def _requested_threads(argv: list[str] | None) -> int | None:
    """``--threads`` alone, read before the full parser (whose defaults import torch) is built."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--threads", type=int, default=None)
    return early.parse_known_args(argv)[0].threads


def main(argv: list[str] | None = None) -> int:
    try:
        threads = threads_per_process(_requested_threads(argv))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if "torch" not in sys.modules:   # else too late to matter (a caller in-process): load_scan_model sets them
        pin_threads(threads)
    from fakeface.scan.runner import ScanConfig, format_summary, run_scan
    from fakeface.scan.sources import ScanSourceError, resolve_scan_source
    from fakeface.scan.store import ScanOutputError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        source = resolve_scan_source(args.source, split=args.split, image_column=args.image_column)
        config = ScanConfig(
            source=source, model=args.model, output_dir=args.output_dir, batch_size=args.batch_size,
            part_rows=args.part_rows, threads=threads, use_fast_path=not args.no_fast_path,
            use_faces=not args.no_faces, max_file_bytes=args.max_file_bytes, limit=args.limit,
            prefetch=args.prefetch, progress=not args.no_progress, token=os.environ.get("HF_TOKEN") or None,
        )
        summary = run_scan(config)
    except (ScanSourceError, ScanOutputError) as error:
        print(f"error: {error.problem}. {error.fix[0].upper() + error.fix[1:]}.", file=sys.stderr)
        return 2
    except ValueError as error:  # bad option values, a model that cannot be loaded (its error says why)
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

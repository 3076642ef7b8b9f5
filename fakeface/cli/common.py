"""Flags and checks the evaluation commands share (fakeface-evaluate, fakeface-visualize)."""
from __future__ import annotations

import argparse


def add_split_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --dataset, --split, --output-dir, --batch-size and --limit: which detector on which images."""
    p.add_argument("--model", required=True, help="model folder, local-dir:PATH, hf-hub:org/name[@rev] or org/name")
    p.add_argument("--dataset", required=True, help="Hub dataset id or local dataset folder")
    p.add_argument("--split", default="test")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use the first N images only")

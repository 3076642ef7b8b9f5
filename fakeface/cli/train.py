"""Train a real/fake face detector: ``fakeface-train --dataset ID_OR_DIR --output-dir DIR`` (or ``python train.py``).

Runs unchanged on several processes::

    torchrun --nproc_per_node 2 train.py ...           # CPU (gloo) or GPUs
    accelerate launch --num_processes 2 train.py ...   # GPUs; see docs/training.md for CPU

All logic lives in ``fakeface.training.loop``; this module only maps flags onto
``TrainingConfig``. The Hub token, if pushing, comes from ``HF_TOKEN`` or the
``huggingface-cli login`` cache, never from a flag.
"""
from __future__ import annotations

import argparse
import logging
import sys

from fakeface.modeling.detector import PretrainedWeightsUnavailable
from fakeface.training.config import build_parser as build_config_parser
from fakeface.training.config import config_from_args
from fakeface.training.loop import train


def build_parser() -> argparse.ArgumentParser:
    """One flag per ``TrainingConfig`` field (the parser is generated from the fields)."""
    return build_config_parser(description=__doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint file otherwise

    try:
        result = train(config_from_args(args))
    except (ValueError, PretrainedWeightsUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if result.report is not None:
        overall = result.report["overall"]
        print(f"test ROC-AUC {overall['roc_auc']:.4f}  accuracy {overall['accuracy']:.4f}  "
              f"ECE {overall['ece']:.4f}  -> {result.output_dir}")
        if result.hub_commit:
            print(f"pushed to {args.push_to_hub} at commit {result.hub_commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

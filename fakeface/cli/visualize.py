"""Plot a detector's behaviour on a dataset split as PNG files.

    fakeface-visualize --model ID_OR_DIR --dataset ID_OR_DIR --output-dir DIR [--split test]

Writes ROC and PR curves, the confusion matrix, a reliability diagram, the
robustness plot, a 2-D embedding of penultimate-layer features (UMAP if
installed, else t-SNE or PCA) and a Grad-CAM grid of correct and wrong
verdicts into DIR.
"""
from __future__ import annotations

import argparse
import logging
import sys

from fakeface.cli.common import add_split_arguments
from fakeface.data.dataset import load_face_dataset
from fakeface.evaluation.metrics import decode_split, evaluate_detector
from fakeface.evaluation.plots import save_report_figures
from fakeface.modeling.detector import DetectorLoadError
from fakeface.modeling.inference import Detector


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_split_arguments(p)
    p.add_argument("--no-robustness", action="store_true", help="skip the robustness plot (faster)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


    try:
        detector = Detector.from_pretrained(args.model)
        data = load_face_dataset(args.dataset)
        if args.split not in data:
            raise ValueError(f"split {args.split!r} not in the dataset (it has {', '.join(data)})")
    except (DetectorLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    decoded = decode_split(data[args.split], max_images=args.limit)
    report = evaluate_detector(detector, data[args.split], batch_size=args.batch_size,
                               robustness=not args.no_robustness, decoded=decoded)
    written = save_report_figures(report, args.output_dir, detector=detector, images=decoded[0], seed=args.seed)
    for name, path in written.items():
        print(f"{name:12s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
